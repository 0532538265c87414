//! One guest instance's store: its WASI state (crate::wasi), its memory
//! limiter and its CPU clock (crate::limits), wired to wasmtime's epoch and
//! call hooks; and the linker every guest is instantiated against. This is
//! the embedder's side of the WASI seam: [`InstanceState`] implements
//! [`WasiHost`], and nothing in crate::wasi names it.

use crate::account::{Account, Counters, InstanceAccount};
use crate::config::model::TenantConfig;
use crate::limits::cpu::CpuClock;
use crate::limits::memory::MemoryLimiter;
use crate::wasi::seam::Tenancy;
use crate::wasi::view::{GuestWasi, WasiHost};
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::{CallHook, Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtxView, WasiView};

/// Everything the host keeps per guest instance, inside its [`Store`].
pub struct InstanceState {
    /// The guest's WASI state.
    wasi: GuestWasi,
    /// The tenant's account, for the CPU counters.
    account: Arc<Account>,
    /// Bounds the instance's memories and tables.
    limiter: MemoryLimiter,
    /// Time run in wasm without a host call, against the CPU limit.
    cpu: CpuClock,
    /// Crossings between guest and host not yet added to the tenant's
    /// count: added in batches, so a call costs no shared write.
    crossings: u64,
}

/// Crossings an instance counts before adding them to its tenant's count.
const CROSSING_BATCH: u64 = 256;

impl InstanceState {
    /// Counts one crossing between guest and host.
    fn crossed(&mut self) {
        self.crossings += 1;
        if self.crossings >= CROSSING_BATCH {
            self.add_crossings();
        }
    }

    fn add_crossings(&mut self) {
        let n = std::mem::take(&mut self.crossings);
        self.account
            .counters
            .crossings
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for InstanceState {
    fn drop(&mut self) {
        self.add_crossings();
    }
}

impl InstanceState {
    /// Whether the guest asked for more memory than its limit allows.
    pub fn hit_memory_limit(&self) -> bool {
        self.limiter.refused
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

impl WasiHost for InstanceState {
    fn wasi(&mut self) -> &mut GuestWasi {
        &mut self.wasi
    }
}

/// Builds the confined store for `instance` of `tenant`'s guest,
/// configured by `config`.
pub fn store(
    engine: &Engine,
    tenant: Arc<dyn Tenancy>,
    config: &TenantConfig,
    instance: Arc<InstanceAccount>,
) -> Store<InstanceState> {
    let account = tenant.account().clone();
    let state = InstanceState {
        wasi: GuestWasi::new(tenant, config, instance),
        limiter: MemoryLimiter::new(account.clone(), config.limits.max_memory),
        cpu: CpuClock::new(config.limits.cpu_limit),
        account,
        crossings: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);

    // CPU, two rules, checked at every epoch tick the guest runs into:
    // - Sharing the thread: a guest that has not let its thread poll for
    //   I/O (waited for an event, or yielded) for a whole tick yields now,
    //   whatever it was doing: computing, or calling the host without ever
    //   waiting. A server that waits between requests is not made to
    //   yield: on a shared guest thread each yield waits for the others'
    //   slices.
    // - The CPU limit: the thread's CPU time in wasm without any host call
    //   counts (read at each tick); past the limit the guest is cut off (a guest that calls the host
    //   is not stuck in a loop of its own, and yields by the first rule).
    // The epoch check itself enters and leaves the host, so the return from
    // the epoch callback must not count as a host call.
    store.call_hook(|mut store, hook| {
        match hook {
            CallHook::ReturningFromHost => store.data_mut().cpu.returned_from_host(),
            CallHook::CallingHost => store.data_mut().crossed(),
            CallHook::CallingWasm => {
                let state = store.data_mut();
                state.cpu.entered_guest();
                state.crossed();
            }
            CallHook::ReturningFromWasm => {}
        }
        Ok(())
    });
    store.epoch_deadline_callback(move |mut store| {
        let state = store.data_mut();
        if let Err(exceeded) = state.cpu.tick() {
            Counters::bump(&state.account.counters.cpu_limit_kills);
            return Err(exceeded.into());
        }
        if !state.wasi.fast.let_io_in() {
            return Ok(UpdateDeadline::Continue(1));
        }
        Counters::bump(&state.account.counters.cpu_yields);
        Counters::bump(&state.wasi.instance.cpu_yields);
        // tokio's yield lets the guest thread poll for I/O before this
        // guest runs again, so tenants sharing the thread are served
        // between its slices (a plain re-wake would run it again at once).
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(state.cpu.yield_now()),
        ))
    });
    store.set_epoch_deadline(1);
    store
}

/// The linker all guests share: WASI 0.2 and 0.3 as crate::wasi::p2 and
/// crate::wasi::p3 provide them.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    crate::wasi::p2::add_to_linker(&mut linker)?;
    crate::wasi::p3::add_to_linker(&mut linker)?;
    Ok(linker)
}
