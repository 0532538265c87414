//! `tcphost:server/readiness`: ready sets, so a guest's wait costs time for
//! the pollables that became ready, not for every one it holds.
//!
//! Each member of a set has its own waker, registered with its socket's
//! readiness when the member is checked. A wake puts the member on the
//! set's queue; `wait` checks only the queued members and those it reported
//! ready last time (members are level-triggered), so a set of thousands of
//! quiet connections costs nothing per wait. Members the host cannot check
//! directly (timers, output streams; see [`crate::wasi::poll::Fast`]) go through
//! wasmtime-wasi's `poll` on every wait: a guest adds those only while it
//! needs them.
//!
//! Every member is a live pollable in the guest's resource table, so a set
//! never holds more than the tenant's handle limit allows, and the host
//! forgets a member when the guest drops its pollable.

use crate::wasi::poll::Fast;
use crate::wasi::view::{GuestWasi, WasiHost};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use tokio::sync::Notify;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::DynPollable;

/// The interface this module implements.
pub const INTERFACE: &str = "tcphost:server/readiness@0.1.0";

/// A guest's ready set: the host side of a `ready-set` resource.
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
    woken: Mutex<Vec<u64>>,
    notify: Notify,
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
    fn new() -> Self {
        ReadySet {
            members: HashMap::new(),
            tokens: HashMap::new(),
            candidates: VecDeque::new(),
            generic: Vec::new(),
            shared: Arc::default(),
            woken: Vec::new(),
            next_key: 0,
        }
    }

    fn insert(&mut self, pollable: u32, fast: Option<Fast>, token: u64) -> bool {
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
    fn remove(&mut self, token: u64) -> Option<u32> {
        let key = self.tokens.remove(&token)?;
        let member = self.members.remove(&key)?;
        if member.fast.is_none() {
            self.generic.retain(|k| *k != key);
        }
        Some(member.pollable)
    }

    /// Tokens of the members that can be checked directly and are ready
    /// now, at most `max`.
    fn ready_now(&mut self, max: usize) -> Vec<u64> {
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
    fn generic_members(&self) -> Vec<(u64, u32)> {
        self.generic
            .iter()
            .filter_map(|key| self.members.get(key))
            .map(|m| (m.token, m.pollable))
            .collect()
    }
}

/// Links `tcphost:server/readiness`.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut instance = linker.instance(INTERFACE)?;
    instance.resource(
        "ready-set",
        ResourceType::host::<ReadySet>(),
        |mut store, rep| {
            let state = store.data_mut().wasi();
            let set: ReadySet = state.table().delete(Resource::new_own(rep))?;
            for member in set.members.values() {
                state.fast.watched.remove(&member.pollable);
            }
            Ok(())
        },
    )?;
    instance.func_wrap(
        "[constructor]ready-set",
        |mut store: StoreContextMut<'_, T>, (): ()| {
            let state = store.data_mut().wasi();
            state
                .fast
                .optimistic
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let set = state.table().push(ReadySet::new())?;
            Ok((set,))
        },
    )?;
    instance.func_wrap(
        "[method]ready-set.insert",
        |mut store: StoreContextMut<'_, T>,
         (this, member, token): (Resource<ReadySet>, Resource<DynPollable>, u64)| {
            let state = store.data_mut().wasi();
            // The pollable must be the guest's own (a handle it holds).
            state.table().get(&member)?;
            let pollable = member.rep();
            if state.fast.watched.contains_key(&pollable) {
                return Ok((false,));
            }
            let fast = state.fast.fast(pollable);
            let set_rep = this.rep();
            let inserted = state.table().get_mut(&this)?.insert(pollable, fast, token);
            if inserted {
                state.fast.watched.insert(pollable, (set_rep, token));
            }
            Ok((inserted,))
        },
    )?;
    instance.func_wrap(
        "[method]ready-set.remove",
        |mut store: StoreContextMut<'_, T>, (this, token): (Resource<ReadySet>, u64)| {
            let state = store.data_mut().wasi();
            let removed = state.table().get_mut(&this)?.remove(token);
            if let Some(pollable) = removed {
                state.fast.watched.remove(&pollable);
            }
            Ok((removed.is_some(),))
        },
    )?;
    instance.func_wrap_async(
        "[method]ready-set.wait",
        |mut store: StoreContextMut<'_, T>, (this, max): (Resource<ReadySet>, u32)| {
            Box::new(async move {
                let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
                Ok((wait(&mut store, &this, max).await?,))
            })
        },
    )?;
    Ok(())
}

/// Removes the member whose pollable `pollable` is being dropped from the
/// set that watches it, if any.
pub fn forget(state: &mut GuestWasi, pollable: u32) -> wasmtime::Result<()> {
    if let Some((set, token)) = state.fast.watched.remove(&pollable) {
        state
            .table()
            .get_mut(&Resource::<ReadySet>::new_borrow(set))?
            .remove(token);
    }
    Ok(())
}

/// `wait`: the tokens of up to `max` ready members, waiting until there is
/// at least one.
async fn wait<T: WasiHost>(
    store: &mut StoreContextMut<'_, T>,
    this: &Resource<ReadySet>,
    max: usize,
) -> wasmtime::Result<Vec<u64>> {
    if store.data_mut().wasi().fast.let_io_in() {
        tokio::task::yield_now().await;
    }
    loop {
        let set = store.data_mut().wasi().table().get_mut(this)?;
        if set.members.is_empty() {
            return Ok(Vec::new());
        }
        let mut ready = set.ready_now(max);
        let generic = set.generic_members();
        let shared = set.shared.clone();
        let reps: Vec<u32> = generic.iter().map(|(_, rep)| *rep).collect();
        // A wake since `ready_now` left a permit: no wakeup is lost.
        let wait = ready.is_empty();
        if let Some(others) =
            super::delegated::delegated_ready(store, &reps, &shared.notify, wait).await?
        {
            let room = max - ready.len();
            ready.extend(others.into_iter().map(|i| generic[i].0).take(room));
        }
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Fast, ReadySet};
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
        let mut set = ReadySet::new();
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
        let mut set = ReadySet::new();
        for token in 0..10_000 {
            assert!(set.insert(7, Some(Fast::Read(stream.clone())), token));
            assert_eq!(set.remove(token), Some(7));
        }
        assert!(set.candidates.len() <= 64 + 1, "{}", set.candidates.len());
        assert!(set.members.is_empty() && set.tokens.is_empty());
    }
}
