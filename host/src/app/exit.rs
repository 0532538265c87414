//! How the process ends: its exit statuses (sysexits) and the error
//! types that choose them.

use crate::config::manifest;

/// Served and stopped gracefully (or the one tenant's guest ended).
pub const OK: u8 = 0;
/// The command line is wrong (EX_USAGE).
pub const USAGE: u8 = 64;
/// A resource the host needs is unavailable: an address in use or not
/// of this machine, a registry that cannot be reached (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// The guest or the host failed: a trap, an internal error
/// (EX_SOFTWARE).
pub const SOFTWARE: u8 = 70;
/// The configuration is wrong: the manifest, a component that does not
/// load, a setting that cannot work (EX_CONFIG).
pub const CONFIG: u8 = 78;
/// Stopped at once by a second SIGINT or SIGTERM, connections cut (128
/// plus SIGINT's number, as shells report it).
pub const FORCED: u8 = 130;

/// An error whose exit status is [`USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error whose exit status is [`CONFIG`].
pub use crate::config::ConfigError;

/// An error whose exit status is [`UNAVAILABLE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnavailableError(pub String);

/// The exit status for `error`: the first cause that says.
pub fn status_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<UsageError>() {
            return USAGE;
        }
        if cause.is::<ConfigError>()
            || cause.is::<manifest::ManifestError>()
            || cause.is::<crate::runtime::engine::LoadError>()
            || matches!(
                cause.downcast_ref::<crate::registry::PullError>(),
                Some(crate::registry::PullError::Refused(_))
            )
        {
            return CONFIG;
        }
        if cause.is::<UnavailableError>()
            || matches!(
                cause.downcast_ref::<crate::registry::PullError>(),
                Some(crate::registry::PullError::Unavailable(_))
            )
        {
            return UNAVAILABLE;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return UNAVAILABLE;
        }
    }
    SOFTWARE
}
