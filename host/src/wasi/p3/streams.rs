//! The streams of WASI 0.3 sockets over the version-independent halves in
//! crate::wasi::sockets: a listener's clients ([`Clients`], a
//! `stream<tcp-socket>`), a connection's bytes in ([`Incoming`], read
//! straight into the guest's buffer) and out ([`Outgoing`], taken into a
//! bounded send buffer and sent with the instance's other replies at the
//! end of the guest's turn). Each holds its socket's share of the tenant's limits
//! (crate::wasi::sockets::tcp::Hold), as it may outlive the socket.

use super::bindings::error_code;
use super::bindings::wasi::sockets::types::ErrorCode;
use crate::limits::connection::Policed;
use crate::wasi::seam::Tenancy;
use crate::wasi::sockets::SocketError;
use crate::wasi::sockets::accept::Acceptor;
use crate::wasi::sockets::order::Reader;
use crate::wasi::sockets::stream::{Batched, Receiver, SendBatch, Sender, StreamFailure};
use crate::wasi::sockets::tcp::Hold;
use crate::wasi::view::WasiHost;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Destination, Resource, Source, StreamConsumer, StreamProducer, StreamResult,
};

use crate::wasi::sockets::tcp::TcpSocket;

/// Room asked of the guest's buffer for a read when the guest gave none
/// (a host-side buffer, used only if the guest's memory is not at hand).
const HOST_BUFFER: usize = 8192;

/// How a stream's completion future ends: sent exactly once, also when
/// the stream is dropped (a dropped sender would trap the guest).
struct Done(Option<oneshot::Sender<Result<(), ErrorCode>>>);

impl Done {
    fn new() -> (Self, oneshot::Receiver<Result<(), ErrorCode>>) {
        let (tx, rx) = oneshot::channel();
        (Done(Some(tx)), rx)
    }

    fn finish(&mut self, result: Result<(), ErrorCode>) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(result);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.finish(Ok(()));
    }
}

/// The end of a stream for `failure`: its completion result, or a trap.
/// `closed` is what a closed stream reports: the end of what the peer sent
/// (`Ok`), or, for sending, that the rest could not be sent (the peer is
/// gone, or the host cut the connection off at its byte limit).
fn end(
    done: &mut Done,
    failure: StreamFailure,
    closed: Result<(), ErrorCode>,
) -> Poll<wasmtime::Result<StreamResult>> {
    match failure {
        StreamFailure::Closed => done.finish(closed),
        StreamFailure::Failed(e) => done.finish(Err(error_code(SocketError::from_io(&e)))),
        StreamFailure::Trap(why) => return Poll::Ready(Err(wasmtime::format_err!("{why}"))),
    }
    Poll::Ready(Ok(StreamResult::Dropped))
}

/// What a producer or consumer answers when it cannot go on now: wait,
/// unless the guest is cancelling the read or write.
fn pending(finish: bool) -> Poll<wasmtime::Result<StreamResult>> {
    if finish {
        Poll::Ready(Ok(StreamResult::Cancelled))
    } else {
        Poll::Pending
    }
}

/// A listener's clients: each a connected socket pushed into the guest's
/// table, admitted under the instance's limits as WASI 0.2's `accept`.
pub struct Clients {
    acceptor: Acceptor,
}

impl Clients {
    /// The clients `acceptor` takes.
    pub fn new(acceptor: Acceptor) -> Self {
        Clients { acceptor }
    }
}

impl<D: WasiHost> StreamProducer<D> for Clients {
    type Item = Resource<TcpSocket>;
    type Buffer = Option<Resource<TcpSocket>>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        mut dst: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        // A zero-length read asks whether a client waits.
        if dst.remaining(&mut store) == Some(0) {
            return match self.acceptor.poll_ready(cx) {
                Poll::Ready(()) => Poll::Ready(Ok(StreamResult::Completed)),
                Poll::Pending => pending(finish),
            };
        }
        let wasi = store.data_mut().wasi();
        // Clients the host could not take on, skipped in this call; past
        // this many, the guest's thread gets a turn before the next.
        for _ in 0..SKIPS_PER_CALL {
            let connection = match self.acceptor.poll_accept(cx, &wasi.limits) {
                Poll::Ready(Ok(connection)) => connection,
                Poll::Ready(Err(e)) => {
                    // The stream stays open, as the WIT says: an error that
                    // is one client's (or the process's, for a while) costs
                    // that client, not the listener.
                    client_lost(wasi, format_args!("{e:?}"));
                    continue;
                }
                Poll::Pending => return pending(finish),
            };
            // At the guest's handle limit the client is closed (WASI 0.3
            // has no error for one client on this stream); counted and
            // logged as a refused connection.
            let Ok(socket) = wasi.table().push(connection.socket) else {
                client_lost(wasi, format_args!("its handle table is full"));
                continue;
            };
            dst.set_buffer(Some(socket));
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        cx.waker().wake_by_ref();
        pending(finish)
    }
}

/// Clients one read of the stream may skip (not taken on) before it lets
/// the guest's thread run: errors that repeat cannot spin the thread.
const SKIPS_PER_CALL: usize = 64;

/// A client accepted from the queue could not be handed to the guest
/// (`why`): it is closed, counted as refused, and logged within the
/// tenant's budget.
fn client_lost(wasi: &mut crate::wasi::view::GuestWasi, why: std::fmt::Arguments<'_>) {
    let account = wasi.tenant.account();
    crate::account::Counters::bump(&account.counters.connections_refused);
    if let Some(note) = account.may_log() {
        let name = account.name();
        tracing::warn!(
            tenant = name,
            "{name}: a client was closed before the guest got it: {why}{note}"
        );
    }
}

/// A connection's bytes in, read straight into the guest's buffer.
pub struct Incoming {
    receiver: Receiver,
    /// Its place in the instance's order of reads.
    reader: Reader,
    /// A zero-length read reported data: the read that follows has its
    /// turn already.
    reserved: bool,
    done: Done,
    _hold: Hold,
}

impl Incoming {
    /// The read half of `stream`, policed by `policed`, and the future
    /// that reports how it ended.
    pub fn new(
        stream: Arc<TcpStream>,
        policed: Arc<Policed>,
        hold: Hold,
        sends: SendBatch,
        reader: Reader,
    ) -> (Self, oneshot::Receiver<Result<(), ErrorCode>>) {
        let (done, result) = Done::new();
        // Readiness as exact as POSIX `poll`: a read that empties the
        // socket waits for new data.
        let optimistic = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let receiver = Receiver::new(stream, policed, optimistic).sending_in(sends);
        (
            Incoming {
                receiver,
                reader,
                reserved: false,
                done,
                _hold: hold,
            },
            result,
        )
    }
}

impl<D> StreamProducer<D> for Incoming {
    type Item = u8;
    type Buffer = bytes::BytesMut;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        dst: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let this = &mut *self;
        let zero = dst.remaining(&mut store) == Some(0);
        // The guest is here for its next read: the last one is done with,
        // unless it was a zero-length read, whose turn is this read's.
        let reserved = std::mem::take(&mut this.reserved);
        if !reserved {
            this.reader.came_back();
        }
        if finish {
            this.reader.cancelled();
        }
        if this.receiver.poll_ready(cx).is_pending() {
            if reserved {
                this.reader.came_back();
            }
            return pending(finish);
        }
        // Data (or the end) waits: finish the read when its turn comes
        // (crate::wasi::sockets::order). A read being cancelled does not
        // wait for its turn: nothing would poll it again.
        let admitted = reserved
            || if finish {
                this.reader.may_finish_now()
            } else {
                this.reader.may_finish(cx)
            };
        if !admitted {
            return pending(finish);
        }
        if zero {
            // "Ready" holds for the read that follows: it keeps this turn.
            this.reserved = true;
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        let mut dst = dst.as_direct(store, HOST_BUFFER);
        match this.receiver.poll_read(cx, dst.remaining()) {
            Poll::Ready(Ok(n)) => {
                dst.mark_written(n);
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(Err(failure)) => end(&mut this.done, failure, Ok(())),
            Poll::Pending => {
                this.reader.not_finished();
                pending(finish)
            }
        }
    }
}

impl Drop for Incoming {
    /// The guest dropped its receive stream: as `shutdown(SHUT_RD)`, the
    /// WIT says.
    fn drop(&mut self) {
        self.receiver.shutdown(std::net::Shutdown::Read);
    }
}

/// A connection's bytes out: a write is taken into the connection's send
/// buffer (at most [`crate::wasi::sockets::stream::MAX_IO`] bytes wait; the
/// next write waits until they are sent) and sent with the instance's
/// other replies at the end of the guest's turn ([`SendBatch`]).
pub struct Outgoing {
    sender: Arc<Batched>,
    batch: SendBatch,
    done: Done,
    _hold: Hold,
}

impl Outgoing {
    /// The write half of `stream` of `tenant`, policed by `policed`, sent
    /// in `batch`, and the future that reports how it ended.
    pub fn new(
        stream: Arc<TcpStream>,
        policed: Arc<Policed>,
        tenant: Arc<dyn Tenancy>,
        hold: Hold,
        batch: SendBatch,
    ) -> (Self, oneshot::Receiver<Result<(), ErrorCode>>) {
        let (done, result) = Done::new();
        (
            Outgoing {
                sender: Batched::new(Sender::new(stream, policed, tenant)),
                batch,
                done,
                _hold: hold,
            },
            result,
        )
    }
}

impl<D> StreamConsumer<D> for Outgoing {
    type Item = u8;

    fn poll_consume(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        src: Source<Self::Item>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let this = &mut *self;
        let mut src = src.as_direct(store);
        let mut sender = this.sender.lock();
        let taken = if src.remaining().is_empty() {
            sender.poll_ready(cx).map(|()| Ok(0))
        } else {
            sender.poll_take(cx, src.remaining())
        };
        drop(sender);
        match taken {
            Poll::Ready(Ok(n)) => {
                src.mark_read(n);
                if n > 0 {
                    this.batch.add(&this.sender);
                }
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(Err(failure)) => {
                end(&mut this.done, failure, Err(ErrorCode::ConnectionBroken))
            }
            Poll::Pending => {
                // Bytes wait: the batch's flush sends them and wakes this
                // write (crate::wasi::sockets::stream::Sender::poll_take).
                this.batch.add(&this.sender);
                pending(finish)
            }
        }
    }
}

impl Drop for Outgoing {
    /// The guest closed its send stream: as `shutdown(SHUT_WR)`, the WIT
    /// says, so the peer sees the end of the stream while the socket and
    /// its receive stream live on (WASI 0.3 has no `shutdown` of its own).
    /// Bytes still waiting are sent first, off the guest's thread, as a
    /// WASI 0.2 stream's are (crate::wasi::sockets::stream::Sender::linger).
    fn drop(&mut self) {
        let mut sender = self.sender.lock();
        if sender.has_failed() {
            self.done.finish(Err(ErrorCode::ConnectionBroken));
        }
        sender.linger_then(Some(std::net::Shutdown::Write));
    }
}
