//! `wasi:io/poll` with a fast path for the guests' TCP.
//!
//! wasmtime-wasi's `poll` builds a boxed future and registers a waker for
//! every pollable in the list on every call, so a guest holding thousands of
//! idle connections pays for all of them each time it waits. Here the
//! pollables of TCP input streams and listeners (the host's own, see
//! crate::tcp) are checked directly against their socket's readiness, with
//! one waker per instance that stays registered across calls: a quiet
//! socket costs a readiness check, not an allocation and a registration.
//! Every other pollable (clocks, output streams, stdio, connects) goes
//! through wasmtime-wasi's `poll` unchanged.
//!
//! To know which pollable is which, the host wraps the entry points that
//! create and destroy them: `input-stream.subscribe`, the input stream and
//! pollable destructors, and `tcp-socket.subscribe` (in crate::tcp).

use crate::sandbox::TenantState;
use crate::tenant::Tenant;
use std::net::TcpListener;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::io::poll::Host as _;
use wasmtime_wasi::p2::bindings::io::streams::HostInputStream as _;
use wasmtime_wasi::p2::{DynInputStream, DynPollable};

/// WASI 0.2 version whose entry points are replaced.
const WASI: &str = "0.2.12";

/// A pollable whose readiness the host can check directly.
#[derive(Clone)]
pub enum Fast {
    /// Data (or end of stream) to read on a connection.
    Read(Arc<TcpStream>),
    /// A client waiting on a listener; only the current guest version's
    /// listener is ever ready.
    Accept {
        /// The listener (this version's duplicate of the host's socket).
        listener: Arc<AsyncFd<TcpListener>>,
        /// Whose listener.
        tenant: Arc<Tenant>,
        /// The guest version that subscribed.
        generation: u64,
        /// This pollable's place among the waiters for the tenant's accept
        /// gate.
        waiter: Arc<crate::connection::GateWaiter>,
    },
}

impl Fast {
    /// Ready now; if not, `cx`'s waker is woken when it may be.
    ///
    /// Outside tokio's cooperative budget: a guest waits on hundreds of
    /// sockets at once, and past the budget (128 checks per task poll)
    /// every further socket would be reported not ready, however long it
    /// had been. At 1000 busy clients that starved most of them: the same
    /// hundred or so were served again and again. (Guests are made to
    /// yield by epoch interruption instead; see crate::sandbox.)
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let check = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| self.check(cx)));
        std::pin::pin!(check).poll(cx)
    }

    fn check(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Fast::Read(stream) => stream.poll_read_ready(cx).map(|_| ()),
            Fast::Accept {
                listener,
                tenant,
                generation,
                waiter,
            } => crate::tcp::poll_accept(listener, tenant, *generation, waiter, cx),
        }
    }
}

/// Per-instance state of the fast path.
#[derive(Default)]
pub struct FastPoll {
    /// Input streams over the host's TCP connections, by resource `rep`.
    streams: std::collections::HashMap<u32, Arc<TcpStream>>,
    /// Pollables with a fast readiness check, by resource `rep`.
    pollables: std::collections::HashMap<u32, Fast>,
    /// Woken by any registered socket's readiness.
    wake: Arc<Notify>,
    /// The waker that notifies `wake`: one for the instance's life, so
    /// sockets see the same waker on every call.
    waker: Option<Waker>,
    /// Pollables in a ready set (crate::readiness): the set's `rep` and the
    /// member's token. `poll` checks these through wasmtime-wasi's path, so
    /// it never takes over the waker the set registered.
    pub watched: std::collections::HashMap<u32, (u32, u64)>,
    /// Set once the instance makes a ready set: its connections' streams
    /// may then stay ready after a read that emptied them (the set's
    /// documented level-triggered semantics), which saves a wake-up per
    /// request under load; a plain `wasi:io/poll` guest gets readiness as
    /// exact as POSIX `poll` (see crate::tcp's reader).
    pub optimistic: Arc<std::sync::atomic::AtomicBool>,
    /// When the instance last let its thread poll for I/O: last waited
    /// for an event, or yielded (see [`FastPoll::let_io_in`]).
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

impl FastPoll {
    /// Records that input stream `stream` reads from `connection`.
    pub fn add_stream(&mut self, stream: u32, connection: Arc<TcpStream>) {
        self.streams.insert(stream, connection);
    }

    /// Records a fast pollable.
    pub fn add_pollable(&mut self, pollable: u32, fast: Fast) {
        self.pollables.insert(pollable, fast);
    }

    /// Whether the instance should yield to its thread (before it waits,
    /// or at an epoch tick: see crate::sandbox), so the thread polls the
    /// sockets for I/O: when it has not waited for an event or yielded for
    /// an epoch tick. A guest that always finds something ready
    /// never waits, and only what the thread last polled would ever be
    /// found ready: the same clients served again and again while the
    /// others' requests went unseen. (A guest that waits is not made to
    /// yield: on a shared thread that would cost it the others' slices.)
    pub fn let_io_in(&mut self) -> bool {
        let now = std::time::Instant::now();
        match self.last_io {
            Some(last) if now.duration_since(last) < crate::engine::EPOCH_TICK => false,
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

    /// The fast readiness check of `pollable`, if it has one.
    pub fn fast(&self, pollable: u32) -> Option<Fast> {
        self.pollables.get(&pollable).cloned()
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

/// Replaces `poll` and the entry points that create and destroy pollables
/// and input streams. `linker` must allow shadowing.
pub fn add_to_linker(linker: &mut Linker<TenantState>) -> wasmtime::Result<()> {
    let mut streams = linker.instance(&format!("wasi:io/streams@{WASI}"))?;
    streams.func_wrap(
        "[method]input-stream.subscribe",
        |mut store: StoreContextMut<'_, TenantState>, (stream,): (Resource<DynInputStream>,)| {
            let rep = stream.rep();
            let state = store.data_mut();
            let pollable = state.table().subscribe(stream)?;
            if let Some(connection) = state.fast.streams.get(&rep).cloned() {
                state
                    .fast
                    .add_pollable(pollable.rep(), Fast::Read(connection));
            }
            Ok((pollable,))
        },
    )?;
    streams.resource_async(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut store, rep| {
            Box::new(async move {
                let state = store.data_mut();
                state.fast.streams.remove(&rep);
                wasmtime_wasi::p2::bindings::io::streams::HostInputStream::drop(
                    state.table(),
                    Resource::new_own(rep),
                )
                .await
            })
        },
    )?;

    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI}"))?;
    poll.resource(
        "pollable",
        ResourceType::host::<DynPollable>(),
        |mut store, rep| {
            let state = store.data_mut();
            state.fast.pollables.remove(&rep);
            crate::readiness::forget(state, rep)?;
            wasmtime_wasi::p2::bindings::io::poll::HostPollable::drop(
                state.table(),
                Resource::new_own(rep),
            )
        },
    )?;
    poll.func_wrap_async(
        "poll",
        |mut store: StoreContextMut<'_, TenantState>, (list,): (Vec<Resource<DynPollable>>,)| {
            Box::new(async move { Ok((poll_list(&mut store, list).await?,)) })
        },
    )?;
    Ok(())
}

/// `poll`: the indices of the ready pollables in `list`, waiting until at
/// least one is.
async fn poll_list(
    store: &mut StoreContextMut<'_, TenantState>,
    list: Vec<Resource<DynPollable>>,
) -> wasmtime::Result<Vec<u32>> {
    if list.is_empty() {
        wasmtime::bail!("empty poll list");
    }
    // No longer than the handles a guest may hold: a longer list can only
    // repeat them. wasmtime traps first for the guest's own handles (it
    // lends one per entry, up to its store's limit of 100,000), not for
    // borrowed ones a composed component passes on: refused here before
    // anything is built for it (wasmtime's copy of the list is at most four
    // times its size in guest memory).
    if list.len() > crate::sandbox::MAX_RESOURCES {
        wasmtime::bail!(
            "a poll list of {} pollables, more than the {} handles a guest may hold",
            list.len(),
            crate::sandbox::MAX_RESOURCES
        );
    }
    if store.data_mut().fast.let_io_in() {
        tokio::task::yield_now().await;
    }
    let state = store.data_mut();
    let mut fast: Vec<(u32, Fast)> = Vec::new();
    let mut generic: Vec<(u32, u32)> = Vec::new();
    for (index, pollable) in list.iter().enumerate() {
        let index = u32::try_from(index)?;
        let rep = pollable.rep();
        match state.fast.pollables.get(&rep) {
            Some(f) if !state.fast.watched.contains_key(&rep) => fast.push((index, f.clone())),
            _ => generic.push((index, rep)),
        }
    }
    let wake = state.fast.wake.clone();
    let waker = state
        .fast
        .waker
        .get_or_insert_with(|| Waker::from(Arc::new(NotifyWaker(wake.clone()))))
        .clone();
    let reps: Vec<u32> = generic.iter().map(|(_, rep)| *rep).collect();
    loop {
        let mut ready: Vec<u32> = {
            let mut cx = Context::from_waker(&waker);
            fast.iter()
                .filter(|(_, f)| f.poll_ready(&mut cx).is_ready())
                .map(|(index, _)| *index)
                .collect()
        };
        let wait = ready.is_empty();
        if let Some(others) = others_ready(store, &reps, &wake, wait).await? {
            ready.extend(others.into_iter().map(|i| generic[i].0));
            ready.sort_unstable();
        }
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
}

/// The indices, in `generic`, of the pollables (resource reps) that
/// wasmtime-wasi's `poll` finds ready; the pollables with a fast check are
/// the caller's. Without `wait`, only those ready now. With it, waits until
/// one is ready or `wake` fires (`None`: check the fast ones again).
pub async fn others_ready(
    store: &mut StoreContextMut<'_, TenantState>,
    generic: &[u32],
    wake: &Notify,
    wait: bool,
) -> wasmtime::Result<Option<Vec<usize>>> {
    let indices = |found: Vec<u32>| found.into_iter().map(|i| i as usize).collect();
    if generic.is_empty() {
        if wait && park(wake).await {
            store.data_mut().fast.waited();
        }
        return Ok(None);
    }
    let borrowed = generic
        .iter()
        .map(|rep| Resource::new_borrow(*rep))
        .collect();
    let found = {
        let mut others = std::pin::pin!(store.data_mut().table().poll(borrowed));
        if !wait {
            return match others
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(found) => Ok(Some(indices(found?))),
                Poll::Pending => Ok(None),
            };
        }
        tokio::select! {
            found = &mut others => Some(found?),
            () = wake.notified() => None,
        }
    };
    if found.is_none() {
        store.data_mut().fast.waited();
    }
    Ok(found.map(indices))
}
