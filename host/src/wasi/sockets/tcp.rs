//! A guest's TCP socket, independent of the WASI version that exposes it:
//! its states, and every decision a socket operation takes. The bindings
//! (crate::wasi::p2::tcp for WASI 0.2, crate::wasi::p3::sockets for WASI
//! 0.3) only move values in and out of the guest.
//!
//! Socket activation: a tenant's listen addresses are bound and listening in
//! the host from start-up to shutdown. When a guest binds and listens on a
//! granted address it is handed the host's listener; only the tenant's
//! current guest version accepts from it, so a new version takes over new
//! connections the moment it listens, with no gap in which a client could
//! be refused, while the old version keeps serving the connections it has.
//!
//! Every ungranted bind and listen is refused here (as the policy
//! decides); connecting out is super::connect, taking a client
//! super::accept (whether to, super::turn), each counted through the
//! tenant's limits (crate::limits).
//!
//! Longer than most files here (about 700 lines) on purpose: the socket's
//! state machine is kept whole, every state and every transition in one
//! place, so a change to one is read beside the others; what does not
//! change the state lives apart (accept, connect, options).

use super::accept_error;
use super::options::default_buffer;
pub use super::options::{Buffer, Options, buffer_request};
use super::private::{self, Ends, PrivateConnection, PrivateNet, Queue};
use super::turn::poll_accept;
use super::{Family, SocketError};
use crate::account::InstanceAccount;
use crate::limits::admission::{GateWaiter, OpenConnection, Outbound};
use crate::limits::connection::Policed;
use crate::policy::{Grant, Refusal, log_refusal};
use crate::wasi::seam::Tenancy;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use wasmtime_wasi::sockets::SocketAddrUse;

pub(super) enum State {
    /// Created, not bound.
    Fresh,
    /// `start-bind` accepted; `finish-bind` completes it.
    BindStarted(SocketAddr),
    /// Bound to a granted listen address (or the wildcard, for connecting).
    Bound(SocketAddr),
    /// `start-listen` accepted on the host's listener for this address
    /// (`None`: a private port, see super::private).
    ListenStarted(SocketAddr, Option<Arc<TcpListener>>),
    /// Listening through the host's listener: a duplicate of its socket,
    /// registered for readiness on its own. Readiness never accepts: a
    /// client is taken from the queue only by the guest's `accept`, and only
    /// while this version is current, so no client can be stranded in a
    /// version that is being replaced.
    Listening {
        addr: SocketAddr,
        listener: Arc<AsyncFd<TcpListener>>,
        /// Woken when the tenant's accept gate opens (crate::limits::admission).
        waiter: Arc<GateWaiter>,
    },
    /// Listening on a private loopback port (super::private): its
    /// connections come from this instance only.
    PrivateListening { addr: SocketAddr, queue: Arc<Queue> },
    /// A connect to a private listener, made at once; `finish-connect`
    /// reports it.
    PrivateConnectDone(PrivateConnection),
    /// An outbound connection in progress: the connect itself, not a task,
    /// so dropping the socket cancels it and closes its descriptor.
    Connecting(Connect),
    /// The outbound connection finished; `finish-connect` reports it.
    ConnectDone(std::io::Result<TcpStream>),
    /// Connected.
    Connected {
        stream: Arc<TcpStream>,
        /// The host's account of the connection (bytes, idle time).
        policed: Arc<Policed>,
        /// Set for accepted clients: counts against the connection cap
        /// until the guest drops the socket and every [`Hold`] on it.
        open: Option<Arc<OpenConnection>>,
        /// Set for a private connection (super::private): its addresses,
        /// its port and its place in the tenant's gauge.
        private: Option<Arc<Ends>>,
    },
    /// Failed for good.
    Closed,
}

/// An outbound connect in progress.
type Connect = std::pin::Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

/// A granted address bound by a socket of one guest instance: while it is
/// held, another socket of the same instance binding the address gets
/// `address-in-use` (as the kernel would say), so an instance holds at
/// most one listener, one descriptor and one readiness registration per
/// granted address however often it binds and listens.
struct Claim {
    claims: Claims,
    addr: SocketAddr,
}

/// What an instance's sockets have bound: the granted addresses claimed,
/// and the instance's private loopback ports.
#[derive(Clone, Default)]
pub struct Claims {
    granted: Arc<std::sync::Mutex<std::collections::HashSet<SocketAddr>>>,
    /// The instance's private loopback (super::private).
    pub private: PrivateNet,
}

impl Claim {
    /// Claims `addr` in `claims`, unless one of the instance's sockets has.
    fn take(claims: &Claims, addr: SocketAddr) -> Option<Claim> {
        let fresh = claims
            .granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr);
        fresh.then(|| Claim {
            claims: claims.clone(),
            addr,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims
            .granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.addr);
    }
}

/// What keeps a socket's share of the tenant's limits taken while any part
/// of it lives: the granted address it claimed, its outbound slot, its
/// place under the connection cap. In WASI 0.2 a socket's streams are its
/// children and cannot outlive it; in WASI 0.3 its streams (a listener's
/// clients, a connection's bytes) can, so each holds one of these.
#[derive(Clone, Default)]
pub struct Hold {
    _claim: Option<Arc<Claim>>,
    _outbound: Option<Arc<Outbound>>,
    _open: Option<Arc<OpenConnection>>,
    _private: Option<Arc<private::Port>>,
    _ends: Option<Arc<Ends>>,
}

/// What a WASI 0.2 connected socket knows of its streams, which are
/// resources of their own: `shutdown` closes them.
pub struct Halves {
    /// Set by `shutdown(receive)`: the input stream reads as closed.
    pub read_shut: Arc<std::sync::atomic::AtomicBool>,
    /// The output stream's write half: `shutdown(send)` sends what it
    /// holds before the end of the stream.
    pub writer: std::sync::Weak<super::stream::Batched>,
}

/// A connection as it is handed to the guest: the socket, the stream its
/// input and output streams read and write, and its policing.
pub struct Connection {
    /// The connected socket.
    pub socket: TcpSocket,
    /// The stream, shared by the socket and its streams.
    pub stream: Arc<TcpStream>,
    /// The host's account of it.
    pub policed: Arc<Policed>,
}

/// A guest's TCP socket (the `tcp-socket` resource).
pub struct TcpSocket {
    pub(super) family: Family,
    pub(super) state: State,
    /// The options the guest set.
    pub options: Options,
    /// The guest instance this socket belongs to (and its version).
    pub(super) instance: Arc<InstanceAccount>,
    pub(super) tenant: Arc<dyn Tenancy>,
    /// The granted address this socket has bound, if any.
    claim: Option<Arc<Claim>>,
    /// Set from `start-connect` while the outbound connection is being
    /// made or is open: counts against the tenant's outbound cap.
    pub(super) outbound: Option<Arc<Outbound>>,
    /// The private loopback port this socket bound (super::private).
    pub(super) private: Option<Arc<private::Port>>,
    /// Which halves of a connection WASI 0.3 has handed out (`receive`,
    /// `send`): each once.
    taken: (bool, bool),
    /// The streams of a WASI 0.2 connection, for `shutdown`.
    halves: Option<Halves>,
    /// The options of a WASI 0.3 listener, shared with its stream of
    /// clients, which may outlive it: a client accepted takes the options
    /// the listener has then (as the kernel's listening socket passes its
    /// own on), not those it had at `listen`.
    pub(super) listen_options: Option<Arc<std::sync::Mutex<Options>>>,
    /// A real socket bound to the wildcard address (a client's explicit
    /// bind before it connects, as `0.0.0.0:0`): its port is the one the
    /// guest is told, and the connect goes out from it. Counted against
    /// the outbound cap from the bind (`outbound`).
    pub(super) wildcard: Option<tokio::net::TcpSocket>,
}

impl TcpSocket {
    /// A fresh socket of `family` for guest `instance`.
    pub fn new(family: Family, instance: Arc<InstanceAccount>, tenant: Arc<dyn Tenancy>) -> Self {
        Self::with_state(family, instance, tenant, State::Fresh)
    }

    pub(super) fn with_state(
        family: Family,
        instance: Arc<InstanceAccount>,
        tenant: Arc<dyn Tenancy>,
        state: State,
    ) -> Self {
        TcpSocket {
            family,
            state,
            options: Options::default(),
            instance,
            tenant,
            claim: None,
            outbound: None,
            private: None,
            taken: (false, false),
            halves: None,
            listen_options: None,
            wildcard: None,
        }
    }

    /// The socket's address family.
    pub fn family(&self) -> Family {
        self.family
    }

    fn stream(&self) -> Result<&Arc<TcpStream>, SocketError> {
        match &self.state {
            State::Connected { stream, .. } => Ok(stream),
            _ => Err(SocketError::InvalidState),
        }
    }

    /// The connected socket, for options; `None` before it connects.
    pub fn sock_ref(&self) -> Option<socket2::SockRef<'_>> {
        match &self.state {
            State::Connected { stream, .. } => Some(socket2::SockRef::from(stream.as_ref())),
            _ => None,
        }
    }

    /// Waits until the socket's pending operation (a connect, or a client
    /// to accept) can be finished.
    pub async fn ready(&mut self) {
        match &mut self.state {
            State::Connecting(connect) => {
                let result = connect.await;
                self.state = State::ConnectDone(result);
            }
            State::Listening {
                listener, waiter, ..
            } => {
                let (tenant, instance) = (&*self.tenant, &*self.instance);
                std::future::poll_fn(|cx| poll_accept(listener, tenant, instance, waiter, cx))
                    .await;
            }
            State::PrivateListening { queue, .. } => {
                std::future::poll_fn(|cx| queue.poll_ready(cx)).await;
            }
            _ => {}
        }
    }

    /// `start-bind`: to a granted address only, one socket per address per
    /// instance; or to the wildcard address, port 0, for a connect to go
    /// out from (a real bind, counted against the outbound cap of `cap`).
    pub fn start_bind(
        &mut self,
        addr: SocketAddr,
        grant: &Grant,
        claims: &Claims,
        cap: u32,
    ) -> Result<(), SocketError> {
        match self.state {
            State::Fresh => {}
            State::BindStarted(_) => return Err(SocketError::ConcurrencyConflict),
            _ => return Err(SocketError::InvalidState),
        }
        // Checked before any permission, as WASI orders its errors.
        if !is_valid_address(&addr, self.family) {
            return Err(SocketError::InvalidArgument);
        }
        if private::is_private_bind(&addr) {
            let port = claims
                .private
                .bind(addr.ip(), &grant.ports())
                .map_err(|why| self.refuse_private(why, "bind", addr))?;
            self.state = State::BindStarted(port.addr);
            self.private = Some(port);
            return Ok(());
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpBind) {
            log_refusal(self.tenant.account(), refusal, addr);
            return Err(SocketError::AccessDenied);
        }
        if addr.ip().is_unspecified() && addr.port() == 0 {
            let bound = self.bind_wildcard(addr, cap)?;
            self.state = State::BindStarted(bound);
            return Ok(());
        }
        let Some(claim) = Claim::take(claims, addr) else {
            return Err(SocketError::AddressInUse);
        };
        self.claim = Some(Arc::new(claim));
        self.state = State::BindStarted(addr);
        Ok(())
    }

    /// Binds a real socket to the wildcard address `addr` (port 0): the
    /// kernel picks the port, which the guest is told at once and its
    /// connect goes out from. Nothing can listen on it (no grant names a
    /// wildcard), and it takes an outbound slot of the tenant's `cap`.
    fn bind_wildcard(&mut self, addr: SocketAddr, cap: u32) -> Result<SocketAddr, SocketError> {
        let account = self.tenant.account();
        let Some(slot) = Outbound::take(account, cap) else {
            let name = account.name();
            account.refuse(
                crate::account::Capability::TcpBind,
                format_args!(
                    "bind {addr} to connect from: {name} has {cap} outbound connections open, its cap"
                ),
            );
            return Err(SocketError::NewSocketLimit);
        };
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6().and_then(|socket| {
                socket2::SockRef::from(&socket).set_only_v6(true)?;
                Ok(socket)
            }),
        };
        let bound = socket.and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            let local = socket.local_addr()?;
            Ok((socket, local))
        });
        let (socket, local) = bound.map_err(|e| accept_error(&e))?;
        self.wildcard = Some(socket);
        self.outbound = Some(Arc::new(slot));
        Ok(local)
    }

    /// `finish-bind`.
    pub fn finish_bind(&mut self) -> Result<(), SocketError> {
        match self.state {
            State::BindStarted(addr) => {
                self.state = State::Bound(addr);
                Ok(())
            }
            _ => Err(SocketError::NotInProgress),
        }
    }

    /// Refuses a private port or connection (`what` to `addr`): past the
    /// instance's bound, counted and logged as the tenant's refusals are;
    /// a socket pair the system would not make is the error it gave.
    pub(super) fn refuse_private(
        &self,
        why: private::Refused,
        what: &str,
        addr: SocketAddr,
    ) -> SocketError {
        let full = match why {
            private::Refused::Full => private::MAX_PORTS,
            private::Refused::System(e) => return accept_error(&e),
        };
        let account = self.tenant.account();
        let name = account.name();
        let kind = if what == "bind" {
            crate::account::Capability::TcpBind
        } else {
            crate::account::Capability::TcpConnect
        };
        account.refuse(
            kind,
            format_args!(
                "{what} {addr}: {name}'s instance holds {full} private loopback ports, its limit"
            ),
        );
        SocketError::NewSocketLimit
    }

    /// The socket failed for good (its streams could not be handed out).
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    /// `start-listen`: on the host's listener for the bound address.
    pub fn start_listen(&mut self, grant: &Grant) -> Result<(), SocketError> {
        let addr = match self.state {
            State::Bound(addr) => addr,
            State::BindStarted(_) | State::Connecting(_) | State::ListenStarted(..) => {
                return Err(SocketError::ConcurrencyConflict);
            }
            // Not bound (WASI has no implicit bind for listening), or
            // listening or connected already.
            _ => return Err(SocketError::InvalidState),
        };
        if self.private.is_some() {
            self.state = State::ListenStarted(addr, None);
            return Ok(());
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpListen) {
            log_refusal(self.tenant.account(), refusal, addr);
            return Err(SocketError::AccessDenied);
        }
        let Some(listener) = self.tenant.listener(addr) else {
            return Err(SocketError::AddressNotBindable);
        };
        self.state = State::ListenStarted(addr, Some(listener));
        Ok(())
    }

    /// `finish-listen`: listening; tells the tenant layer this version
    /// listens.
    pub fn finish_listen(&mut self) -> Result<(), SocketError> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::ListenStarted(addr, None) => {
                let Some(port) = &self.private else {
                    return Err(SocketError::InvalidState);
                };
                self.state = State::PrivateListening {
                    addr,
                    queue: port.listen(),
                };
                // Not the tenant's listening: nothing outside reaches it. A
                // language runtime does this at start-up: a debug line,
                // outside the log budget kept for refusals.
                let name = self.tenant.account().name();
                tracing::debug!(tenant = name, %addr, "{name}: listening on {addr}, a private loopback port of this instance");
                Ok(())
            }
            State::ListenStarted(addr, Some(listener)) => {
                // A duplicate (its own descriptor) so each version has its
                // own readiness registration on the one listening socket;
                // one per granted address per instance (see `Claim`).
                let registered = listener.try_clone().and_then(|dup| {
                    // SAFETY: `dup` is an open descriptor owned by the
                    // AsyncFd for its whole life (std's TcpListener closes
                    // it only when dropped, and always reports the same fd).
                    unsafe { AsyncFd::register(dup) }.map_err(std::io::Error::from)
                });
                let listener = match registered {
                    Ok(listener) => listener,
                    Err(e) => {
                        self.state = State::Closed;
                        return Err(accept_error(&e));
                    }
                };
                self.state = State::Listening {
                    addr,
                    listener: Arc::new(listener),
                    waiter: self.tenant.admission().gate.waiter(),
                };
                let generation = self.instance.generation;
                // Whether new clients now come to this version is the
                // tenant layer's to decide.
                self.tenant.listening(&self.instance);
                // A guest can listen in a loop: within the log budget.
                let account = self.tenant.account();
                if let Some(note) = account.may_log() {
                    let name = account.name();
                    let instance = self.instance.index;
                    tracing::info!(tenant = name, %addr, generation, instance, "{name}: listening on {addr}{note}");
                }
                Ok(())
            }
            other => {
                self.state = other;
                Err(SocketError::NotInProgress)
            }
        }
    }

    /// A private listener's connection as an accepted socket (with this
    /// listener's options).
    pub(super) fn private_client(&self, connection: PrivateConnection) -> Connection {
        let mut socket = TcpSocket::with_state(
            self.family,
            self.instance.clone(),
            self.tenant.clone(),
            State::Closed,
        );
        socket.options = self.options;
        let (stream, policed) = socket.connected_privately(connection);
        Connection {
            socket,
            stream,
            policed,
        }
    }

    /// What keeps this socket's share of the tenant's limits taken, for a
    /// part of it that may outlive it (WASI 0.3 streams).
    pub fn hold(&self) -> Hold {
        let (open, ends) = match &self.state {
            State::Connected { open, private, .. } => (open.clone(), private.clone()),
            _ => (None, None),
        };
        Hold {
            _claim: self.claim.clone(),
            _outbound: self.outbound.clone(),
            _open: open,
            _private: self.private.clone(),
            _ends: ends,
        }
    }

    /// One half of a connected socket, once each (WASI 0.3 `receive` with
    /// `send == false`, `send` with `true`): the stream, its policing, and
    /// what keeps the connection counted while the half lives.
    pub fn take_half(
        &mut self,
        send: bool,
    ) -> Result<(Arc<TcpStream>, Arc<Policed>, Hold), SocketError> {
        let State::Connected {
            stream, policed, ..
        } = &self.state
        else {
            return Err(SocketError::InvalidState);
        };
        let (stream, policed) = (stream.clone(), policed.clone());
        let taken = if send {
            &mut self.taken.1
        } else {
            &mut self.taken.0
        };
        if std::mem::replace(taken, true) {
            return Err(SocketError::InvalidState);
        }
        // Held only once connected, after `finish_connect` set the idle
        // watchdog up.
        Ok((stream, policed, self.hold()))
    }

    /// Whether the socket is fresh (never bound): WASI 0.3 `listen` binds
    /// such a socket implicitly, to an ephemeral port.
    pub fn is_fresh(&self) -> bool {
        matches!(self.state, State::Fresh)
    }

    /// Refuses (and logs) a WASI 0.3 `listen` on a fresh socket: the
    /// implicit bind is to an ephemeral port of the wildcard address,
    /// which no grant names.
    pub fn refuse_unbound_listen(&self) -> SocketError {
        let any = match self.family {
            Family::Ipv4 => SocketAddr::from(([0, 0, 0, 0], 0)),
            Family::Ipv6 => SocketAddr::from(([0u16; 8], 0)),
        };
        log_refusal(self.tenant.account(), Refusal::Bind, any);
        SocketError::AccessDenied
    }

    /// Ready once an outbound connect has finished (at once for a socket
    /// that is not connecting); `finish_connect` then reports it.
    pub fn poll_connect(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let State::Connecting(connect) = &mut self.state {
            let result = std::task::ready!(connect.as_mut().poll(cx));
            self.state = State::ConnectDone(result);
        }
        Poll::Ready(())
    }

    /// `local-address`.
    pub fn local_address(&self) -> Result<SocketAddr, SocketError> {
        match &self.state {
            State::Bound(addr)
            | State::ListenStarted(addr, _)
            | State::Listening { addr, .. }
            | State::PrivateListening { addr, .. } => Ok(*addr),
            State::Connected {
                private: Some(ends),
                ..
            } => Ok(ends.local),
            State::Connected { stream, .. } => {
                stream.local_addr().map_err(|e| SocketError::from_io(&e))
            }
            _ => Err(SocketError::InvalidState),
        }
    }

    /// `remote-address`.
    pub fn remote_address(&self) -> Result<SocketAddr, SocketError> {
        if let State::Connected {
            private: Some(ends),
            ..
        } = &self.state
        {
            return Ok(ends.remote);
        }
        self.stream()
            .and_then(|s| s.peer_addr().map_err(|e| SocketError::from_io(&e)))
    }

    /// `is-listening`.
    pub fn is_listening(&self) -> bool {
        matches!(
            self.state,
            State::Listening { .. } | State::PrivateListening { .. }
        )
    }

    /// `set-listen-backlog-size`: the host's listener has its own backlog;
    /// the hint is accepted.
    pub fn set_listen_backlog_size(&self, value: u64) -> Result<(), SocketError> {
        match (&self.state, value) {
            (_, 0) => Err(SocketError::InvalidArgument),
            (State::Connected { .. } | State::Connecting(_), _) => Err(SocketError::InvalidState),
            _ => Ok(()),
        }
    }

    /// Stores a socket option with `store` and, once connected, applies it
    /// to the real socket with `apply`.
    pub fn set_option(
        &mut self,
        store: impl FnOnce(&mut Options),
        apply: fn(&Options, &socket2::SockRef<'_>, Family),
    ) {
        store(&mut self.options);
        if let Some(shared) = &self.listen_options {
            *shared.lock().unwrap_or_else(|p| p.into_inner()) = self.options;
        }
        if let Some(sock) = self.sock_ref() {
            apply(&self.options, &sock, self.family);
        }
    }

    /// A kernel buffer size, as a size set reads back: the connected
    /// socket's, halved (Linux doubles what it is asked for, for its own
    /// bookkeeping, and reports that; wasmtime halves it too); before the
    /// socket connects, what was asked for, or a fresh socket's default.
    pub fn buffer_size(&self, which: Buffer) -> u64 {
        let asked = match which {
            Buffer::Receive => self.options.receive_buffer,
            Buffer::Send => self.options.send_buffer,
        };
        let kernel = self.sock_ref().and_then(|sock| match which {
            Buffer::Receive => sock.recv_buffer_size().ok(),
            Buffer::Send => sock.send_buffer_size().ok(),
        });
        let size = match kernel {
            Some(doubled) => doubled / 2,
            None => asked.unwrap_or_else(|| default_buffer(which)),
        };
        size as u64
    }

    /// The streams of this (WASI 0.2) connection, which `shutdown` closes.
    pub fn attach(&mut self, halves: Halves) {
        self.halves = Some(halves);
    }

    /// `shutdown`: receiving closes the input stream (what the kernel still
    /// holds is discarded), sending closes the output stream after the
    /// bytes it holds are sent (off the guest's thread, as when a stream is
    /// dropped), then the end of the stream.
    pub fn shutdown(&self, how: std::net::Shutdown) -> Result<(), SocketError> {
        use std::net::Shutdown;
        let Some(sock) = self.sock_ref() else {
            return Err(SocketError::InvalidState);
        };
        // A peer that is already gone makes a shutdown fail; the socket is
        // done either way.
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            if let Some(halves) = &self.halves {
                halves
                    .read_shut
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = sock.shutdown(Shutdown::Read);
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            match self.halves.as_ref().and_then(|h| h.writer.upgrade()) {
                Some(writer) => writer.lock().shut_down(),
                None => {
                    let _ = sock.shutdown(Shutdown::Write);
                }
            }
        }
        Ok(())
    }
}

/// Whether a socket of `family` may bind or connect to `addr` at all
/// (else `invalid-argument`, before any permission is looked at, as WASI
/// says): the socket's family; for IPv6 neither an IPv4 address written
/// as IPv6 (`::ffff:a.b.c.d`: WASI sockets are IPv6-only) nor the
/// deprecated IPv4-compatible form (`::a.b.c.d`); and a unicast address
/// (not multicast, not the IPv4 broadcast).
pub(super) fn is_valid_address(addr: &SocketAddr, family: Family) -> bool {
    if Family::of(addr) != family {
        return false;
    }
    match addr.ip() {
        std::net::IpAddr::V4(ip) => !ip.is_multicast() && !ip.is_broadcast(),
        std::net::IpAddr::V6(ip) => {
            let compatible = matches!(ip.segments(), [0, 0, 0, 0, 0, 0, _, _])
                && !ip.is_unspecified()
                && !ip.is_loopback();
            ip.to_ipv4_mapped().is_none() && !compatible && !ip.is_multicast()
        }
    }
}
