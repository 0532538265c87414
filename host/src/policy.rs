//! Socket policy: what network access a guest is granted, the decision for
//! each attempt, and a count and a warning in the log for every refusal (a
//! flood of them logged in part: see crate::log_budget).
//!
//! TCP attempts are decided here and enforced by the host's TCP
//! implementation (crate::tcp). UDP and name lookups are refused outright by
//! replacing their entry points in the linker, so a guest never gets a UDP
//! socket or a resolver at all, and the filesystem's preopens are replaced
//! by an empty list that logs the ask. The linker must allow shadowing.

use crate::manifest::TenantConfig;
use crate::sandbox::TenantState;
use crate::tenant::{Counters, Tenant};
use std::net::SocketAddr;
use tracing::warn;
use wasmtime::component::{Linker, Val};
use wasmtime_wasi::sockets::SocketAddrUse;

/// The network capabilities granted to one guest. Nothing is granted unless
/// it is listed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Addresses the guest may bind and listen on, exactly (IP and port).
    pub listen: Vec<SocketAddr>,
    /// Addresses the guest may connect to, exactly (IP and port).
    pub connect: Vec<SocketAddr>,
}

impl From<&TenantConfig> for Grant {
    fn from(config: &TenantConfig) -> Self {
        Grant {
            listen: config.listen.clone(),
            connect: config.connect.clone(),
        }
    }
}

/// The admin and control endpoints' addresses once bound: no grant
/// reaches them (the manifest refuses such grants too, but a port of 0 is
/// only known once bound).
static FORBIDDEN: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());

/// Makes `addr`, an endpoint of the host's own, unreachable for every guest.
pub fn forbid_admin(addr: SocketAddr) {
    FORBIDDEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(addr);
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
            SocketAddrUse::TcpConnect => {
                let admin = FORBIDDEN
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|a| crate::manifest::reaches(*a, addr));
                (admin || !self.connect.contains(&addr)).then_some(Refusal::Connect)
            }
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                Some(Refusal::Udp)
            }
        }
    }
}

/// A capability a guest can be refused, as logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Binding or listening on an address not granted.
    TcpBind,
    /// Connecting out to an address not granted.
    TcpConnect,
    /// Any UDP.
    Udp,
    /// Name lookups.
    Dns,
}

impl Capability {
    /// Every kind, in the order counters keep them.
    pub const ALL: [Capability; 4] = [
        Capability::TcpBind,
        Capability::TcpConnect,
        Capability::Udp,
        Capability::Dns,
    ];

    /// The name in logs (`kind` field) and metrics (`kind` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::TcpBind => "tcp-bind",
            Capability::TcpConnect => "tcp-connect",
            Capability::Udp => "udp",
            Capability::Dns => "dns",
        }
    }
}

/// Logs and counts a refused attempt at `kind`.
pub fn refuse(tenant: &Tenant, kind: Capability, what: std::fmt::Arguments<'_>) {
    Counters::bump(&tenant.counters.capability_refusals);
    Counters::bump(&tenant.counters.refusals_by_kind[kind as usize]);
    if let Some(left_out) = tenant.refusal_log.admit() {
        let note = crate::log_budget::left_out_note(left_out);
        warn!(
            tenant = tenant.name(),
            kind = kind.as_str(),
            "refused: {what}{note}"
        );
    }
}

/// Logs and counts a refused socket attempt.
pub fn log_refusal(tenant: &Tenant, refusal: Refusal, addr: SocketAddr) {
    match refusal {
        Refusal::Bind => refuse(
            tenant,
            Capability::TcpBind,
            format_args!("bind/listen on {addr} is not granted"),
        ),
        Refusal::Connect => refuse(
            tenant,
            Capability::TcpConnect,
            format_args!("outbound connection to {addr} is not granted"),
        ),
        Refusal::Udp => refuse(
            tenant,
            Capability::Udp,
            format_args!("UDP to/from {addr} is not granted"),
        ),
    }
}

/// WASI 0.2 version whose entry points are replaced. Guests built against an
/// older 0.2.x link to these too (semver-compatible linking).
const WASI: &str = "0.2.12";

/// Replaces the entry points of capabilities that are never granted, so each
/// attempt is refused with `access-denied` and logged. `linker` must allow
/// shadowing.
pub fn refuse_ungranted(linker: &mut Linker<TenantState>) -> wasmtime::Result<()> {
    linker
        .instance(&format!("wasi:sockets/udp-create-socket@{WASI}"))?
        .func_new("create-udp-socket", |store, _ty, _params, results| {
            refuse(
                &store.data().tenant,
                Capability::Udp,
                format_args!("UDP sockets are not granted"),
            );
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
                refuse(
                    &store.data().tenant,
                    Capability::Dns,
                    format_args!("name lookup of {name:?} is not granted"),
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
            // Not a refusal: language runtimes (libc, Python, JavaScript)
            // ask at start-up whatever the guest's code does. Counted
            // apart; without a directory no file can be opened at all.
            let tenant = &store.data().tenant;
            Counters::bump(&tenant.counters.preopen_queries);
            if let Some(left_out) = tenant.refusal_log.admit() {
                let note = crate::log_budget::left_out_note(left_out);
                tracing::info!(
                    tenant = tenant.name(),
                    "{}: asked for its preopened directories: none are granted, so it can open no file{note}",
                    tenant.name()
                );
            }
            results[0] = Val::List(Vec::new());
            Ok(())
        })?;

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
            connect: vec!["127.0.0.1:6379".parse().unwrap()],
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
    fn connects_only_where_granted() {
        let g = grant();
        assert_eq!(
            g.decide("127.0.0.1:6379".parse().unwrap(), SocketAddrUse::TcpConnect),
            None
        );
        assert_eq!(
            g.decide("127.0.0.1:6380".parse().unwrap(), SocketAddrUse::TcpConnect),
            Some(Refusal::Connect)
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
