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
//! A [`ReadySet`] goes further: each member has its own waker, so a wait
//! checks only the members woken since and those ready last time. It backs
//! the ready-set extension (crate::wasi::p2::readiness) and a list that
//! WASI 0.2 `poll` is given again and again ([`RepeatedList`]): an event
//! loop's list of every connection costs, per call, a comparison with the
//! last list (and wasmtime's lifting of it), not a check per quiet socket.
//!
//! To know which pollable is which, the host wraps the entry points that
//! create and destroy them: `input-stream.subscribe`, the input stream and
//! pollable destructors, and `tcp-socket.subscribe` (in crate::wasi::p2::tcp).

use crate::wasi::sockets::accept::AcceptReadiness;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

    /// What the readiness is read from (the socket or queue), which keeps
    /// one waker: two pollables with the same source cannot both keep one.
    fn source(&self) -> usize {
        match self {
            Fast::Read(stream) => Arc::as_ptr(stream) as usize,
            Fast::Accept(accept) => accept.source(),
        }
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
    /// The list WASI 0.2 `poll` was last given (see [`RepeatedList`]).
    repeated: RepeatedList,
    /// Pollables of TCP sockets with no direct check (subscribed before
    /// the socket listened), by `rep`.
    unchecked_sockets: std::collections::HashSet<u32>,
}

/// Calls in a row with the same list from which on it is kept as a set:
/// building the set costs about what a few direct checks of every
/// pollable do, so a list that changes every few calls (clients coming
/// and going) is not rebuilt each time.
const KEEP_AFTER: u32 = 4;

/// The list a WASI 0.2 `poll` was last given. An event loop passes the same
/// list (every connection it holds) call after call; from its fourth time
/// in a row ([`KEEP_AFTER`]) the list is kept as a [`ReadySet`] whose
/// tokens are the positions in it, so a wait checks the pollables woken since and those ready last time,
/// not every one: what a guest gets from the host's ready set, through the
/// standard interface. A guest that builds new pollables for every call
/// (wasi-libc's `poll()`) never passes the same list twice and keeps the
/// direct check of every pollable.
#[derive(Default)]
struct RepeatedList {
    /// The pollables' reps, in order.
    reps: Vec<u32>,
    /// Calls in a row that gave this list, up to [`KEEP_AFTER`].
    calls: u32,
    /// The same list as a ready set, once it came twice.
    set: Option<ReadySet>,
    /// Two of its pollables wait on the same socket, whose readiness keeps
    /// one waker: it cannot be kept as a set (the second member's waker
    /// would stand in for the first's).
    unfit: bool,
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

    /// Records a pollable of a TCP socket that has no direct check.
    pub fn add_unchecked_socket(&mut self, pollable: u32) {
        self.unchecked_sockets.insert(pollable);
    }

    /// Forgets pollable `pollable` (the guest dropped it).
    pub fn remove_pollable(&mut self, pollable: u32) {
        self.pollables.remove(&pollable);
        self.unchecked_sockets.remove(&pollable);
        // Its rep may come back as another pollable's.
        self.forget_repeated_list();
    }

    /// Forgets the list `poll` was last given (a pollable in it was
    /// dropped, or a ready set registered its own waker for one).
    pub fn forget_repeated_list(&mut self) {
        if !self.repeated.reps.is_empty() {
            self.repeated = RepeatedList::default();
        }
    }

    /// The ready set standing for `list` (pollable reps, in order) if
    /// `poll` was given the same list last time; otherwise `None`, and the
    /// list is remembered for next time.
    pub fn repeated_list(&mut self, list: &[u32]) -> Option<&mut ReadySet> {
        let repeated = &mut self.repeated;
        if repeated.reps != list {
            repeated.reps.clear();
            repeated.reps.extend_from_slice(list);
            repeated.calls = 1;
            repeated.set = None;
            repeated.unfit = false;
            return None;
        }
        if repeated.calls < KEEP_AFTER {
            repeated.calls += 1;
            if repeated.calls < KEEP_AFTER {
                return None;
            }
        }
        if repeated.set.is_none() && !repeated.unfit {
            // A socket keeps one waker: no member may share its socket with
            // another member, or with a pollable in a guest's ready set
            // (whose member's waker it would take).
            let mut sources: std::collections::HashSet<usize> = self
                .watched
                .keys()
                .filter_map(|rep| self.pollables.get(rep))
                .map(Fast::source)
                .collect();
            // A socket's pollable without a direct check (subscribed before
            // it listened) waits through wasmtime-wasi on the listener's
            // one waker too.
            if list.iter().any(|rep| self.unchecked_sockets.contains(rep)) {
                repeated.unfit = true;
                return None;
            }
            let mut set = ReadySet::default();
            for (position, &rep) in list.iter().enumerate() {
                // A pollable in a guest's ready set is checked through
                // wasmtime-wasi's path: its socket keeps the set's waker.
                let fast = match self.pollables.get(&rep) {
                    Some(fast) if !self.watched.contains_key(&rep) => Some(fast.clone()),
                    _ => None,
                };
                if let Some(fast) = &fast
                    && !sources.insert(fast.source())
                {
                    repeated.unfit = true;
                    return None;
                }
                set.insert(rep, fast, position as u64);
            }
            repeated.set = Some(set);
        }
        repeated.set.as_mut()
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

/// Pollables waited on together, each with its own waker: the host side of
/// a guest's `ready-set` resource, or a list `poll` is given again.
#[derive(Default)]
pub struct ReadySet {
    /// Members by the set's own key (never reused, so a stale wake from a
    /// removed member cannot be taken for a new one).
    members: HashMap<u64, Member>,
    /// The key of each member, by the guest's token.
    tokens: HashMap<u64, u64>,
    /// Members to check on the next wait, each at most once.
    candidates: VecDeque<u64>,
    /// Members checked through wasmtime-wasi's `poll` on every wait.
    generic: Vec<u64>,
    /// Where members' wakers report.
    shared: Arc<Shared>,
    /// Scratch space for draining `shared.woken`.
    woken: Vec<u64>,
    next_key: u64,
}

struct Member {
    token: u64,
    /// The pollable's resource `rep`.
    pollable: u32,
    /// `None`: checked through wasmtime-wasi's `poll`.
    fast: Option<Fast>,
    wake: Arc<MemberWake>,
    waker: Waker,
    /// In `candidates`.
    candidate: bool,
}

/// State shared with the members' wakers, which may run on any thread.
#[derive(Default)]
struct Shared {
    /// Keys of the members woken since the last check.
    woken: Mutex<Vec<u64>>,
    /// Notified with each new wake.
    notify: Arc<Notify>,
}

struct MemberWake {
    key: u64,
    /// Already on the queue: a burst of wakes queues the member once.
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for MemberWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared
                .woken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.key);
            self.shared.notify.notify_one();
        }
    }
}

impl ReadySet {
    /// Watches pollable `pollable` (checked by `fast`, or through
    /// wasmtime-wasi's `poll` if `None`), reported by `token`; false if
    /// `token` is in use.
    pub fn insert(&mut self, pollable: u32, fast: Option<Fast>, token: u64) -> bool {
        if self.tokens.contains_key(&token) {
            return false;
        }
        let key = self.next_key;
        self.next_key += 1;
        let wake = Arc::new(MemberWake {
            key,
            queued: AtomicBool::new(false),
            shared: self.shared.clone(),
        });
        if fast.is_none() {
            self.generic.push(key);
        }
        // Checked on the next wait, which registers its waker.
        let candidate = fast.is_some();
        if candidate {
            self.candidates.push_back(key);
        }
        self.members.insert(
            key,
            Member {
                token,
                pollable,
                fast,
                waker: Waker::from(wake.clone()),
                wake,
                candidate,
            },
        );
        self.tokens.insert(token, key);
        // Keys of removed members linger in `candidates` until a wait skips
        // them; a guest that inserts and removes without waiting must not
        // grow the queue without bound.
        if self.candidates.len() > 2 * self.members.len() + 64 {
            let members = &self.members;
            self.candidates.retain(|key| members.contains_key(key));
        }
        true
    }

    /// Removes the member reported by `token`; returns its pollable's rep.
    pub fn remove(&mut self, token: u64) -> Option<u32> {
        let key = self.tokens.remove(&token)?;
        let member = self.members.remove(&key)?;
        if member.fast.is_none() {
            self.generic.retain(|k| *k != key);
        }
        Some(member.pollable)
    }

    /// Tokens of the members that can be checked directly and are ready
    /// now, at most `max`.
    pub fn ready_now(&mut self, max: usize) -> Vec<u64> {
        std::mem::swap(
            &mut self.woken,
            &mut self.shared.woken.lock().unwrap_or_else(|p| p.into_inner()),
        );
        for key in self.woken.drain(..) {
            if let Some(member) = self.members.get_mut(&key) {
                // Cleared before the check, so a wake after it queues again.
                member.wake.queued.store(false, Ordering::Release);
                if !member.candidate {
                    member.candidate = true;
                    self.candidates.push_back(key);
                }
            }
        }
        let mut ready = Vec::new();
        let mut reported = Vec::new();
        let mut left_out = Vec::new();
        for key in std::mem::take(&mut self.candidates) {
            let Some(member) = self.members.get_mut(&key) else {
                continue;
            };
            if ready.len() >= max {
                left_out.push(key);
                continue;
            }
            let Some(fast) = &member.fast else {
                member.candidate = false;
                continue;
            };
            if fast
                .poll_ready(&mut Context::from_waker(&member.waker))
                .is_ready()
            {
                ready.push(member.token);
                reported.push(key);
            } else {
                // Its waker is registered: a wake brings it back.
                member.candidate = false;
            }
        }
        // Level-triggered: what was ready is checked again next time, after
        // what was left out this time.
        self.candidates.extend(left_out);
        self.candidates.extend(reported);
        ready
    }

    /// The members checked through wasmtime-wasi's `poll`: (token, rep).
    pub fn generic_members(&self) -> Vec<(u64, u32)> {
        self.generic
            .iter()
            .filter_map(|key| self.members.get(key))
            .map(|m| (m.token, m.pollable))
            .collect()
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members' pollables (resource reps).
    pub fn pollables(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.values().map(|m| m.pollable)
    }

    /// What a member's wake notifies: a wait parks on it.
    pub fn notify(&self) -> Arc<Notify> {
        self.shared.notify.clone()
    }
}
#[cfg(test)]
mod tests {
    use super::{DirectPoll, Fast, ReadySet};
    use std::io::Write;
    use std::sync::Arc;
    use tokio::net::TcpStream;

    /// A connection with `data` waiting to be read on it, and its peer.
    fn readable(data: &[u8]) -> (Arc<TcpStream>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(data).unwrap();
        server.set_nonblocking(true).unwrap();
        (Arc::new(TcpStream::from_std(server).unwrap()), client)
    }

    /// The next non-empty answer of the set, as `wait` would give it.
    async fn next(set: &mut ReadySet, max: usize) -> Vec<u64> {
        loop {
            let ready = set.ready_now(max);
            if !ready.is_empty() {
                return ready;
            }
            let shared = set.shared.clone();
            shared.notify.notified().await;
        }
    }

    #[tokio::test]
    async fn ready_members_are_reported_again_and_those_left_out_come_first() {
        let (a, _peer_a) = readable(b"a");
        let (b, _peer_b) = readable(b"b");
        let (quiet, _peer_quiet) = readable(b"");
        let mut set = ReadySet::default();
        assert!(set.insert(1, Some(Fast::Read(a)), 10));
        assert!(set.insert(2, Some(Fast::Read(b)), 20));
        assert!(set.insert(3, Some(Fast::Read(quiet)), 30));
        // Both readable members, whatever the order the wakes came in.
        let mut first = next(&mut set, 8).await;
        while first.len() < 2 {
            first.extend(next(&mut set, 8).await);
            first.dedup();
        }
        first.sort_unstable();
        assert_eq!(first, vec![10, 20]);
        // Nothing was read: still ready, and one at a time they alternate.
        let one = next(&mut set, 1).await;
        let other = next(&mut set, 1).await;
        assert_ne!(one, other);
        assert_eq!(next(&mut set, 1).await, one);
        // The quiet member, checked once, costs nothing until woken.
        assert!(set.candidates.len() <= 2, "{:?}", set.candidates);
    }

    #[tokio::test]
    async fn inserting_and_removing_without_waiting_keeps_the_queue_bounded() {
        let (stream, _peer) = readable(b"");
        let mut set = ReadySet::default();
        for token in 0..10_000 {
            assert!(set.insert(7, Some(Fast::Read(stream.clone())), token));
            assert_eq!(set.remove(token), Some(7));
        }
        assert!(set.candidates.len() <= 64 + 1, "{}", set.candidates.len());
        assert!(set.members.is_empty() && set.tokens.is_empty());
    }

    /// How many more calls `poll` makes with `list` (given once before)
    /// until it is kept as a set, if it ever is.
    fn calls_until_kept(poll: &mut DirectPoll, list: &[u32]) -> Option<u32> {
        (1..=super::KEEP_AFTER + 2).find(|_| poll.repeated_list(list).is_some())
    }

    #[tokio::test]
    async fn a_list_polled_again_and_again_is_kept_as_a_set_that_reports_positions() {
        let (quiet, _peer_quiet) = readable(b"");
        let (busy, mut peer_busy) = readable(b"");
        let mut poll = DirectPoll::default();
        poll.add_pollable(11, Fast::Read(quiet));
        poll.add_pollable(12, Fast::Read(busy));
        // Pollable 13 has no direct check: through wasmtime-wasi's poll.
        let list = [11, 12, 13];
        assert!(
            poll.repeated_list(&list).is_none(),
            "first time: remembered"
        );
        assert_eq!(
            calls_until_kept(&mut poll, &list),
            Some(super::KEEP_AFTER - 1)
        );
        let set = poll.repeated_list(&list).expect("kept");
        assert_eq!(set.generic_members(), vec![(2, 13)]);
        assert!(set.ready_now(usize::MAX).is_empty());
        peer_busy.write_all(b"x").unwrap();
        // The busy connection, by its position in the list.
        assert_eq!(next(set, usize::MAX).await, vec![1]);
        // Another list is not the kept one, and ends it.
        assert!(poll.repeated_list(&[12, 11, 13]).is_none());
        assert!(poll.repeated_list(&list).is_none());
        assert!(calls_until_kept(&mut poll, &list).is_some());
    }

    #[tokio::test]
    async fn a_dropped_pollable_or_a_shared_socket_ends_the_kept_list() {
        let (stream, _peer) = readable(b"");
        let (other, _other_peer) = readable(b"");
        let mut poll = DirectPoll::default();
        poll.add_pollable(1, Fast::Read(stream.clone()));
        poll.add_pollable(2, Fast::Read(other));
        let list = [1, 2];
        assert!(calls_until_kept(&mut poll, &list).is_some());
        // Its rep may come back as another pollable's: forgotten at once.
        poll.remove_pollable(2);
        poll.add_pollable(2, Fast::Read(stream.clone()));
        assert!(poll.repeated_list(&list).is_none());
        // Now both pollables wait on one socket, which keeps one waker:
        // never kept, however often it comes.
        assert_eq!(calls_until_kept(&mut poll, &list), None);
        // Nor when a ready set watches another pollable of its socket.
        let (third, _third_peer) = readable(b"");
        poll.add_pollable(3, Fast::Read(third));
        poll.add_pollable(4, Fast::Read(stream));
        poll.watched.insert(4, (99, 0));
        assert_eq!(calls_until_kept(&mut poll, &[1, 3]), None);
        assert!(calls_until_kept(&mut poll, &[3]).is_some());
        // Nor with a socket's pollable checked through wasmtime-wasi.
        poll.add_unchecked_socket(5);
        assert_eq!(calls_until_kept(&mut poll, &[3, 5]), None);
    }
}
