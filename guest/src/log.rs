//! Logging to the guest's stderr, which the host captures line by line into
//! its own log, tagged with the guest's name.
//!
//! Lines are gathered and written together, once per turn of the event loop
//! (see [`flush`]), so a busy server makes one call to the host for many
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
    /// The task that writes the gathered lines, waiting for the first line
    /// of the next turn (WASI 0.3 form).
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

/// Writes the gathered lines once per turn, forever: woken by the first
/// line of a turn, this task runs after the tasks that were ready with it,
/// so their lines go out in one write (WASI 0.3 form, where no single loop
/// knows when a turn ends).
#[cfg(feature = "p3")]
pub async fn flush_after_each_turn() {
    std::future::poll_fn(|cx| {
        flush();
        FLUSHER.with(|f| *f.borrow_mut() = Some(cx.waker().clone()));
        std::task::Poll::<()>::Pending
    })
    .await
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
