//! Logging to the guest's stderr, which the host captures line by line into
//! its own log, tagged with the guest's name.
//!
//! Lines are gathered and written together, once per turn of the event loop
//! (see [`flush`]), so a busy server makes one call to the host for many
//! lines rather than one per line. A panic flushes them first.

use crate::bindings::wasi::cli::stderr::get_stderr;
use crate::bindings::wasi::io::streams::OutputStream;
use std::cell::RefCell;

/// `blocking-write-and-flush` accepts at most this many bytes per call.
const MAX_WRITE: usize = 4096;

/// Gathered lines are written out once they reach this size, even
/// mid-turn, so the buffer stays small.
const FLUSH_AT: usize = 16 * 1024;

thread_local! {
    // One stream for the guest's lifetime: asking the host for a new one on
    // every write would cost a resource allocation each time.
    static STDERR: RefCell<Option<OutputStream>> = const { RefCell::new(None) };
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Adds one line to the log; it is written by the next [`flush`].
pub fn line(text: &str) {
    let full = BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.is_empty() && buffer.capacity() == 0 {
            install_panic_flush();
        }
        buffer.extend_from_slice(text.as_bytes());
        buffer.push(b'\n');
        buffer.len() >= FLUSH_AT
    });
    if full {
        flush();
    }
}

/// Writes the gathered lines to stderr. Errors are ignored: a guest must not
/// fail because its log is unavailable.
pub fn flush() {
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.is_empty() {
            return;
        }
        STDERR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let stream = cell.get_or_insert_with(get_stderr);
            for chunk in buffer.chunks(MAX_WRITE) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        });
        buffer.clear();
    });
}

/// Makes a panic write the gathered lines before its own message.
fn install_panic_flush() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

/// Formats and logs one line: `guest::log!("accepted {peer}")`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(&::std::format!($($arg)*))
    };
}

/// Renders received bytes for the log: printable text as is, everything
/// else escaped, so a client cannot forge log lines with control characters.
pub fn escape(data: &[u8]) -> String {
    data.escape_ascii().to_string()
}
