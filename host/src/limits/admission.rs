//! Admission: which clients a tenant's guest is handed, whatever the guest
//! does. The connection caps (a client past one is reset before the guest
//! sees it, and reset by the host while a guest at its cap does not accept),
//! the count of open client and outbound connections, the accept gate
//! (only the tenant's current version accepts) and the back-off when
//! accepting fails because the process is out of file descriptors or
//! memory. The WASI layer asks here for every client it accepts and every
//! connection it opens (crate::wasi::sockets).
//!
//! Its unit tests follow, past line 570.

use super::{instant_at, now_ms};
use crate::account::{Account, Counters, InstanceAccount};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// The host's listening sockets of a tenant, as the reaper of clients past
/// its cap needs them (implemented by the tenant, crate::tenancy).
pub trait HostListeners: Send + Sync {
    /// The host's listeners for all the tenant's addresses.
    fn listeners(&self) -> Vec<Arc<TcpListener>>;
}

/// A tenant's admission state, shared by all its guest versions.
#[derive(Debug, Default)]
pub struct Admission {
    /// Pauses accepting when accepts fail for want of resources.
    pub backoff: AcceptBackoff,
    /// Whoever found the accept gate closed (not the current version, or
    /// accepting paused) and waits to hear it may have opened.
    pub gate: Arc<Gate>,
    /// Open client connections per client address.
    pub peers: PeerCounts,
    /// Resets clients past the cap while the guest does not accept.
    reaper: CapReaper,
    /// A wake-up of the gate's waiters is due at the end of a deferral
    /// window ([`defer_to_sibling`]).
    defer_wake_scheduled: Arc<AtomicBool>,
}

impl Admission {
    /// An instance took a client: if another is leaving clients to a
    /// sibling (a deferral window is open), it looks again now, as the
    /// loads changed (it may be its turn).
    pub fn took_client(&self) {
        if self.defer_wake_scheduled.load(Ordering::Acquire) {
            self.gate.open();
        }
    }

    /// Opens the gate once a deferral window has passed (one wake-up
    /// scheduled at a time), so an instance that left a client to a
    /// sibling looks again then, without spinning meanwhile.
    pub fn wake_after_deferring(&self) {
        if !self.defer_wake_scheduled.swap(true, Ordering::AcqRel) {
            let (scheduled, gate) = (self.defer_wake_scheduled.clone(), self.gate.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(MAX_DEFER_MS + 1)).await;
                scheduled.store(false, Ordering::Release);
                gate.open();
            });
        }
    }

    /// Records that the guest asked for a client.
    pub fn guest_accepting(&self) {
        self.reaper.guest_accepting();
    }

    /// Admits `client` from `peer` against the tenant's caps (`cap` open
    /// connections, `per_peer` from one client address), or resets it,
    /// counted and logged, and returns `None`.
    pub fn admit(
        &self,
        account: &Account,
        client: std::net::TcpStream,
        peer: SocketAddr,
        cap: u64,
        per_peer: Option<u32>,
    ) -> Option<std::net::TcpStream> {
        let over_cap = account.counters.connections_open.load(Ordering::Relaxed) >= cap;
        let over_peer_cap = per_peer.is_some_and(|max| self.peers.open(peer.ip()) >= max);
        if !over_cap && !over_peer_cap {
            return Some(client);
        }
        let name = account.name();
        if over_cap {
            refuse_client(
                account,
                client,
                peer,
                format_args!("{name} is at its cap of {cap}"),
            );
        } else {
            let ip = peer.ip();
            let max = per_peer.unwrap_or_default();
            refuse_client(
                account,
                client,
                peer,
                format_args!("{ip} is at {name}'s cap of {max} per client address"),
            );
        }
        None
    }
}

/// The longest an instance leaves queued clients to a sibling before it
/// takes one itself: a sibling that looked idle but does not accept (it
/// waits for something else, or its thread is busy) delays a client by no
/// more than this.
pub const MAX_DEFER_MS: u64 = 2;

/// Whether `me`, an instance of a tenant with a client queued, should leave
/// that client to one of `siblings` (the instances of its version, `me`
/// among them): one that listens and holds less than half of `me`'s open
/// connections (`me` holds at least twice its count plus one), for at
/// most [`MAX_DEFER_MS`]
/// in a row (then it takes clients until it took one or found none:
/// [`took_client`]; the caller wakes itself at the window's end:
/// [`Admission::wake_after_deferring`]).
/// Every instance serves the tenant's listeners (one shared accept
/// queue, served by whichever instance is ready); without this, an instance
/// woken first by a burst of clients takes them all while its siblings are
/// busy with their first ones. Within twice a sibling's load the queue decides, so an instance
/// that is slowed (its thread shared with a busy neighbour, say) may keep
/// fewer clients; past it, no instance runs away with them. Two instances
/// never defer to each other, so a client is always someone's to take.
pub fn defer_to_sibling(me: &InstanceAccount, siblings: &[Arc<InstanceAccount>]) -> bool {
    let mine = me.open.load(Ordering::Relaxed);
    let lighter = siblings.iter().any(|s| {
        s.index != me.index
            && s.generation == me.generation
            && s.is_listening()
            && mine >= 2 * (s.open.load(Ordering::Relaxed) + 1)
    });
    if !lighter {
        return false;
    }
    // 0 means "not deferring": counted from 1.
    let now = super::now_ms() + 1;
    match me.deferring_since_ms.load(Ordering::Relaxed) {
        0 => {
            me.deferring_since_ms.store(now, Ordering::Relaxed);
            true
        }
        since => now - since < MAX_DEFER_MS,
    }
}

/// `me` took a client, or found none queued: long enough deferring or
/// not, the next client may be left to a sibling afresh
/// ([`defer_to_sibling`]).
pub fn took_client(me: &InstanceAccount) {
    me.deferring_since_ms.store(0, Ordering::Relaxed);
}

/// One open client connection, counted for its tenant and for the guest
/// instance that holds it, while it lives.
pub struct OpenConnection {
    account: Arc<Account>,
    admission: Arc<Admission>,
    instance: Arc<InstanceAccount>,
    /// The client's address, counted in the tenant's per-peer counts.
    peer: IpAddr,
    /// The idle watchdog, if the tenant has an idle timeout.
    watchdog: Option<tokio::task::AbortHandle>,
}

impl OpenConnection {
    /// Counts a client connection from `peer` of the tenant of `account`
    /// and `admission`, whose cap is `cap`, held by the instance counting
    /// in `instance`. At the cap, starts resetting the clients queued on
    /// `listeners` that the guest does not take.
    pub fn new(
        account: &Arc<Account>,
        admission: &Arc<Admission>,
        instance: &Arc<InstanceAccount>,
        peer: IpAddr,
        watchdog: Option<tokio::task::AbortHandle>,
        cap: u64,
        listeners: &Arc<dyn HostListeners>,
    ) -> Self {
        admission.peers.opened(peer);
        let open = account
            .counters
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if open >= cap {
            // At the cap: clients the guest does not take are reset anyway.
            CapReaper::start(admission, account, cap, listeners.clone());
        }
        instance.open.fetch_add(1, Ordering::Relaxed);
        Counters::bump(&instance.accepted);
        Counters::bump(&account.counters.connections_accepted);
        OpenConnection {
            account: account.clone(),
            admission: admission.clone(),
            instance: instance.clone(),
            peer,
            watchdog,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        self.account.counters.connections_open.decrement();
        self.instance.open.decrement();
        self.admission.peers.closed(self.peer);
    }
}

/// One outbound connection of a tenant, being made or open, counted
/// against its cap while it lives.
pub struct Outbound {
    account: Arc<Account>,
    /// The idle watchdog, once connected, if the tenant has an idle timeout.
    pub watchdog: Option<tokio::task::AbortHandle>,
}

impl Outbound {
    /// Counts one more outbound connection of the tenant of `account`,
    /// unless it has `cap`.
    pub fn take(account: &Arc<Account>, cap: u32) -> Option<Outbound> {
        let open = &account.counters.outbound_open;
        open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < u64::from(cap)).then_some(n + 1)
        })
        .ok()?;
        Counters::bump(&account.counters.outbound_started);
        Some(Outbound {
            account: account.clone(),
            watchdog: None,
        })
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        self.account
            .counters
            .outbound_open
            .fetch_sub(1, Ordering::Relaxed);
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
/// loop, and logs it at most once per `LOG_EVERY` (10 s).
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
    pub fn failed(&self, account: &Account, addr: SocketAddr, error: &std::io::Error) {
        Counters::bump(&account.counters.accept_errors);
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
        let name = account.name();
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
    account: &Account,
    client: std::net::TcpStream,
    peer: SocketAddr,
    why: std::fmt::Arguments<'_>,
) {
    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
    Counters::bump(&account.counters.connections_refused);
    if let Some(note) = account.may_log() {
        warn!(
            tenant = account.name(),
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
/// them reset as it asks: see [`Admission::admit`]), so they learn at once rather
/// than wait in the listen queue.
/// Clients the reaper resets per listener per tick, at most.
const MAX_REAPED_PER_TICK: usize = 256;

#[derive(Debug, Default)]
struct CapReaper {
    running: AtomicBool,
    /// When the guest last asked for a client, from [`now_ms`].
    last_accept: AtomicU64,
}

impl CapReaper {
    /// Records that the guest asked for a client.
    fn guest_accepting(&self) {
        self.last_accept.store(now_ms(), Ordering::Relaxed);
    }

    /// Runs the reaper of `admission`, whose tenant (of `account`, with
    /// host listeners `listeners`) has `cap`, until it is below the cap
    /// (call it when the tenant reaches its cap).
    fn start(
        admission: &Arc<Admission>,
        account: &Arc<Account>,
        cap: u64,
        listeners: Arc<dyn HostListeners>,
    ) {
        if admission.reaper.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (admission, account) = (admission.clone(), account.clone());
        tokio::spawn(async move {
            let reaper = &admission.reaper;
            let open = || account.counters.connections_open.load(Ordering::Relaxed);
            let mut tick = tokio::time::interval(REAP_AFTER / 2);
            loop {
                while open() >= cap {
                    tick.tick().await;
                    let quiet = now_ms().saturating_sub(reaper.last_accept.load(Ordering::Relaxed));
                    if quiet < REAP_AFTER.as_millis() as u64 {
                        continue;
                    }
                    for listener in listeners.listeners() {
                        // Non-blocking: the listener is shared with the
                        // guest. At most so many per tick: a flood cannot
                        // hold this thread.
                        for _ in 0..MAX_REAPED_PER_TICK {
                            if open() < cap {
                                break;
                            }
                            let Ok((client, peer)) = listener.accept() else {
                                break;
                            };
                            let name = account.name();
                            refuse_client(
                                &account,
                                client,
                                peer,
                                format_args!("{name} is at its cap of {cap} and not accepting"),
                            );
                        }
                    }
                }
                reaper.running.store(false, Ordering::Release);
                // Reached the cap again just now: carry on, unless another
                // reaper took over.
                if open() < cap || reaper.running.swap(true, Ordering::AcqRel) {
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

/// The client a connection from `ip` is counted against, for per-client
/// caps: an IPv4 address (an IPv4-mapped IPv6 address is its IPv4
/// address), or an IPv6 address's /64 network. One IPv6 host commonly
/// holds a whole /64 and can send from any address in it, so counting
/// per /128 would cap nothing (rate limiters count per /64 for the same
/// reason).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Open client connections per client ([`client_key`]: an IPv4 address or
/// an IPv6 /64), for `max_connections_per_peer`. Clients with none open
/// are forgotten, so the map holds at most one entry per open connection.
#[derive(Debug, Default)]
pub struct PeerCounts(Mutex<HashMap<IpAddr, u32>>);

impl PeerCounts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open from `ip`'s client now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.map().get(&client_key(ip)).copied().unwrap_or(0)
    }

    /// Counts a connection from `ip` opening.
    pub fn opened(&self, ip: IpAddr) {
        *self.map().entry(client_key(ip)).or_insert(0) += 1;
    }

    /// Counts a connection from `ip` closing.
    pub fn closed(&self, ip: IpAddr) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(&client_key(ip)) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{InstanceAccount, MAX_DEFER_MS, PeerCounts, defer_to_sibling, took_client};

    #[test]
    fn an_ipv6_client_is_counted_per_64_and_a_mapped_ipv4_as_its_ipv4() {
        let peers = PeerCounts::default();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        peers.opened(ip("2001:db8:1:2::1"));
        peers.opened(ip("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(peers.open(ip("2001:db8:1:2::99")), 2);
        assert_eq!(peers.open(ip("2001:db8:1:3::1")), 0);
        peers.opened(ip("::ffff:192.0.2.7"));
        assert_eq!(peers.open(ip("192.0.2.7")), 1);
        peers.closed(ip("2001:db8:1:2::1"));
        peers.closed(ip("2001:db8:1:2::2"));
        assert_eq!(peers.open(ip("2001:db8:1:2::1")), 0);
    }
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    fn instance(index: u32, open: u64, listening: bool) -> Arc<InstanceAccount> {
        let i = InstanceAccount::new(1, index);
        i.open.store(open, Ordering::Relaxed);
        i.listening.store(listening, Ordering::Relaxed);
        Arc::new(i)
    }

    #[test]
    fn an_instance_holding_at_least_twice_a_listening_siblings_connections_plus_one_leaves_it_the_client()
     {
        let (heavy, light) = (instance(0, 6, true), instance(1, 2, true));
        let all = [heavy.clone(), light.clone()];
        assert!(defer_to_sibling(&heavy, &all));
        // The lighter one never defers to the heavier one.
        assert!(!defer_to_sibling(&light, &all));
        // A sibling that does not listen (yet) is not waited for.
        light.listening.store(false, Ordering::Relaxed);
        assert!(!defer_to_sibling(&heavy, &all));
        // Within twice the load, the queue decides: neither defers.
        let (a, b) = (instance(0, 5, true), instance(1, 2, true));
        let pair = [a.clone(), b.clone()];
        assert!(!defer_to_sibling(&a, &pair));
        assert!(!defer_to_sibling(&b, &pair));
        // A burst while both are idle: the first to take two leaves the
        // next to the other.
        let (a, b) = (instance(0, 2, true), instance(1, 0, true));
        let pair = [a.clone(), b.clone()];
        assert!(defer_to_sibling(&a, &pair));
        assert!(!defer_to_sibling(&b, &pair));
        // Alone, an instance never defers.
        assert!(!defer_to_sibling(&a, std::slice::from_ref(&a)));
    }

    #[test]
    fn deferring_is_bounded_in_time_until_a_client_is_taken() {
        let (heavy, light) = (instance(0, 9, true), instance(1, 0, true));
        let all = [heavy.clone(), light];
        assert!(defer_to_sibling(&heavy, &all));
        std::thread::sleep(std::time::Duration::from_millis(MAX_DEFER_MS + 5));
        // Past the bound it takes the client itself, however often it
        // looks (a poll, then the accept)...
        assert!(!defer_to_sibling(&heavy, &all));
        assert!(!defer_to_sibling(&heavy, &all));
        // ...and once it took one, the next may be deferred again.
        took_client(&heavy);
        assert!(defer_to_sibling(&heavy, &all));
    }
}
