//! What is never granted, refused at its entry point (WASI 0.2): UDP
//! sockets and name lookups get `access-denied`, logged and counted, so a
//! guest never gets a UDP socket or a resolver at all; the filesystem's
//! preopens are an empty list, and the ask is counted (not a refusal:
//! language runtimes ask at start-up). The linker must allow shadowing.

use super::version::VERSION;
use crate::wasi::view::WasiHost;
use wasmtime::component::{Linker, Val};

/// Replaces the entry points of capabilities that are never granted, so each
/// attempt is refused with `access-denied` and logged. `linker` must allow
/// shadowing.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker
        .instance(&format!("wasi:sockets/udp-create-socket@{VERSION}"))?
        .func_new("create-udp-socket", |mut store, _ty, _params, results| {
            crate::wasi::deny::udp(store.data_mut().wasi().tenant.account());
            results[0] = access_denied();
            Ok(())
        })?;

    linker
        .instance(&format!("wasi:sockets/ip-name-lookup@{VERSION}"))?
        .func_new_async("resolve-addresses", |mut store, _ty, params, results| {
            Box::new(async move {
                let name = match params.get(1) {
                    Some(Val::String(name)) => name.as_str(),
                    _ => "?",
                };
                crate::wasi::deny::name_lookup(store.data_mut().wasi().tenant.account(), name);
                // A dynamic host function must release the `borrow<network>`
                // it was handed, or the call fails.
                if let Some(Val::Resource(network)) = params.first() {
                    network.resource_drop_async(&mut store).await?;
                }
                results[0] = access_denied();
                Ok(())
            })
        })?;

    linker
        .instance(&format!("wasi:filesystem/preopens@{VERSION}"))?
        .func_new("get-directories", |mut store, _ty, _params, results| {
            crate::wasi::deny::preopens(store.data_mut().wasi().tenant.account());
            results[0] = Val::List(Vec::new());
            Ok(())
        })?;

    Ok(())
}

/// `err(error-code::access-denied)` as a dynamic component value.
fn access_denied() -> Val {
    Val::Result(Err(Some(Box::new(Val::Enum("access-denied".into())))))
}
