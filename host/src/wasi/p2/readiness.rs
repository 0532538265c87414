//! `tcphost:server/readiness`: ready sets, so a guest's wait costs time for
//! the pollables that became ready, not for every one it holds. The set
//! itself (per-member wakers, level-triggered members) is
//! crate::wasi::poll's [`ReadySet`], which WASI 0.2 `poll` also keeps for a
//! list a guest passes again and again; this module is the resource's glue.
//!
//! Every member is a live pollable in the guest's resource table, so a set
//! never holds more than the tenant's handle limit allows, and the host
//! forgets a member when the guest drops its pollable.

pub use crate::wasi::poll::ReadySet;
use crate::wasi::view::{GuestWasi, WasiHost};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::DynPollable;

/// The interface this module implements.
pub const INTERFACE: &str = "tcphost:server/readiness@0.1.0";

/// Links `tcphost:server/readiness`.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut instance = linker.instance(INTERFACE)?;
    instance.resource(
        "ready-set",
        ResourceType::host::<ReadySet>(),
        |mut store, rep| {
            let state = store.data_mut().wasi();
            let set: ReadySet = state.table().delete(Resource::new_own(rep))?;
            for pollable in set.pollables() {
                state.fast.watched.remove(&pollable);
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
            let set = state.table().push(ReadySet::default())?;
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
                // The set's waker now stands for this pollable's socket.
                state.fast.forget_repeated_list();
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
        if set.is_empty() {
            return Ok(Vec::new());
        }
        let mut ready = set.ready_now(max);
        let generic = set.generic_members();
        let notify = set.notify();
        let reps: Vec<u32> = generic.iter().map(|(_, rep)| *rep).collect();
        // A wake since `ready_now` left a permit: no wakeup is lost.
        let wait = ready.is_empty();
        if let Some(others) = super::delegated::delegated_ready(store, &reps, &notify, wait).await?
        {
            let room = max - ready.len();
            ready.extend(others.into_iter().map(|i| generic[i].0).take(room));
        }
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
}
