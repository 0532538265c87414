//! Runs a guest instance and turns how it ended into an outcome the
//! operator can act on: a clean exit, an error status, or a trap with its
//! wasm backtrace.

use crate::sandbox::{Sandbox, TenantState};
use thiserror::Error;
use tracing::info;
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
        "guest '{tenant}' trapped: {trap} (a guest's panic message, if any, is in its log above){}",
        backtrace.as_deref().map(|b| format!("\nwasm backtrace:\n{b}")).unwrap_or_default()
    )]
    Trapped {
        /// The tenant.
        tenant: String,
        /// The trap.
        trap: Trap,
        /// Where, as far as the guest's symbols tell.
        backtrace: Option<String>,
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
    sandbox: &Sandbox,
) -> Result<(), GuestError> {
    let tenant = sandbox.name.to_string();
    let mut store = sandbox.store(engine);
    let command = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| GuestError::Start {
            tenant: tenant.clone(),
            reason: crate::engine::one_line(&e),
        })?;
    info!(tenant, "guest started");
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => {
            info!(tenant, "guest finished");
            Ok(())
        }
        Ok(Err(())) => Err(GuestError::RunFailed { tenant }),
        // `exit(0)` is a clean finish, reported through the error path.
        Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
            info!(tenant, "guest finished");
            Ok(())
        }
        Err(e) => Err(classify(tenant, e)),
    }
}

/// Sorts a failed call into exit status, trap or host error.
fn classify(tenant: String, e: wasmtime::Error) -> GuestError {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return GuestError::ExitStatus {
            tenant,
            code: exit.0,
        };
    }
    if let Some(&trap) = e.downcast_ref::<Trap>() {
        let backtrace = e.downcast_ref::<WasmBacktrace>().map(|bt| {
            let text = bt.to_string();
            // Drop wasmtime's own heading; ours precedes the frames.
            let frames = text
                .split_once('\n')
                .map_or(text.as_str(), |(_, rest)| rest);
            frames.trim_end().to_owned()
        });
        return GuestError::Trapped {
            tenant,
            trap,
            backtrace,
        };
    }
    GuestError::Host {
        tenant,
        reason: crate::engine::one_line(&e),
    }
}
