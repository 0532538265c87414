//! One run of a guest instance, and how it ended, as an outcome the
//! operator can act on: a clean exit, an error status, a trap with its
//! wasm backtrace, the CPU limit, the memory limit.

use crate::account::{Counters, InstanceAccount};
use crate::config::model::TenantConfig;
use crate::limits::cpu::CpuLimitExceeded;
use crate::runtime::engine::Prepared;
use crate::runtime::instance;
use crate::tenancy::tenant::Tenant;
use std::sync::Arc;
use thiserror::Error;
use tracing::info;
use wasmtime::{Engine, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

/// How a guest instance failed.
#[derive(Debug, Error)]
pub enum GuestError {
    /// Instantiation failed (a trap or error in the component's start-up).
    #[error("guest '{tenant}' failed to start: {reason}")]
    Start {
        /// The tenant.
        tenant: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The guest trapped: a panic, an out-of-bounds access, `unreachable`.
    #[error(
        "guest '{tenant}' trapped: {trap}{cause}{}",
        backtrace.as_deref().map(|b| format!("\nwasm backtrace:\n{b}")).unwrap_or_default()
    )]
    Trapped {
        /// The tenant.
        tenant: String,
        /// The trap.
        trap: Trap,
        /// What probably led to it, with a leading separator.
        cause: String,
        /// Where, as far as the guest's symbols tell.
        backtrace: Option<String>,
    },
    /// The guest computed past its CPU limit without calling the host.
    #[error("guest '{tenant}' was stopped: it {cpu}")]
    CpuLimit {
        /// The tenant.
        tenant: String,
        /// How long it computed.
        cpu: CpuLimitExceeded,
    },
    /// The guest called `wasi:cli/exit` with a non-zero status.
    #[error("guest '{tenant}' exited with status {code}")]
    ExitStatus {
        /// The tenant.
        tenant: String,
        /// The status.
        code: i32,
    },
    /// `wasi:cli/run` returned its error result.
    #[error("guest '{tenant}' stopped with an error (its log above says why)")]
    RunFailed {
        /// The tenant.
        tenant: String,
    },
    /// The host could not carry on running the guest (e.g. a resource limit).
    #[error("guest '{tenant}' failed: {reason}")]
    Host {
        /// The tenant.
        tenant: String,
        /// wasmtime's or wasmtime-wasi's message.
        reason: String,
    },
}

/// Instantiates the guest (`instance`, configured by `config`) in a fresh
/// sandbox and runs its `wasi:cli/run` to completion.
pub(super) async fn run_once(
    engine: Engine,
    pre: Arc<Prepared>,
    tenant: Arc<Tenant>,
    config: Arc<TenantConfig>,
    instance: Arc<InstanceAccount>,
) -> Result<(), GuestError> {
    let tenant = &tenant;
    let name = tenant.name().to_owned();
    let index = instance.index;
    let mut store = instance::store(&engine, tenant.clone(), &config, instance);
    let command = pre.instantiate(&mut store).await.map_err(|e| {
        // A trap in the component's start-up counts as one.
        if e.downcast_ref::<Trap>().is_some() {
            Counters::bump(&tenant.counters().traps);
        }
        GuestError::Start {
            tenant: name.clone(),
            reason: crate::runtime::engine::one_line(&e),
        }
    })?;
    // Running once it listens (the Tenancy seam, crate::tenancy::tenant).
    info!(tenant = name, instance = index, "guest started");
    let outcome = command.run(&mut store).await;
    let out_of_memory = store.data().hit_memory_limit();
    let max_memory = config.limits.max_memory;
    match outcome {
        Ok(Ok(())) => {
            info!(tenant = name, instance = index, "guest finished");
            Ok(())
        }
        Ok(Err(())) => Err(GuestError::RunFailed { tenant: name }),
        // `exit(0)` is a clean finish, reported through the error path.
        Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
            info!(tenant = name, instance = index, "guest finished");
            Ok(())
        }
        Err(e) => Err(classify(
            name,
            e,
            out_of_memory.then_some(max_memory),
            tenant,
        )),
    }
}

/// Sorts a failed call into exit status, CPU limit, trap or host error.
/// `out_of_memory` is the memory limit, if the guest was refused growth.
pub(super) fn classify(
    tenant: String,
    e: wasmtime::Error,
    out_of_memory: Option<u64>,
    record: &Tenant,
) -> GuestError {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return GuestError::ExitStatus {
            tenant,
            code: exit.0,
        };
    }
    if e.downcast_ref::<CpuLimitExceeded>().is_some() {
        Counters::bump(&record.counters().traps);
        let cpu = e
            .downcast::<CpuLimitExceeded>()
            .expect("checked just above");
        return GuestError::CpuLimit { tenant, cpu };
    }
    if let Some(&trap) = e.downcast_ref::<Trap>() {
        Counters::bump(&record.counters().traps);
        let backtrace = e.downcast_ref::<WasmBacktrace>().map(|bt| {
            let text = bt.to_string();
            // Drop wasmtime's own heading; ours precedes the frames.
            let frames = text
                .split_once('\n')
                .map_or(text.as_str(), |(_, rest)| rest);
            frames.trim_end().to_owned()
        });
        let cause = match out_of_memory {
            Some(limit) => {
                format!(" (out of memory: growth past its limit of {limit} bytes was refused)")
            }
            None => " (a guest's panic message, if any, is in its log above)".to_owned(),
        };
        return GuestError::Trapped {
            tenant,
            trap,
            cause,
            backtrace,
        };
    }
    GuestError::Host {
        tenant,
        reason: crate::runtime::engine::one_line(&e),
    }
}
