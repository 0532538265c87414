//! Logging to the guest's stderr, which the host captures line by line into
//! its own log, tagged with the guest's name.

use crate::bindings::wasi::cli::stderr::get_stderr;
use crate::bindings::wasi::io::streams::OutputStream;
use std::cell::RefCell;

/// `blocking-write-and-flush` accepts at most this many bytes per call.
const MAX_WRITE: usize = 4096;

thread_local! {
    // One stream for the guest's lifetime: asking the host for a new one on
    // every line would cost a resource allocation each time.
    static STDERR: RefCell<Option<OutputStream>> = const { RefCell::new(None) };
}

/// Writes one line to stderr. Errors are ignored: a guest must not fail
/// because its log is unavailable.
pub fn line(text: &str) {
    STDERR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let stream = cell.get_or_insert_with(get_stderr);
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        for chunk in bytes.chunks(MAX_WRITE) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    });
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
