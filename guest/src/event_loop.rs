//! The single-threaded event loop every guest runs: one `wasi:io/poll` call
//! waits on the listener and on every connection at once, so one slow or
//! silent client never holds up the others.
//!
//! Per connection the loop reads at most [`READ_SIZE`] bytes at a time, hands
//! them to the [`Protocol`], and writes the answer out as fast as the client
//! takes it. Memory is bounded: while more than [`MAX_PENDING`] bytes of
//! answers wait for a slow reader, the loop stops reading from that client.

use crate::bindings::wasi::clocks::monotonic_clock::subscribe_duration;
use crate::bindings::wasi::io::poll::{Pollable, poll};
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

/// A connection active within this many turns is polled every turn.
const HOT_TURNS: u64 = 32;

/// Every connection, quiet or not, is polled at least every this many turns.
const FULL_POLL_EVERY: u64 = 16;

/// Longest a poll of only the active connections waits before every
/// connection is polled again: the most a quiet client's first message can
/// be delayed, in nanoseconds.
const COLD_WAIT_NS: u64 = 2_000_000;

/// Serves clients on the granted address with `protocol`, forever; returns
/// only if it cannot start, saying why.
pub fn run<P: Protocol>(mut protocol: P) -> Result<Infallible, String> {
    let addr = net::listen_addr()?;
    let listener =
        net::listen(addr).map_err(|e| format!("cannot listen on {addr}: {}", e.message()))?;
    log!("listening on {addr}");

    let mut connections: Slab<Connection<P::Session>> = Slab::new();
    let mut interests: Vec<Interest> = Vec::new();
    let mut ready: Vec<Interest> = Vec::new();
    let mut turn: u64 = 0;
    let mut last_full: u64 = 0;
    let mut force_full = true;
    loop {
        turn += 1;
        // The host's poll costs time for every pollable listed, ready or
        // not. Connections that were active lately ("hot") are polled every
        // turn; quiet ones only every FULL_POLL_EVERY turns, or once the
        // hot ones have been silent for COLD_WAIT.
        let full = force_full || turn - last_full >= FULL_POLL_EVERY;
        interests.clear();
        let mut pollables: Vec<&Pollable> = Vec::with_capacity(2 + 2 * connections.len());
        pollables.push(&listener.ready);
        interests.push(Interest::Accept);
        let mut skipped = 0usize;
        for (id, conn) in connections.iter() {
            if !full && !conn.is_hot(turn) {
                skipped += 1;
                continue;
            }
            if conn.wants_read() {
                pollables.push(&conn.readable);
                interests.push(Interest::Read(id));
            }
            if conn.wants_write() {
                pollables.push(&conn.writable);
                interests.push(Interest::Write(id));
            }
        }
        let timer = (skipped > 0).then(|| subscribe_duration(COLD_WAIT_NS));
        if let Some(timer) = &timer {
            pollables.push(timer);
            interests.push(Interest::Timer);
        }
        if full {
            last_full = turn;
        }
        force_full = false;
        // Log lines of the last turn go out in one write before waiting.
        crate::log::flush();
        let ready_indices = poll(&pollables);
        drop(pollables);
        drop(timer);

        ready.clear();
        ready.extend(ready_indices.iter().map(|&i| interests[i as usize]));
        for &event in &ready {
            match event {
                Interest::Accept => accept(&listener, &mut connections, &mut protocol, turn),
                // The hot connections were quiet: look at every one next.
                Interest::Timer => force_full = true,
                Interest::Read(id) | Interest::Write(id) => {
                    // An earlier event in this batch may have closed it.
                    let Some(conn) = connections.get_mut(id) else {
                        continue;
                    };
                    conn.last_active = turn;
                    let step = match event {
                        Interest::Read(_) => conn.on_readable(&mut protocol),
                        _ => conn.on_writable(),
                    };
                    if step == Step::Close {
                        connections.remove(id).close(&mut protocol);
                    }
                }
            }
        }
    }
}

/// What a pollable in the poll list stands for.
#[derive(Clone, Copy)]
enum Interest {
    Accept,
    Read(usize),
    Write(usize),
    /// The bound on a poll that left quiet connections out.
    Timer,
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
    connections: &mut Slab<Connection<P::Session>>,
    protocol: &mut P,
    turn: u64,
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
        connections.insert(Connection {
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
            last_active: turn,
        });
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
    /// The last turn of the loop with an event on this connection.
    last_active: u64,
}

impl<S> Connection<S> {
    fn unsent(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// Active lately, or with work in progress: polled every turn.
    fn is_hot(&self, turn: u64) -> bool {
        turn - self.last_active <= HOT_TURNS || self.wants_write()
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
            // most replies need no `check-write` call of their own.
            if self.permit == 0 {
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
