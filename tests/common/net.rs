//! Talking to guests over real TCP on 127.0.0.1: connecting once the
//! address accepts, round trips, the seed's reply, and a neighbour that
//! keeps asking while a hostile tenant runs beside it.

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Retries connecting until the guest accepts (it may log before it listens).
pub fn wait_until_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} never accepted a connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects with the test timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    raise_open_file_limit();
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting to the guest");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `message` and reads one newline-terminated reply.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> String {
    stream.write_all(message).expect("sending");
    read_line(stream)
}

/// Reads up to and including the next newline (byte by byte: replies are
/// short and the test must not read past one reply).
pub fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return String::from_utf8(line).expect("a UTF-8 reply");
                }
            }
            Err(e) => panic!(
                "reading a reply: {e} (after {:?})",
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

/// Asserts `reply` is exactly `rust socket server : N\n` with N in 0..100.
pub fn assert_seed_reply(reply: &str) {
    let n = reply
        .strip_prefix("rust socket server : ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("malformed reply {reply:?}"));
    assert!(n < 100, "N out of range in {reply:?}");
}

/// A well-behaved client hammering a tenant with round trips from its own
/// thread, counting answers and failures, until stopped.
pub struct Neighbour {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
    /// The slowest answered round trip, in microseconds.
    slowest_us: Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Neighbour {
    /// Starts round trips to the seed guest at `addr`, one every few ms.
    pub fn start(addr: SocketAddr) -> Neighbour {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let slowest_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count, slowest) = (stop.clone(), answered.clone(), slowest_us.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut stream = connect(addr);
            while !flag.load(Relaxed) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let started = Instant::now();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    assert_seed_reply(&round_trip(&mut stream, b"are you there?\n"));
                }));
                match outcome {
                    Ok(()) => {
                        count.fetch_add(1, Relaxed);
                        let took = u64::try_from(started.elapsed().as_micros()).unwrap();
                        slowest.fetch_max(took, Relaxed);
                    }
                    Err(_) => {
                        failures.push(format!(
                            "round trip after {} answers failed",
                            count.load(Relaxed)
                        ));
                        stream = connect(addr);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            failures
        });
        Neighbour {
            stop,
            answered,
            slowest_us,
            thread,
        }
    }

    /// As [`Neighbour::assert_all_answered`], and asserts no round trip
    /// took `longer` (a bound generous enough for a loaded 2-core machine
    /// running the debug host, far below the stalls a hostile guest
    /// caused).
    pub fn assert_answered_within(self, longer: Duration) -> u64 {
        let slowest = self.slowest_us.clone();
        let answered = self.assert_all_answered();
        let slowest = Duration::from_micros(slowest.load(std::sync::atomic::Ordering::Relaxed));
        assert!(
            slowest <= longer,
            "the neighbour's slowest round trip took {slowest:?} (of {answered})"
        );
        answered
    }

    /// Stops (after at least one answer) and asserts every request was
    /// answered; returns how many were.
    pub fn assert_all_answered(self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = Instant::now() + TIMEOUT;
        while self.answered.load(Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Relaxed);
        let failures = self.thread.join().expect("the neighbour thread");
        assert!(
            failures.is_empty(),
            "the neighbour was disturbed: {failures:?}"
        );
        let answered = self.answered.load(Relaxed);
        assert!(answered > 0, "the neighbour got no answers");
        answered
    }
}

/// Raises this test process's soft limit on open files to its hard limit,
/// once, as the host raises its own: tests holding thousands of
/// connections would otherwise fail under the 1024 most desktops set.
pub(super) fn raise_open_file_limit() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write one rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
                    eprintln!(
                        "cannot raise the open-file limit to {}: tests holding thousands of connections may fail",
                        limit.rlim_max
                    );
                }
            }
        }
    });
}
