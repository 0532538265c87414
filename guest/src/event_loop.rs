//! The single-threaded event loop every guest runs: one ready set (the
//! host's `tcphost:server/readiness`, or its portable stand-in over
//! `wasi:io/poll`) watches the listener and every connection at once, so one slow or silent client never holds up the
//! others, and a turn of the loop costs time for the clients that sent
//! something, not for every client connected.
//!
//! Per connection the loop reads at most [`READ_SIZE`] bytes at a time, hands
//! them to the [`Protocol`], and writes the answer out as fast as the client
//! takes it. Memory is bounded: while more than [`MAX_PENDING`] bytes of
//! answers wait for a slow reader, the loop stops reading from that client.

use crate::ReadySet;
use crate::bindings::wasi::io::poll::Pollable;
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::bindings::wasi::sockets::network::ErrorCode;
use crate::bindings::wasi::sockets::tcp::{ShutdownType, TcpSocket};
use crate::net::{self, Listener};
use crate::{Protocol, log};
use slab::Slab;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The largest read handed to the protocol, as in the seed server.
pub const READ_SIZE: u64 = 2048;

/// Answer bytes a connection may have waiting before the loop stops reading
/// from it until the client catches up.
pub const MAX_PENDING: usize = 64 * 1024;

/// Reads per connection per turn of the loop, so a client that always has
/// data cannot starve the others.
const READS_PER_TURN: usize = 8;

/// Clients accepted per turn of the loop, so a connection storm cannot starve
/// the clients already connected.
const ACCEPTS_PER_TURN: usize = 64;

/// Whether a `check-write` permit lasts until writes use it up, saving a
/// call per reply: this host's does. WASI 0.2 promises a permit for the
/// next write only, and wasmtime's own streams hold to that (a second write
/// on the same permit traps), so the portable form asks before each write.
const PERMIT_LASTS: bool = cfg!(feature = "readiness");

/// Events handled per turn; the rest come first in the next.
const EVENTS_PER_TURN: u32 = 512;

/// The first listener's token in the ready set; the next ones count down
/// from it. A connection's tokens are its slab index times two, plus one
/// for its output stream, so they never come near.
const FIRST_LISTENER: u64 = u64::MAX;

/// Serves clients on every granted address with `protocol`, forever;
/// returns only if it cannot start, saying why.
pub fn run<P: Protocol>(mut protocol: P) -> Result<Infallible, String> {
    let set = ReadySet::new();
    let mut listeners = Vec::new();
    for addr in net::listen_addrs()? {
        let listener =
            net::listen(addr).map_err(|e| format!("cannot listen on {addr}: {}", e.message()))?;
        log!("listening on {addr}");
        if !set.insert(&listener.ready, FIRST_LISTENER - listeners.len() as u64) {
            return Err(format!("the host refused to watch the listener on {addr}"));
        }
        listeners.push(listener);
    }
    let mut connections: Slab<Connection<P::Session>> = Slab::new();
    loop {
        // Log lines of the last turn go out in one write before waiting.
        crate::log::flush();
        for token in set.wait(EVENTS_PER_TURN) {
            if let Some(listener) = usize::try_from(FIRST_LISTENER - token)
                .ok()
                .and_then(|i| listeners.get(i))
            {
                accept(listener, &set, &mut connections, &mut protocol);
                continue;
            }
            let Ok(id) = usize::try_from(token / 2) else {
                continue;
            };
            // An earlier event in this batch may have closed it.
            let Some(conn) = connections.get_mut(id) else {
                continue;
            };
            let step = if token % 2 == 0 {
                conn.on_readable(&mut protocol)
            } else {
                conn.on_writable()
            };
            if step == Step::Close {
                let mut conn = connections.remove(id);
                // Out of the set before its pollables go (the portable set
                // holds their handles; the host's would let go by itself).
                conn.unwatch(&set, id);
                conn.close(&mut protocol);
            } else {
                conn.watch(&set, id);
            }
        }
    }
}

/// The tokens of connection `id`'s input and output streams.
fn tokens(id: usize) -> (u64, u64) {
    let read = id as u64 * 2;
    (read, read + 1)
}

/// Whether a connection lives on after an event.
#[derive(PartialEq, Eq)]
enum Step {
    Continue,
    Close,
}

/// Accepts every waiting client, up to [`ACCEPTS_PER_TURN`].
fn accept<P: Protocol>(
    listener: &Listener,
    set: &ReadySet,
    connections: &mut Slab<Connection<P::Session>>,
    protocol: &mut P,
) {
    for _ in 0..ACCEPTS_PER_TURN {
        let (socket, input, output) = match listener.socket.accept() {
            Ok(accepted) => accepted,
            Err(ErrorCode::WouldBlock) => return,
            Err(e) => {
                log!("accept failed: {}", e.message());
                return;
            }
        };
        let peer = match socket.remote_address() {
            Ok(peer) => net::from_wasi(peer),
            // The client is already gone; nothing to serve.
            Err(_) => continue,
        };
        log!("connected: {peer}");
        let session = protocol.connect(peer);
        let id = connections.insert(Connection {
            readable: input.subscribe(),
            writable: output.subscribe(),
            input,
            output,
            socket,
            peer,
            session: Some(session),
            pending: Vec::new(),
            sent: 0,
            permit: 0,
            eof: false,
            watching_read: false,
            watching_write: false,
        });
        connections[id].watch(set, id);
    }
}

/// One client connection.
struct Connection<S> {
    // Field order is drop order: pollables before their streams, streams
    // before their socket, or the host traps with "resource has children".
    readable: Pollable,
    writable: Pollable,
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
    peer: SocketAddr,
    /// `None` only while being handed to `Protocol::disconnect`.
    session: Option<S>,
    /// Answers not yet accepted by the output stream, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    /// Bytes the output stream has agreed to take without another
    /// `check-write`.
    permit: usize,
    /// The client closed its side; answer what is pending, then close.
    eof: bool,
    /// `readable` is in the ready set.
    watching_read: bool,
    /// `writable` is in the ready set.
    watching_write: bool,
}

impl<S> Connection<S> {
    fn unsent(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// Puts in the ready set the streams the connection waits on now, and
    /// takes out the others (the set would keep reporting a readable
    /// client the loop does not read from).
    fn watch(&mut self, set: &ReadySet, id: usize) {
        let (read, write) = tokens(id);
        let wants = self.wants_read();
        if wants != self.watching_read {
            self.watching_read = wants;
            if wants {
                set.insert(&self.readable, read);
            } else {
                set.remove(read);
            }
        }
        let wants = self.wants_write();
        if wants != self.watching_write {
            self.watching_write = wants;
            if wants {
                set.insert(&self.writable, write);
            } else {
                set.remove(write);
            }
        }
    }

    /// Takes the connection's streams out of the ready set.
    fn unwatch(&mut self, set: &ReadySet, id: usize) {
        let (read, write) = tokens(id);
        if std::mem::take(&mut self.watching_read) {
            set.remove(read);
        }
        if std::mem::take(&mut self.watching_write) {
            set.remove(write);
        }
    }

    fn wants_read(&self) -> bool {
        !self.eof && self.unsent() < MAX_PENDING
    }

    /// Waiting to write: answers are pending, or the client has half-closed
    /// and the last write must complete before the stream is dropped
    /// (dropping it earlier would make the host wait inside the drop, and the
    /// whole guest with it).
    fn wants_write(&self) -> bool {
        self.unsent() > 0 || self.eof
    }

    fn on_readable<P: Protocol<Session = S>>(&mut self, protocol: &mut P) -> Step {
        for _ in 0..READS_PER_TURN {
            if self.unsent() >= MAX_PENDING {
                break;
            }
            match self.input.read(READ_SIZE) {
                Ok(data) if data.is_empty() => break,
                Ok(data) => {
                    let full = data.len() as u64 == READ_SIZE;
                    log!(
                        "received {} bytes from {}: {}",
                        data.len(),
                        self.peer,
                        crate::log::escape(&data)
                    );
                    if let Some(session) = self.session.as_mut() {
                        protocol.receive(session, &data, &mut self.pending);
                    }
                    // A short read drained the socket: reading again would
                    // only cost a call that finds nothing.
                    if !full {
                        break;
                    }
                }
                Err(StreamError::Closed) => {
                    self.eof = true;
                    break;
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    log!("read from {} failed: {}", self.peer, e.to_debug_string());
                    return Step::Close;
                }
            }
        }
        self.on_writable()
    }

    /// Writes as much pending output as the stream accepts now.
    fn on_writable(&mut self) -> Step {
        while self.unsent() > 0 {
            // A permit from `check-write` lasts until writes use it up, so
            // most replies need no `check-write` call of their own; but a
            // reply is not split over the rest of an old permit (two
            // segments, and a client that reads once gets half a line):
            // ask again, and split only if the stream really is full.
            if self.permit < self.unsent() {
                self.permit = match self.output.check_write() {
                    Ok(0) => break,
                    Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                    Err(e) => return self.write_failed(e),
                };
            }
            let end = self
                .pending
                .len()
                .min(self.sent.saturating_add(self.permit));
            if let Err(e) = self.output.write(&self.pending[self.sent..end]) {
                return self.write_failed(e);
            }
            self.permit -= end - self.sent;
            if !PERMIT_LASTS {
                self.permit = 0;
            }
            self.sent = end;
        }
        if self.unsent() == 0 {
            self.pending.clear();
            self.sent = 0;
        } else if self.sent >= self.pending.len() / 2 {
            self.pending.drain(..self.sent);
            self.sent = 0;
        }
        if self.eof && self.unsent() == 0 {
            // Close only once the host has finished the last write.
            return match self.output.check_write() {
                Ok(0) => Step::Continue,
                _ => Step::Close,
            };
        }
        Step::Continue
    }

    fn write_failed(&self, e: StreamError) -> Step {
        match e {
            StreamError::Closed => log!("{} stopped reading", self.peer),
            StreamError::LastOperationFailed(e) => {
                log!("write to {} failed: {}", self.peer, e.to_debug_string())
            }
        }
        Step::Close
    }

    fn close<P: Protocol<Session = S>>(mut self, protocol: &mut P) {
        log!("disconnected: {}", self.peer);
        if let Some(session) = self.session.take() {
            protocol.disconnect(session);
        }
        // The client may already be gone; closing proceeds either way.
        let _ = self.socket.shutdown(ShutdownType::Both);
    }
}
