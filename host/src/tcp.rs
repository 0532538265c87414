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

use crate::connection::{CapReaper, GateWaiter, Policed, is_resource_error, refuse_client};
use crate::policy::log_refusal;
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
    /// Kernel buffer sizes the guest asked for, applied once connected.
    receive_buffer: Option<usize>,
    send_buffer: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_alive: false,
            keep_alive_idle: 7_200_000_000_000,
            keep_alive_interval: 75_000_000_000,
            keep_alive_count: 9,
            hop_limit: 64,
            receive_buffer: None,
            send_buffer: None,
        }
    }
}

impl Options {
    /// Applies the options that differ from a fresh socket's to `socket`
    /// (best effort: the kernel may round or refuse a value); costs nothing
    /// for the defaults, the common case on every accept.
    fn apply(&self, socket: &socket2::SockRef<'_>, family: IpAddressFamily) {
        let defaults = Options::default();
        if self.keep_alive != defaults.keep_alive {
            self.apply_keep_alive(socket);
        }
        if self.keep_alive_params() != defaults.keep_alive_params() {
            self.apply_keep_alive_params(socket);
        }
        if self.hop_limit != defaults.hop_limit {
            self.apply_hop_limit(socket, family);
        }
        self.apply_buffers(socket);
    }

    fn keep_alive_params(&self) -> (WasiDuration, WasiDuration, u32) {
        (
            self.keep_alive_idle,
            self.keep_alive_interval,
            self.keep_alive_count,
        )
    }

    fn apply_keep_alive(&self, socket: &socket2::SockRef<'_>) {
        let _ = socket.set_keepalive(self.keep_alive);
    }

    fn apply_keep_alive_params(&self, socket: &socket2::SockRef<'_>) {
        let secs = |nanos: WasiDuration| std::time::Duration::from_nanos(nanos);
        let _ = socket.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(secs(self.keep_alive_idle))
                .with_interval(secs(self.keep_alive_interval))
                .with_retries(self.keep_alive_count),
        );
    }

    fn apply_hop_limit(&self, socket: &socket2::SockRef<'_>, family: IpAddressFamily) {
        let hops = u32::from(self.hop_limit);
        let _ = match family {
            IpAddressFamily::Ipv4 => socket.set_ttl_v4(hops),
            IpAddressFamily::Ipv6 => socket.set_unicast_hops_v6(hops),
        };
    }

    fn apply_buffers(&self, socket: &socket2::SockRef<'_>) {
        if let Some(size) = self.receive_buffer {
            let _ = socket.set_recv_buffer_size(size);
        }
        if let Some(size) = self.send_buffer {
            let _ = socket.set_send_buffer_size(size);
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
        /// Woken when the tenant's accept gate opens (crate::connection).
        waiter: Arc<GateWaiter>,
    },
    /// An outbound connection in progress: the connect itself, not a task,
    /// so dropping the socket cancels it and closes its descriptor.
    Connecting(Connect),
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

/// A connection as `accept` hands it to the guest: the socket and its
/// input and output streams.
type Accepted = (
    Resource<GuestTcp>,
    Resource<DynInputStream>,
    Resource<DynOutputStream>,
);

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

/// The granted addresses an instance's sockets have bound.
pub type Claims = Arc<std::sync::Mutex<std::collections::HashSet<SocketAddr>>>;

impl Claim {
    /// Claims `addr` in `claims`, unless one of the instance's sockets has.
    fn take(claims: &Claims, addr: SocketAddr) -> Option<Claim> {
        let fresh = claims
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
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.addr);
    }
}

/// One outbound connection of a tenant, being made or open, counted
/// against its cap while it lives.
struct Outbound {
    tenant: Arc<Tenant>,
    /// The idle watchdog, once connected, if the tenant has an idle timeout.
    watchdog: Option<tokio::task::AbortHandle>,
}

impl Outbound {
    /// Counts one more outbound connection of `tenant`, unless it has `cap`.
    fn take(tenant: &Arc<Tenant>, cap: u32) -> Option<Outbound> {
        let open = &tenant.counters.outbound_open;
        open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < u64::from(cap)).then_some(n + 1)
        })
        .ok()?;
        Counters::bump(&tenant.counters.outbound_started);
        Some(Outbound {
            tenant: tenant.clone(),
            watchdog: None,
        })
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        self.tenant
            .counters
            .outbound_open
            .fetch_sub(1, Ordering::Relaxed);
    }
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
    /// The granted address this socket has bound, if any.
    _claim: Option<Claim>,
    /// Set from `start-connect` while the outbound connection is being
    /// made or is open: counts against the tenant's outbound cap.
    _outbound: Option<Outbound>,
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
            State::Connecting(connect) => {
                let result = connect.await;
                self.state = State::ConnectDone(result);
            }
            State::Listening {
                listener, waiter, ..
            } => {
                let (tenant, generation) = (&self.tenant, self.generation);
                std::future::poll_fn(|cx| poll_accept(listener, tenant, generation, waiter, cx))
                    .await;
            }
            _ => {}
        }
    }
}

/// Whether `listener` (of guest version `generation`) has a client to
/// accept now; if not, `cx` is woken when it may have (through `waiter`
/// while the tenant's accept gate is closed). Exact, as POSIX `poll` is:
/// ready only while a client waits in the queue and this version may take
/// it (it is the current one, and accepting is not paused), so a server
/// that polls and then accepts never blocks in the accept.
pub fn poll_accept(
    listener: &AsyncFd<TcpListener>,
    tenant: &Tenant,
    generation: u64,
    waiter: &GateWaiter,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if !tenant.is_current(generation) {
            // Set before the second look, so an opening in between is not
            // missed.
            waiter.set(cx.waker());
            if !tenant.is_current(generation) {
                return Poll::Pending;
            }
        }
        if tenant.accept_backoff.paused().is_none() {
            break;
        }
        waiter.set(cx.waker());
        // False if the pause ended meanwhile: look again.
        if tenant.accept_backoff.wake_after_pause(&tenant.accept_gate) {
            return Poll::Pending;
        }
    }
    loop {
        let mut guard = match listener.poll_read_ready(cx) {
            Poll::Ready(Ok(guard)) => guard,
            // Let `accept` report the error.
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        };
        // The readiness stays set after the last client was taken until an
        // accept finds the queue empty: ask the kernel, without accepting.
        if client_waiting(listener.get_ref()) {
            return Poll::Ready(());
        }
        guard.clear_ready();
    }
}

/// Whether the listen queue of `listener` holds a client (or an error to
/// report): `poll(2)` without waiting.
fn client_waiting(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for a descriptor `listener` keeps open.
    let n = unsafe { libc::poll(&raw mut fd, 1, 0) };
    n != 0
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`): WASI sockets are
/// IPv6-only, and refuse these with `invalid-argument`.
fn is_ipv4_mapped(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some())
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
        optimistic: state.fast.optimistic.clone(),
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
    let input = table.push_child(input, socket)?;
    // Both or neither: a stream left behind would keep the connection
    // open and make the socket's drop fail.
    let output = match table.push_child(output, socket) {
        Ok(output) => output,
        Err(e) => {
            table.delete(input)?;
            return Err(e.into());
        }
    };
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
            _claim: None,
            _outbound: None,
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
                // The client gave up while queued, or Linux reported a
                // network error of that client's on the listener: take the
                // next one (WASI leaves both to the host to absorb).
                Err(e) if is_client_error(&e) => continue,
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
                Err(e) => return Ok(Err(error_code(&e))),
            };
            let tenant = &socket.tenant;
            tenant.accept_backoff.succeeded();
            let over_cap = tenant.counters.connections_open.load(Ordering::Relaxed) >= cap;
            let over_peer_cap = per_peer.is_some_and(|max| tenant.peers.open(peer.ip()) >= max);
            if !over_cap && !over_peer_cap {
                // Registering with the event loop can fail (out of memory,
                // the epoll watch limit): the client is closed and the
                // guest told, never trapped.
                return Ok(client
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(client))
                    .map(|client| (client, peer))
                    .map_err(|e| accept_error(&e)));
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
    /// Pushes `socket` and its streams into the guest's table; a full table
    /// (the guest's handle limit) is `new-socket-limit`, never a trap.
    fn push_connection(
        &mut self,
        socket: GuestTcp,
        stream: &Arc<TcpStream>,
        policed: Arc<Policed>,
    ) -> wasmtime::Result<Result<Accepted, ErrorCode>> {
        let Ok(client) = self.table().push(socket) else {
            return Ok(Err(ErrorCode::NewSocketLimit));
        };
        match push_streams(self, &client, stream, policed) {
            Ok((input, output)) => Ok(Ok((client, input, output))),
            Err(_) => {
                self.table().delete(client)?;
                Ok(Err(ErrorCode::NewSocketLimit))
            }
        }
    }

    /// Stores a socket option that must not be zero (WASI's rule for every
    /// size, count and duration option), as [`TenantState::set_option`].
    fn set_nonzero<V: PartialEq + Default>(
        &mut self,
        this: &Resource<GuestTcp>,
        value: V,
        store: impl FnOnce(&mut Options, V),
        apply: fn(&Options, &socket2::SockRef<'_>, IpAddressFamily),
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if value == V::default() {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.set_option(this, |options| store(options, value), apply)
    }

    /// A kernel buffer size of a connected socket (a typical default before
    /// it connects).
    fn buffer_size(
        &mut self,
        this: &Resource<GuestTcp>,
        asked: fn(&Options) -> Option<usize>,
        get: fn(&socket2::Socket) -> std::io::Result<usize>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        let socket = self.table().get(this)?;
        Ok(Ok(socket
            .sock_ref()
            .and_then(|s| get(&s).ok())
            .or(asked(&socket.options))
            .unwrap_or(131_072) as u64))
    }

    /// Stores a socket option with `store` and, once connected, applies
    /// it to the real socket with `apply`.
    fn set_option(
        &mut self,
        this: &Resource<GuestTcp>,
        store: impl FnOnce(&mut Options),
        apply: fn(&Options, &socket2::SockRef<'_>, IpAddressFamily),
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table().get_mut(this)?;
        store(&mut socket.options);
        if let Some(sock) = socket.sock_ref() {
            apply(&socket.options, &sock, socket.family);
        }
        Ok(Ok(()))
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
        let (grant, claims) = (self.grant.clone(), self.claims.clone());
        let socket = self.table().get_mut(&this)?;
        match socket.state {
            State::Fresh => {}
            State::BindStarted(_) => return Ok(Err(ErrorCode::ConcurrencyConflict)),
            _ => return Ok(Err(ErrorCode::InvalidState)),
        }
        if family_of(&addr) != socket.family || is_ipv4_mapped(&addr) {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpBind) {
            log_refusal(&socket.tenant, refusal, addr);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        // The implicit bind of a connect (wildcard, port 0) claims nothing.
        if !addr.ip().is_unspecified() || addr.port() != 0 {
            let Some(claim) = Claim::take(&claims, addr) else {
                return Ok(Err(ErrorCode::AddressInUse));
            };
            socket._claim = Some(claim);
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
        let cap = self.config.limits.max_outbound_connections;
        let socket = self.table().get_mut(&this)?;
        match socket.state {
            State::Fresh | State::Bound(_) => {}
            State::BindStarted(_) | State::Connecting(_) | State::ListenStarted(..) => {
                return Ok(Err(ErrorCode::ConcurrencyConflict));
            }
            _ => return Ok(Err(ErrorCode::InvalidState)),
        }
        if family_of(&addr) != socket.family
            || addr.port() == 0
            || addr.ip().is_unspecified()
            || is_ipv4_mapped(&addr)
        {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        if let Some(refusal) = grant.decide(addr, SocketAddrUse::TcpConnect) {
            log_refusal(&socket.tenant, refusal, addr);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        let Some(slot) = Outbound::take(&socket.tenant, cap) else {
            let name = socket.tenant.name();
            crate::policy::refuse(
                &socket.tenant,
                crate::policy::Capability::TcpConnect,
                format_args!(
                    "connect to {addr}: {name} has {cap} outbound connections open, its cap"
                ),
            );
            return Ok(Err(ErrorCode::NewSocketLimit));
        };
        socket._outbound = Some(slot);
        socket.state = State::Connecting(Box::pin(connect(addr, socket.options, socket.family)));
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
            // Not waited on yet: one look, which cannot lose the outcome
            // (a connect still under way is put back as it was).
            State::Connecting(mut connect) => {
                let look = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
                    Poll::Ready(connect.as_mut().poll(cx))
                }));
                match std::pin::pin!(look).poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(Poll::Ready(result)) => result,
                    _ => {
                        socket.state = State::Connecting(connect);
                        return Ok(Err(ErrorCode::WouldBlock));
                    }
                }
            }
            other => {
                socket.state = other;
                return Ok(Err(ErrorCode::NotInProgress));
            }
        };
        let stream = match result {
            Ok(stream) => stream,
            Err(e) => {
                socket._outbound = None;
                return Ok(Err(error_code(&e)));
            }
        };
        let stream = Arc::new(stream);
        let peer = stream.peer_addr().unwrap_or(([0, 0, 0, 0], 0).into());
        // Policed as the tenant's clients are: bytes and idle time.
        let policed = Policed::new(&socket.tenant, peer);
        if let Some(outbound) = &mut socket._outbound {
            outbound.watchdog = policed
                .clone()
                .watch_idle(Arc::downgrade(&stream))
                .map(|watch| tokio::spawn(watch).abort_handle());
        }
        socket.state = State::Connected {
            stream: stream.clone(),
            _open: None,
        };
        match push_streams(self, &this, &stream, policed) {
            Ok(streams) => Ok(Ok(streams)),
            // The guest's handle limit: the connection is closed.
            Err(_) => {
                self.table().get_mut(&this)?.state = State::Closed;
                Ok(Err(ErrorCode::NewSocketLimit))
            }
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
            State::BindStarted(_) | State::Connecting(_) | State::ListenStarted(..) => {
                return Ok(Err(ErrorCode::ConcurrencyConflict));
            }
            // Not bound (WASI has no implicit bind for listening), or
            // listening or connected already.
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
                        socket.state = State::Closed;
                        return Ok(Err(accept_error(&e)));
                    }
                };
                socket.state = State::Listening {
                    addr,
                    listener: Arc::new(listener),
                    waiter: socket.tenant.accept_gate.waiter(),
                };
                let (tenant, generation) = (socket.tenant.clone(), socket.generation);
                // From now on new clients come to this version, unless it is
                // an older one listening again or the host is stopping.
                if tenant.make_current(generation) {
                    tenant.set_state(crate::tenant::State::Running);
                }
                // A guest can listen in a loop: within the log budget.
                if let Some(left_out) = tenant.refusal_log.admit() {
                    let name = tenant.name();
                    let note = crate::log_budget::left_out_note(left_out);
                    tracing::info!(tenant = name, %addr, generation, "{name}: listening on {addr}{note}");
                }
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
    ) -> wasmtime::Result<Result<Accepted, ErrorCode>> {
        let (stream, peer) = match self.next_client(&this)? {
            Ok(client) => client,
            Err(code) => return Ok(Err(code)),
        };
        let _ = stream.set_nodelay(true);
        // The client inherits the listener's options, as WASI says.
        let options = self.table().get(&this)?.options;
        let family = family_of(&peer);
        options.apply(&socket2::SockRef::from(&stream), family);
        let stream = Arc::new(stream);
        let policed = Policed::new(&self.tenant, peer);
        let watchdog = policed
            .clone()
            .watch_idle(Arc::downgrade(&stream))
            .map(|watch| tokio::spawn(watch).abort_handle());
        let cap = u64::from(self.config.limits.max_connections);
        let open = OpenConnection::new(&self.tenant, &self.open, peer.ip(), watchdog, cap);
        let mut client = self.new_socket(
            family,
            State::Connected {
                stream: stream.clone(),
                _open: Some(open),
            },
        );
        client.options = options;
        self.push_connection(client, &stream, policed)
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
        self.set_option(
            &this,
            |o| o.keep_alive = value,
            |o, s, _| o.apply_keep_alive(s),
        )
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
        self.set_nonzero(
            &this,
            value,
            |o, v| o.keep_alive_idle = v,
            |o, s, _| o.apply_keep_alive_params(s),
        )
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
        self.set_nonzero(
            &this,
            value,
            |o, v| o.keep_alive_interval = v,
            |o, s, _| o.apply_keep_alive_params(s),
        )
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
        self.set_nonzero(
            &this,
            value,
            |o, v| o.keep_alive_count = v,
            |o, s, _| o.apply_keep_alive_params(s),
        )
    }

    fn hop_limit(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<Result<u8, ErrorCode>> {
        Ok(Ok(self.table().get(&this)?.options.hop_limit))
    }

    fn set_hop_limit(
        &mut self,
        this: Resource<GuestTcp>,
        value: u8,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.set_nonzero(
            &this,
            value,
            |o, v| o.hop_limit = v,
            Options::apply_hop_limit,
        )
    }

    fn receive_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        self.buffer_size(
            &this,
            |o| o.receive_buffer,
            socket2::Socket::recv_buffer_size,
        )
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let size = usize::try_from(value).unwrap_or(usize::MAX);
        self.set_nonzero(
            &this,
            size,
            |o, v| o.receive_buffer = Some(v),
            |o, s, _| o.apply_buffers(s),
        )
    }

    fn send_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        self.buffer_size(&this, |o| o.send_buffer, socket2::Socket::send_buffer_size)
    }

    fn set_send_buffer_size(
        &mut self,
        this: Resource<GuestTcp>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let size = usize::try_from(value).unwrap_or(usize::MAX);
        self.set_nonzero(
            &this,
            size,
            |o, v| o.send_buffer = Some(v),
            |o, s, _| o.apply_buffers(s),
        )
    }

    fn subscribe(&mut self, this: Resource<GuestTcp>) -> wasmtime::Result<Resource<DynPollable>> {
        let socket = self.table().get(&this)?;
        let fast = match &socket.state {
            State::Listening { listener, .. } => Some(crate::poll::Fast::Accept {
                listener: listener.clone(),
                tenant: socket.tenant.clone(),
                generation: socket.generation,
                waiter: socket.tenant.accept_gate.waiter(),
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

/// Connects to `addr` with the socket options the guest set before.
async fn connect(
    addr: SocketAddr,
    options: Options,
    family: IpAddressFamily,
) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
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

/// The error code for an accepted client (or listener) the host could not
/// take on: out of descriptors or memory is `new-socket-limit`.
fn accept_error(e: &std::io::Error) -> ErrorCode {
    if is_resource_error(e) {
        ErrorCode::NewSocketLimit
    } else {
        error_code(e)
    }
}

/// Whether an accept failed because of one client (it went away, or Linux
/// reports an error that client's connection already had), not the
/// listener: the next client can be taken at once.
fn is_client_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::ECONNREFUSED
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::EHOSTDOWN
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::ENONET
                | libc::EPROTO
                | libc::ENOPROTOOPT
        )
    )
}

/// The read half of a connection, as a `wasi:io` input stream.
struct Reader {
    stream: Arc<TcpStream>,
    eof: bool,
    policed: Arc<Policed>,
    /// The instance uses ready sets (see crate::poll::FastPoll).
    optimistic: Arc<std::sync::atomic::AtomicBool>,
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
                if !self.optimistic.load(Ordering::Relaxed)
                    && (n < allowed || unread(&self.stream) == 0)
                {
                    // The read emptied the socket: forget its readiness, so
                    // the stream is ready again only when a read will
                    // return data or the end (an end already seen stays
                    // ready: tokio keeps "read closed"). No event can slip
                    // in between the read and the clear: the guest thread
                    // drives its own event loop (crate::workers), not while
                    // in here; data arriving meanwhile raises a new event.
                    let _ = self.stream.try_io(Interest::READABLE, || {
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
                Ok(buf.freeze())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => Err(StreamError::LastOperationFailed(e.into())),
        }
    }
}

/// Bytes waiting to be read on `stream` (`FIONREAD`), or 1 if the kernel
/// will not say: only asked after a read filled its whole buffer.
fn unread(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, for a
    // descriptor `stream` keeps open.
    let ok = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &raw mut n) } == 0;
    if ok {
        usize::try_from(n).unwrap_or(1)
    } else {
        1
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

/// Longest the host keeps sending what a guest wrote before it closed the
/// connection, to a client that reads slowly or not at all.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

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
        // Bytes the guest wrote are sent before the connection goes, off
        // the guest's thread (a peer that does not read must not hold the
        // guest up), within LINGER and at most as many connections at once
        // as the tenant's cap; past that they are abandoned.
        if self.pending.is_empty() || self.failed.is_some() {
            return;
        }
        let tenant = self.policed.tenant().clone();
        let cap = u64::from(tenant.config().limits.max_connections);
        let lingering = &tenant.counters.lingering;
        if lingering
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_err()
        {
            return;
        }
        let mut rest = Writer {
            stream: self.stream.clone(),
            pending: std::mem::take(&mut self.pending),
            permit: 0,
            flushing: false,
            failed: None,
            policed: self.policed.clone(),
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(LINGER, rest.ready()).await;
            rest.policed
                .tenant()
                .counters
                .lingering
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Binds and listens on `addr` for a tenant: the host's listener, handed to
/// each guest version in turn. Port 0 picks a free port.
pub fn host_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // WASI sockets are IPv6-only: a guest granted `[::]:P` listens on
    // IPv6 alone, and `0.0.0.0:P` stays free for another tenant.
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_host_listener_is_ipv6_only_as_wasi_sockets_are() {
        let listener = super::host_listener("[::]:0".parse().unwrap()).unwrap();
        assert!(socket2::SockRef::from(&listener).only_v6().unwrap());
        let v4 = super::host_listener("0.0.0.0:0".parse().unwrap()).unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4());
    }
}
