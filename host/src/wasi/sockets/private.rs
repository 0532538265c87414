//! A guest instance's private loopback: listeners a guest may open on a
//! loopback address with port 0, and connections to them from the same
//! instance, that nothing else can reach.
//!
//! Why: language runtimes talk to themselves over loopback TCP. Python's
//! asyncio makes its self-pipe with `socket.socketpair()`, which on WASI
//! binds 127.0.0.1:0, listens, connects to it and accepts: with only its
//! granted addresses, a stock `asyncio.run()` server cannot start. Here
//! such a bind gets a port of the instance's own (no kernel port is taken
//! on the host's loopback), a connect to it gets one end of a socket pair
//! made by the host and the listener the other: no address another
//! tenant, another instance or any process on the machine can reach.
//!
//! A granted address keeps its meaning: a port is private only when the
//! guest binds a loopback address with port 0, private ports are never
//! ports the grant names, and a connect reaches a private listener only
//! from the instance that opened it. Bounded per instance by
//! [`MAX_PORTS`] (listeners and connections together: a connection holds
//! its port until both ends are gone, accepted or still queued), counted
//! in the tenant's `private_connections_open` gauge.

use crate::account::Account;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;

/// Private ports one instance may hold at once: its listeners and the
/// client ends of its connections. A socketpair costs two descriptors
/// and two kernel buffers, so this bounds what a guest can take.
pub const MAX_PORTS: usize = 64;

/// The first private port handed out: the IANA dynamic range, where a
/// kernel would pick one.
const FIRST_PORT: u16 = 49152;

/// Kernel buffer size for each end of a private pair: a self-pipe carries
/// a byte per wake-up.
const PAIR_BUFFER: usize = 64 * 1024;

/// Whether a bind to `addr` asks for a private port: a loopback address
/// with port 0.
pub fn is_private_bind(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback() && addr.port() == 0
}

/// One instance's private loopback (in crate::wasi::view::GuestWasi).
#[derive(Clone, Default)]
pub struct PrivateNet(Arc<Mutex<Net>>);

#[derive(Default)]
struct Net {
    /// Ports taken, listeners and connections alike.
    taken: std::collections::HashSet<u16>,
    /// Listening ports, to the queue of connections waiting to be accepted.
    listeners: HashMap<SocketAddr, Weak<Queue>>,
    /// Where the search for a free port starts.
    next: u16,
}

/// A private port, given back when dropped.
pub struct Port {
    net: PrivateNet,
    /// The address the guest sees.
    pub addr: SocketAddr,
}

impl Port {
    /// Listens on this port: the queue its connections wait in.
    pub fn listen(&self) -> Arc<Queue> {
        let queue = Arc::new(Queue::default());
        self.net
            .lock()
            .listeners
            .insert(self.addr, Arc::downgrade(&queue));
        queue
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let mut net = self.net.lock();
        net.taken.remove(&self.addr.port());
        net.listeners.remove(&self.addr);
    }
}

/// Why a private port or connection could not be had.
#[derive(Debug)]
pub enum Refused {
    /// The instance holds [`MAX_PORTS`].
    Full,
    /// The system would not make the socket pair (out of descriptors).
    System(std::io::Error),
}

impl PrivateNet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free private port on `ip`, none of `reserved` (the ports the
    /// grant names, so a granted address keeps its meaning).
    pub fn bind(&self, ip: std::net::IpAddr, reserved: &[u16]) -> Result<Arc<Port>, Refused> {
        let mut net = self.lock();
        if net.taken.len() >= MAX_PORTS {
            return Err(Refused::Full);
        }
        let span = u32::from(u16::MAX - FIRST_PORT) + 1;
        let start = net.next.max(FIRST_PORT);
        for step in 0..span {
            let port = FIRST_PORT + ((u32::from(start - FIRST_PORT) + step) % span) as u16;
            if net.taken.contains(&port) || reserved.contains(&port) {
                continue;
            }
            net.taken.insert(port);
            net.next = port.checked_add(1).unwrap_or(FIRST_PORT);
            return Ok(Arc::new(Port {
                net: self.clone(),
                addr: SocketAddr::new(ip, port),
            }));
        }
        Err(Refused::Full)
    }

    /// The private port `addr` itself, if the instance has not taken it
    /// and holds fewer than [`MAX_PORTS`].
    pub fn take(&self, addr: SocketAddr) -> Option<Arc<Port>> {
        let mut net = self.lock();
        if net.taken.len() >= MAX_PORTS || !net.taken.insert(addr.port()) {
            return None;
        }
        Some(Arc::new(Port {
            net: self.clone(),
            addr,
        }))
    }

    /// Whether `addr` is one of this instance's private listeners.
    pub fn is_listening(&self, addr: &SocketAddr) -> bool {
        self.lock()
            .listeners
            .get(addr)
            .is_some_and(|q| q.strong_count() > 0)
    }

    /// Connects to the private listener at `to` from port `from` (one the
    /// client socket bound) or a new private port: the client's end of
    /// the pair and its port, the other end queued for the listener's
    /// `accept`. `None` if no listener is there.
    pub fn connect(
        &self,
        to: SocketAddr,
        reserved: &[u16],
        account: &Arc<Account>,
        from: Option<Arc<Port>>,
    ) -> Option<Result<PrivateConnection, Refused>> {
        let queue = self.lock().listeners.get(&to).and_then(Weak::upgrade)?;
        let port = match from.map_or_else(|| self.bind(to.ip(), reserved), Ok) {
            Ok(port) => port,
            Err(refused) => return Some(Err(refused)),
        };
        let (mine, theirs) = match pair() {
            Ok(pair) => pair,
            Err(e) => return Some(Err(Refused::System(e))),
        };
        let open = Arc::new(Open::new(account));
        queue.push(PrivateConnection {
            stream: theirs,
            ends: Arc::new(Ends {
                local: to,
                remote: port.addr,
                _port: port.clone(),
                _open: open.clone(),
            }),
        });
        Some(Ok(PrivateConnection {
            stream: mine,
            ends: Arc::new(Ends {
                local: port.addr,
                remote: to,
                _port: port,
                _open: open,
            }),
        }))
    }
}

/// One end of a private connection.
pub struct PrivateConnection {
    /// This end of the pair.
    pub stream: TcpStream,
    /// Its addresses, port and count.
    pub ends: Arc<Ends>,
}

/// What a connected socket keeps of its end of a private connection.
pub struct Ends {
    /// The address the guest sees as its own.
    pub local: SocketAddr,
    /// The address the guest sees as the peer's.
    pub remote: SocketAddr,
    /// The client end's port, held by both ends: a pair counts against
    /// [`MAX_PORTS`] until both are gone, waiting in a listener's queue
    /// or not, so connections are bounded as ports are.
    _port: Arc<Port>,
    /// Counts the connection in the tenant's gauge while either end lives.
    _open: Arc<Open>,
}

/// A private connection counted in the tenant's `private_connections`.
struct Open(Arc<Account>);

impl Open {
    fn new(account: &Arc<Account>) -> Self {
        account
            .counters
            .private_open
            .fetch_add(1, Ordering::Relaxed);
        Open(account.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.counters.private_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A private listener's connections waiting to be accepted.
#[derive(Default)]
pub struct Queue {
    waiting: Mutex<VecDeque<PrivateConnection>>,
    waker: Mutex<Option<Waker>>,
}

impl Queue {
    fn push(&self, connection: PrivateConnection) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(connection);
        if let Some(waker) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            waker.wake();
        }
    }

    /// The next connection waiting, if any.
    pub fn pop(&self) -> Option<PrivateConnection> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Ready while a connection waits; if none does, `cx` is woken when
    /// one arrives.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Poll::Ready(());
        }
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        // A push between the look and the waker's registration.
        if self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// A connected pair of stream sockets with no address (`socketpair(2)`),
/// each end as the stream type the host's TCP connections use: reading,
/// writing, readiness and shutdown are the same calls. TCP-only options
/// set on them fail, which the host ignores as it does for any option.
fn pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    let end = |end: std::os::unix::net::UnixStream| {
        end.set_nonblocking(true)?;
        let sock = socket2::SockRef::from(&end);
        let _ = sock.set_send_buffer_size(PAIR_BUFFER);
        let _ = sock.set_recv_buffer_size(PAIR_BUFFER);
        TcpStream::from_std(std::net::TcpStream::from(std::os::fd::OwnedFd::from(end)))
    };
    Ok((end(a)?, end(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn only_a_loopback_bind_to_port_zero_is_private() {
        assert!(is_private_bind(&"127.0.0.1:0".parse().unwrap()));
        assert!(is_private_bind(&"[::1]:0".parse().unwrap()));
        assert!(!is_private_bind(&"127.0.0.1:8080".parse().unwrap()));
        assert!(!is_private_bind(&"0.0.0.0:0".parse().unwrap()));
        assert!(!is_private_bind(&"10.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn private_ports_avoid_the_granted_ones_and_are_bounded() {
        let net = PrivateNet::default();
        let first = net.bind(LOCALHOST, &[FIRST_PORT]).unwrap();
        assert_eq!(first.addr.port(), FIRST_PORT + 1);
        let mut held = vec![first];
        while held.len() < MAX_PORTS {
            held.push(net.bind(LOCALHOST, &[]).unwrap());
        }
        assert!(matches!(net.bind(LOCALHOST, &[]), Err(Refused::Full)));
        held.pop();
        assert!(net.bind(LOCALHOST, &[]).is_ok());
    }

    #[tokio::test]
    async fn a_connect_reaches_the_instances_own_listener_and_nothing_else() {
        let account = Arc::new(Account::new("t"));
        let net = PrivateNet::default();
        let port = net.bind(LOCALHOST, &[]).unwrap();
        assert!(
            net.connect(port.addr, &[], &account, None).is_none(),
            "not listening yet"
        );
        let queue = port.listen();
        let client = net
            .connect(port.addr, &[], &account, None)
            .unwrap()
            .unwrap();
        let server = queue.pop().unwrap();
        assert_eq!(
            (server.ends.local, server.ends.remote),
            (client.ends.remote, client.ends.local)
        );
        assert_eq!(account.counters.private_open.load(Ordering::Relaxed), 1);
        client.stream.writable().await.unwrap();
        client.stream.try_write(b"x").unwrap();
        server.stream.readable().await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(server.stream.try_read(&mut byte).unwrap(), 1);
        // Another instance's loopback has no such listener.
        assert!(
            PrivateNet::default()
                .connect(port.addr, &[], &account, None)
                .is_none()
        );
        // The port is held until both ends are gone.
        drop(client);
        assert!(net.lock().taken.len() == 2);
        drop(server);
        assert!(net.lock().taken.len() == 1);
        assert_eq!(account.counters.private_open.load(Ordering::Relaxed), 0);
        drop(queue);
        assert!(!net.is_listening(&port.addr));
    }
}
