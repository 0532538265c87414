//! The order in which an instance's connections get their reads answered
//! when the runtime, not the guest, picks which finished read the guest
//! hears of next (WASI 0.3): [`ReadOrder`], a window of reads let finish
//! ahead of the guest, granted oldest waiting first.
//!
//! Why: wasmtime 48 hands a WASI 0.3 guest its pending events lowest
//! handle first (`WaitableSet::ready` is a `BTreeSet`, and `get_event` in
//! `runtime/component/concurrent.rs` pops its first entry). Under load the
//! set of finished reads is small but never empty, and a connection with a
//! low handle whose client answers quickly is back in it before those with
//! high handles get their turn: at 1000 busy clients the least served one
//! got 2-9 round trips in 3 s, the median one 150-215 (p99 0.4-0.6 s).
//! With at most [`WINDOW`] finished reads the guest has not come back
//! from, handed out in the order their data arrived, the runtime's order
//! only matters inside the window: every client then got 250-258.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

/// Reads that may have finished without the guest having come back for
/// its next read on that connection. Measured at 1000 busy clients: 4, 8
/// and 16 serve every client alike; 64 was never filled and changed
/// nothing. Smaller costs nothing in batching: room given back during a
/// turn is handed on in the same turn.
pub const WINDOW: usize = 8;

/// One instance's window of finished reads, shared by its connections'
/// read streams (one per guest instance, in crate::wasi::view::GuestWasi).
#[derive(Clone, Default)]
pub struct ReadOrder(Arc<Mutex<Window>>);

#[derive(Default)]
struct Window {
    /// Finished reads the guest has not come back from (in this era).
    in_flight: usize,
    /// Bumped whenever the guest is found waiting with nothing to do: then
    /// it has heard of every finished read, so older holds are void.
    era: u64,
    /// Readers with data that wait for room, oldest first.
    queue: VecDeque<Arc<Ticket>>,
    /// Tickets in `queue` whose readers cancelled: dropped from the front
    /// as they reach it, and all at once when they are half the queue, so
    /// a guest starting and cancelling reads over and over behind a reader
    /// that waits cannot grow the queue without bound.
    cancelled: usize,
}

/// A reader's place in the queue.
struct Ticket {
    waker: Mutex<Option<Waker>>,
    /// Left the queue (gone, cancelled or let through): skipped there.
    left: std::sync::atomic::AtomicBool,
}

/// One connection's reads under its instance's [`ReadOrder`].
pub struct Reader {
    order: ReadOrder,
    /// The era in which this connection's last read finished, until the
    /// guest comes back for the next one.
    holds: Option<u64>,
    /// Its place while it waits for room.
    waiting: Option<Arc<Ticket>>,
}

impl ReadOrder {
    /// A reader for one connection.
    pub fn reader(&self) -> Reader {
        Reader {
            order: self.clone(),
            holds: None,
            waiting: None,
        }
    }

    /// The guest was found waiting (its event loop polled pending): every
    /// read that finished has reached it, so the window is empty again.
    /// Also a guard: a guest that never comes back to a connection it
    /// read (it waits for something else) cannot keep room from others.
    pub fn guest_waited(&self) {
        let mut window = self.lock();
        if window.in_flight == 0 {
            return;
        }
        window.era += 1;
        window.in_flight = 0;
        window.wake_front();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Window {
    /// Drops the readers that left from the front of the queue.
    fn skip_left(&mut self) {
        while self
            .queue
            .front()
            .is_some_and(|t| t.left.load(std::sync::atomic::Ordering::Relaxed))
        {
            self.queue.pop_front();
            self.cancelled = self.cancelled.saturating_sub(1);
        }
    }

    /// A reader waiting in the queue cancelled.
    fn cancelled_one(&mut self) {
        self.cancelled += 1;
        if self.cancelled * 2 > self.queue.len() {
            self.queue
                .retain(|t| !t.left.load(std::sync::atomic::Ordering::Relaxed));
            self.cancelled = 0;
        }
    }

    /// Wakes the oldest reader still waiting, if there is room for it.
    fn wake_front(&mut self) {
        while let Some(front) = self.queue.front() {
            if front.left.load(std::sync::atomic::Ordering::Relaxed) {
                self.queue.pop_front();
                self.cancelled = self.cancelled.saturating_sub(1);
                continue;
            }
            if self.in_flight < WINDOW
                && let Some(waker) = front
                    .waker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
            {
                waker.wake_by_ref();
            }
            return;
        }
    }
}

impl Reader {
    /// The guest came back for this connection's next read (or dropped
    /// it): its last finished read no longer counts against the window.
    pub fn came_back(&mut self) {
        if let Some(era) = self.holds.take() {
            let mut window = self.order.lock();
            if window.era == era {
                window.in_flight -= 1;
                window.wake_front();
            }
        }
    }

    /// Whether this connection, with data waiting, may finish its read
    /// now, without waiting in the queue (the guest is cancelling its
    /// read: nothing would poll it again). A `true` counts as a finished
    /// read, as for [`Reader::may_finish`].
    pub fn may_finish_now(&mut self) -> bool {
        let mut window = self.order.lock();
        window.skip_left();
        if window.queue.is_empty() && window.in_flight < WINDOW {
            window.in_flight += 1;
            self.holds = Some(window.era);
            return true;
        }
        false
    }

    /// Whether this connection, with data waiting, may finish its read
    /// now; if not, it waits in the queue and `cx` is woken when it may.
    /// A `true` counts as a finished read until [`Reader::came_back`] (or
    /// [`Reader::not_finished`], if the read found nothing after all).
    pub fn may_finish(&mut self, cx: &mut Context<'_>) -> bool {
        let mut window = self.order.lock();
        window.skip_left();
        let first = match (&self.waiting, window.queue.front()) {
            (_, None) => true,
            (Some(mine), Some(front)) => Arc::ptr_eq(mine, front),
            (None, Some(_)) => false,
        };
        if first && window.in_flight < WINDOW {
            if let Some(mine) = self.waiting.take() {
                mine.left.store(true, std::sync::atomic::Ordering::Relaxed);
                window.queue.pop_front();
            }
            window.in_flight += 1;
            self.holds = Some(window.era);
            // Room for the next one too: pass it on.
            window.wake_front();
            return true;
        }
        match &self.waiting {
            Some(mine) => {
                let mut waker = mine.waker.lock().unwrap_or_else(|p| p.into_inner());
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
            }
            None => {
                let ticket = Arc::new(Ticket {
                    waker: Mutex::new(Some(cx.waker().clone())),
                    left: std::sync::atomic::AtomicBool::new(false),
                });
                window.queue.push_back(ticket.clone());
                self.waiting = Some(ticket);
            }
        }
        false
    }

    /// The read let through by [`Reader::may_finish`] found nothing after
    /// all: its room goes back.
    pub fn not_finished(&mut self) {
        self.came_back();
    }

    /// The guest stopped waiting for this read (cancelled it): it leaves
    /// the queue.
    pub fn cancelled(&mut self) {
        if let Some(mine) = self.waiting.take() {
            mine.left.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut window = self.order.lock();
            window.cancelled_one();
            window.wake_front();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.cancelled();
        self.came_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn reads_started_and_cancelled_over_and_over_behind_a_waiting_one_keep_the_queue_small() {
        let order = ReadOrder::default();
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut full: Vec<Reader> = (0..WINDOW).map(|_| order.reader()).collect();
        for reader in &mut full {
            assert!(reader.may_finish(&mut cx));
        }
        let mut front = order.reader();
        assert!(!front.may_finish(&mut cx));
        let mut churn = order.reader();
        for _ in 0..10_000 {
            assert!(!churn.may_finish(&mut cx));
            churn.cancelled();
        }
        let queued = order.lock().queue.len();
        assert!(queued <= 3, "{queued} tickets queued");
        // The one waiting is still first in line.
        full[0].came_back();
        assert!(front.may_finish(&mut cx));
    }

    #[test]
    fn reads_past_the_window_wait_and_are_let_through_oldest_first() {
        let order = ReadOrder::default();
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut full: Vec<Reader> = (0..WINDOW).map(|_| order.reader()).collect();
        for reader in &mut full {
            assert!(reader.may_finish(&mut cx));
        }
        let (first_woken, first_waker) = waker();
        let (second_woken, second_waker) = waker();
        let mut first = order.reader();
        let mut second = order.reader();
        assert!(!first.may_finish(&mut Context::from_waker(&first_waker)));
        assert!(!second.may_finish(&mut Context::from_waker(&second_waker)));
        // The second is not let ahead of the first, even if asked first.
        full[0].came_back();
        assert_eq!(first_woken.0.load(Ordering::Relaxed), 1);
        assert_eq!(second_woken.0.load(Ordering::Relaxed), 0);
        assert!(!second.may_finish(&mut Context::from_waker(&second_waker)));
        assert!(first.may_finish(&mut Context::from_waker(&first_waker)));
        // The window is full again: the second waits for the next room.
        assert!(!second.may_finish(&mut Context::from_waker(&second_waker)));
        full[1].came_back();
        assert!(second.may_finish(&mut Context::from_waker(&second_waker)));
    }

    #[test]
    fn a_guest_that_waits_empties_the_window_so_unread_connections_cannot_stall_others() {
        let order = ReadOrder::default();
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut held: Vec<Reader> = (0..WINDOW).map(|_| order.reader()).collect();
        for reader in &mut held {
            assert!(reader.may_finish(&mut cx));
        }
        let (woken, waker) = waker();
        let mut late = order.reader();
        assert!(!late.may_finish(&mut Context::from_waker(&waker)));
        order.guest_waited();
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        assert!(late.may_finish(&mut Context::from_waker(&waker)));
        // Holds from before the wait give no room back twice.
        for reader in &mut held {
            reader.came_back();
        }
        assert_eq!(order.lock().in_flight, 1);
    }

    #[test]
    fn a_reader_that_leaves_the_queue_passes_its_turn_on() {
        let order = ReadOrder::default();
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut full: Vec<Reader> = (0..WINDOW).map(|_| order.reader()).collect();
        for reader in &mut full {
            assert!(reader.may_finish(&mut cx));
        }
        let mut gone = order.reader();
        assert!(!gone.may_finish(&mut cx));
        let (woken, waker) = waker();
        let mut next = order.reader();
        assert!(!next.may_finish(&mut Context::from_waker(&waker)));
        full[0].came_back();
        drop(gone);
        assert!(woken.0.load(Ordering::Relaxed) >= 1);
        assert!(next.may_finish(&mut Context::from_waker(&waker)));
        // A dropped holder gives its room back.
        drop(full.pop());
        assert_eq!(order.lock().in_flight, WINDOW - 1);
        let mut filler = order.reader();
        assert!(filler.may_finish(&mut cx));
        let mut cancelled = order.reader();
        assert!(!cancelled.may_finish(&mut cx));
        cancelled.cancelled();
        assert!(
            order
                .lock()
                .queue
                .iter()
                .all(|t| t.left.load(Ordering::Relaxed))
        );
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;

    #[test]
    fn a_cancelled_read_never_waits_in_the_queue() {
        let order = ReadOrder::default();
        let mut cx = Context::from_waker(Waker::noop());
        let mut full: Vec<Reader> = (0..WINDOW).map(|_| order.reader()).collect();
        for reader in &mut full {
            assert!(reader.may_finish(&mut cx));
        }
        let mut cancelling = order.reader();
        assert!(!cancelling.may_finish_now());
        assert!(order.lock().queue.is_empty(), "no ticket left behind");
        // Room again: the next reader is not stuck behind a dead ticket.
        full[0].came_back();
        let mut next = order.reader();
        assert!(next.may_finish(&mut cx));
        // With room and nobody waiting, a cancelling read may finish.
        full[1].came_back();
        assert!(cancelling.may_finish_now());
    }
}
