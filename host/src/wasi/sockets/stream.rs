//! A connection's two halves, independent of the WASI version: reading,
//! policed (bytes, idle time) and with readiness as exact as POSIX `poll`;
//! writing, policed too, buffered for what the socket does not take at
//! once, with the last bytes of a closed connection sent off the guest's
//! thread. WASI 0.2 writes go to the socket at once; WASI 0.3 writes wait
//! in the buffer for the end of the guest's turn ([`SendBatch`]), so one
//! turn's replies leave together. Each version's bindings
//! wrap these in its own stream types (crate::wasi::p2::streams,
//! crate::wasi::p3::streams).
//!
//! About 650 lines on purpose: the two halves share the connection's
//! policing, readiness and closing, and are kept side by side.

use crate::limits::connection::Policed;
use crate::wasi::seam::Tenancy;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes one `read` returns, and one `write` permit.
pub const MAX_IO: usize = 64 * 1024;

/// Why a stream operation did not succeed.
#[derive(Debug)]
pub enum StreamFailure {
    /// The stream is closed (by the peer, or by the host at a limit).
    Closed,
    /// The last operation failed.
    Failed(std::io::Error),
    /// The guest broke the stream's rules: a trap.
    Trap(String),
}

/// The read half of a connection.
pub struct Receiver {
    stream: Arc<TcpStream>,
    eof: bool,
    policed: Arc<Policed>,
    /// Replies taken but not yet sent (WASI 0.3), sent before the host
    /// closes the connection at its inbound limit.
    sends: Option<SendBatch>,
    /// The instance uses ready sets (see crate::wasi::poll::DirectPoll).
    optimistic: Arc<AtomicBool>,
    /// Set by the socket's `shutdown(receive)` (WASI 0.2): the stream is
    /// closed from then on, and what the kernel still holds is discarded
    /// (Linux would go on handing it out).
    shut: Option<Arc<AtomicBool>>,
}

impl Receiver {
    /// The read half of `stream`, policed by `policed`; `optimistic` is
    /// the instance's choice of readiness (see crate::wasi::poll::DirectPoll).
    pub fn new(stream: Arc<TcpStream>, policed: Arc<Policed>, optimistic: Arc<AtomicBool>) -> Self {
        Receiver {
            stream,
            eof: false,
            policed,
            sends: None,
            optimistic,
            shut: None,
        }
    }

    /// The same, closed once `shut` is set (by `shutdown(receive)`).
    pub fn closed_by(mut self, shut: Arc<AtomicBool>) -> Self {
        self.shut = Some(shut);
        self
    }

    /// Whether the socket was shut down for receiving.
    fn is_shut(&self) -> bool {
        self.shut
            .as_ref()
            .is_some_and(|shut| shut.load(Ordering::Relaxed))
    }

    /// The same, whose connection's replies wait in `sends` (WASI 0.3):
    /// they are sent before the host closes the connection at its limit.
    pub fn sending_in(mut self, sends: SendBatch) -> Self {
        self.sends = Some(sends);
        self
    }

    /// Waits until a read returns data or the end.
    pub async fn ready(&mut self) {
        if !self.eof && !self.is_shut() {
            let _ = self.stream.readable().await;
        }
    }

    /// Up to `size` bytes received (none if none are waiting), the end of
    /// the stream, or a failure.
    pub fn read(&mut self, size: usize) -> Result<Bytes, StreamFailure> {
        if self.eof || self.is_shut() {
            self.eof = true;
            return Err(StreamFailure::Closed);
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        let allowed = self.policed.read_allowance(&self.stream, size.min(MAX_IO));
        if allowed == 0 {
            // At its inbound byte limit: closed by the host.
            self.eof = true;
            return Err(StreamFailure::Closed);
        }
        let mut buf = BytesMut::with_capacity(allowed);
        match self.stream.try_read_buf(&mut buf) {
            Ok(0) => {
                self.eof = true;
                Err(StreamFailure::Closed)
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
            Err(e) => Err(StreamFailure::Failed(e)),
        }
    }
}

impl Receiver {
    /// Shuts the connection down in `how` (WASI 0.3 does when a stream is
    /// dropped); a peer already gone makes this fail, which changes nothing.
    pub fn shutdown(&self, how: std::net::Shutdown) {
        let _ = socket2::SockRef::from(self.stream.as_ref()).shutdown(how);
    }

    /// Waits until a read returns data or the end (a zero-length WASI 0.3
    /// read asks this).
    pub fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.eof || self.policed.at_inbound_limit() {
            return std::task::Poll::Ready(());
        }
        self.stream.poll_read_ready(cx).map(|_| ())
    }

    /// Reads into `buf` (WASI 0.3: straight into the guest's memory): how
    /// many bytes, or the end of the stream, or a failure; pending (with
    /// `cx` woken) while nothing has arrived.
    pub fn poll_read(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<Result<usize, StreamFailure>> {
        use std::task::Poll;
        loop {
            if self.eof {
                return Poll::Ready(Err(StreamFailure::Closed));
            }
            let sends = &self.sends;
            let allowed =
                self.policed
                    .read_allowance_then(&self.stream, buf.len().min(MAX_IO), || {
                        if let Some(sends) = sends {
                            sends.send_now();
                        }
                    });
            if allowed == 0 {
                // At its inbound byte limit: closed by the host.
                self.eof = true;
                continue;
            }
            if let Err(e) = std::task::ready!(self.stream.poll_read_ready(cx)) {
                return Poll::Ready(Err(StreamFailure::Failed(e)));
            }
            // A read that finds nothing clears the readiness, so the next
            // look waits for new data.
            match self.stream.try_read(&mut buf[..allowed]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.policed.received(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(StreamFailure::Failed(e))),
            }
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

/// The write half of a connection. What the socket does not take at once
/// waits in `pending` (at most [`MAX_IO`] bytes: a permit from
/// `check_write` never exceeds the room left) and is written as the socket
/// drains.
pub struct Sender {
    stream: Arc<TcpStream>,
    pending: BytesMut,
    /// Bytes the guest may still write on its last `check-write`.
    permit: usize,
    /// A `flush` is in progress: `check-write` permits nothing until the
    /// bytes written before it are sent.
    flushing: bool,
    failed: Option<std::io::ErrorKind>,
    policed: Arc<Policed>,
    /// Whose connection: its cap bounds the closed connections whose last
    /// bytes are still being sent.
    tenant: Arc<dyn Tenancy>,
    /// tokio has seen the socket writable (a write through it succeeded):
    /// from then on its readiness is the whole truth.
    seen_writable: bool,
    /// A WASI 0.3 write waiting for the bytes before it to be sent: woken
    /// by the end-of-turn flush ([`SendBatch::flush`]) once they are. Only
    /// the flush watches the socket's write readiness while bytes wait:
    /// tokio keeps one waker per direction, and a second watcher would
    /// take it from the first (the write would then wait forever).
    waiting: Option<std::task::Waker>,
    /// `shutdown(send)` was called (WASI 0.2): the stream is closed, and
    /// what it still held is sent before the end of the stream.
    shut: bool,
}

/// Longest the host keeps sending what a guest wrote before it closed the
/// connection, to a client that reads slowly or not at all.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// A drained buffer larger than this is let go, so an idle connection keeps
/// no memory from a past burst.
const KEEP_BUFFER: usize = 4096;

impl Sender {
    /// The write half of `stream`, policed by `policed`, of `tenant`.
    pub fn new(stream: Arc<TcpStream>, policed: Arc<Policed>, tenant: Arc<dyn Tenancy>) -> Self {
        Sender {
            stream,
            pending: BytesMut::new(),
            permit: 0,
            flushing: false,
            failed: None,
            policed,
            tenant,
            seen_writable: false,
            waiting: None,
            shut: false,
        }
    }

    /// Sends as much of `data` as the socket takes now; returns how much.
    fn send_now(&mut self, data: &[u8]) -> Result<usize, StreamFailure> {
        if let Some(kind) = self.failed {
            return Err(failure(kind));
        }
        let mut sent = 0;
        while sent < data.len() {
            match self.stream.try_write(&data[sent..]) {
                Ok(n) => {
                    sent += n;
                    self.policed.sent(n);
                    self.seen_writable = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !self.seen_writable => {
                    // tokio learns that a socket registered since its
                    // reactor last turned is writable only at the next
                    // turn; the guest may meanwhile write and then wait
                    // for something else (a fresh private pair, at once).
                    // Ask the kernel directly until tokio has seen it
                    // writable; its readiness stays exact (a real EAGAIN
                    // arms it again).
                    match socket2::SockRef::from(self.stream.as_ref())
                        .send_with_flags(&data[sent..], libc::MSG_NOSIGNAL)
                    {
                        Ok(n) if n > 0 => {
                            sent += n;
                            self.policed.sent(n);
                        }
                        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                            self.failed = Some(e.kind());
                            self.pending = BytesMut::new();
                            return Err(failure(e.kind()));
                        }
                        _ => break,
                    }
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
    fn drain(&mut self) -> Result<(), StreamFailure> {
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

impl Sender {
    /// Waits until the socket takes bytes (a zero-length WASI 0.3 write
    /// asks this).
    pub fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.failed.is_some() {
            return std::task::Poll::Ready(());
        }
        if !self.pending.is_empty() {
            // The flush watches the socket while bytes wait (`waiting`).
            let _ = self.drain();
            if !self.pending.is_empty() && self.failed.is_none() {
                self.wait_for_flush(cx);
                return std::task::Poll::Pending;
            }
            return std::task::Poll::Ready(());
        }
        self.stream.poll_write_ready(cx).map(|_| ())
    }

    /// Leaves `cx` to be woken by the end-of-turn flush once the bytes
    /// waiting are sent (see `waiting`).
    fn wait_for_flush(&mut self, cx: &std::task::Context<'_>) {
        match &mut self.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
    }

    /// Takes bytes from `data` into the send buffer, sent at the end of
    /// the guest's turn by [`SendBatch::flush`] (WASI 0.3): how many, or a
    /// failure; pending (with `cx` woken) while the last bytes taken are
    /// still unsent and the socket takes none, so at most [`MAX_IO`] bytes
    /// wait per connection. The connection must be in the instance's
    /// batch, whose flush wakes `cx` once they are sent.
    pub fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<Result<usize, StreamFailure>> {
        use std::task::Poll;
        if !self.pending.is_empty() {
            self.drain()?;
            if !self.pending.is_empty() {
                self.wait_for_flush(cx);
                return Poll::Pending;
            }
        }
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(failure(kind)));
        }
        let data = &data[..data.len().min(MAX_IO)];
        if !self.policed.may_send(&self.stream, 0, data.len()) {
            // At its outbound byte limit: closed by the host.
            self.failed = Some(std::io::ErrorKind::BrokenPipe);
            return Poll::Ready(Err(StreamFailure::Closed));
        }
        self.pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Sends what the socket takes now of what waits: whether some still
    /// waits (and can be sent).
    pub fn send_waiting(&mut self) -> bool {
        let _ = self.drain();
        self.has_pending()
    }

    /// Whether bytes taken wait to be sent.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() && self.failed.is_none()
    }

    /// Whether sending failed (the peer is gone, or the byte limit).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Sends what the socket takes of the buffer; if some is left, `cx` is
    /// woken once the socket takes more. Returns whether some is left;
    /// when none is, the write waiting for it (`waiting`) is woken.
    fn flush_into(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        loop {
            if self.drain().is_err() || self.pending.is_empty() {
                if let Some(waker) = self.waiting.take() {
                    waker.wake();
                }
                return false;
            }
            match self.stream.poll_write_ready(cx) {
                std::task::Poll::Pending => return true,
                std::task::Poll::Ready(Err(e)) => {
                    self.failed = Some(e.kind());
                    if let Some(waker) = self.waiting.take() {
                        waker.wake();
                    }
                    return false;
                }
                std::task::Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// A connection's write half, shared: between a WASI 0.3 send stream and
/// the instance's [`SendBatch`], or between a WASI 0.2 output stream and
/// its socket, whose `shutdown(send)` sends what waits before the end.
pub struct Batched {
    /// The write half.
    pub sender: std::sync::Mutex<Sender>,
    /// In the batch now.
    queued: AtomicBool,
}

impl Batched {
    /// `sender`, not yet in a batch.
    pub fn new(sender: Sender) -> Arc<Self> {
        Arc::new(Batched {
            sender: std::sync::Mutex::new(sender),
            queued: AtomicBool::new(false),
        })
    }

    /// The write half, locked (never poisoned: nothing panics under it).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Sender> {
        self.sender.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connections of one guest instance with bytes taken but not yet
/// sent: sent together at the end of the guest's turn, so a reader on the
/// other side is woken once for a batch of replies rather than once per
/// reply (WASI 0.3; a WASI 0.2 guest's event loop writes a batch per turn
/// itself).
#[derive(Clone, Default)]
pub struct SendBatch(Arc<std::sync::Mutex<Vec<Arc<Batched>>>>);

impl SendBatch {
    /// Puts `connection` in the batch, unless it is.
    pub fn add(&self, connection: &Arc<Batched>) {
        if !connection.queued.swap(true, Ordering::Relaxed) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(connection.clone());
        }
    }

    /// Sends what the sockets take now of what waits, without waiting.
    pub fn send_now(&self) {
        let list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for connection in list.iter() {
            let _ = connection.lock().drain();
        }
    }

    /// Sends what each connection in the batch has waiting; a connection
    /// the socket does not take all of stays, and `cx` is woken when it
    /// takes more.
    pub fn flush(&self, cx: &mut std::task::Context<'_>) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            return;
        }
        list.retain(|connection| {
            let left = connection.lock().flush_into(cx);
            if !left {
                connection.queued.store(false, Ordering::Relaxed);
            }
            left
        });
    }
}

fn failure(kind: std::io::ErrorKind) -> StreamFailure {
    if kind == std::io::ErrorKind::BrokenPipe {
        StreamFailure::Closed
    } else {
        StreamFailure::Failed(std::io::Error::from(kind))
    }
}

impl Sender {
    /// Waits until what was written is sent (or sending failed).
    pub async fn ready(&mut self) {
        while !self.pending.is_empty() && self.failed.is_none() {
            if self.stream.writable().await.is_err() {
                return;
            }
            if self.drain().is_err() {
                return;
            }
        }
    }

    /// Writes `bytes`, within the permit of the last `check_write`.
    pub fn write(&mut self, bytes: Bytes) -> Result<(), StreamFailure> {
        if self.shut {
            return Err(StreamFailure::Closed);
        }
        if bytes.len() > self.permit {
            return Err(StreamFailure::Trap(format!(
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
            return Err(StreamFailure::Closed);
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

    /// Starts sending everything written so far: `check_write` permits
    /// nothing until it is sent.
    pub fn flush(&mut self) -> Result<(), StreamFailure> {
        if self.shut {
            return Err(StreamFailure::Closed);
        }
        self.drain()?;
        self.flushing = !self.pending.is_empty();
        Ok(())
    }

    /// How many bytes may be written now.
    pub fn check_write(&mut self) -> Result<usize, StreamFailure> {
        if self.shut {
            return Err(StreamFailure::Closed);
        }
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

    /// `shutdown(send)` (WASI 0.2): the stream is closed for the guest;
    /// what it holds is sent, off the guest's thread, before the end of
    /// the stream, as when a WASI 0.3 send stream is dropped.
    pub fn shut_down(&mut self) {
        self.shut = true;
        self.linger_then(Some(std::net::Shutdown::Write));
    }

    /// The connection is being closed: what the guest wrote and the socket
    /// has not taken yet is sent off the guest's thread.
    pub fn linger(&mut self) {
        self.linger_then(None);
    }

    /// [`Sender::linger`], then shuts the connection down in `how` once
    /// the last bytes are sent (or given up on); at once if none wait.
    pub fn linger_then(&mut self, how: Option<std::net::Shutdown>) {
        let shutdown = move |stream: &TcpStream| {
            if let Some(how) = how {
                let _ = socket2::SockRef::from(stream).shutdown(how);
            }
        };
        // Bytes the guest wrote are sent before the connection goes, off
        // the guest's thread (a peer that does not read must not hold the
        // guest up), within LINGER and at most as many connections at once
        // as the tenant's cap; past that they are abandoned.
        if self.pending.is_empty() || self.failed.is_some() {
            shutdown(&self.stream);
            return;
        }
        let account = self.policed.account().clone();
        let cap = self.tenant.max_connections();
        let lingering = &account.counters.lingering;
        if lingering
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_err()
        {
            shutdown(&self.stream);
            return;
        }
        let mut rest = Sender {
            pending: std::mem::take(&mut self.pending),
            ..Sender::new(
                self.stream.clone(),
                self.policed.clone(),
                self.tenant.clone(),
            )
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(LINGER, rest.ready()).await;
            shutdown(&rest.stream);
            rest.policed
                .account()
                .counters
                .lingering
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}
