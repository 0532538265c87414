//! The guests' TCP sockets (`wasi:sockets/tcp` and `tcp-create-socket`),
//! implemented by the host instead of wasmtime-wasi so that the host owns
//! every listening socket.
//!
//! Socket activation: a tenant's listen addresses are bound and listening in
//! the host from start-up to shutdown. When a guest binds and listens on a
//! granted address it is handed the host's listener; only the tenant's
//! current guest version accepts from it, so a new version takes over new
//! connections the moment it listens, with no gap in which a client could
//! be refused, while the old version keeps serving the connections it has.
//!
//! Also here, because this is where connections come and go: the connection
//! cap (a client past it is reset before the guest sees it), the open
//! connection count, and the refusal of every ungranted bind and connect.

use crate::connection::{CapReaper, Policed, is_resource_error, refuse_client};
use crate::policy::{Refusal, log_refusal};
use crate::sandbox::TenantState;
use crate::tenant::{Counters, Tenant};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, InputStream, OutputStream, Pollable,
};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi::sockets::SocketAddrUse;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package tcphost:host;
            world sockets {
                import wasi:sockets/tcp@0.2.12;
                import wasi:sockets/tcp-create-socket@0.2.12;
            }
        ",
        world: "tcphost:host/sockets",
        imports: { default: trappable },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
            "wasi:sockets/tcp.tcp-socket": super::GuestTcp,
        },
    });
}

use bindings::wasi::sockets::tcp::{self, Duration as WasiDuration, HostTcpSocket, ShutdownType};
use bindings::wasi::sockets::tcp_create_socket;

/// Most bytes one `read` returns, and one `write` permit.
const MAX_IO: usize = 64 * 1024;

/// Replaces wasmtime-wasi's TCP with the host's in `linker`.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<TenantState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    tcp::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, |s| s)?;
    tcp_create_socket::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, |s| s)?;
    Ok(())
}

/// Socket options a guest may set; applied to connected sockets.
#[derive(Debug, Clone, Copy)]
struct Options {
    keep_alive: bool,
    keep_alive_idle: WasiDuration,
    keep_alive_interval: WasiDuration,
    keep_alive_count: u32,
    hop_limit: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_alive: false,
            keep_alive_idle: 7_200_000_000_000,
            keep_alive_interval: 75_000_000_000,
            keep_alive_count: 9,
            hop_limit: 64,
        }
    }
}

enum State {
    /// Created, not bound.
    Fresh,
    /// `start-bind` accepted; `finish-bind` completes it.
    BindStarted(SocketAddr),
    /// Bound to a granted listen address (or the wildcard, for connecting).
    Bound(SocketAddr),
    /// `start-listen` accepted on the host's listener for this address.
    ListenStarted(SocketAddr, Arc<TcpListener>),
    /// Listening through the host's listener: a duplicate of its socket,
    /// registered for readiness on its own. Readiness never accepts: a
    /// client is taken from the queue only by the guest's `accept`, and only
    /// while this version is current, so no client can be stranded in a
    /// version that is being replaced.
    Listening {
        addr: SocketAddr,
        listener: Arc<AsyncFd<TcpListener>>,
    },
    /// An outbound connection in progress.
    Connecting(tokio::task::JoinHandle<std::io::Result<TcpStream>>),
    /// The outbound connection finished; `finish-connect` reports it.
    ConnectDone(std::io::Result<TcpStream>),
    /// Connected; the streams have been handed out.
    Connected {
        stream: Arc<TcpStream>,
        /// Set for accepted clients: counts against the connection cap
        /// until the guest drops the socket.
        _open: Option<OpenConnection>,
    },
    /// Failed for good.
    Closed,
}

/// One open client connection, counted for its tenant and for the guest
/// instance that holds it, while it lives.
struct OpenConnection {
    tenant: Arc<Tenant>,
    instance: Arc<AtomicU64>,
    /// The client's address, counted in the tenant's per-peer counts.
    peer: std::net::IpAddr,
    /// The idle watchdog, if the tenant has an idle timeout.
    watchdog: Option<tokio::task::AbortHandle>,
}

impl OpenConnection {
    /// Counts a client connection of `tenant`, whose cap is `cap`.
    fn new(
        tenant: &Arc<Tenant>,
        instance: &Arc<AtomicU64>,
        peer: std::net::IpAddr,
        watchdog: Option<tokio::task::AbortHandle>,
        cap: u64,
    ) -> Self {
        tenant.peers.opened(peer);
        let open = tenant
            .counters
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if open >= cap {
            // At the cap: clients the guest does not take are reset anyway.
            CapReaper::start(tenant, cap);
        }
        instance.fetch_add(1, Ordering::Relaxed);
        Counters::bump(&tenant.counters.connections_accepted);
        OpenConnection {
            tenant: tenant.clone(),
            instance: instance.clone(),
            peer,
            watchdog,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        self.tenant
            .counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.instance.fetch_sub(1, Ordering::Relaxed);
        self.tenant.peers.closed(self.peer);
    }
}

/// A guest's TCP socket (the `tcp-socket` resource).
pub struct GuestTcp {
    family: IpAddressFamily,
    state: State,
    options: Options,
    /// The guest version (instance) this socket belongs to.
    generation: u64,
    tenant: Arc<Tenant>,
}

impl GuestTcp {
    fn stream(&self) -> Result<&Arc<TcpStream>, ErrorCode> {
        match &self.state {
            State::Connected { stream, .. } => Ok(stream),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    fn sock_ref(&self) -> Option<socket2::SockRef<'_>> {
        match &self.state {
            State::Connected { stream, .. } => Some(socket2::SockRef::from(stream.as_ref())),
            _ => None,
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestTcp {
    async fn ready(&mut self) {
        match &mut self.state {
            State::Connecting(handle) => {
                let result = handle
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                self.state = State::ConnectDone(result);
            }
            State::Listening { listener, .. } => {
                // A version that has been replaced accepts no more clients.
                if !self.tenant.is_current(self.generation) {
                    return std::future::pending().await;
                }
                if let Some(until) = self.tenant.accept_backoff.paused() {
                    tokio::time::sleep_until(until).await;
                }
                // Cleared by `accept` when it finds the queue empty.
                let _ = listener.readable().await;
            }
            _ => {}
        }
    }
}

fn family_of(addr: &SocketAddr) -> IpAddressFamily {
    match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    }
}

fn error_code(e: &std::io::Error) -> ErrorCode {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => ErrorCode::ConnectionRefused,
        K::ConnectionReset => ErrorCode::ConnectionReset,
        K::ConnectionAborted => ErrorCode::ConnectionAborted,
        K::TimedOut => ErrorCode::Timeout,
        K::AddrInUse => ErrorCode::AddressInUse,
        K::AddrNotAvailable => ErrorCode::AddressNotBindable,
        K::PermissionDenied => ErrorCode::AccessDenied,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => ErrorCode::RemoteUnreachable,
        K::OutOfMemory => ErrorCode::OutOfMemory,
        _ => ErrorCode::Unknown,
    }
}

/// Pushes the input and output streams of `stream` as children of `socket`,
/// the input one known to the fast poll.
fn push_streams(
    state: &mut TenantState,
    socket: &Resource<GuestTcp>,
    stream: &Arc<TcpStream>,
    policed: Arc<Policed>,
) -> wasmtime::Result<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
    let input: DynInputStream = Box::new(Reader {
        stream: stream.clone(),
        eof: false,
        policed: policed.clone(),
    });
    let output: DynOutputStream = Box::new(Writer {
        stream: stream.clone(),
        pending: BytesMut::new(),
        permit: 0,
        flushing: false,
        failed: None,
        policed,
    });
    let table = state.table();
    let (input, output) = (
        table.push_child(input, socket)?,
        table.push_child(output, socket)?,
    );
    state.fast.add_stream(input.rep(), stream.clone());
    Ok((input, output))
}

impl TenantState {
    fn new_socket(&self, family: IpAddressFamily, state: State) -> GuestTcp {
        GuestTcp {
            family,
            state,
            options: Options::default(),
            generation: self.generation,
            tenant: self.tenant.clone(),
        }
    }

    /// Takes the next client from a listening socket, resetting those past
    /// the connection cap, or past the cap for their address.
    fn next_client(
        &mut self,
        this: &Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<(TcpStream, SocketAddr), ErrorCode>> {
        let cap = u64::from(self.config.limits.max_connections);
        let per_peer = self.config.limits.max_connections_per_peer;
        let socket = self.table().get_mut(this)?;
        let current = socket.tenant.is_current(socket.generation);
        let State::Listening { listener, .. } = &socket.state else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        // Paused after accepts failed for want of file descriptors: the
        // clients wait in the backlog until the pause ends.
        if !current || socket.tenant.accept_backoff.paused().is_some() {
            return Ok(Err(ErrorCode::WouldBlock));
        }
        socket.tenant.cap_reaper.guest_accepting();
        loop {
            // Through the readiness: an accept that finds the queue empty
            // clears it only if nothing arrived meanwhile, so no wakeup is
            // lost between an empty queue and the next wait. No waker is
            // registered here: that is for whoever waits (see crate::poll).
            let (client, peer) = match listener.try_io(Interest::READABLE, TcpListener::accept) {
                Ok(client) => client,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Err(ErrorCode::WouldBlock));
                }
                Err(e) if is_resource_error(&e) => {
                    let addr = listener
                        .get_ref()
                        .local_addr()
                        .unwrap_or(([0, 0, 0, 0], 0).into());
                    socket
                        .tenant
                        .accept_backoff
                        .failed(&socket.tenant, addr, &e);
                    return Ok(Err(ErrorCode::WouldBlock));
                }
                // The client gave up while queued: take the next one.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Ok(Err(error_code(&e))),
            };
            let tenant = &socket.tenant;
            tenant.accept_backoff.succeeded();
            let over_cap = tenant.counters.connections_open.load(Ordering::Relaxed) >= cap;
            let over_peer_cap = per_peer.is_some_and(|max| tenant.peers.open(peer.ip()) >= max);
            if !over_cap && !over_peer_cap {
                client.set_nonblocking(true)?;
                return Ok(Ok((TcpStream::from_std(client)?, peer)));
            }
            let name = tenant.name();
            if over_cap {
                refuse_client(
                    tenant,
                    client,
                    peer,
                    format_args!("{name} is at its cap of {cap}"),
                );
            } else {
                let ip = peer.ip();
                let max = per_peer.unwrap_or_default();
                refuse_client(
                    tenant,
                    client,
                    peer,
                    format_args!("{ip} is at {name}'s cap of {max} per client address"),
                );
            }
        }
    }
    /// Stores a socket option that must not be zero (WASI's rule for every
    /// size, count and duration option).
    fn set_nonzero<V: PartialEq + Default>(
        &mut self,
        this: &Resource<GuestTcp>,
        value: V,
        store: impl FnOnce(&mut GuestTcp, V),
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if value == V::default() {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        store(self.table().get_mut(this)?, value);
        Ok(Ok(()))
    }

    /// A kernel buffer size of a connected socket (a typical default before
    /// it connects).
    fn buffer_size(
        &mut self,
        this: &Resource<GuestTcp>,
        get: fn(&socket2::Socket) -> std::io::Result<usize>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        let socket = self.table().get(this)?;
        Ok(Ok(socket
            .sock_ref()
            .and_then(|s| get(&s).ok())
            .unwrap_or(131_072) as u64))
    }
}

impl tcp_create_socket::Host for TenantState {
    fn create_tcp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> wasmtime::Result<Result<Resource<GuestTcp>, ErrorCode>> {
        let socket = self.new_socket(family, State::Fresh);
        Ok(Ok(self.table().push(socket)?))
    }
}

impl tcp::Host for TenantState {}

impl HostTcpSocket for TenantState {
    fn start_bind(
        &mut self,
        this: Resource<GuestTcp>,
        _network: Resource<wasmtime_wasi::p2::Network>,
        local: IpSocketAddress,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let addr = SocketAddr::from(local);
        let grant = self.grant.clone();
        let socket = self.table().get_mut(&this)?;
        if !matches!(socket.state, State::Fresh) {
            return Ok(Err(ErrorCode::InvalidState));
        }
        if family_of(&addr) != socket.family {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpBind) {
            log_refusal(&socket.tenant, refusal, addr);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        socket.state = State::BindStarted(addr);
        Ok(Ok(()))
    }

    fn finish_bind(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table().get_mut(&this)?;
        match socket.state {
            State::BindStarted(addr) => {
                socket.state = State::Bound(addr);
                Ok(Ok(()))
            }
            _ => Ok(Err(ErrorCode::NotInProgress)),
        }
    }

    fn start_connect(
        &mut self,
        this: Resource<GuestTcp>,
        _network: Resource<wasmtime_wasi::p2::Network>,
        remote: IpSocketAddress,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let addr = SocketAddr::from(remote);
        let grant = self.grant.clone();
        let socket = self.table().get_mut(&this)?;
        if !matches!(socket.state, State::Fresh | State::Bound(_)) {
            return Ok(Err(ErrorCode::InvalidState));
        }
        if family_of(&addr) != socket.family || addr.port() == 0 || addr.ip().is_unspecified() {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpConnect) {
            log_refusal(&socket.tenant, refusal, addr);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        socket.state = State::Connecting(tokio::spawn(TcpStream::connect(addr)));
        Ok(Ok(()))
    }

    fn finish_connect(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<(Resource<DynInputStream>, Resource<DynOutputStream>), ErrorCode>>
    {
        let socket = self.table().get_mut(&this)?;
        let result = match std::mem::replace(&mut socket.state, State::Closed) {
            State::ConnectDone(result) => result,
            State::Connecting(handle) if handle.is_finished() => futures_now(handle)
                .unwrap_or_else(|| Err(std::io::Error::other("connect task lost"))),
            State::Connecting(handle) => {
                socket.state = State::Connecting(handle);
                return Ok(Err(ErrorCode::WouldBlock));
            }
            other => {
                socket.state = other;
                return Ok(Err(ErrorCode::NotInProgress));
            }
        };
        match result {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let stream = Arc::new(stream);
                socket.state = State::Connected {
                    stream: stream.clone(),
                    _open: None,
                };
                let peer = stream.peer_addr().unwrap_or(([0, 0, 0, 0], 0).into());
                let policed = Policed::outbound(&self.tenant, peer);
                Ok(Ok(push_streams(self, &this, &stream, policed)?))
            }
            Err(e) => Ok(Err(error_code(&e))),
        }
    }

    fn start_listen(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let grant = self.grant.clone();
        let socket = self.table().get_mut(&this)?;
        let addr = match socket.state {
            State::Bound(addr) => addr,
            // Listening without binding first would bind the wildcard.
            State::Fresh => {
                let wildcard = match socket.family {
                    IpAddressFamily::Ipv4 => SocketAddr::from(([0, 0, 0, 0], 0)),
                    IpAddressFamily::Ipv6 => SocketAddr::from(([0u16; 8], 0)),
                };
                log_refusal(&socket.tenant, Refusal::Bind, wildcard);
                return Ok(Err(ErrorCode::AccessDenied));
            }
            _ => return Ok(Err(ErrorCode::InvalidState)),
        };
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpListen) {
            log_refusal(&socket.tenant, refusal, addr);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        let Some(listener) = socket.tenant.listener(addr) else {
            return Ok(Err(ErrorCode::AddressNotBindable));
        };
        socket.state = State::ListenStarted(addr, listener);
        Ok(Ok(()))
    }

    fn finish_listen(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table().get_mut(&this)?;
        match std::mem::replace(&mut socket.state, State::Closed) {
            State::ListenStarted(addr, listener) => {
                // A duplicate (its own descriptor) so each version has its
                // own readiness registration on the one listening socket.
                let registered = listener.try_clone().and_then(|dup| {
                    // SAFETY: `dup` is an open descriptor owned by the
                    // AsyncFd for its whole life (std's TcpListener closes
                    // it only when dropped, and always reports the same fd).
                    unsafe { AsyncFd::register(dup) }.map_err(std::io::Error::from)
                });
                let listener = match registered {
                    Ok(listener) => listener,
                    Err(e) => {
                        socket.state = State::Closed;
                        return Ok(Err(error_code(&e)));
                    }
                };
                socket.state = State::Listening {
                    addr,
                    listener: Arc::new(listener),
                };
                // From now on new clients come to this version.
                socket.tenant.make_current(socket.generation);
                socket.tenant.set_state(crate::tenant::State::Running);
                let name = socket.tenant.name();
                tracing::info!(tenant = name, %addr, generation = socket.generation, "{name}: listening on {addr}");
                Ok(Ok(()))
            }
            other => {
                socket.state = other;
                Ok(Err(ErrorCode::NotInProgress))
            }
        }
    }

    fn accept(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<
        Result<
            (
                Resource<GuestTcp>,
                Resource<DynInputStream>,
                Resource<DynOutputStream>,
            ),
            ErrorCode,
        >,
    > {
        let (stream, peer) = match self.next_client(&this)? {
            Ok(client) => client,
            Err(code) => return Ok(Err(code)),
        };
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        let family = family_of(&peer);
        let policed = Policed::new(&self.tenant, peer);
        let watchdog = policed
            .clone()
            .watch_idle(Arc::downgrade(&stream))
            .map(|watch| tokio::spawn(watch).abort_handle());
        let cap = u64::from(self.config.limits.max_connections);
        let open = OpenConnection::new(&self.tenant, &self.open, peer.ip(), watchdog, cap);
        let client = self.new_socket(
            family,
            State::Connected {
                stream: stream.clone(),
                _open: Some(open),
            },
        );
        let client = self.table().push(client)?;
        let (input, output) = push_streams(self, &client, &stream, policed)?;
        Ok(Ok((client, input, output)))
    }

    fn local_address(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<IpSocketAddress, ErrorCode>> {
        let socket = self.table().get(&this)?;
        Ok(match &socket.state {
            State::Bound(addr) | State::ListenStarted(addr, _) | State::Listening { addr, .. } => {
                Ok((*addr).into())
            }
            State::Connected { stream, .. } => stream
                .local_addr()
                .map(Into::into)
                .map_err(|e| error_code(&e)),
            _ => Err(ErrorCode::InvalidState),
        })
    }

    fn remote_address(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<IpSocketAddress, ErrorCode>> {
        let socket = self.table().get(&this)?;
        Ok(socket
            .stream()
            .and_then(|s| s.peer_addr().map(Into::into).map_err(|e| error_code(&e))))
    }

    fn is_listening(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<bool> {
        Ok(matches!(
            self.table().get(&this)?.state,
            State::Listening { .. }
        ))
    }

    fn address_family(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<IpAddressFamily> {
        Ok(self.table().get(&this)?.family)
    }

    fn set_listen_backlog_size(
        &mut self,
        this: Resource<GuestTcp>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        // The host's listener has its own backlog; the hint is accepted.
        let socket = self.table().get(&this)?;
        Ok(match (&socket.state, value) {
            (_, 0) => Err(ErrorCode::InvalidArgument),
            (State::Connected { .. } | State::Connecting(_), _) => Err(ErrorCode::InvalidState),
            _ => Ok(()),
        })
    }

    fn keep_alive_enabled(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<bool, ErrorCode>> {
        Ok(Ok(self.table().get(&this)?.options.keep_alive))
    }

    fn set_keep_alive_enabled(
        &mut self,
        this: Resource<GuestTcp>,
        value: bool,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table().get_mut(&this)?;
        socket.options.keep_alive = value;
        if let Some(sock) = socket.sock_ref() {
            let _ = sock.set_keepalive(value);
        }
        Ok(Ok(()))
    }

    fn keep_alive_idle_time(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<WasiDuration, ErrorCode>> {
        Ok(Ok(self.table().get(&this)?.options.keep_alive_idle))
    }

    fn set_keep_alive_idle_time(
        &mut self,
        this: Resource<GuestTcp>,
        value: WasiDuration,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.set_nonzero(&this, value, |s, v| s.options.keep_alive_idle = v)
    }

    fn keep_alive_interval(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<WasiDuration, ErrorCode>> {
        Ok(Ok(self.table().get(&this)?.options.keep_alive_interval))
    }

    fn set_keep_alive_interval(
        &mut self,
        this: Resource<GuestTcp>,
        value: WasiDuration,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.set_nonzero(&this, value, |s, v| s.options.keep_alive_interval = v)
    }

    fn keep_alive_count(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<u32, ErrorCode>> {
        Ok(Ok(self.table().get(&this)?.options.keep_alive_count))
    }

    fn set_keep_alive_count(
        &mut self,
        this: Resource<GuestTcp>,
        value: u32,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.set_nonzero(&this, value, |s, v| s.options.keep_alive_count = v)
    }

    fn hop_limit(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<Result<u8, ErrorCode>> {
        Ok(Ok(self.table().get(&this)?.options.hop_limit))
    }

    fn set_hop_limit(
        &mut self,
        this: Resource<GuestTcp>,
        value: u8,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.set_nonzero(&this, value, |s, v| s.options.hop_limit = v)
    }

    fn receive_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        self.buffer_size(&this, socket2::Socket::recv_buffer_size)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let size = usize::try_from(value).unwrap_or(usize::MAX);
        self.set_nonzero(&this, size, |s, v| {
            if let Some(sock) = s.sock_ref() {
                let _ = sock.set_recv_buffer_size(v);
            }
        })
    }

    fn send_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        self.buffer_size(&this, socket2::Socket::send_buffer_size)
    }

    fn set_send_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let size = usize::try_from(value).unwrap_or(usize::MAX);
        self.set_nonzero(&this, size, |s, v| {
            if let Some(sock) = s.sock_ref() {
                let _ = sock.set_send_buffer_size(v);
            }
        })
    }

    fn subscribe(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<Resource<DynPollable>> {
        let socket = self.table().get(&this)?;
        let fast = match &socket.state {
            State::Listening { listener, .. } => Some(crate::poll::Fast::Accept {
                listener: listener.clone(),
                tenant: socket.tenant.clone(),
                generation: socket.generation,
            }),
            _ => None,
        };
        let pollable = wasmtime_wasi::p2::subscribe(self.table(), this)?;
        if let Some(fast) = fast {
            self.fast.add_pollable(pollable.rep(), fast);
        }
        Ok(pollable)
    }

    fn shutdown(
        &mut self,
        this: Resource<GuestTcp>,
        how: ShutdownType,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table().get(&this)?;
        let Some(sock) = socket.sock_ref() else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        let how = match how {
            ShutdownType::Receive => std::net::Shutdown::Read,
            ShutdownType::Send => std::net::Shutdown::Write,
            ShutdownType::Both => std::net::Shutdown::Both,
        };
        // A peer that is already gone makes this fail; the socket is done
        // either way.
        let _ = sock.shutdown(how);
        Ok(Ok(()))
    }

    fn drop(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<()> {
        // Fails (and traps the guest) if its streams are still alive.
        self.table().delete(this)?;
        Ok(())
    }
}

/// The result of a finished task, without blocking.
fn futures_now<T>(mut handle: tokio::task::JoinHandle<T>) -> Option<T> {
    match std::pin::Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.ok(),
        Poll::Pending => None,
    }
}

/// The read half of a connection, as a `wasi:io` input stream.
struct Reader {
    stream: Arc<TcpStream>,
    eof: bool,
    policed: Arc<Policed>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Reader {
    async fn ready(&mut self) {
        if !self.eof {
            let _ = self.stream.readable().await;
        }
    }
}

impl InputStream for Reader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.eof {
            return Err(StreamError::Closed);
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        let allowed = self.policed.read_allowance(&self.stream, size.min(MAX_IO));
        if allowed == 0 {
            // At its inbound byte limit: closed by the host.
            self.eof = true;
            return Err(StreamError::Closed);
        }
        let mut buf = BytesMut::with_capacity(allowed);
        match self.stream.try_read_buf(&mut buf) {
            Ok(0) => {
                self.eof = true;
                Err(StreamError::Closed)
            }
            Ok(n) => {
                self.policed.received(n);
                Ok(buf.freeze())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => Err(StreamError::LastOperationFailed(e.into())),
        }
    }
}

/// The write half of a connection, as a `wasi:io` output stream. What the
/// socket does not take at once waits in `pending` (at most [`MAX_IO`]
/// bytes: a permit from `check-write` never exceeds the room left) and is
/// written as the socket drains.
struct Writer {
    stream: Arc<TcpStream>,
    pending: BytesMut,
    /// Bytes the guest may still write on its last `check-write`.
    permit: usize,
    /// A `flush` is in progress: `check-write` permits nothing until the
    /// bytes written before it are sent.
    flushing: bool,
    failed: Option<std::io::ErrorKind>,
    policed: Arc<Policed>,
}

/// A drained buffer larger than this is let go, so an idle connection keeps
/// no memory from a past burst.
const KEEP_BUFFER: usize = 4096;

impl Writer {
    /// Sends as much of `data` as the socket takes now; returns how much.
    fn send_now(&mut self, data: &[u8]) -> StreamResult<usize> {
        if let Some(kind) = self.failed {
            return Err(failure(kind));
        }
        let mut sent = 0;
        while sent < data.len() {
            match self.stream.try_write(&data[sent..]) {
                Ok(n) => {
                    sent += n;
                    self.policed.sent(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.failed = Some(e.kind());
                    self.pending = BytesMut::new();
                    return Err(failure(e.kind()));
                }
            }
        }
        Ok(sent)
    }

    /// Writes as much of `pending` as the socket takes now.
    fn drain(&mut self) -> StreamResult<()> {
        if self.pending.is_empty() {
            return self.failed.map_or(Ok(()), |kind| Err(failure(kind)));
        }
        let pending = std::mem::take(&mut self.pending);
        let sent = self.send_now(&pending)?;
        self.pending = pending;
        let _ = self.pending.split_to(sent);
        if self.pending.is_empty() && self.pending.capacity() > KEEP_BUFFER {
            self.pending = BytesMut::new();
        }
        Ok(())
    }
}

fn failure(kind: std::io::ErrorKind) -> StreamError {
    if kind == std::io::ErrorKind::BrokenPipe {
        StreamError::Closed
    } else {
        StreamError::LastOperationFailed(std::io::Error::from(kind).into())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {
        while !self.pending.is_empty() && self.failed.is_none() {
            if self.stream.writable().await.is_err() {
                return;
            }
            if self.drain().is_err() {
                return;
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > self.permit {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "write of {} bytes past the {} that check-write permitted",
                bytes.len(),
                self.permit
            )));
        }
        if !self
            .policed
            .may_send(&self.stream, self.pending.len(), bytes.len())
        {
            // At its outbound byte limit: closed by the host.
            self.failed = Some(std::io::ErrorKind::BrokenPipe);
            return Err(StreamError::Closed);
        }
        self.permit -= bytes.len();
        if self.pending.is_empty() {
            // The common case: straight to the socket, no copy.
            let sent = self.send_now(&bytes)?;
            self.pending.extend_from_slice(&bytes[sent..]);
            Ok(())
        } else {
            self.pending.extend_from_slice(&bytes);
            self.drain()
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.drain()?;
        self.flushing = !self.pending.is_empty();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.drain()?;
        if self.pending.is_empty() {
            self.flushing = false;
        }
        self.permit = if self.flushing {
            0
        } else {
            MAX_IO - self.pending.len()
        };
        Ok(self.permit)
    }

    async fn cancel(&mut self) {
        // Bytes the guest wrote are sent before the stream goes, within
        // reason: a peer that never reads cannot hold the guest forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.ready()).await;
    }
}

/// Binds and listens on `addr` for a tenant: the host's listener, handed to
/// each guest version in turn. Port 0 picks a free port.
pub fn host_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
