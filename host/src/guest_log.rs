//! Guest stdout and stderr, captured into the host's log line by line, each
//! line tagged with the guest's name and the stream it came from.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A line longer than this is logged in pieces, so a guest that never writes
/// a newline cannot make the host buffer without bound.
const MAX_LINE: usize = 8 * 1024;

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

/// A guest output stream that writes into the host's log.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    tenant: Arc<str>,
    stream: Stream,
}

impl GuestOutput {
    /// Output of `tenant`'s `stream`.
    pub fn new(tenant: Arc<str>, stream: Stream) -> Self {
        Self { tenant, stream }
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
}

/// Splits written bytes into lines and logs each complete one.
struct LineLogger {
    output: GuestOutput,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        let text = escape_controls(&String::from_utf8_lossy(&self.line));
        tracing::info!(
            target: "guest",
            tenant = &*self.output.tenant,
            stream = self.output.stream.name(),
            "{text}"
        );
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
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain text"), "plain text");
        assert_eq!(escape_controls("line\r"), "line");
        assert_eq!(escape_controls("a\x1b[31mred"), "a\\u{1b}[31mred");
    }
}
