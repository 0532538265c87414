//! A tenant's sandbox: the WASI context built from its grant (and nothing
//! else), the resource limits of its store, and the linker every guest is
//! instantiated against.

use crate::guest_log::{GuestOutput, Stream};
use crate::policy::{self, Grant};
use std::sync::Arc;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most resources (sockets, streams, pollables) a guest may hold at once.
/// A full table makes further calls fail instead of growing host memory.
const MAX_RESOURCES: usize = 100_000;

/// Largest linear memory a guest may grow to.
const MAX_MEMORY: usize = 256 << 20;

/// Everything the host keeps per guest instance, inside its [`Store`].
pub struct TenantState {
    name: Arc<str>,
    ctx: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl TenantState {
    /// The tenant's name, as used in the log.
    pub fn name(&self) -> &str {
        &self.name
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

/// What the host needs to confine one guest.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The tenant's name, for the log and as the guest's only argument.
    pub name: Arc<str>,
    /// Network capabilities.
    pub grant: Arc<Grant>,
}

impl Sandbox {
    /// A store for one instance of the guest, granting exactly `self.grant`.
    pub fn store(&self, engine: &Engine) -> Store<TenantState> {
        let mut builder = WasiCtx::builder();
        // Capabilities are off unless enabled here: no preopened directories,
        // no inherited environment or arguments, stdin empty.
        builder
            .arg(&*self.name)
            .stdout(GuestOutput::new(self.name.clone(), Stream::Stdout))
            .stderr(GuestOutput::new(self.name.clone(), Stream::Stderr))
            .allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(policy::socket_addr_check(
                self.name.clone(),
                self.grant.clone(),
            ));
        if let Some(first) = self.grant.listen.first() {
            builder.env("LISTEN_ADDR", first.to_string());
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let state = TenantState {
            name: self.name.clone(),
            ctx: builder.build(),
            table,
            limits: StoreLimitsBuilder::new()
                .memory_size(MAX_MEMORY)
                .instances(64)
                .tables(64)
                .memories(16)
                .build(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        // Yield to the other tasks at every epoch tick, so a guest that
        // computes for long never stalls the host.
        store.epoch_deadline_async_yield_and_update(1);
        store
    }
}

/// The linker all guests share: WASI 0.2 with the ungranted capabilities'
/// entry points replaced by refusals.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<TenantState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    policy::refuse_ungranted(&mut linker)?;
    Ok(linker)
}
