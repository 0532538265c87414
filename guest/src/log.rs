//! Logging to the guest's stderr, which the host captures line by line into
//! its own log, tagged with the guest's name.
//!
//! Lines are gathered and written together, once per turn of the event loop
//! (see [`flush`]; in the WASI 0.3 form, every few milliseconds while lines
//! keep coming), so a busy server makes one call to the host for many
//! lines rather than one per line. A panic flushes them first.

#[cfg(not(feature = "p3"))]
use crate::bindings::wasi::cli::stderr::get_stderr;
#[cfg(not(feature = "p3"))]
use crate::bindings::wasi::io::streams::OutputStream;
use std::cell::RefCell;

/// `blocking-write-and-flush` accepts at most this many bytes per call.
#[cfg(not(feature = "p3"))]
const MAX_WRITE: usize = 4096;

/// Gathered lines are written out once they reach this size, even
/// mid-turn, so the buffer stays small.
const FLUSH_AT: usize = 16 * 1024;

thread_local! {
    // One stream for the guest's lifetime: asking the host for a new one on
    // every write would cost a resource allocation each time.
    #[cfg(not(feature = "p3"))]
    static STDERR: RefCell<Option<OutputStream>> = const { RefCell::new(None) };
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The task that writes the gathered lines, while it is parked waiting
    /// for a first line (WASI 0.3 form).
    #[cfg(feature = "p3")]
    static FLUSHER: RefCell<Option<std::task::Waker>> = const { RefCell::new(None) };
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
    #[cfg(feature = "p3")]
    if let Some(flusher) = FLUSHER.with(|f| f.borrow_mut().take()) {
        flusher.wake();
    }
}

/// How long a line waits at most in the WASI 0.3 form before it is
/// written with the others gathered meanwhile.
#[cfg(feature = "p3")]
const FLUSH_EVERY_NS: u64 = 5_000_000;

/// Writes the gathered lines, forever (WASI 0.3 form, where no single loop
/// knows when a turn ends): every [`FLUSH_EVERY_NS`] while lines keep
/// coming; parked once a period passes without any, until the next line
/// wakes it. A task woken on every line would cost the guest a trip
/// through the runtime's event loop per line (wit-bindgen yields whenever
/// a task was woken while it polled); measured in BENCHMARKS.md.
#[cfg(feature = "p3")]
pub async fn flush_periodically() {
    use crate::bindings::wasi::clocks::monotonic_clock::wait_for;
    loop {
        std::future::poll_fn(|cx| {
            if BUFFER.with(|b| !b.borrow().is_empty()) {
                return std::task::Poll::Ready(());
            }
            FLUSHER.with(|f| *f.borrow_mut() = Some(cx.waker().clone()));
            std::task::Poll::Pending
        })
        .await;
        loop {
            wait_for(FLUSH_EVERY_NS).await;
            if BUFFER.with(|b| b.borrow().is_empty()) {
                break;
            }
            flush();
        }
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
        write(&buffer);
        buffer.clear();
    });
}

/// Writes `bytes` to stderr, ignoring errors.
#[cfg(not(feature = "p3"))]
fn write(bytes: &[u8]) {
    STDERR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let stream = cell.get_or_insert_with(get_stderr);
        for chunk in bytes.chunks(MAX_WRITE) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    });
}

/// Writes `bytes` to stderr, ignoring errors: through the standard
/// library, whose stderr is a plain blocking write (WASI 0.3's is a
/// stream, which a synchronous log call cannot wait on).
#[cfg(feature = "p3")]
fn write(bytes: &[u8]) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(bytes);
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
