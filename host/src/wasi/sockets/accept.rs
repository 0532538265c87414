//! Taking a client from a listening socket: whether an instance may take
//! one now (decided once, in [`turn`], for an accept and for a listener's
//! readiness alike), the accept itself (clients past a cap reset, those
//! gone passed over, a shortage of descriptors backed off), and the
//! readiness a guest waits on. WASI 0.2 accepts through
//! [`super::tcp::TcpSocket::accept`], WASI 0.3 through an [`Acceptor`].

use super::accept_error;
use super::options::Options;
use super::private::Queue;
use super::tcp::{Connection, Hold, State, TcpSocket};
use super::turn::{Turn, client_waiting, poll_accept, turn};
use super::{Family, SocketError};
use crate::account::InstanceAccount;
use crate::limits::admission::{GateWaiter, is_resource_error};
use crate::wasi::seam::Tenancy;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// Queued clients one accept call may refuse (at a cap) or find gone
/// before it returns `would-block` for now.
const MAX_PASSED_OVER: u32 = 64;

/// A listening socket, as accepting needs it.
pub(super) struct AcceptFrom<'a> {
    pub(super) listener: &'a AsyncFd<TcpListener>,
    pub(super) tenant: &'a Arc<dyn Tenancy>,
    pub(super) instance: &'a Arc<InstanceAccount>,
    /// The listener's options, which its clients inherit.
    pub(super) options: Options,
}

impl AcceptFrom<'_> {
    /// Takes the next client from a listening socket, resetting those past
    /// the connection cap (`limits`), or past the cap for their address.
    fn next_client(
        &self,
        limits: &crate::config::model::Limits,
    ) -> Result<(TcpStream, SocketAddr), SocketError> {
        let listener = self.listener;
        let cap = u64::from(limits.max_connections);
        let per_peer = limits.max_connections_per_peer;
        let (account, admission) = (self.tenant.account(), self.tenant.admission());
        match turn(&**self.tenant, self.instance, || {
            client_waiting(listener.get_ref())
        }) {
            Turn::Take => admission.guest_accepting(),
            Turn::NoClient => {
                admission.guest_accepting();
                return Err(SocketError::WouldBlock);
            }
            Turn::NotCurrent | Turn::Paused | Turn::Defer => {
                return Err(SocketError::WouldBlock);
            }
        }
        // Clients refused or gone, past which this call gives its thread
        // back (the listener stays ready, so the guest's next accept goes
        // on): a flood of clients at the cap cannot hold the guest thread,
        // and the tenants sharing it, in one call.
        let mut passed_over = 0;
        loop {
            if passed_over >= MAX_PASSED_OVER {
                return Err(SocketError::WouldBlock);
            }
            // Through the readiness: an accept that finds the queue empty
            // clears it only if nothing arrived meanwhile, so no wakeup is
            // lost between an empty queue and the next wait. No waker is
            // registered here: that is for whoever waits (see
            // crate::wasi::poll).
            let (client, peer) = match listener.try_io(Interest::READABLE, TcpListener::accept) {
                Ok(client) => client,
                // The client gave up while queued, or Linux reported a
                // network error of that client's on the listener: take the
                // next one (WASI leaves both to the host to absorb).
                Err(e) if is_client_error(&e) => {
                    passed_over += 1;
                    continue;
                }
                // The clients passed over were the last: none left.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    crate::limits::admission::took_client(self.instance);
                    return Err(SocketError::WouldBlock);
                }
                Err(e) if is_resource_error(&e) => {
                    let addr = listener
                        .get_ref()
                        .local_addr()
                        .unwrap_or(([0, 0, 0, 0], 0).into());
                    admission.backoff.failed(account, addr, &e);
                    return Err(SocketError::WouldBlock);
                }
                Err(e) => return Err(SocketError::from_io(&e)),
            };
            admission.backoff.succeeded();
            crate::limits::admission::took_client(self.instance);
            admission.took_client();
            let Some(client) = admission.admit(account, client, peer, cap, per_peer) else {
                passed_over += 1;
                continue;
            };
            // Registering with the event loop can fail (out of memory,
            // the epoll watch limit): the client is closed and the guest
            // told, never trapped.
            return client
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(client))
                .map(|client| (client, peer))
                .map_err(|e| accept_error(&e));
        }
    }

    /// The next client admitted under the instance's `limits`, counted for
    /// the instance, as a connected socket that inherits the listener's
    /// options.
    pub(super) fn accept(
        &self,
        limits: &crate::config::model::Limits,
    ) -> Result<Connection, SocketError> {
        let (stream, peer) = self.next_client(limits)?;
        let _ = stream.set_nodelay(true);
        // The client inherits the listener's options, as WASI says.
        let family = Family::of(&peer);
        self.options.apply(&socket2::SockRef::from(&stream), family);
        let stream = Arc::new(stream);
        let policed = self.tenant.police(peer);
        let watchdog = policed
            .clone()
            .watch_idle(Arc::downgrade(&stream))
            .map(|watch| tokio::spawn(watch).abort_handle());
        let cap = u64::from(limits.max_connections);
        let open = self
            .tenant
            .open_connection(peer.ip(), cap, self.instance, watchdog);
        let mut socket = TcpSocket::with_state(
            family,
            self.instance.clone(),
            self.tenant.clone(),
            State::Connected {
                stream: stream.clone(),
                policed: policed.clone(),
                open: Some(Arc::new(open)),
                private: None,
            },
        );
        socket.options = self.options;
        Ok(Connection {
            socket,
            stream,
            policed,
        })
    }
}

/// A listening socket's clients, as a WASI 0.3 `stream<tcp-socket>` takes
/// them: it may outlive the socket, and keeps the socket's claim on its
/// address while it lives.
pub struct Acceptor {
    pub(super) readiness: AcceptReadiness,
    /// The listener's options as they are now, which its clients inherit.
    pub(super) options: Arc<std::sync::Mutex<Options>>,
    /// The listener's address family.
    pub(super) family: Family,
    /// Keeps the listening socket's claim on its address.
    pub(super) _hold: Hold,
}

impl Acceptor {
    /// The listener's options now.
    fn options(&self) -> Options {
        *self.options.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready when a client may be accepted (see [`AcceptReadiness`]).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.readiness.poll(cx)
    }

    /// The next client admitted under the instance's `limits`, counted for
    /// the instance; pending (with `cx` woken) until there is one.
    pub fn poll_accept(
        &self,
        cx: &mut Context<'_>,
        limits: &crate::config::model::Limits,
    ) -> Poll<Result<Connection, SocketError>> {
        let (listener, tenant, instance) = match &self.readiness.0 {
            Readiness::Host {
                listener,
                tenant,
                instance,
                ..
            } => (listener, tenant, instance),
            Readiness::Private {
                queue,
                tenant,
                instance,
            } => loop {
                std::task::ready!(queue.poll_ready(cx));
                if let Some(connection) = queue.pop() {
                    let mut listener =
                        TcpSocket::new(self.family, instance.clone(), tenant.clone());
                    listener.options = self.options();
                    return Poll::Ready(Ok(listener.private_client(connection)));
                }
            },
        };
        let from = AcceptFrom {
            listener,
            tenant,
            instance,
            options: self.options(),
        };
        loop {
            std::task::ready!(self.readiness.poll(cx));
            // Ready means a client waits and this version may take it; one
            // that is gone (or refused at a cap) meanwhile sends us back to
            // waiting, which registers `cx` again.
            match from.accept(limits) {
                Err(SocketError::WouldBlock) => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// Whether a listening socket has a client its guest version may accept,
/// checked directly: what a listener's pollable waits for.
#[derive(Clone)]
pub struct AcceptReadiness(pub(super) Readiness);

#[derive(Clone)]
pub(super) enum Readiness {
    /// A host listener's.
    Host {
        /// The listener (this version's duplicate of the host's socket).
        listener: Arc<AsyncFd<TcpListener>>,
        /// Whose listener.
        tenant: Arc<dyn Tenancy>,
        /// The guest instance that subscribed.
        instance: Arc<InstanceAccount>,
        /// This pollable's place among the waiters for the tenant's accept
        /// gate.
        waiter: Arc<GateWaiter>,
    },
    /// A private listener's (super::private): ready while a connection
    /// waits in its queue.
    Private {
        queue: Arc<Queue>,
        /// Whose instance, for the sockets it hands out.
        tenant: Arc<dyn Tenancy>,
        instance: Arc<InstanceAccount>,
    },
}

impl AcceptReadiness {
    /// Ready now; if not, `cx` is woken when it may be (see `poll_accept`).
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.0 {
            Readiness::Host {
                listener,
                tenant,
                instance,
                waiter,
            } => poll_accept(listener, &**tenant, instance, waiter, cx),
            Readiness::Private { queue, .. } => queue.poll_ready(cx),
        }
    }

    /// The address of what the readiness is read from (the listener, or
    /// the private queue): pollables with the same source share its waker.
    pub fn source(&self) -> usize {
        match &self.0 {
            Readiness::Host { listener, .. } => Arc::as_ptr(listener) as *const () as usize,
            Readiness::Private { queue, .. } => Arc::as_ptr(queue) as *const () as usize,
        }
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

/// Accepting, as a listening socket does it.
impl TcpSocket {
    /// `accept`: the next client admitted under the instance's `limits`,
    /// counted for the instance, as a connected socket that inherits this
    /// one's options.
    pub fn accept(&self, limits: &crate::config::model::Limits) -> Result<Connection, SocketError> {
        let listener = match &self.state {
            State::Listening { listener, .. } => listener,
            State::PrivateListening { queue, .. } => {
                return queue
                    .pop()
                    .map(|c| self.private_client(c))
                    .ok_or(SocketError::WouldBlock);
            }
            _ => return Err(SocketError::InvalidState),
        };
        AcceptFrom {
            listener,
            tenant: &self.tenant,
            instance: &self.instance,
            options: self.options,
        }
        .accept(limits)
    }

    /// A listening socket's clients, for a stream of them that may outlive
    /// the socket (WASI 0.3 `listen`); `None` unless listening.
    pub fn acceptor(&mut self) -> Option<Acceptor> {
        let readiness = self.accept_readiness()?;
        let options = self
            .listen_options
            .get_or_insert_with(|| Arc::new(std::sync::Mutex::new(self.options)))
            .clone();
        Some(Acceptor {
            readiness,
            options,
            family: self.family,
            _hold: self.hold(),
        })
    }

    /// A direct check of whether a client may be accepted, for a
    /// listening socket's pollable (see crate::wasi::poll).
    pub fn accept_readiness(&self) -> Option<AcceptReadiness> {
        match &self.state {
            State::Listening { listener, .. } => Some(AcceptReadiness(Readiness::Host {
                listener: listener.clone(),
                tenant: self.tenant.clone(),
                instance: self.instance.clone(),
                waiter: self.tenant.admission().gate.waiter(),
            })),
            State::PrivateListening { queue, .. } => Some(AcceptReadiness(Readiness::Private {
                queue: queue.clone(),
                tenant: self.tenant.clone(),
                instance: self.instance.clone(),
            })),
            _ => None,
        }
    }
}
