//! Waiting on the pollables the host cannot check directly (clocks, output
//! streams, stdio, connects), through wasmtime-wasi's `poll`: shared by
//! `poll` (crate::wasi::p2::poll) and the ready sets
//! (crate::wasi::p2::readiness).

use crate::wasi::poll::park;
use crate::wasi::view::WasiHost;
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;
use wasmtime::StoreContextMut;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::io::poll::Host as _;

/// The indices, in `generic`, of the pollables (resource reps) that
/// wasmtime-wasi's `poll` finds ready; the pollables with a fast check are
/// the caller's. Without `wait`, only those ready now. With it, waits until
/// one is ready or `wake` fires (`None`: check the fast ones again).
pub async fn delegated_ready<T: WasiHost>(
    store: &mut StoreContextMut<'_, T>,
    generic: &[u32],
    wake: &Notify,
    wait: bool,
) -> wasmtime::Result<Option<Vec<usize>>> {
    let indices = |found: Vec<u32>| found.into_iter().map(|i| i as usize).collect();
    if generic.is_empty() {
        if wait && park(wake).await {
            store.data_mut().wasi().fast.waited();
        }
        return Ok(None);
    }
    let borrowed = generic
        .iter()
        .map(|rep| Resource::new_borrow(*rep))
        .collect();
    let found = {
        let mut others = std::pin::pin!(store.data_mut().wasi().table().poll(borrowed));
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
        store.data_mut().wasi().fast.waited();
    }
    Ok(found.map(indices))
}
