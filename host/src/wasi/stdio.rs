//! Guest stdout and stderr, captured into the host's log line by line, each
//! line tagged with the guest's name and the stream it came from.
//!
//! A guest's write is logged as it is made, on the guest's thread (not
//! handed to a task of its own and waited for, as wasmtime-wasi's default
//! stream does), and the lines of one write reach standard error in one
//! write(2): a guest that logs every request, as the seed does, costs the
//! host one write per turn of its event loop, not one per line.

use crate::account::{Account, Counters};
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A line longer than this is logged in pieces, so a guest that never writes
/// a newline cannot make the host buffer without bound.
const MAX_LINE: usize = 8 * 1024;

/// What `check-write` permits per write: any amount is logged at once.
const PERMIT: usize = 64 * 1024;

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
/// tenant's `log_lines_per_sec`.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    account: Arc<Account>,
    stream: Stream,
}

impl GuestOutput {
    /// Output of `stream` of the tenant of `account`.
    pub fn new(account: Arc<Account>, stream: Stream) -> Self {
        Self { account, stream }
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
            held.as_mut()
                .map(|held| held.extend_from_slice(buf))
                .is_some()
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
        if let Some(left_out) = tenant.output_log.admit() {
            let text = escape_controls(&String::from_utf8_lossy(&self.line));
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
}

/// Escapes control characters, so a guest cannot forge or garble the host's
/// log lines (carriage returns, terminal escapes).
fn escape_controls(text: &str) -> String {
    let text = text.strip_suffix('\r').unwrap_or(text);
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineLogger {
    /// Always ready: writes are logged at once.
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LineLogger {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        batched(|| self.push(&bytes));
        Ok(())
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
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
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
    use super::{HELD, LogWriter, batched, escape_controls};
    use std::io::Write;

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
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain text"), "plain text");
        assert_eq!(escape_controls("line\r"), "line");
        assert_eq!(escape_controls("a\x1b[31mred"), "a\\u{1b}[31mred");
    }
}
