//! A guest instance's WASI state, and how the WASI layer finds it in a
//! store's data: the role of wasmtime-wasi's `WasiView`.

use super::seam::Tenancy;
use super::{poll, sockets, stdio};
use crate::account::InstanceAccount;
use crate::config::model::{Limits, TenantConfig};
use crate::limits::cpu::HostWork;
use crate::policy::Grant;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How the WASI layer finds its state in a store's data (the role of
/// wasmtime-wasi's `WasiView`, which the store's data also implements).
pub trait WasiHost: WasiView + 'static {
    /// The guest's WASI state.
    fn wasi(&mut self) -> &mut GuestWasi;
}

/// A guest instance's WASI state: everything the WASI layer sees.
pub struct GuestWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    /// The tenant, through the seam.
    pub tenant: Arc<dyn Tenancy>,
    /// Which instance this is (its guest version: only the tenant's
    /// current version accepts new connections), and its own counts.
    pub instance: Arc<InstanceAccount>,
    /// What the guest may do on the network.
    pub grant: Arc<Grant>,
    /// The limits this instance was started with (its caps).
    pub limits: Limits,
    /// Work the host does for the instance (random bytes, its output),
    /// against its CPU limit; shared with its stdout and stderr.
    pub host_work: Arc<Mutex<HostWork>>,
    /// Which pollables the fast path of `poll` can check directly.
    pub fast: poll::DirectPoll,
    /// The granted addresses this instance's sockets have bound.
    pub claims: sockets::tcp::Claims,
    /// WASI 0.3 replies taken but not yet sent: sent at the end of each
    /// turn of the guest (crate::runtime::engine).
    pub sends: sockets::stream::SendBatch,
    /// The order in which WASI 0.3 reads finish: oldest data first, not
    /// the runtime's lowest handle first (crate::wasi::sockets::order).
    pub reads: sockets::order::ReadOrder,
}

impl GuestWasi {
    /// The WASI state of `instance` of `tenant`, started with `config`:
    /// its grant and nothing else (no preopened directory, no inherited
    /// environment or arguments, stdin empty).
    pub fn new(
        tenant: Arc<dyn Tenancy>,
        config: &TenantConfig,
        instance: Arc<InstanceAccount>,
    ) -> Self {
        let account = tenant.account().clone();
        let host_work = Arc::new(Mutex::new(HostWork::new(config.limits.cpu_limit)));
        account.output_log.set_rates(
            config.limits.log_lines_per_sec.unwrap_or(0),
            config.limits.log_bytes_per_sec.unwrap_or(0),
        );
        let mut builder = WasiCtx::builder();
        builder
            .arg(&config.name)
            .stdout(stdio::GuestOutput::new(
                account.clone(),
                host_work.clone(),
                stdio::Stream::Stdout,
            ))
            .stderr(stdio::GuestOutput::new(
                account,
                host_work.clone(),
                stdio::Stream::Stderr,
            ))
            // TCP is the host's own implementation (sockets, p2::tcp), UDP
            // and name lookups are refused at their entry points
            // (p2::refuse).
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Random bytes are crate::wasi::random's; should any call
            // still reach wasmtime-wasi's, it has the same bound.
            .max_random_size(crate::wasi::random::MAX_PER_CALL);
        for (key, value) in &config.env {
            builder.env(key, value);
        }
        if let Some(first) = config.listen.first() {
            builder.env("LISTEN_ADDR", first.to_string());
        }
        let all: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
        builder.env("LISTEN_ADDRS", all.join(","));

        let mut table = ResourceTable::new();
        table.set_max_capacity(crate::limits::memory::MAX_RESOURCES);
        let grant = Arc::new(Grant::new(config, tenant.host_endpoints().clone()));
        GuestWasi {
            ctx: builder.build(),
            table,
            tenant,
            instance,
            grant,
            limits: config.limits.clone(),
            host_work,
            fast: poll::DirectPoll::default(),
            claims: sockets::tcp::Claims::default(),
            sends: sockets::stream::SendBatch::default(),
            reads: sockets::order::ReadOrder::default(),
        }
    }

    /// The guest's resources.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for GuestWasi {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}
