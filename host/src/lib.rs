//! The host as a library: everything the `host` binary is made of, so the
//! fuzz targets and tests can drive the manifest parser and the component
//! loader directly. Each module owns one concern; see the README's layout.

pub mod admin;
pub mod cli;
pub mod connection;
pub mod control;
pub mod engine;
pub mod guest_log;
pub mod log_budget;
pub mod manifest;
pub mod metrics;
pub mod policy;
pub mod poll;
pub mod readiness;
pub mod sandbox;
pub mod supervisor;
pub mod tcp;
pub mod tenant;
pub mod workers;
