//! CPU time: how long a guest may compute without returning to the host
//! (the tenant's `cpu_limit`), counted in epoch ticks. The runtime's epoch
//! callback (crate::runtime::instance) asks a [`CpuClock`] at every tick.
//!
//! Work the host does for a guest inside a host call (filling random bytes,
//! logging its output) is counted too, by [`HostWork`]: a host call ends
//! the guest's own computing, but must not be a way to make the host
//! compute for it without bound instead.

use std::time::{Duration, Instant};
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

/// The guest made the host work for it past its CPU limit.
#[derive(Debug, Error)]
#[error(
    "made the host work for it {worked_ms} ms more than half the time, past its CPU limit of {limit_ms} ms"
)]
pub struct HostWorkExceeded {
    /// The excess work, in ms.
    pub worked_ms: u128,
    /// The limit, in ms.
    pub limit_ms: u128,
}

/// Host work done for one instance, as a leaky bucket: each charge adds
/// the time the host worked, and the bucket drains at half the wall time
/// passed, so a guest may keep the host busy for it up to half the time
/// for ever, and in a burst for up to its CPU limit more; past that it is
/// cut off. A server that asks for a few random bytes or logs a line per
/// request stays near empty; a loop of such calls fills it in about twice
/// its CPU limit.
#[derive(Debug)]
pub struct HostWork {
    /// Excess work held now.
    level: Duration,
    /// When the last charge ended.
    last: Option<Instant>,
    /// What `level` may reach: the instance's CPU limit.
    limit: Duration,
}

impl HostWork {
    /// An empty bucket for a guest with `cpu_limit`.
    pub fn new(cpu_limit: Duration) -> Self {
        HostWork {
            level: Duration::ZERO,
            last: None,
            limit: cpu_limit,
        }
    }

    /// Charges the work done since `started`, which ends now.
    pub fn charge(&mut self, started: Instant) -> Result<(), HostWorkExceeded> {
        self.charge_at(started, Instant::now())
    }

    fn charge_at(&mut self, started: Instant, now: Instant) -> Result<(), HostWorkExceeded> {
        if let Some(last) = self.last {
            self.level = self.level.saturating_sub(now.duration_since(last) / 2);
        }
        self.level += now.duration_since(started);
        self.last = Some(now);
        if self.level > self.limit {
            return Err(HostWorkExceeded {
                worked_ms: self.level.as_millis(),
                limit_ms: self.limit.as_millis(),
            });
        }
        Ok(())
    }
}

/// Charges work the host did for an instance since `started` to its
/// `host_work`; past its CPU limit, counted in `account` as a CPU limit
/// kill, and the error to trap with.
pub fn charge(
    host_work: &std::sync::Mutex<HostWork>,
    account: &crate::account::Account,
    started: Instant,
) -> Result<(), HostWorkExceeded> {
    let charged = host_work
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .charge(started);
    if charged.is_err() {
        crate::account::Counters::bump(&account.counters.cpu_limit_kills);
    }
    charged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_work_more_than_half_the_time_is_cut_off_at_the_limit_and_less_never() {
        let ms = Duration::from_millis;
        // Working 1 ms of every 2, for ever: never.
        let (mut work, mut now) = (HostWork::new(ms(10)), Instant::now());
        for _ in 0..10_000 {
            now += ms(1);
            work.charge_at(now, now + ms(1)).unwrap();
            now += ms(1);
        }
        // Working all the time: half of it accumulates, and 10 ms of
        // excess is reached after about 20 ms.
        let (mut work, mut now) = (HostWork::new(ms(10)), Instant::now());
        let mut calls = 0;
        let err = loop {
            calls += 1;
            match work.charge_at(now, now + ms(1)) {
                Ok(()) => now += ms(1),
                Err(e) => break e,
            }
        };
        assert_eq!((calls, err.limit_ms), (20, 10));
        // A pause empties the bucket.
        let mut work = HostWork::new(ms(10));
        let now = Instant::now();
        work.charge_at(now, now + ms(8)).unwrap();
        work.charge_at(now + ms(30), now + ms(38)).unwrap();
    }

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
