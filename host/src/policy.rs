//! Socket policy: what network access a guest is granted, the decision for
//! each attempt, and a warning in the log for every refusal.
//!
//! TCP attempts are checked through wasmtime-wasi's address check. UDP and
//! name lookups are refused outright by replacing their entry points in the
//! linker, so a guest never gets a UDP socket or a resolver at all, and the
//! filesystem's preopens are replaced by an empty list that logs the ask.

use crate::sandbox::TenantState;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::warn;
use wasmtime::component::{Linker, Val};
use wasmtime_wasi::sockets::SocketAddrUse;

/// The network capabilities granted to one guest. Nothing is granted unless
/// it is listed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Addresses the guest may bind and listen on, exactly (IP and port).
    pub listen: Vec<SocketAddr>,
}

/// Why an attempt was refused, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Bind or listen on an address that is not granted.
    Bind,
    /// An outbound TCP connection.
    Connect,
    /// Any UDP use.
    Udp,
}

impl Grant {
    /// Decides one socket use: `None` allows it, `Some` says why not.
    pub fn decide(&self, addr: SocketAddr, usage: SocketAddrUse) -> Option<Refusal> {
        match usage {
            // An implicit bind (wildcard IP, port 0), which connect performs,
            // grants nothing by itself: listening is checked again with the
            // real local address, connecting with the destination.
            SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => None,
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => {
                (!self.listen.contains(&addr)).then_some(Refusal::Bind)
            }
            // Clients may come from anywhere; the listen grant is the gate.
            SocketAddrUse::TcpAccept => None,
            SocketAddrUse::TcpConnect => Some(Refusal::Connect),
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                Some(Refusal::Udp)
            }
        }
    }
}

/// Logs a refused socket attempt.
pub fn log_refusal(tenant: &str, refusal: Refusal, addr: SocketAddr) {
    match refusal {
        Refusal::Bind => warn!(
            tenant,
            kind = "tcp-bind",
            %addr,
            "refused: bind/listen on {addr} is not granted"
        ),
        Refusal::Connect => warn!(
            tenant,
            kind = "tcp-connect",
            %addr,
            "refused: outbound connection to {addr} is not granted"
        ),
        Refusal::Udp => {
            warn!(tenant, kind = "udp", %addr, "refused: UDP to/from {addr} is not granted")
        }
    }
}

/// The address check installed in a guest's WASI context.
pub fn socket_addr_check(
    tenant: Arc<str>,
    grant: Arc<Grant>,
) -> impl Fn(SocketAddr, SocketAddrUse) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + Sync>>
+ Send
+ Sync
+ 'static {
    move |addr, usage| {
        let verdict = grant.decide(addr, usage);
        match verdict {
            Some(refusal) => log_refusal(&tenant, refusal, addr),
            None if matches!(usage, SocketAddrUse::TcpListen) => {
                tracing::info!(tenant = &*tenant, %addr, "{tenant}: listening on {addr}")
            }
            None => {}
        }
        Box::pin(std::future::ready(verdict.is_none()))
    }
}

/// WASI 0.2 version whose entry points are replaced. Guests built against an
/// older 0.2.x link to these too (semver-compatible linking).
const WASI: &str = "0.2.12";

/// Replaces the entry points of capabilities that are never granted, so each
/// attempt is refused with `access-denied` and logged.
pub fn refuse_ungranted(linker: &mut Linker<TenantState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);

    linker
        .instance(&format!("wasi:sockets/udp-create-socket@{WASI}"))?
        .func_new("create-udp-socket", |store, _ty, _params, results| {
            let tenant = store.data().name();
            warn!(tenant, kind = "udp", "refused: UDP sockets are not granted");
            results[0] = access_denied();
            Ok(())
        })?;

    linker
        .instance(&format!("wasi:sockets/ip-name-lookup@{WASI}"))?
        .func_new_async("resolve-addresses", |mut store, _ty, params, results| {
            Box::new(async move {
                let name = match params.get(1) {
                    Some(Val::String(name)) => name.as_str(),
                    _ => "?",
                };
                let tenant = store.data().name();
                warn!(
                    tenant,
                    kind = "dns",
                    name,
                    "refused: name lookup of {name:?} is not granted"
                );
                // A dynamic host function must release the `borrow<network>`
                // it was handed, or the call fails.
                if let Some(Val::Resource(network)) = params.first() {
                    network.resource_drop_async(&mut store).await?;
                }
                results[0] = access_denied();
                Ok(())
            })
        })?;

    linker
        .instance(&format!("wasi:filesystem/preopens@{WASI}"))?
        .func_new("get-directories", |store, _ty, _params, results| {
            let tenant = store.data().name();
            warn!(
                tenant,
                kind = "filesystem",
                "refused: the filesystem is not granted (no directories)"
            );
            results[0] = Val::List(Vec::new());
            Ok(())
        })?;

    linker.allow_shadowing(false);
    Ok(())
}

/// `err(error-code::access-denied)` as a dynamic component value.
fn access_denied() -> Val {
    Val::Result(Err(Some(Box::new(Val::Enum("access-denied".into())))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            listen: vec!["127.0.0.1:9800".parse().unwrap()],
        }
    }

    #[test]
    fn binds_only_the_granted_address() {
        let g = grant();
        assert_eq!(
            g.decide("127.0.0.1:9800".parse().unwrap(), SocketAddrUse::TcpBind),
            None
        );
        assert_eq!(
            g.decide("127.0.0.1:9800".parse().unwrap(), SocketAddrUse::TcpListen),
            None
        );
        for other in [
            "127.0.0.1:9801",
            "0.0.0.0:9800",
            "[::]:9800",
            "127.0.0.2:9800",
        ] {
            assert_eq!(
                g.decide(other.parse().unwrap(), SocketAddrUse::TcpBind),
                Some(Refusal::Bind),
                "{other}"
            );
        }
        // Listening is judged on the real local address, so an implicit bind
        // to the wildcard cannot become a listener on every interface.
        assert_eq!(
            g.decide("0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind),
            None
        );
        assert_eq!(
            g.decide("0.0.0.0:41234".parse().unwrap(), SocketAddrUse::TcpListen),
            Some(Refusal::Bind)
        );
    }

    #[test]
    fn accepts_clients_from_any_peer() {
        assert_eq!(
            grant().decide("10.1.2.3:5555".parse().unwrap(), SocketAddrUse::TcpAccept),
            None
        );
    }

    #[test]
    fn refuses_outbound_and_udp() {
        let g = grant();
        let addr: SocketAddr = "127.0.0.1:9800".parse().unwrap();
        assert_eq!(
            g.decide(addr, SocketAddrUse::TcpConnect),
            Some(Refusal::Connect)
        );
        assert_eq!(g.decide(addr, SocketAddrUse::UdpBind), Some(Refusal::Udp));
        assert_eq!(g.decide(addr, SocketAddrUse::UdpSend), Some(Refusal::Udp));
    }
}
