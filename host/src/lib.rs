//! The host as a library: everything the `host` binary is made of, so the
//! tests and fuzz targets can drive its parts directly.

pub mod account;
pub mod app;
pub mod cli;
pub mod config;
pub mod limits;
pub mod ops;
pub mod policy;
pub mod runtime;
pub mod tenancy;
pub mod wasi;
