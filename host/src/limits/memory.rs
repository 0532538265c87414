//! Memory and handles: a guest instance's linear memory over all its
//! memories together (the tenant's `max_memory`), its table elements, and
//! the resources (sockets, streams, pollables) it may hold at once.

use crate::account::{Account, Counters};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::warn;
use wasmtime::ResourceLimiter;

/// Most resources (sockets, streams, pollables) a guest may hold at once.
/// A full table makes further calls fail instead of growing host memory.
/// (wasmtime also bounds the handles a component holds and lends at the
/// same number; crate::wasi::p2::poll bounds `poll` lists by it.)
pub const MAX_RESOURCES: usize = 100_000;

/// Most table elements a guest instance may hold, over all its tables.
const MAX_TABLE_ELEMENTS: usize = 100_000;

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
pub struct MemoryLimiter {
    account: Arc<Account>,
    max_memory: usize,
    /// Whether a growth was refused (the trap that usually follows is then
    /// reported as out of memory).
    pub refused: bool,
    /// Linear memory, counted in the tenant's gauge.
    memory: Holding,
    /// Table elements.
    tables: Holding,
}

impl MemoryLimiter {
    /// A limiter of `max_memory` bytes over all of an instance's memories,
    /// counting them in `account`'s gauge.
    pub fn new(account: Arc<Account>, max_memory: u64) -> Self {
        MemoryLimiter {
            account,
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            refused: false,
            memory: Holding::default(),
            tables: Holding::default(),
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        // The store, and with it the instance's memory, is going.
        self.account
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
            self.account
                .counters
                .memory_bytes
                .fetch_add(grown as u64, Ordering::Relaxed);
            return Ok(true);
        }
        if !self.refused {
            let held = self.memory.held;
            warn!(
                tenant = self.account.name(),
                held,
                current,
                desired,
                limit = self.max_memory,
                "refused: memory growth from {current} to {desired} bytes, beside {held} bytes held in all, is past the limit of {} bytes",
                self.max_memory
            );
        }
        self.refused = true;
        Counters::bump(&self.account.counters.memory_refusals);
        Ok(false)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed here, refused later (the memory's declared maximum, or a
        // pooling slot): the memory did not grow after all.
        let grown = self.memory.failed(&error, MEMORY_UNASKED);
        self.account
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

#[cfg(test)]
mod tests {
    use super::MemoryLimiter;
    use crate::account::Account;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use wasmtime::{Engine, Instance, Module, Store};

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
        let account = Arc::new(Account::new("t"));
        let limiter = MemoryLimiter::new(account.clone(), 64 << 20);
        let mut store = Store::new(&engine, limiter);
        store.limiter(|l| l);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let churn = instance
            .get_typed_func::<i32, ()>(&mut store, "churn")
            .unwrap();
        churn.call(&mut store, 100).unwrap();
        // One page to start with and a hundred grown.
        let gauge = account.counters.memory_bytes.load(Ordering::Relaxed);
        assert_eq!(gauge, 101 * 65536);
        assert_eq!(store.data().memory.held, 101 * 65536);
    }
}
