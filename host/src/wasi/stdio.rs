//! Guest stdout and stderr, captured into the host's log line by line, each
//! line tagged with the guest's name and the stream it came from.
//!
//! A guest's write is logged as it is made, on the guest's thread (not
//! handed to a task of its own and waited for, as wasmtime-wasi's default
//! stream does), and the lines of one write reach standard error in one
//! write(2): a guest that logs every request, as the seed does, costs the
//! host one write per turn of its event loop, not one per line.
//!
//! What a guest can make the host spend here is bounded: one write takes
//! at most [`PERMIT`] bytes (past `check-write`'s permit it traps, as WASI
//! 0.2 says; a 0.3 stream is taken [`PERMIT`] bytes at a time); a line is
//! at most [`MAX_LINE`] bytes; the tenant's log budget (lines and bytes per
//! second) is applied before a line is formatted; the log held back during
//! one write is written out every [`MAX_HELD`] bytes; and the time spent is
//! counted against the guest's CPU limit.

use crate::account::{Account, Counters};
use crate::limits::cpu::{HostWork, HostWorkExceeded};
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// A line longer than this is logged in pieces, so a guest that never writes
/// a newline cannot make the host buffer without bound.
const MAX_LINE: usize = 8 * 1024;

/// What `check-write` permits per write (each write is logged at once, so
/// the permit is whole again after every write).
pub const PERMIT: usize = 64 * 1024;

/// Log output held back during one guest write (see `batched`) is written
/// out once it reaches this size.
const MAX_HELD: usize = 64 * 1024;

/// Which of the guest's output streams.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A guest output stream that writes into the host's log, within the
/// tenant's `log_lines_per_sec` and `log_bytes_per_sec`.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    account: Arc<Account>,
    /// The writing instance's host work, charged for the logging.
    host_work: Arc<Mutex<HostWork>>,
    stream: Stream,
}

impl GuestOutput {
    /// Output of `stream` of the instance with `host_work` of the tenant
    /// of `account`.
    pub fn new(account: Arc<Account>, host_work: Arc<Mutex<HostWork>>, stream: Stream) -> Self {
        Self {
            account,
            host_work,
            stream,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            output: self.clone(),
            line: Vec::new(),
        })
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLogger {
            output: self.clone(),
            line: Vec::new(),
        })
    }
}

thread_local! {
    /// Log output held back while a guest's write is being logged.
    static HELD: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// The host's log writer: standard error, except that the lines a guest
/// writes at once go out in one write (see `batched`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let held = HELD.with_borrow_mut(|held| {
            let Some(held) = held.as_mut() else {
                return false;
            };
            held.extend_from_slice(buf);
            if held.len() >= MAX_HELD {
                // Nowhere to report a failed log write.
                let _ = io::stderr().write_all(held);
                held.clear();
            }
            true
        });
        if held {
            return Ok(buf.len());
        }
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Runs `log`, writing the log lines it produces on this thread in one
/// write to standard error at the end, rather than one write per line.
fn batched(log: impl FnOnce()) {
    let outer = HELD.with_borrow_mut(|held| {
        let outer = held.is_none();
        if outer {
            *held = Some(Vec::new());
        }
        outer
    });
    log();
    if outer && let Some(lines) = HELD.with_borrow_mut(Option::take) {
        use io::Write as _;
        // Nowhere to report a failed log write.
        let _ = io::stderr().write_all(&lines);
    }
}

/// Splits written bytes into lines and logs each complete one.
struct LineLogger {
    output: GuestOutput,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        let tenant = &self.output.account;
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        // Printable ASCII, what most lines are, is its own escape.
        let plain = line.iter().all(|b| (b' '..=b'~').contains(b));
        let size = if plain {
            line.len()
        } else {
            let mut size = Measure(0);
            escape(line, &mut size);
            size.0
        };
        if let Some(left_out) = tenant.output_log.admit(size) {
            let escaped;
            let text = if plain {
                std::str::from_utf8(line).unwrap_or_default()
            } else {
                let mut text = String::with_capacity(size);
                escape(line, &mut text);
                escaped = text;
                &escaped
            };
            let note = crate::account::log_budget::left_out_note(left_out);
            tracing::info!(
                target: "guest",
                tenant = tenant.name(),
                stream = self.output.stream.name(),
                "{text}{note}"
            );
        } else {
            Counters::bump(&tenant.counters.log_lines_dropped);
        }
        self.line.clear();
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
    }

    /// Logs `bytes` (at most [`PERMIT`] of them), charging the time to the
    /// instance's CPU limit.
    fn log(&mut self, bytes: &[u8]) -> Result<(), HostWorkExceeded> {
        // Below the log level in force, nothing is split or formatted.
        if !tracing::enabled!(target: "guest", tracing::Level::INFO) {
            self.line.clear();
            return Ok(());
        }
        let started = std::time::Instant::now();
        batched(|| self.push(bytes));
        let output = &self.output;
        crate::limits::cpu::charge(&output.host_work, &output.account, started)
    }
}

/// Writes `line` as text into `out`, control characters escaped, so a
/// guest cannot forge or garble the host's log lines (carriage returns,
/// terminal escapes), and each invalid UTF-8 sequence as U+FFFD. One walk
/// for both measuring (the budget is decided on the size before anything
/// is formatted) and formatting.
fn escape(line: &[u8], out: &mut impl std::fmt::Write) {
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            // Writing to a String or a Measure cannot fail.
            let _ = if c.is_control() {
                write!(out, "{}", c.escape_default())
            } else {
                out.write_char(c)
            };
        }
        if !chunk.invalid().is_empty() {
            let _ = out.write_char(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Counts what [`escape`] would write.
struct Measure(usize);

impl std::fmt::Write for Measure {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineLogger {
    /// Always ready: writes are logged at once.
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LineLogger {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > PERMIT {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "wrote {} bytes to {}, past the {PERMIT} bytes check-write permits",
                bytes.len(),
                self.output.stream.name()
            )));
        }
        self.log(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::from(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A WASI 0.3 stream: taken a permit at a time, like a 0.2 write.
        let taken = buf.len().min(PERMIT);
        Poll::Ready(
            self.get_mut()
                .log(&buf[..taken])
                .map(|()| taken)
                .map_err(io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.line.is_empty() {
            this.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        // A last line without a newline is still the guest's output.
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        GuestOutput, HELD, LineLogger, LogWriter, MAX_HELD, Measure, Stream, batched, escape,
    };
    use crate::account::Account;
    use crate::limits::cpu::HostWork;
    use std::io::Write;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    /// Logs `lines` through a guest's stderr, under a subscriber at
    /// `filter`, with a budget of one line: the lines left out.
    fn left_out_under(filter: &str, lines: &[u8]) -> u64 {
        let account = Arc::new(Account::new("t"));
        account.output_log.set_rates(1, 0);
        let work = Arc::new(Mutex::new(HostWork::new(std::time::Duration::from_secs(1))));
        let mut logger = LineLogger {
            output: GuestOutput::new(account.clone(), work, Stream::Stderr),
            line: Vec::new(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || logger.log(lines).unwrap());
        account.counters.log_lines_dropped.load(Ordering::Relaxed)
    }

    #[test]
    fn below_the_log_level_guest_lines_are_not_even_weighed_against_the_budget() {
        let lines = b"one\ntwo\nthree\n";
        // At the level in force, the budget keeps one line of three.
        assert_eq!(left_out_under("info", lines), 2);
        // Filtered out, nothing is split, formatted or counted.
        assert_eq!(left_out_under("info,guest=off", lines), 0);
    }

    #[test]
    fn log_output_during_a_guest_write_is_held_and_written_once_at_its_end() {
        let held = || HELD.with_borrow(Clone::clone);
        batched(|| {
            LogWriter.write_all(b"first line\n").unwrap();
            // A nested batch adds to the outer one.
            batched(|| LogWriter.write_all(b"second line\n").unwrap());
            assert_eq!(held().as_deref(), Some(&b"first line\nsecond line\n"[..]));
        });
        assert_eq!(held(), None);
    }

    #[test]
    fn held_log_output_is_written_out_at_its_bound() {
        batched(|| {
            for _ in 0..MAX_HELD {
                LogWriter.write_all(b"x\n").unwrap();
            }
            let held = HELD.with_borrow(|held| held.as_ref().map(Vec::len));
            assert!(held.is_some_and(|n| n < MAX_HELD), "{held:?}");
        });
    }

    #[test]
    fn control_characters_are_escaped_and_measured_before_formatting() {
        let escaped = |line: &[u8]| {
            let (mut text, mut size) = (String::new(), Measure(0));
            escape(line, &mut text);
            escape(line, &mut size);
            assert_eq!(size.0, text.len());
            text
        };
        assert_eq!(escaped(b"plain text"), "plain text");
        assert_eq!(escaped(b"a\x1b[31mred\t"), "a\\u{1b}[31mred\\t");
        assert_eq!(escaped(b"bad \xff\xfe utf-8"), "bad \u{fffd}\u{fffd} utf-8");
    }
}
