//! How fast what a tenant can provoke at will may fill the host's log:
//! refusals (a guest retrying a forbidden bind in a loop, a connection
//! storm against a full tenant) are logged up to [`LINES_PER_SECOND`] per
//! tenant, and the guest's own output up to its `log_lines_per_sec` and
//! `log_bytes_per_sec` limits; the rest are counted, and the next line
//! logged says how many were left out. The metrics count every one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Refusal lines logged per tenant per second, at most.
pub const LINES_PER_SECOND: u32 = 10;

/// A per-tenant allowance of log lines, and of bytes, per second.
#[derive(Debug)]
pub struct LogBudget {
    /// Lines per second; 0 for no limit.
    lines: AtomicU32,
    /// Bytes per second; 0 for no limit.
    bytes: AtomicU64,
    window: Mutex<Window>,
}

impl Default for LogBudget {
    /// [`LINES_PER_SECOND`], bytes unlimited.
    fn default() -> Self {
        Self::with_rates(LINES_PER_SECOND, 0)
    }
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    lines: u32,
    bytes: u64,
    left_out: u64,
}

impl LogBudget {
    /// A budget of `lines` lines and `bytes` bytes per second (0: no limit).
    pub fn with_rates(lines: u32, bytes: u64) -> Self {
        LogBudget {
            lines: AtomicU32::new(lines),
            bytes: AtomicU64::new(bytes),
            window: Mutex::default(),
        }
    }

    /// Changes the rates (0: no limit).
    pub fn set_rates(&self, lines: u32, bytes: u64) {
        self.lines.store(lines, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Whether one more line of `size` bytes may be logged now: `Some`
    /// with the number of lines left out since the last one logged, or
    /// `None` if this one is to be left out (and counted). Decided before
    /// the line is formatted, so a line left out costs no formatting.
    pub fn admit(&self, size: usize) -> Option<u64> {
        self.admit_at(Instant::now(), size as u64)
    }

    fn admit_at(&self, now: Instant, size: u64) -> Option<u64> {
        let (lines, bytes) = (
            self.lines.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
        if lines == 0 && bytes == 0 {
            // No limit: no lock on the path of every line.
            return Some(0);
        }
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= Duration::from_secs(1))
        {
            window.started = Some(now);
            window.lines = 0;
            window.bytes = 0;
        }
        // The first line of a window is admitted whatever its size (a line
        // is at most a few KiB: crate::wasi::stdio), so a byte rate below
        // one line's size slows the log instead of silencing it.
        let over_lines = lines != 0 && window.lines >= lines;
        let over_bytes = bytes != 0 && window.bytes > 0 && window.bytes + size > bytes;
        if over_lines || over_bytes {
            window.left_out += 1;
            return None;
        }
        window.lines += 1;
        window.bytes += size;
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
            .filter(|_| budget.admit_at(start, 80).is_some())
            .count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.admit_at(later, 80), Some(90));
        assert_eq!(budget.admit_at(later, 80), Some(0));
    }

    #[test]
    fn bytes_are_cut_at_their_allowance_whatever_the_line_count() {
        let budget = LogBudget::with_rates(0, 1000);
        let start = Instant::now();
        let admitted = (0..100)
            .filter(|_| budget.admit_at(start, 300).is_some())
            .count();
        assert_eq!(admitted, 3, "3 lines of 300 bytes fit in 1000");
        // A line larger than the whole allowance still opens a window.
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.admit_at(later, 5000), Some(97));
        assert_eq!(budget.admit_at(later, 1), None);
    }

    #[test]
    fn rates_of_zero_admit_everything() {
        let budget = LogBudget::with_rates(0, 0);
        let now = Instant::now();
        assert!((0..1000).all(|_| budget.admit_at(now, 1 << 20) == Some(0)));
    }
}
