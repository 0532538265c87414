//! The fast path of polling, independent of the WASI version: which of a
//! guest's pollables the host can check directly, and the one waker per
//! instance that stays registered across calls. The WASI 0.2 `poll` over
//! it is crate::wasi::p2::poll.
//!
//! wasmtime-wasi's `poll` builds a boxed future and registers a waker for
//! every pollable in the list on every call, so a guest holding thousands of
//! idle connections pays for all of them each time it waits. Here the
//! pollables of TCP input streams and listeners (the host's own, see
//! crate::wasi::sockets) are checked directly against their socket's readiness, with
//! one waker per instance that stays registered across calls: a quiet
//! socket costs a readiness check, not an allocation and a registration.
//! Every other pollable (clocks, output streams, stdio, connects) goes
//! through wasmtime-wasi's `poll` unchanged.
//!
//! To know which pollable is which, the host wraps the entry points that
//! create and destroy them: `input-stream.subscribe`, the input stream and
//! pollable destructors, and `tcp-socket.subscribe` (in crate::wasi::p2::tcp).

use crate::wasi::sockets::accept::AcceptReadiness;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A pollable whose readiness the host can check directly.
#[derive(Clone)]
pub enum Fast {
    /// Data (or end of stream) to read on a connection.
    Read(Arc<TcpStream>),
    /// A client waiting on a listener; only the current guest version's
    /// listener is ever ready.
    Accept(AcceptReadiness),
}

impl Fast {
    /// Ready now; if not, `cx`'s waker is woken when it may be.
    ///
    /// Outside tokio's cooperative budget: a guest waits on hundreds of
    /// sockets at once, and past the budget (128 checks per task poll)
    /// every further socket would be reported not ready, however long it
    /// had been. At 1000 busy clients that starved most of them: the same
    /// hundred or so were served again and again. (Guests are made to
    /// yield by epoch interruption instead; see crate::runtime::instance.)
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let check = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| self.check(cx)));
        std::pin::pin!(check).poll(cx)
    }

    fn check(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Fast::Read(stream) => stream.poll_read_ready(cx).map(|_| ()),
            Fast::Accept(accept) => accept.poll(cx),
        }
    }
}

/// Per-instance state of the fast path.
#[derive(Default)]
pub struct DirectPoll {
    /// Input streams over the host's TCP connections, by resource `rep`.
    streams: std::collections::HashMap<u32, Arc<TcpStream>>,
    /// Pollables with a fast readiness check, by resource `rep`.
    pollables: std::collections::HashMap<u32, Fast>,
    /// Woken by any registered socket's readiness.
    wake: Arc<Notify>,
    /// The waker that notifies `wake`: one for the instance's life, so
    /// sockets see the same waker on every call.
    waker: Option<Waker>,
    /// Pollables in a ready set (crate::wasi::p2::readiness): the set's `rep` and the
    /// member's token. `poll` checks these through wasmtime-wasi's path, so
    /// it never takes over the waker the set registered.
    pub watched: std::collections::HashMap<u32, (u32, u64)>,
    /// Set once the instance makes a ready set: its connections' streams
    /// may then stay ready after a read that emptied them (the set's
    /// documented level-triggered semantics), which saves a wake-up per
    /// request under load; a plain `wasi:io/poll` guest gets readiness as
    /// exact as POSIX `poll` (see crate::wasi::sockets::stream).
    pub optimistic: Arc<std::sync::atomic::AtomicBool>,
    /// When the instance last let its thread poll for I/O: last waited
    /// for an event, or yielded (see [`DirectPoll::let_io_in`]).
    last_io: Option<std::time::Instant>,
}

struct NotifyWaker(Arc<Notify>);

impl Wake for NotifyWaker {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

impl DirectPoll {
    /// Records that input stream `stream` reads from `connection`.
    pub fn add_stream(&mut self, stream: u32, connection: Arc<TcpStream>) {
        self.streams.insert(stream, connection);
    }

    /// The connection input stream `stream` reads from, if it is one of
    /// the host's.
    pub fn stream(&self, stream: u32) -> Option<Arc<TcpStream>> {
        self.streams.get(&stream).cloned()
    }

    /// Forgets input stream `stream` (the guest dropped it).
    pub fn remove_stream(&mut self, stream: u32) {
        self.streams.remove(&stream);
    }

    /// Forgets pollable `pollable` (the guest dropped it).
    pub fn remove_pollable(&mut self, pollable: u32) {
        self.pollables.remove(&pollable);
    }

    /// What every fast pollable's waker notifies.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Records a fast pollable.
    pub fn add_pollable(&mut self, pollable: u32, fast: Fast) {
        self.pollables.insert(pollable, fast);
    }

    /// Whether the instance should yield to its thread (before it waits,
    /// or at an epoch tick: see crate::runtime::instance), so the thread polls the
    /// sockets for I/O: when it has not waited for an event or yielded for
    /// an epoch tick. A guest that always finds something ready
    /// never waits, and only what the thread last polled would ever be
    /// found ready: the same clients served again and again while the
    /// others' requests went unseen. (A guest that waits is not made to
    /// yield: on a shared thread that would cost it the others' slices.)
    pub fn let_io_in(&mut self) -> bool {
        let now = std::time::Instant::now();
        match self.last_io {
            Some(last) if now.duration_since(last) < crate::limits::cpu::EPOCH_TICK => false,
            _ => {
                self.last_io = Some(now);
                true
            }
        }
    }

    /// Records that the instance waited for an event.
    pub fn waited(&mut self) {
        self.last_io = Some(std::time::Instant::now());
    }

    /// The waker every fast pollable of the instance is registered with:
    /// one for the instance's life, so sockets see the same waker on every
    /// call.
    pub fn waker(&mut self) -> Waker {
        let wake = self.wake.clone();
        self.waker
            .get_or_insert_with(|| Waker::from(Arc::new(NotifyWaker(wake))))
            .clone()
    }

    /// The fast readiness check of `pollable`, if it has one.
    pub fn fast(&self, pollable: u32) -> Option<Fast> {
        self.fast_ref(pollable).cloned()
    }

    /// The same, borrowed.
    pub fn fast_ref(&self, pollable: u32) -> Option<&Fast> {
        self.pollables.get(&pollable)
    }
}

/// Waits for `notify`; returns whether the instance actually parked (a
/// stored permit returns at once, without letting the thread poll for I/O).
pub async fn park(notify: &Notify) -> bool {
    let mut notified = std::pin::pin!(notify.notified());
    if notified
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
    {
        return false;
    }
    notified.await;
    true
}
