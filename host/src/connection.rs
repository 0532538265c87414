//! What the host enforces on client connections whatever the guest does:
//! the bytes each one moves (counted, and limited when the tenant says so),
//! its idle timeout, the back-off when accepting fails because the process
//! is out of file descriptors or memory, and the reset of clients past the
//! connection cap, also while the guest is not accepting.
//!
//! A connection the host closes is shut down at the socket: the client sees
//! the end of the stream, and the guest reads the end of the stream too, so
//! it frees the connection through its ordinary path.

use crate::tenant::{Counters, Tenant};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};

/// The origin of [`now_ms`].
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since [`base`], on a monotonic clock.
fn now_ms() -> u64 {
    u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The instant `ms` (from [`now_ms`]) stands for.
fn instant_at(ms: u64) -> Instant {
    base() + Duration::from_millis(ms)
}

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
    tenant: Arc<Tenant>,
    peer: SocketAddr,
    max_in: Option<u64>,
    max_out: Option<u64>,
    idle_timeout: Option<Duration>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// When a byte last moved, from [`now_ms`]; kept only with a timeout.
    last_active: AtomicU64,
    closed: AtomicBool,
}

impl Policed {
    /// The account of a connection with `peer` (a client, or the far end of
    /// an outbound connection), under `tenant`'s current limits.
    pub fn new(tenant: &Arc<Tenant>, peer: SocketAddr) -> Arc<Self> {
        let limits = tenant.config().limits.clone();
        Arc::new(Policed {
            tenant: tenant.clone(),
            peer,
            max_in: limits.max_bytes_in,
            max_out: limits.max_bytes_out,
            idle_timeout: limits.idle_timeout,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_active: AtomicU64::new(now_ms()),
            closed: AtomicBool::new(false),
        })
    }

    /// The tenant whose connection this is.
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    /// How many bytes a read may take now: `wanted`, less what is left of
    /// the inbound limit. Zero once the limit is reached: the connection has
    /// then been closed.
    pub fn read_allowance(&self, stream: &TcpStream, wanted: usize) -> usize {
        let Some(max) = self.max_in else {
            return wanted;
        };
        let left = max.saturating_sub(self.bytes_in.load(Ordering::Relaxed));
        if left == 0 {
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
        self.tenant
            .counters
            .bytes_in
            .fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Records `n` bytes sent to the client.
    pub fn sent(&self, n: usize) {
        let n = n as u64;
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.tenant
            .counters
            .bytes_out
            .fetch_add(n, Ordering::Relaxed);
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
        let (tenant, peer) = (self.tenant.name(), self.peer);
        let counters = &self.tenant.counters;
        let counter = match reason {
            Reason::Idle => &counters.idle_closed,
            Reason::BytesIn | Reason::BytesOut => &counters.byte_limit_closed,
        };
        Counters::bump(counter);
        // Clients can make a line per connection: within the log budget.
        if let Some(left_out) = self.tenant.refusal_log.admit() {
            let note = crate::log_budget::left_out_note(left_out);
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

/// First pause after a failed accept; doubled while accepts keep failing.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between attempts to accept.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept failures are logged at most once per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Pauses a tenant's accepting after accepts fail for want of resources, so
/// a full file-descriptor table costs a retry now and then, not a busy
/// loop, and logs it at most once per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Accepts resume at this time (from [`now_ms`]); 0 when not paused.
    paused_until: AtomicU64,
    /// Set while a task waits to wake the listeners at the end of the pause.
    wake_scheduled: Arc<AtomicBool>,
    state: Mutex<BackoffState>,
}

#[derive(Debug, Default)]
struct BackoffState {
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    /// When accepting resumes, if it is paused now.
    pub fn paused(&self) -> Option<Instant> {
        let until = self.paused_until.load(Ordering::Relaxed);
        (until != 0 && until > now_ms()).then(|| instant_at(until))
    }

    /// If accepting is paused, arranges for `gate` to open when the pause
    /// ends (once per pause) and returns true; false if it is not paused.
    pub fn wake_after_pause(&self, gate: &Arc<Gate>) -> bool {
        let Some(until) = self.paused() else {
            return false;
        };
        if !self.wake_scheduled.swap(true, Ordering::AcqRel) {
            let (scheduled, gate) = (self.wake_scheduled.clone(), gate.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                scheduled.store(false, Ordering::Release);
                gate.open();
            });
        }
        true
    }

    /// Records an accept that worked: the next failure pauses briefly again.
    pub fn succeeded(&self) {
        if self.paused_until.load(Ordering::Relaxed) != 0 {
            self.paused_until.store(0, Ordering::Relaxed);
            self.state.lock().unwrap_or_else(|p| p.into_inner()).delay = Duration::ZERO;
        }
    }

    /// Records a failed accept on `addr` and pauses accepting.
    pub fn failed(&self, tenant: &Tenant, addr: SocketAddr, error: &std::io::Error) {
        Counters::bump(&tenant.counters.accept_errors);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.delay = (state.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        let until = now_ms() + u64::try_from(state.delay.as_millis()).unwrap_or(u64::MAX);
        self.paused_until.store(until, Ordering::Relaxed);
        let now = Instant::now();
        if state.last_log.is_some_and(|at| now - at < LOG_EVERY) {
            state.unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut state.unlogged);
        state.last_log = Some(now);
        let name = tenant.name();
        let pause = humantime::format_duration(state.delay);
        warn!(
            tenant = name,
            %addr,
            unlogged,
            "accept on {addr} failed: {error}; pausing accepts for {pause} ({unlogged} more failures since the last report)"
        );
    }
}

/// One waiter for a tenant's accept gate: a listener pollable (or a
/// listening socket) of some guest instance, holding the last waker that
/// found the gate closed. One slot per waiter, so a waiter checked again
/// and again replaces its waker instead of adding one.
#[derive(Debug, Default)]
pub struct GateWaiter(Mutex<Option<std::task::Waker>>);

impl GateWaiter {
    /// Wakes `waker` when the gate next opens.
    pub fn set(&self, waker: &std::task::Waker) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A tenant's accept gate: whoever waits for it to open (its current
/// version to change, or a pause in accepting to end) is woken when it
/// does, every listener of every instance, not only the last to ask. Holds
/// its waiters weakly: a dropped pollable leaves with its handle, so the
/// list is bounded by the handles the tenant's guests hold.
#[derive(Debug, Default)]
pub struct Gate {
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    list: Vec<Weak<GateWaiter>>,
    /// The length at which dropped waiters are swept out next.
    sweep_at: usize,
}

impl Gate {
    /// A new waiter, woken each time the gate opens while it lives.
    pub fn waiter(&self) -> Arc<GateWaiter> {
        let waiter = Arc::new(GateWaiter::default());
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.list.len() >= waiters.sweep_at {
            waiters.list.retain(|w| w.strong_count() > 0);
            waiters.sweep_at = (waiters.list.len() * 2).max(64);
        }
        waiters.list.push(Arc::downgrade(&waiter));
        waiter
    }

    /// Wakes every waiter that found the gate closed.
    pub fn open(&self) {
        let live: Vec<Arc<GateWaiter>> = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for waiter in live {
            waiter.wake();
        }
    }
}

/// Resets `client` (from `peer`), refused because `why`: a reset rather
/// than a close, so the client knows at once. Counted; logged within the
/// tenant's log budget.
pub fn refuse_client(
    tenant: &Tenant,
    client: std::net::TcpStream,
    peer: SocketAddr,
    why: std::fmt::Arguments<'_>,
) {
    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
    Counters::bump(&tenant.counters.connections_refused);
    if let Some(left_out) = tenant.refusal_log.admit() {
        let note = crate::log_budget::left_out_note(left_out);
        warn!(
            tenant = tenant.name(),
            %peer,
            "refused: connection from {peer} reset, {why}{note}"
        );
    }
}

/// How long a tenant at its connection cap may leave clients queued, not
/// asking for any, before the host resets them itself.
const REAP_AFTER: Duration = Duration::from_millis(100);

/// Resets clients queued on a tenant's listeners while it is at its
/// connection cap and its guest is not accepting (a guest that accepts has
/// them reset as it asks: see crate::tcp), so they learn at once rather
/// than wait in the listen queue.
#[derive(Debug, Default)]
pub struct CapReaper {
    running: AtomicBool,
    /// When the guest last asked for a client, from [`now_ms`].
    last_accept: AtomicU64,
}

impl CapReaper {
    /// Records that the guest asked for a client.
    pub fn guest_accepting(&self) {
        self.last_accept.store(now_ms(), Ordering::Relaxed);
    }

    /// Runs the reaper for `tenant`, whose cap is `cap`, until it is below
    /// the cap (call it when the tenant reaches its cap).
    pub fn start(tenant: &Arc<Tenant>, cap: u64) {
        if tenant.cap_reaper.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_AFTER / 2);
            loop {
                while tenant.open_connections() >= cap {
                    tick.tick().await;
                    let quiet = now_ms()
                        .saturating_sub(tenant.cap_reaper.last_accept.load(Ordering::Relaxed));
                    if quiet < REAP_AFTER.as_millis() as u64 {
                        continue;
                    }
                    for listener in tenant.listeners() {
                        // Non-blocking: the listener is shared with the guest.
                        while tenant.open_connections() >= cap {
                            let Ok((client, peer)) = listener.accept() else {
                                break;
                            };
                            let name = tenant.name();
                            refuse_client(
                                &tenant,
                                client,
                                peer,
                                format_args!("{name} is at its cap of {cap} and not accepting"),
                            );
                        }
                    }
                }
                tenant.cap_reaper.running.store(false, Ordering::Release);
                // Reached the cap again just now: carry on, unless another
                // reaper took over.
                if tenant.open_connections() < cap
                    || tenant.cap_reaper.running.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }
}

/// Whether an accept error means the process is short of a resource (and
/// accepting again at once would fail again), rather than one client's
/// trouble.
pub fn is_resource_error(error: &std::io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(
        error.raw_os_error(),
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)
    )
}

/// Open client connections per client IP address, for
/// `max_connections_per_peer`. Addresses with none open are forgotten, so
/// the map holds at most one entry per open connection.
#[derive(Debug, Default)]
pub struct PeerCounts(Mutex<HashMap<IpAddr, u32>>);

impl PeerCounts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.map().get(&ip).copied().unwrap_or(0)
    }

    /// Counts a connection from `ip` opening.
    pub fn opened(&self, ip: IpAddr) {
        *self.map().entry(ip).or_insert(0) += 1;
    }

    /// Counts a connection from `ip` closing.
    pub fn closed(&self, ip: IpAddr) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}
