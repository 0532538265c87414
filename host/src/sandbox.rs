//! A tenant's sandbox: the WASI context built from its grant (and nothing
//! else), the limits of its store (memory, handles, CPU time without
//! yielding), and the linker every guest is instantiated against.

use crate::engine::EPOCH_TICK;
use crate::guest_log::{GuestOutput, Stream};
use crate::manifest::TenantConfig;
use crate::policy::{self, Grant};
use crate::tenant::{Counters, Tenant};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;
use tracing::warn;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{CallHook, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most resources (sockets, streams, pollables) a guest may hold at once.
/// A full table makes further calls fail instead of growing host memory.
/// (wasmtime also bounds the handles a component holds and lends at the
/// same number; crate::poll bounds `poll` lists by it.)
pub const MAX_RESOURCES: usize = 100_000;

/// Most table elements a guest instance may hold, over all its tables.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The guest computed past its CPU limit without returning to the host.
#[derive(Debug, Error)]
#[error("ran {ran_ms} ms without yielding to the host, past its CPU limit of {limit_ms} ms")]
pub struct CpuLimitExceeded {
    /// How long it had run, in ms (a multiple of the epoch tick).
    pub ran_ms: u128,
    /// The limit, in ms.
    pub limit_ms: u128,
}

/// Everything the host keeps per guest instance, inside its [`Store`].
pub struct TenantState {
    /// The tenant's shared record (name, config, counters).
    pub tenant: Arc<Tenant>,
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// Epoch ticks run into in wasm since the guest last called the host.
    ticks_in_wasm: u64,
    /// Set while the epoch callback runs, so its own return to wasm is not
    /// taken for the end of a host call.
    in_epoch_callback: bool,
    /// This instance's guest version: only the tenant's current version
    /// accepts new connections.
    pub generation: u64,
    /// What the guest may do on the network.
    pub grant: Arc<Grant>,
    /// The configuration this instance was started with.
    pub config: Arc<TenantConfig>,
    /// Client connections this instance holds open.
    pub open: Arc<AtomicU64>,
    /// Which pollables the fast path of `poll` can check directly.
    pub fast: crate::poll::FastPoll,
    /// The granted addresses this instance's sockets have bound.
    pub claims: crate::tcp::Claims,
}

impl TenantState {
    /// The guest's resources.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Whether the guest asked for more memory than its limit allows.
    pub fn hit_memory_limit(&self) -> bool {
        self.limiter.refused
    }
}

impl WasiView for TenantState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// What an instance holds of one kind (bytes of linear memory, or table
/// elements) over all its memories or tables together: a component may
/// have sixteen memories, and a limit per memory would let it hold sixteen
/// times the limit.
#[derive(Debug, Default)]
struct Holding {
    held: usize,
    /// The growth last permitted, until it is known to have happened (the
    /// next ask) or failed.
    permitted: usize,
}

impl Holding {
    /// Whether growing one memory or table from `current` to `desired`
    /// keeps the total within `limit`; if so it is counted, and returned.
    fn grow(&mut self, current: usize, desired: usize, limit: usize) -> Option<usize> {
        self.permitted = 0;
        let grown = desired.saturating_sub(current);
        let total = self.held.saturating_add(grown);
        (total <= limit).then(|| {
            self.held = total;
            self.permitted = grown;
            grown
        })
    }

    /// A growth failed after all; returns what is taken back. wasmtime
    /// also reports growths that fail its own checks before asking the
    /// limiter (`unasked`, by their message): nothing was counted for
    /// those, and taking back the last permitted growth instead would let
    /// the count drift down to nothing.
    fn failed(&mut self, error: &wasmtime::Error, unasked: &str) -> usize {
        if error.to_string() == unasked {
            return 0;
        }
        let grown = std::mem::take(&mut self.permitted);
        self.held -= grown;
        grown
    }
}

/// The message of a memory growth wasmtime 48 refuses before asking the
/// limiter (past what the memory's index type can address).
const MEMORY_UNASKED: &str = "memory growth exceeds memory type's limits";
/// The same for tables.
const TABLE_UNASKED: &str = "overflow calculating new table size";

/// Refuses linear memory growth past the tenant's limit (over all the
/// instance's memories together), and remembers it did so: the trap that
/// usually follows is then reported as out of memory. Bounds table
/// elements the same way.
struct MemoryLimiter {
    tenant: Arc<Tenant>,
    max_memory: usize,
    refused: bool,
    /// Linear memory, counted in the tenant's gauge.
    memory: Holding,
    /// Table elements.
    tables: Holding,
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        // The store, and with it the instance's memory, is going.
        self.tenant
            .counters
            .memory_bytes
            .fetch_sub(self.memory.held as u64, Ordering::Relaxed);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(grown) = self.memory.grow(current, desired, self.max_memory) {
            self.tenant
                .counters
                .memory_bytes
                .fetch_add(grown as u64, Ordering::Relaxed);
            return Ok(true);
        }
        if !self.refused {
            let held = self.memory.held;
            warn!(
                tenant = self.tenant.name(),
                held,
                current,
                desired,
                limit = self.max_memory,
                "refused: memory growth from {current} to {desired} bytes, beside {held} bytes held in all, is past the limit of {} bytes",
                self.max_memory
            );
        }
        self.refused = true;
        Counters::bump(&self.tenant.counters.memory_refusals);
        Ok(false)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed here, refused later (the memory's declared maximum, or a
        // pooling slot): the memory did not grow after all.
        let grown = self.memory.failed(&error, MEMORY_UNASKED);
        self.tenant
            .counters
            .memory_bytes
            .fetch_sub(grown as u64, Ordering::Relaxed);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self
            .tables
            .grow(current, desired, MAX_TABLE_ELEMENTS)
            .is_some())
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.tables.failed(&error, TABLE_UNASKED);
        Ok(())
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// Builds the confined store for one instance (guest version `generation`)
/// of a tenant's guest, configured by `config`; it counts its open client
/// connections in `open`.
pub fn store(
    engine: &Engine,
    tenant: &Arc<Tenant>,
    config: &Arc<TenantConfig>,
    generation: u64,
    open: Arc<AtomicU64>,
) -> Store<TenantState> {
    let name = config.name.as_str();
    let grant = Arc::new(Grant::from(&**config));
    tenant
        .output_log
        .set_rate(config.limits.log_lines_per_sec.unwrap_or(0));
    let mut builder = WasiCtx::builder();
    // Capabilities are off unless enabled here: no preopened directories,
    // no inherited environment or arguments, stdin empty.
    builder
        .arg(name)
        .stdout(GuestOutput::new(tenant.clone(), Stream::Stdout))
        .stderr(GuestOutput::new(tenant.clone(), Stream::Stderr))
        // TCP is the host's own implementation (crate::tcp), UDP and name
        // lookups are refused at their entry points (crate::policy).
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        // Random bytes are allocated by the host before the guest gets them:
        // no more at once than the guest could hold.
        .max_random_size(config.limits.max_memory);
    for (key, value) in &config.env {
        builder.env(key, value);
    }
    if let Some(first) = config.listen.first() {
        builder.env("LISTEN_ADDR", first.to_string());
    }
    let all: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    builder.env("LISTEN_ADDRS", all.join(","));

    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let state = TenantState {
        tenant: tenant.clone(),
        ctx: builder.build(),
        table,
        limiter: MemoryLimiter {
            tenant: tenant.clone(),
            max_memory: usize::try_from(config.limits.max_memory).unwrap_or(usize::MAX),
            refused: false,
            memory: Holding::default(),
            tables: Holding::default(),
        },
        ticks_in_wasm: 0,
        in_epoch_callback: false,
        generation,
        grant,
        config: config.clone(),
        open,
        fast: crate::poll::FastPoll::default(),
        claims: crate::tcp::Claims::default(),
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
    // - The CPU limit: ticks spent in wasm without any host call count;
    //   past the limit the guest is cut off (a guest that calls the host
    //   is not stuck in a loop of its own, and yields by the first rule).
    let limit_ticks = (config.limits.cpu_limit.as_millis() / EPOCH_TICK.as_millis()).max(1);
    // The epoch check itself enters and leaves the host, so the return from
    // the epoch callback must not count as a host call.
    store.call_hook(|mut store, hook| {
        if matches!(hook, CallHook::ReturningFromHost) {
            let state = store.data_mut();
            if !std::mem::take(&mut state.in_epoch_callback) {
                state.ticks_in_wasm = 0;
            }
        }
        Ok(())
    });
    store.epoch_deadline_callback(move |mut store| {
        let state = store.data_mut();
        state.in_epoch_callback = true;
        state.ticks_in_wasm += 1;
        if u128::from(state.ticks_in_wasm) > limit_ticks {
            Counters::bump(&state.tenant.counters.cpu_limit_kills);
            return Err(CpuLimitExceeded {
                ran_ms: u128::from(state.ticks_in_wasm) * EPOCH_TICK.as_millis(),
                limit_ms: limit_ticks * EPOCH_TICK.as_millis(),
            }
            .into());
        }
        if !state.fast.let_io_in() {
            return Ok(UpdateDeadline::Continue(1));
        }
        Counters::bump(&state.tenant.counters.cpu_yields);
        // tokio's yield lets the guest thread poll for I/O before this
        // guest runs again, so tenants sharing the thread are served
        // between its slices (a plain re-wake would run it again at once).
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store.set_epoch_deadline(1);
    store
}

/// The linker all guests share: WASI 0.2 with the ungranted capabilities'
/// entry points replaced by refusals.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<TenantState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    linker.allow_shadowing(true);
    crate::tcp::add_to_linker(&mut linker)?;
    crate::poll::add_to_linker(&mut linker)?;
    crate::readiness::add_to_linker(&mut linker)?;
    policy::refuse_ungranted(&mut linker)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::{Holding, MemoryLimiter};
    use crate::manifest::{ComponentSource, Limits, TenantConfig};
    use crate::tenant::Tenant;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use wasmtime::{Engine, Instance, Module, Store};

    fn tenant() -> Arc<Tenant> {
        let config = TenantConfig {
            name: "t".into(),
            component: ComponentSource::Builtin("seed".into()),
            component_at: String::new(),
            listen_at: String::new(),
            listen: Vec::new(),
            env: Default::default(),
            connect: Vec::new(),
            limits: Limits::default(),
        };
        Arc::new(Tenant::new(config, Vec::new()))
    }

    #[test]
    fn the_memory_gauge_follows_growths_that_succeed_and_fail_in_turn() {
        // Grows by a page (succeeds), then by 4 GiB (fails in wasmtime's
        // own check, before the limiter is asked), over and over.
        let wat = r#"(module (memory 1)
            (func (export "churn") (param $n i32)
              (loop $again
                (drop (memory.grow (i32.const 1)))
                (drop (memory.grow (i32.const 65536)))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (br_if $again (local.get $n)))))"#;
        let engine = Engine::default();
        let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let tenant = tenant();
        let limiter = MemoryLimiter {
            tenant: tenant.clone(),
            max_memory: 64 << 20,
            refused: false,
            memory: Holding::default(),
            tables: Holding::default(),
        };
        let mut store = Store::new(&engine, limiter);
        store.limiter(|l| l);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let churn = instance
            .get_typed_func::<i32, ()>(&mut store, "churn")
            .unwrap();
        churn.call(&mut store, 100).unwrap();
        // One page to start with and a hundred grown.
        let gauge = tenant.counters.memory_bytes.load(Ordering::Relaxed);
        assert_eq!(gauge, 101 * 65536);
        assert_eq!(store.data().memory.held, 101 * 65536);
    }
}
