//! Per-connection policing, whatever the guest does: the bytes each
//! connection moves (counted, and limited when the tenant says so) and its
//! idle timeout. Applies to clients and to outbound connections alike.
//!
//! A connection the host closes is shut down at the socket: the client sees
//! the end of the stream, and the guest reads the end of the stream too, so
//! it frees the connection through its ordinary path.

use super::{instant_at, now_ms};
use crate::account::{Account, Counters};
use crate::config::model::Limits;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::{info, warn};

/// Why the host closed a connection.
#[derive(Debug, Clone, Copy)]
enum Reason {
    Idle,
    BytesIn,
    BytesOut,
}

/// The host's account of one client connection, shared by its input and
/// output streams and its idle watchdog.
pub struct Policed {
    account: Arc<Account>,
    peer: SocketAddr,
    max_in: Option<u64>,
    max_out: Option<u64>,
    idle_timeout: Option<Duration>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// When a byte last moved, from [`now_ms`]; kept only with a timeout.
    last_active: AtomicU64,
    closed: AtomicBool,
    /// Whether its bytes count as the tenant's traffic.
    counted: bool,
}

impl Policed {
    /// The account of a connection with `peer` (a client, or the far end of
    /// an outbound connection) of the tenant of `account`, under `limits`
    /// (the tenant's current ones).
    pub fn new(account: &Arc<Account>, limits: &Limits, peer: SocketAddr) -> Arc<Self> {
        Arc::new(Policed {
            account: account.clone(),
            peer,
            max_in: limits.max_bytes_in,
            max_out: limits.max_bytes_out,
            idle_timeout: limits.idle_timeout,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_active: AtomicU64::new(now_ms()),
            closed: AtomicBool::new(false),
            counted: true,
        })
    }

    /// The account of a connection that never leaves the guest's instance
    /// (crate::wasi::sockets::private): no limit, no idle time, and its
    /// bytes are not the tenant's traffic.
    pub fn unpoliced(account: &Arc<Account>, peer: SocketAddr) -> Arc<Self> {
        Arc::new(Policed {
            account: account.clone(),
            peer,
            max_in: None,
            max_out: None,
            idle_timeout: None,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_active: AtomicU64::new(now_ms()),
            closed: AtomicBool::new(false),
            counted: false,
        })
    }

    /// The account of the tenant whose connection this is.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// How many bytes a read may take now: `wanted`, less what is left of
    /// the inbound limit. Zero once the limit is reached: the connection has
    /// then been closed.
    pub fn read_allowance(&self, stream: &TcpStream, wanted: usize) -> usize {
        self.read_allowance_then(stream, wanted, || ())
    }

    /// Whether the client has sent all the guest may read: the next read
    /// closes the connection.
    pub fn at_inbound_limit(&self) -> bool {
        self.max_in
            .is_some_and(|max| self.bytes_in.load(Ordering::Relaxed) >= max)
    }

    /// [`Policed::read_allowance`], calling `before_close` first if the
    /// limit is reached (to send what the guest already wrote).
    pub fn read_allowance_then(
        &self,
        stream: &TcpStream,
        wanted: usize,
        before_close: impl FnOnce(),
    ) -> usize {
        let Some(max) = self.max_in else {
            return wanted;
        };
        let left = max.saturating_sub(self.bytes_in.load(Ordering::Relaxed));
        if left == 0 {
            before_close();
            self.close(stream, Reason::BytesIn);
        }
        wanted.min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Whether the guest may send `len` more bytes, beside `queued` bytes
    /// written but not yet sent; if not, the connection has been closed.
    pub fn may_send(&self, stream: &TcpStream, queued: usize, len: usize) -> bool {
        let Some(max) = self.max_out else {
            return true;
        };
        let after = self.bytes_out.load(Ordering::Relaxed) + queued as u64 + len as u64;
        if after > max {
            self.close(stream, Reason::BytesOut);
            return false;
        }
        true
    }

    /// Records `n` bytes received from the client.
    pub fn received(&self, n: usize) {
        let n = n as u64;
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        if self.counted {
            self.account
                .counters
                .bytes_in
                .fetch_add(n, Ordering::Relaxed);
        }
        self.touch();
    }

    /// Records `n` bytes sent to the client.
    pub fn sent(&self, n: usize) {
        let n = n as u64;
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        if self.counted {
            self.account
                .counters
                .bytes_out
                .fetch_add(n, Ordering::Relaxed);
        }
        self.touch();
    }

    fn touch(&self) {
        if self.idle_timeout.is_some() {
            self.last_active.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Shuts the connection down once, logging and counting why.
    fn close(&self, stream: &TcpStream, reason: Reason) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let (tenant, peer) = (self.account.name(), self.peer);
        let counters = &self.account.counters;
        let counter = match reason {
            Reason::Idle => &counters.idle_closed,
            Reason::BytesIn | Reason::BytesOut => &counters.byte_limit_closed,
        };
        Counters::bump(counter);
        // Clients can make a line per connection: within the log budget.
        if let Some(note) = self.account.may_log() {
            match reason {
                Reason::Idle => {
                    let after = humantime::format_duration(self.idle_timeout.unwrap_or_default());
                    info!(tenant, %peer, "closed: connection from {peer} idle for {after}{note}");
                }
                Reason::BytesIn => {
                    let max = self.max_in.unwrap_or_default();
                    warn!(tenant, %peer, max, "closed: connection from {peer} sent its limit of {max} bytes{note}");
                }
                Reason::BytesOut => {
                    let max = self.max_out.unwrap_or_default();
                    warn!(tenant, %peer, max, "closed: connection to {peer} would pass its limit of {max} bytes sent{note}");
                }
            }
        }
        // The client may be gone already; closing proceeds either way.
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
    }

    /// Closes `stream` once no byte has moved for the idle timeout; returns
    /// at once without one. Runs until then (or until aborted, when the
    /// connection goes).
    pub fn watch_idle(
        self: Arc<Self>,
        stream: Weak<TcpStream>,
    ) -> Option<impl Future<Output = ()>> {
        let timeout = self.idle_timeout?;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Some(async move {
            loop {
                let last = self.last_active.load(Ordering::Relaxed);
                tokio::time::sleep_until(instant_at(last.saturating_add(timeout_ms))).await;
                if self.last_active.load(Ordering::Relaxed) != last {
                    continue;
                }
                if let Some(stream) = stream.upgrade() {
                    self.close(&stream, Reason::Idle);
                }
                return;
            }
        })
    }
}
