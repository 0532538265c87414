//! CPU time: how long a guest may compute without returning to the host
//! (the tenant's `cpu_limit`), counted in epoch ticks. The runtime's epoch
//! callback (crate::runtime::instance) asks a [`CpuClock`] at every tick.

use std::time::Duration;
use thiserror::Error;

/// How often running guests are made to yield to the rest of the host; the
/// unit in which CPU limits are measured.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The guest computed past its CPU limit without returning to the host.
#[derive(Debug, Error)]
#[error("ran {ran_ms} ms without yielding to the host, past its CPU limit of {limit_ms} ms")]
pub struct CpuLimitExceeded {
    /// How long it had run, in ms (a multiple of the epoch tick).
    pub ran_ms: u128,
    /// The limit, in ms.
    pub limit_ms: u128,
}

/// Epoch ticks an instance has run into in wasm since it last called the
/// host, against its limit.
#[derive(Debug)]
pub struct CpuClock {
    /// Ticks run into in wasm since the guest last called the host.
    ticks_in_wasm: u64,
    /// Set while the epoch callback runs, so its own return to wasm is not
    /// taken for the end of a host call.
    in_epoch_callback: bool,
    /// The limit, in ticks (at least one).
    limit_ticks: u128,
}

impl CpuClock {
    /// A clock for a limit of `cpu_limit`.
    pub fn new(cpu_limit: Duration) -> Self {
        CpuClock {
            ticks_in_wasm: 0,
            in_epoch_callback: false,
            limit_ticks: (cpu_limit.as_millis() / EPOCH_TICK.as_millis()).max(1),
        }
    }

    /// The guest returned from a host call: it is not stuck in a loop of
    /// its own (unless this is the return from the epoch callback itself).
    pub fn returned_from_host(&mut self) {
        if !std::mem::take(&mut self.in_epoch_callback) {
            self.ticks_in_wasm = 0;
        }
    }

    /// An epoch tick found the guest running: past the limit, it is to be
    /// cut off.
    pub fn tick(&mut self) -> Result<(), CpuLimitExceeded> {
        self.in_epoch_callback = true;
        self.ticks_in_wasm += 1;
        if u128::from(self.ticks_in_wasm) > self.limit_ticks {
            return Err(CpuLimitExceeded {
                ran_ms: u128::from(self.ticks_in_wasm) * EPOCH_TICK.as_millis(),
                limit_ms: self.limit_ticks * EPOCH_TICK.as_millis(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_is_cut_off_only_after_its_limit_without_a_host_call() {
        let mut clock = CpuClock::new(Duration::from_millis(3));
        for _ in 0..3 {
            clock.tick().unwrap();
        }
        // Returning from the epoch callback is not a host call...
        clock.returned_from_host();
        let err = clock.tick().unwrap_err();
        assert_eq!((err.ran_ms, err.limit_ms), (4, 3));
        // ...a real one starts the count again.
        let mut clock = CpuClock::new(Duration::from_millis(3));
        clock.tick().unwrap();
        clock.returned_from_host();
        clock.returned_from_host();
        for _ in 0..3 {
            clock.tick().unwrap();
        }
    }
}
