//! A connection's `wasi:io` streams (WASI 0.2): the read half, policed and
//! with readiness as exact as POSIX `poll`, and the write half, which
//! buffers what the socket does not take at once and sends the last bytes
//! of a closed connection off the guest's thread.

use crate::limits::connection::Policed;
use crate::wasi::sockets::tcp::TcpSocket;
use crate::wasi::view::GuestWasi;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::Interest;
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

/// Most bytes one `read` returns, and one `write` permit.
pub const MAX_IO: usize = 64 * 1024;

/// Pushes the input and output streams of `stream` as children of `socket`,
/// the input one known to the fast poll.
pub fn push_streams(
    state: &mut GuestWasi,
    socket: &Resource<TcpSocket>,
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

/// The read half of a connection, as a `wasi:io` input stream.
struct Reader {
    stream: Arc<TcpStream>,
    eof: bool,
    policed: Arc<Policed>,
    /// The instance uses ready sets (see crate::wasi::poll::FastPoll).
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
                    // drives its own event loop (crate::runtime::workers), not while
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
        let account = self.policed.account().clone();
        let cap = self.policed.max_lingering();
        let lingering = &account.counters.lingering;
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
                .account()
                .counters
                .lingering
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}
