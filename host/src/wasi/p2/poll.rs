//! `wasi:io/poll` (WASI 0.2) with the host's fast path for its TCP
//! (crate::wasi::poll): pollables the host can check directly are checked
//! against their socket's readiness; every other pollable (clocks, output
//! streams, stdio, connects) goes through wasmtime-wasi's `poll` unchanged.
//! A list given again, as an event loop gives its every connection on each
//! call, is kept as a ready set from its fourth time in a row, so only the
//! pollables woken since are checked.

use super::delegated::delegated_ready;
use super::version::VERSION;
use crate::wasi::poll::Fast;
use crate::wasi::view::WasiHost;
use std::task::Context;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::io::streams::HostInputStream as _;
use wasmtime_wasi::p2::{DynInputStream, DynPollable};

/// Replaces `poll` and the entry points that create and destroy pollables
/// and input streams. `linker` must allow shadowing.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut streams = linker.instance(&format!("wasi:io/streams@{VERSION}"))?;
    streams.func_wrap(
        "[method]input-stream.subscribe",
        |mut store: StoreContextMut<'_, T>, (stream,): (Resource<DynInputStream>,)| {
            let rep = stream.rep();
            let state = store.data_mut().wasi();
            let pollable = state.table().subscribe(stream)?;
            if let Some(connection) = state.fast.stream(rep) {
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
                let state = store.data_mut().wasi();
                state.fast.remove_stream(rep);
                wasmtime_wasi::p2::bindings::io::streams::HostInputStream::drop(
                    state.table(),
                    Resource::new_own(rep),
                )
                .await
            })
        },
    )?;

    let mut poll = linker.instance(&format!("wasi:io/poll@{VERSION}"))?;
    poll.resource(
        "pollable",
        ResourceType::host::<DynPollable>(),
        |mut store, rep| {
            let state = store.data_mut().wasi();
            state.fast.remove_pollable(rep);
            super::readiness::forget(state, rep)?;
            wasmtime_wasi::p2::bindings::io::poll::HostPollable::drop(
                state.table(),
                Resource::new_own(rep),
            )
        },
    )?;
    poll.func_wrap_async(
        "poll",
        |mut store: StoreContextMut<'_, T>, (list,): (Vec<Resource<DynPollable>>,)| {
            Box::new(async move { Ok((poll_list(&mut store, list).await?,)) })
        },
    )?;
    Ok(())
}

/// `poll`: the indices of the ready pollables in `list`, waiting until at
/// least one is.
async fn poll_list<T: WasiHost>(
    store: &mut StoreContextMut<'_, T>,
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
    if list.len() > crate::limits::memory::MAX_RESOURCES {
        wasmtime::bail!(
            "a poll list of {} pollables, more than the {} handles a guest may hold",
            list.len(),
            crate::limits::memory::MAX_RESOURCES
        );
    }
    if store.data_mut().wasi().fast.let_io_in() {
        tokio::task::yield_now().await;
    }
    let reps: Vec<u32> = list.iter().map(Resource::rep).collect();
    if let Some(ready) = poll_repeated(store, &reps).await? {
        return Ok(ready);
    }
    let state = store.data_mut().wasi();
    let mut fast: Vec<(u32, Fast)> = Vec::new();
    let mut generic: Vec<(u32, u32)> = Vec::new();
    for (index, pollable) in list.iter().enumerate() {
        let index = u32::try_from(index)?;
        let rep = pollable.rep();
        match state.fast.fast_ref(rep) {
            Some(f) if !state.fast.watched.contains_key(&rep) => fast.push((index, f.clone())),
            _ => generic.push((index, rep)),
        }
    }
    let wake = state.fast.wake();
    let waker = state.fast.waker();
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
        if let Some(others) = delegated_ready(store, &reps, &wake, wait).await? {
            ready.extend(others.into_iter().map(|i| generic[i].0));
            ready.sort_unstable();
        }
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
}

/// `poll` over the list given last time too (see
/// crate::wasi::poll::DirectPoll::repeated_list): `None` if it was not.
async fn poll_repeated<T: WasiHost>(
    store: &mut StoreContextMut<'_, T>,
    list: &[u32],
) -> wasmtime::Result<Option<Vec<u32>>> {
    loop {
        let Some(set) = store.data_mut().wasi().fast.repeated_list(list) else {
            return Ok(None);
        };
        // Tokens are positions in the list.
        let mut ready = set.ready_now(usize::MAX);
        let generic = set.generic_members();
        let notify = set.notify();
        let reps: Vec<u32> = generic.iter().map(|(_, rep)| *rep).collect();
        // A wake since `ready_now` left a permit: no wakeup is lost.
        let wait = ready.is_empty();
        if let Some(others) = delegated_ready(store, &reps, &notify, wait).await? {
            ready.extend(others.into_iter().map(|i| generic[i].0));
        }
        if !ready.is_empty() {
            let mut ready: Vec<u32> = ready.into_iter().map(|t| t as u32).collect();
            ready.sort_unstable();
            return Ok(Some(ready));
        }
    }
}
