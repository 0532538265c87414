//! The running set of tenants and what an operator can do to it while the
//! host runs: swap a tenant's component live, reload the manifest (adding,
//! removing and changing tenants without touching the others). Shared by
//! SIGHUP, the file watchers (`tenancy::watch`) and the control endpoint;
//! operations run one at a time.
//!
//! Its parts: `running` the running set (start, remove, the graceful
//! stop); `load` where components come from, `swap` the one swap
//! path, `reload` the manifest reload.

mod load;
mod reload;
mod running;
mod swap;

pub use load::load_component;
pub use reload::{ReloadError, ReloadReport};
pub use running::{Compiled, Control, instances_of, is_unavailable};
pub use swap::SwapError;
