//! Tenants: each one's shared record ([`tenant`]), the host's listeners for
//! their addresses ([`listeners`]), the supervisor that starts, restarts,
//! swaps and stops a tenant's guest ([`supervisor`]), and the running set
//! with the operations on it: swaps, reloads, graceful stop ([`control`]),
//! and the watchers of component files and of the manifest ([`watch`]). Implements the WASI layer's [`crate::wasi::seam::Tenancy`].

pub mod control;
pub mod listeners;
pub mod supervisor;
pub mod tenant;
pub mod watch;
