//! Socket policy, as data: what network access a guest is granted, and the
//! decision for each attempt. Every grant is decided here and only here;
//! the WASI layer enforces the decision (crate::wasi::sockets for TCP,
//! crate::wasi::p2::refuse for what is never granted) and logs and counts
//! each refusal through the tenant's account (a flood of them logged in
//! part: see crate::account::log_budget).

use crate::account::{Account, Capability};
use crate::config::model::TenantConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The network capabilities granted to one guest. Nothing is granted unless
/// it is listed here.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Addresses the guest may bind and listen on, exactly (IP and port).
    pub listen: Vec<SocketAddr>,
    /// Addresses the guest may connect to, exactly (IP and port).
    pub connect: Vec<SocketAddr>,
    /// The host's own endpoints, which no grant reaches.
    pub endpoints: Arc<HostEndpoints>,
}

impl Grant {
    /// Every port the grant names (listen and connect): never handed out
    /// as a private loopback port, so a granted address keeps its meaning.
    pub fn ports(&self) -> Vec<u16> {
        self.listen
            .iter()
            .chain(&self.connect)
            .map(SocketAddr::port)
            .collect()
    }
}

impl Grant {
    /// What `config` grants, on a host serving `endpoints`.
    pub fn new(config: &TenantConfig, endpoints: Arc<HostEndpoints>) -> Self {
        Grant {
            listen: config.listen.clone(),
            connect: config.connect.clone(),
            endpoints,
        }
    }
}

/// The host's own endpoints (admin, control) once bound, one set per host:
/// no grant reaches them (the manifest refuses such grants too, but a port
/// of 0 is only known once bound).
#[derive(Debug, Default)]
pub struct HostEndpoints(std::sync::Mutex<Vec<SocketAddr>>);

impl HostEndpoints {
    /// Makes `addr`, an endpoint of the host's own, unreachable for every
    /// guest.
    pub fn forbid(&self, addr: SocketAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(addr);
    }

    /// Whether connecting to `addr` reaches one of them.
    pub fn reached_by(&self, addr: SocketAddr) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|endpoint| crate::config::model::reaches(*endpoint, addr))
    }
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
                let own = self.endpoints.reached_by(addr);
                (own || !self.connect.contains(&addr)).then_some(Refusal::Connect)
            }
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                Some(Refusal::Udp)
            }
        }
    }
}

/// Logs and counts a refused socket attempt.
pub fn log_refusal(account: &Account, refusal: Refusal, addr: SocketAddr) {
    match refusal {
        Refusal::Bind => account.refuse(
            Capability::TcpBind,
            format_args!("bind/listen on {addr} is not granted"),
        ),
        Refusal::Connect => account.refuse(
            Capability::TcpConnect,
            format_args!("outbound connection to {addr} is not granted"),
        ),
        Refusal::Udp => account.refuse(
            Capability::Udp,
            format_args!("UDP to/from {addr} is not granted"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            listen: vec!["127.0.0.1:9800".parse().unwrap()],
            connect: vec!["127.0.0.1:6379".parse().unwrap()],
            endpoints: Arc::default(),
        }
    }

    #[test]
    fn no_grant_reaches_the_hosts_own_endpoints_once_bound() {
        let g = grant();
        let control: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(g.decide(control, SocketAddrUse::TcpConnect), None);
        // Bound on the wildcard address: reached through loopback too.
        g.endpoints.forbid("0.0.0.0:6379".parse().unwrap());
        assert_eq!(
            g.decide(control, SocketAddrUse::TcpConnect),
            Some(Refusal::Connect)
        );
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
