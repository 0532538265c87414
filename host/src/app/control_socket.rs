//! The control endpoint's socket, made safe before anyone can connect: on
//! TCP out of every guest's reach, on a Unix socket a file only the host's
//! user may open.

use super::exit::{ConfigError, UnavailableError};
use crate::config::model::{self};
use crate::ops::admin;
use tracing::info;

/// Binds the control endpoint: on TCP, out of every guest's reach; on a
/// Unix socket, a file only the host's user may open (a stale socket file
/// from an earlier run is replaced, anything else there is an error).
pub(super) async fn control_listener(
    addr: &model::ControlAddr,
    endpoints: &crate::policy::HostEndpoints,
) -> anyhow::Result<admin::ControlListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    match addr {
        model::ControlAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let bound = listener.local_addr().unwrap_or(*addr);
            endpoints.forbid(bound);
            info!(%bound, "control: listening on {bound}");
            Ok(admin::ControlListener::Tcp(listener))
        }
        model::ControlAddr::Unix(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(ConfigError(format!(
                        "{} exists and is not a socket",
                        path.display()
                    ))
                    .into());
                }
                // Another host may be serving it: never take it over.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(UnavailableError(format!(
                        "{} is in use by another process",
                        path.display()
                    ))
                    .into());
                }
                std::fs::remove_file(path)?;
            }
            // Made in a directory only this user may enter, owner-only, then
            // moved into place: nobody can connect before it is.
            let parent = path.parent().unwrap_or(std::path::Path::new("."));
            let private = parent.join(format!(".control-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&private);
            std::fs::DirBuilder::new().mode(0o700).create(&private)?;
            let fresh = private.join("control.sock");
            let bound = tokio::net::UnixListener::bind(&fresh).and_then(|listener| {
                std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))?;
                std::fs::rename(&fresh, path)?;
                Ok(listener)
            });
            let _ = std::fs::remove_dir_all(&private);
            let listener = bound?;
            info!(path = %path.display(), "control: listening on unix:{}", path.display());
            Ok(admin::ControlListener::Unix(listener))
        }
    }
}
