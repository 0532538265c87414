//! How fast what a tenant can provoke at will may fill the host's log:
//! refusals (a guest retrying a forbidden bind in a loop, a connection
//! storm against a full tenant) are logged up to [`LINES_PER_SECOND`] per
//! tenant, and the guest's own output up to its `log_lines_per_sec` limit
//! when it has one; the rest are counted, and the next line logged says how
//! many were left out. The metrics count every one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Refusal lines logged per tenant per second, at most.
pub const LINES_PER_SECOND: u32 = 10;

/// A per-tenant allowance of log lines per second.
#[derive(Debug)]
pub struct LogBudget {
    /// Lines per second; 0 for no limit.
    rate: AtomicU32,
    window: Mutex<Window>,
}

impl Default for LogBudget {
    /// [`LINES_PER_SECOND`].
    fn default() -> Self {
        Self::with_rate(LINES_PER_SECOND)
    }
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    /// A budget of `rate` lines per second (0: no limit).
    pub fn with_rate(rate: u32) -> Self {
        LogBudget {
            rate: AtomicU32::new(rate),
            window: Mutex::default(),
        }
    }

    /// Changes the rate (0: no limit).
    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Whether one more line may be logged now: `Some` with the number of
    /// lines left out since the last one logged, or `None` if this one is
    /// to be left out (and counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            // No limit: no lock on the path of every line.
            return Some(0);
        }
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= Duration::from_secs(1))
        {
            window.started = Some(now);
            window.logged = 0;
        }
        if window.logged >= rate {
            window.left_out += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.left_out))
    }
}

/// The suffix of a logged line that follows `left_out` lines left out.
pub fn left_out_note(left_out: u64) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(" ({left_out} similar lines left out of the log before this one)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_at_the_allowance_and_the_next_window_reports_the_rest() {
        let budget = LogBudget::default();
        let start = Instant::now();
        let admitted = (0..100)
            .filter(|_| budget.admit_at(start).is_some())
            .count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.admit_at(later), Some(90));
        assert_eq!(budget.admit_at(later), Some(0));
    }

    #[test]
    fn a_rate_of_zero_admits_everything() {
        let budget = LogBudget::with_rate(0);
        let now = Instant::now();
        assert!((0..1000).all(|_| budget.admit_at(now) == Some(0)));
    }
}
