//! The operator's configuration: its model ([`model`]; the limits declared
//! once in [`limits`]), the manifest's parser ([`manifest`]: validated
//! whole, with `file:line: key` errors; `values` the value syntax), where a
//! component comes from ([`source`]: `builtin:`, a file, `oci://`), and what
//! a reload is to change (`reload`: a pure plan), and the Kubernetes
//! objects that run a manifest ([`kubernetes`]: rendered from it). Depends
//! on nothing else in the host.

/// A configuration that cannot work: a setting, a name, a file the
/// operator gave (the process exits 78, EX_CONFIG, on it: see
/// crate::app::exit).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub mod kubernetes;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod reload;
pub mod source;
mod values;
