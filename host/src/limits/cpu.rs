//! CPU time: how long a guest may compute without returning to the host
//! (the tenant's `cpu_limit`), in its thread's CPU time, read at each epoch
//! tick. The runtime's epoch callback (crate::runtime::instance) asks a
//! [`CpuClock`] at every tick.
//!
//! Work the host does for a guest inside a host call (filling random bytes,
//! logging its output) is counted too, by [`HostWork`]: a host call ends
//! the guest's own computing, but must not be a way to make the host
//! compute for it without bound instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How often running guests are made to yield to the rest of the host; the
/// unit in which CPU limits are measured.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The guest computed past its CPU limit without returning to the host.
#[derive(Debug, Error)]
#[error(
    "computed {ran_ms} ms of CPU time without calling the host, past its CPU limit of {limit_ms} ms"
)]
pub struct CpuLimitExceeded {
    /// How long it had computed, in ms of its thread's CPU time.
    pub ran_ms: u128,
    /// The limit, in ms.
    pub limit_ms: u128,
}

/// CPU time an instance has computed in wasm since it last called the
/// host, against its limit. Read from its thread's CPU clock at each epoch
/// tick that finds it running, not counted in ticks: on a loaded machine
/// the thread may get a fraction of a core, and counting wall-clock ticks
/// would cut a guest off long before it had computed its limit. To within
/// a tick: what it computed before the first tick after a host call is
/// not counted.
#[derive(Debug)]
pub struct CpuClock {
    /// CPU time counted since the guest last called the host.
    computed: Duration,
    /// The thread's CPU time at the last tick that found the guest running
    /// since its last host call.
    last_tick: Option<Duration>,
    /// The thread's CPU time when the guest last resumed after yielding
    /// its thread (in ns; 0: not since the last tick), set by the yield
    /// ([`CpuClock::yield_now`]): what other tenants computed on the
    /// thread meanwhile is not this guest's.
    resumed: Arc<AtomicU64>,
    /// Set while the epoch callback runs, so its own return to wasm is not
    /// taken for the end of a host call.
    in_epoch_callback: bool,
    /// The limit.
    limit: Duration,
}

impl CpuClock {
    /// A clock for a limit of `cpu_limit`.
    pub fn new(cpu_limit: Duration) -> Self {
        CpuClock {
            computed: Duration::ZERO,
            last_tick: None,
            resumed: Arc::default(),
            in_epoch_callback: false,
            limit: cpu_limit,
        }
    }

    /// The guest returned from a host call: it is not stuck in a loop of
    /// its own (unless this is the return from the epoch callback itself).
    pub fn returned_from_host(&mut self) {
        if !std::mem::take(&mut self.in_epoch_callback) {
            self.computed = Duration::ZERO;
            self.last_tick = None;
        }
    }

    /// The host called into the guest (a WASI 0.3 callback, an export):
    /// a new run, whatever the thread did since the guest last ran.
    pub fn entered_guest(&mut self) {
        self.computed = Duration::ZERO;
        self.last_tick = None;
    }

    /// An epoch tick found the guest running: past the limit, it is to be
    /// cut off.
    pub fn tick(&mut self) -> Result<(), CpuLimitExceeded> {
        self.tick_at(thread_cpu_time())
    }

    /// [`CpuClock::tick`] with the thread's CPU time `now`.
    fn tick_at(&mut self, now: Duration) -> Result<(), CpuLimitExceeded> {
        self.in_epoch_callback = true;
        let resumed = Duration::from_nanos(self.resumed.swap(0, Ordering::Relaxed));
        if let Some(last) = self.last_tick {
            self.computed += now.saturating_sub(last.max(resumed));
        }
        self.last_tick = Some(now);
        if self.computed > self.limit {
            return Err(CpuLimitExceeded {
                // Rounded up: past the limit, never shown equal to it.
                ran_ms: self.computed.as_micros().div_ceil(1000),
                limit_ms: self.limit.as_millis(),
            });
        }
        Ok(())
    }

    /// The guest's yield at a tick: lets its thread run the rest of its
    /// work (tokio's yield), then notes when the guest resumes.
    pub fn yield_now(&self) -> impl Future<Output = ()> + Send + 'static {
        let resumed = self.resumed.clone();
        async move {
            tokio::task::yield_now().await;
            let now = u64::try_from(thread_cpu_time().as_nanos()).unwrap_or(u64::MAX);
            resumed.store(now.max(1), Ordering::Relaxed);
        }
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock and a valid pointer to fill in.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
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
    fn a_guest_is_cut_off_after_computing_its_limit_without_a_host_call() {
        let ms = Duration::from_millis;
        let mut clock = CpuClock::new(ms(3));
        // The first tick starts the count; each one after adds the CPU
        // time the thread used since.
        for at in 0..4 {
            clock.tick_at(ms(at)).unwrap();
        }
        // Returning from the epoch callback is not a host call...
        clock.returned_from_host();
        let err = clock.tick_at(ms(4)).unwrap_err();
        assert_eq!((err.ran_ms, err.limit_ms), (4, 3));
        // ...a real one starts the count again.
        let mut clock = CpuClock::new(ms(3));
        clock.tick_at(ms(0)).unwrap();
        clock.tick_at(ms(2)).unwrap();
        clock.returned_from_host();
        clock.returned_from_host();
        for at in 10..14 {
            clock.tick_at(ms(at)).unwrap();
        }
        // So does an entry into the guest: what the thread did between two
        // runs of it is not its.
        clock.entered_guest();
        for at in 20..24 {
            clock.tick_at(ms(at)).unwrap();
        }
    }

    #[test]
    fn ticks_while_the_thread_did_not_run_the_guest_cost_it_nothing() {
        let ms = Duration::from_millis;
        let mut clock = CpuClock::new(ms(3));
        // A loaded machine: many ticks, little CPU time between them.
        for tick in 0..1000 {
            clock.tick_at(Duration::from_micros(tick)).unwrap();
        }
        // Another tenant computed on the thread while this guest yielded:
        // counted from when it resumed.
        let mut clock = CpuClock::new(ms(3));
        clock.tick_at(ms(0)).unwrap();
        clock
            .resumed
            .store(u64::try_from(ms(50).as_nanos()).unwrap(), Ordering::Relaxed);
        clock.tick_at(ms(51)).unwrap();
        clock.tick_at(ms(52)).unwrap();
        assert!(clock.tick_at(ms(54)).is_err());
    }

    #[tokio::test]
    async fn the_yield_notes_when_the_guest_resumed() {
        let clock = CpuClock::new(Duration::from_millis(3));
        clock.yield_now().await;
        assert!(clock.resumed.load(Ordering::Relaxed) > 0);
    }
}
