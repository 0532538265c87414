//! Runs each tenant's guest and keeps it running according to its restart
//! policy: exponential backoff between restarts, and a crash-loop limit past
//! which the tenant is marked failed. Turns how a guest ended into an outcome
//! the operator can act on: a clean exit, an error status, a trap with its
//! wasm backtrace, the CPU limit, the memory limit.

use crate::manifest::RestartPolicy;
use crate::sandbox::{self, CpuLimitExceeded, TenantState};
use crate::tenant::{Counters, State, Tenant};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;
use tracing::{error, info, warn};
use wasmtime::{Engine, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

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
    /// The guest computed past its CPU limit without yielding.
    #[error("guest '{tenant}' was stopped: it {cpu}")]
    CpuLimit {
        /// The tenant.
        tenant: String,
        /// How long it ran.
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

/// Instantiates the guest in a fresh sandbox and runs its `wasi:cli/run`
/// to completion.
pub async fn run_once(
    engine: &Engine,
    pre: &CommandPre<TenantState>,
    tenant: &Arc<Tenant>,
) -> Result<(), GuestError> {
    let name = tenant.name().to_owned();
    let mut store = sandbox::store(engine, tenant, tenant.next_generation());
    let command = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| GuestError::Start {
            tenant: name.clone(),
            reason: crate::engine::one_line(&e),
        })?;
    tenant.set_state(State::Running);
    info!(tenant = name, "guest started");
    let outcome = command.wasi_cli_run().call_run(&mut store).await;
    let out_of_memory = store.data().hit_memory_limit();
    match outcome {
        Ok(Ok(())) => {
            info!(tenant = name, "guest finished");
            Ok(())
        }
        Ok(Err(())) => Err(GuestError::RunFailed { tenant: name }),
        // `exit(0)` is a clean finish, reported through the error path.
        Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
            info!(tenant = name, "guest finished");
            Ok(())
        }
        Err(e) => Err(classify(name, e, out_of_memory, tenant)),
    }
}

/// Sorts a failed call into exit status, CPU limit, trap or host error.
fn classify(
    tenant: String,
    e: wasmtime::Error,
    out_of_memory: bool,
    record: &Tenant,
) -> GuestError {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return GuestError::ExitStatus {
            tenant,
            code: exit.0,
        };
    }
    if e.downcast_ref::<CpuLimitExceeded>().is_some() {
        Counters::bump(&record.counters.traps);
        let cpu = e
            .downcast::<CpuLimitExceeded>()
            .expect("checked just above");
        return GuestError::CpuLimit { tenant, cpu };
    }
    if let Some(&trap) = e.downcast_ref::<Trap>() {
        Counters::bump(&record.counters.traps);
        let backtrace = e.downcast_ref::<WasmBacktrace>().map(|bt| {
            let text = bt.to_string();
            // Drop wasmtime's own heading; ours precedes the frames.
            let frames = text
                .split_once('\n')
                .map_or(text.as_str(), |(_, rest)| rest);
            frames.trim_end().to_owned()
        });
        let cause = if out_of_memory {
            format!(
                " (out of memory: growth past its limit of {} bytes was refused)",
                record.config.limits.max_memory
            )
        } else {
            " (a guest's panic message, if any, is in its log above)".to_owned()
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
        reason: crate::engine::one_line(&e),
    }
}

/// Runs a tenant's guest, restarting it as its policy says, until the policy
/// leaves it stopped or failed. Returns the last run's outcome.
pub async fn supervise(
    engine: Engine,
    pre: Arc<CommandPre<TenantState>>,
    tenant: Arc<Tenant>,
) -> Result<(), GuestError> {
    let limits = tenant.config.limits.clone();
    let name = tenant.name().to_owned();
    let mut backoff = limits.restart_backoff;
    let mut recent_restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let started = Instant::now();
        let outcome = run_once(&engine, &pre, &tenant).await;
        if let Err(e) = &outcome {
            error!(tenant = name, "{e}");
            tenant.set_error(e.to_string());
        }
        let restart = match limits.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => outcome.is_err(),
            RestartPolicy::Always => true,
        };
        if !restart {
            tenant.set_state(if outcome.is_err() {
                State::Failed
            } else {
                State::Stopped
            });
            return outcome;
        }

        let now = Instant::now();
        recent_restarts.retain(|t| now.duration_since(*t) < limits.crash_loop_window);
        if recent_restarts.len() >= limits.crash_loop_limit as usize {
            error!(
                tenant = name,
                restarts = recent_restarts.len(),
                "{name} restarted {} times within {:?}: marked failed, its addresses now refuse connections",
                recent_restarts.len(),
                limits.crash_loop_window
            );
            tenant.set_error(format!(
                "crash loop: restarted {} times within {:?}; last: {}",
                recent_restarts.len(),
                limits.crash_loop_window,
                outcome
                    .as_ref()
                    .err()
                    .map_or("clean exit".to_owned(), ToString::to_string)
            ));
            tenant.set_state(State::Failed);
            tenant.close_listeners();
            return outcome;
        }
        recent_restarts.push_back(now);

        // A run that lasted a while was healthy: start backing off afresh.
        if started.elapsed() >= limits.restart_backoff_max {
            backoff = limits.restart_backoff;
        }
        tenant.set_state(State::Restarting);
        warn!(
            tenant = name,
            delay_ms = backoff.as_millis(),
            "restarting {name} in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(limits.restart_backoff_max);
        Counters::bump(&tenant.counters.restarts);
    }
}
