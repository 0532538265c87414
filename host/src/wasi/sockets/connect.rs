//! Connecting out: `start-connect` and `finish-connect`, to a granted
//! address only and within the tenant's outbound cap, or to the
//! instance's own private loopback listener (super::private).

pub use super::options::{Buffer, Options, buffer_request};
use super::private::{self, PrivateConnection};
use super::tcp::{Claims, State, TcpSocket, is_valid_address};
use super::{Family, SocketError};
use crate::limits::admission::Outbound;
use crate::limits::connection::Policed;
use crate::policy::{Grant, log_refusal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;
use wasmtime_wasi::sockets::SocketAddrUse;

/// Connecting, as a client socket does it.
impl TcpSocket {
    /// `start-connect`: to a granted address only, within the tenant's
    /// outbound cap of `cap`.
    pub fn start_connect(
        &mut self,
        addr: SocketAddr,
        grant: &Grant,
        cap: u32,
        claims: &Claims,
    ) -> Result<(), SocketError> {
        match self.state {
            State::Fresh | State::Bound(_) => {}
            State::BindStarted(_) | State::Connecting(_) | State::ListenStarted(..) => {
                return Err(SocketError::ConcurrencyConflict);
            }
            _ => return Err(SocketError::InvalidState),
        }
        if !is_valid_address(&addr, self.family) || addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(SocketError::InvalidArgument);
        }
        let account = self.tenant.account();
        // One of this instance's private listeners (super::private), from
        // the port this socket bound, if it bound one.
        if addr.ip().is_loopback() {
            let from = self.private_source(addr, claims);
            if let Some(connected) = claims.private.connect(addr, &grant.ports(), account, from) {
                let connection =
                    connected.map_err(|why| self.refuse_private(why, "connect", addr))?;
                self.wildcard = None;
                self.outbound = None;
                self.state = State::PrivateConnectDone(connection);
                return Ok(());
            }
        }
        // A private port exists only inside the instance: no connection
        // to the world can go out from it.
        if let Some(port) = &self.private {
            let from = port.addr;
            account.refuse(
                crate::account::Capability::TcpConnect,
                format_args!(
                    "connect to {addr} from {from}: a private loopback port reaches only its instance's listeners"
                ),
            );
            return Err(SocketError::AccessDenied);
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpConnect) {
            log_refusal(account, refusal, addr);
            return Err(SocketError::AccessDenied);
        }
        // A socket bound to the wildcard took its slot when it bound.
        if self.outbound.is_none() {
            let Some(slot) = Outbound::take(account, cap) else {
                let name = account.name();
                account.refuse(
                    crate::account::Capability::TcpConnect,
                    format_args!(
                        "connect to {addr}: {name} has {cap} outbound connections open, its cap"
                    ),
                );
                return Err(SocketError::NewSocketLimit);
            };
            self.outbound = Some(Arc::new(slot));
        }
        let bound = self.wildcard.take();
        self.state = State::Connecting(Box::pin(connect(addr, self.options, self.family, bound)));
        Ok(())
    }

    /// The private port a connect to `to` goes out from: the one this
    /// socket bound, or, for a socket bound to the wildcard, that port on
    /// `to`'s address if the instance has not taken it (else a new one).
    fn private_source(&self, to: SocketAddr, claims: &Claims) -> Option<Arc<private::Port>> {
        if let Some(port) = &self.private {
            return Some(port.clone());
        }
        let State::Bound(bound) = self.state else {
            return None;
        };
        self.wildcard.as_ref()?;
        claims.private.take(SocketAddr::new(to.ip(), bound.port()))
    }

    /// `finish-connect`: the connection, policed as the tenant's clients
    /// are (bytes and idle time), for the bindings to hand out its streams.
    pub fn finish_connect(&mut self) -> Result<(Arc<TcpStream>, Arc<Policed>), SocketError> {
        let result = match std::mem::replace(&mut self.state, State::Closed) {
            State::ConnectDone(result) => result,
            State::PrivateConnectDone(connection) => {
                let (stream, policed) = self.connected_privately(connection);
                return Ok((stream, policed));
            }
            // Not waited on yet: one look, which cannot lose the outcome
            // (a connect still under way is put back as it was).
            State::Connecting(mut connect) => {
                let look = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
                    Poll::Ready(connect.as_mut().poll(cx))
                }));
                match std::pin::pin!(look).poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(Poll::Ready(result)) => result,
                    _ => {
                        self.state = State::Connecting(connect);
                        return Err(SocketError::WouldBlock);
                    }
                }
            }
            other => {
                self.state = other;
                return Err(SocketError::NotInProgress);
            }
        };
        let stream = match result {
            Ok(stream) => stream,
            Err(e) => {
                self.outbound = None;
                return Err(SocketError::from_io(&e));
            }
        };
        let stream = Arc::new(stream);
        let peer = stream.peer_addr().unwrap_or(([0, 0, 0, 0], 0).into());
        let policed = self.tenant.police(peer);
        // Not shared yet: only a connected socket is held.
        if let Some(outbound) = self.outbound.as_mut().and_then(Arc::get_mut) {
            outbound.watchdog = policed
                .clone()
                .watch_idle(Arc::downgrade(&stream))
                .map(|watch| tokio::spawn(watch).abort_handle());
        }
        self.state = State::Connected {
            stream: stream.clone(),
            policed: policed.clone(),
            open: None,
            private: None,
        };
        Ok((stream, policed))
    }

    /// Connected by a private connection: unpoliced (it never leaves the
    /// instance, and a runtime's self-pipe sits idle for hours).
    pub(super) fn connected_privately(
        &mut self,
        connection: PrivateConnection,
    ) -> (Arc<TcpStream>, Arc<Policed>) {
        // The options set (on a listener, for its clients) apply as on a
        // real connection; those a socket pair has not (TCP's) are ignored.
        self.options
            .apply(&socket2::SockRef::from(&connection.stream), self.family);
        let stream = Arc::new(connection.stream);
        let policed = Policed::unpoliced(self.tenant.account(), connection.ends.remote);
        self.state = State::Connected {
            stream: stream.clone(),
            policed: policed.clone(),
            open: None,
            private: Some(connection.ends),
        };
        (stream, policed)
    }
}

/// Connects to `addr` with the socket options the guest set before, from
/// the socket it bound, if it bound one.
async fn connect(
    addr: SocketAddr,
    options: Options,
    family: Family,
    bound: Option<tokio::net::TcpSocket>,
) -> std::io::Result<TcpStream> {
    let socket = match (bound, addr) {
        (Some(socket), _) => socket,
        (None, SocketAddr::V4(_)) => tokio::net::TcpSocket::new_v4()?,
        (None, SocketAddr::V6(_)) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            socket2::SockRef::from(&socket).set_only_v6(true)?;
            socket
        }
    };
    options.apply(&socket2::SockRef::from(&socket), family);
    let stream = socket.connect(addr).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
