//! The host as a library: everything the `host` binary is made of, so the
//! fuzz targets and tests can drive the manifest parser and the component
//! loader directly. Each module owns one concern.
//!
//! # Layout
//!
//! From the outside in. The aim is that every dependency points down this
//! list; today the WASI modules and the sandbox still use one another.
//!
//! - The process: [`cli`] (the command line), `main.rs` (starts the rest),
//!   [`admin`] (the read-only and control HTTP endpoints), [`metrics`]
//!   (Prometheus text, read from the counters at scrape time).
//! - Operations: [`control`] (tenants by name; swaps, reloads planned by a
//!   pure function then applied, graceful stop, file watch), [`manifest`]
//!   (the TOML file, validated whole, with `file:line: key` errors).
//! - Supervision: [`supervisor`] (runs one tenant's guest: restarts with
//!   back-off, live swap with a settle second, drain), [`workers`] (the
//!   guest threads instances run on).
//! - A tenant: [`tenant`] (its shared record: state, counters, the host's
//!   listeners, the version accepting), [`engine`] (compiling, the world
//!   check, the component cache), [`sandbox`] (the store of one instance:
//!   WASI context, memory and CPU limits, the linker).
//! - The guest's WASI, as the host implements it: [`policy`] (grants and
//!   refusals), [`tcp`] (`wasi:sockets/tcp` over host-owned listeners),
//!   [`connection`] (per-connection policing, the accept gate and back-off,
//!   resets past a cap), [`poll`] (`wasi:io/poll` with a fast path),
//!   [`readiness`] (the ready-set extension), [`guest_log`] and
//!   [`log_budget`] (what reaches the host's log, and how fast).

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
