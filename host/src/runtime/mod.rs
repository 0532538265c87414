//! Running guests: compiling components once and checking what they
//! import ([`engine`]), the built-in guests ([`builtins`]), one instance's
//! store with its limits wired in ([`instance`]), and the guest threads
//! instances run on ([`workers`]). Knows the WASI layer and the limits;
//! never a tenant, only the [`crate::wasi::seam::Tenancy`] it is given.

pub mod builtins;
pub mod engine;
pub mod instance;
pub mod workers;
