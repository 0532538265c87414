//! The connection slots of the admin and control endpoints: at most
//! [`MAX_CONNECTIONS`] at once, at most [`MAX_PER_CLIENT`] from one client
//! (an IPv4 address or an IPv6 /64), and when every slot is taken a new
//! connection takes the slot of the oldest idle one (connected, but not
//! inside a request: unfinished headers, or kept alive between requests).
//! So clients holding slots open cannot keep a readiness probe out: the
//! probe's connection sends its request at once, and only a connection
//! that is being answered keeps its slot.

use crate::limits::admission::client_key;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// Most connections either endpoint serves at once: past it the oldest
/// idle one is closed, or, with none idle, a new one is told it is busy.
pub const MAX_CONNECTIONS: usize = 64;
/// Most connections from one client at once.
pub const MAX_PER_CLIENT: usize = 8;

/// Why a connection got no slot.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSlot {
    /// Its client holds [`MAX_PER_CLIENT`] already.
    ClientFull,
    /// Every slot is inside a request.
    AllBusy,
}

/// One endpoint's slots.
#[derive(Debug, Default)]
pub struct Slots {
    held: Mutex<Vec<Held>>,
}

#[derive(Debug)]
struct Held {
    id: u64,
    client: Option<IpAddr>,
    since: Instant,
    busy: Arc<AtomicBool>,
    close: Arc<Notify>,
}

/// A connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Set while the connection is inside a request (not to be shed).
    pub busy: Arc<AtomicBool>,
    /// Notified when the slot is taken for a newer connection: the
    /// connection is to close.
    pub close: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().retain(|h| h.id != self.id);
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `peer` (`None`: a Unix socket, one
    /// client), shedding the oldest idle connection if every slot is taken.
    pub fn take(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, NoSlot> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let client = peer.map(client_key);
        let mut held = self.lock();
        if client.is_some() && held.iter().filter(|h| h.client == client).count() >= MAX_PER_CLIENT
        {
            return Err(NoSlot::ClientFull);
        }
        if held.len() >= MAX_CONNECTIONS {
            let oldest_idle = held
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.busy.load(Ordering::Relaxed))
                .min_by_key(|(_, h)| h.since)
                .map(|(i, _)| i)
                .ok_or(NoSlot::AllBusy)?;
            // Notified before it waits, it still sees it (a stored permit).
            held.swap_remove(oldest_idle).close.notify_one();
        }
        let slot = Slot {
            slots: self.clone(),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            busy: Arc::default(),
            close: Arc::default(),
        };
        held.push(Held {
            id: slot.id,
            client,
            since: Instant::now(),
            busy: slot.busy.clone(),
            close: slot.close.clone(),
        });
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_full_endpoint_sheds_the_oldest_idle_connection_never_a_busy_one() {
        let slots = Arc::new(Slots::default());
        let mut held: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|i| slots.take(ip((i / MAX_PER_CLIENT) as u8)).unwrap())
            .collect();
        held[0].busy.store(true, Ordering::Relaxed);
        let probe = slots.take(ip(200)).unwrap();
        // The oldest idle one (the second) was told to close; the busy
        // first one was not.
        assert!(tokio_test_notified(&held[1].close));
        assert!(!tokio_test_notified(&held[0].close));
        assert_eq!(slots.lock().len(), MAX_CONNECTIONS);
        for slot in &held {
            slot.busy.store(true, Ordering::Relaxed);
        }
        probe.busy.store(true, Ordering::Relaxed);
        assert_eq!(slots.take(ip(201)).unwrap_err(), NoSlot::AllBusy);
        held.clear();
        assert_eq!(slots.lock().len(), 1);
    }

    #[test]
    fn one_client_holds_at_most_its_share() {
        let slots = Arc::new(Slots::default());
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let held: Vec<Slot> = (0..MAX_PER_CLIENT)
            .map(|i| slots.take(v6(&format!("2001:db8::{i}"))).unwrap())
            .collect();
        // Another address of the same /64 is the same client.
        assert_eq!(
            slots.take(v6("2001:db8::ffff")).unwrap_err(),
            NoSlot::ClientFull
        );
        assert!(slots.take(v6("2001:db8:0:1::1")).is_ok());
        drop(held);
        assert!(slots.take(v6("2001:db8::ffff")).is_ok());
    }

    /// Whether `notify` holds a permit (was notified), without waiting.
    fn tokio_test_notified(notify: &Notify) -> bool {
        use std::future::Future;
        let waiter = notify.notified();
        let mut waiter = std::pin::pin!(waiter);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        waiter.as_mut().poll(&mut cx).is_ready()
    }
}
