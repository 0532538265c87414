//! The ready set's interface over standard `wasi:io/poll`, for guests built
//! without the `readiness` feature: the same calls the event loop makes on
//! the host's ready set, so the loop is one piece of code either way.
//!
//! Each `wait` hands `poll` the list of every member, so its cost follows
//! the members held, not the ready ones (the host keeps a list it is given
//! again as a ready set of its own, but the list is still built and passed,
//! handle by handle, on every call). When more members are ready than a
//! wait returns, the next wait starts after the last one returned, so every
//! ready member is served in turn.

use crate::bindings::wasi::io::poll::{Pollable, poll};
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;

/// Pollables waited on together, each reported by a token.
#[derive(Default)]
pub struct ReadySet {
    inner: RefCell<Members>,
}

#[derive(Default)]
struct Members {
    /// The members' pollables, borrowed: each is a handle owned by the
    /// guest's connection or listener, which must remove it before
    /// dropping it (the event loop does; the host's ready set would let go
    /// of a dropped pollable by itself, this one cannot know).
    pollables: Vec<ManuallyDrop<Pollable>>,
    /// The token of each member, by position.
    tokens: Vec<u64>,
    /// The position of each member, by token.
    positions: HashMap<u64, usize>,
    /// Where the next wait starts handing out ready members.
    next: usize,
}

impl ReadySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `member`, reported by `token`; false if `token` is in use.
    pub fn insert(&self, member: &Pollable, token: u64) -> bool {
        let mut m = self.inner.borrow_mut();
        if m.positions.contains_key(&token) {
            return false;
        }
        // SAFETY: a second handle value for the same pollable, never
        // dropped (ManuallyDrop), and removed from the set before its owner
        // drops the real one.
        let borrowed = ManuallyDrop::new(unsafe { Pollable::from_handle(member.handle()) });
        let at = m.pollables.len();
        m.pollables.push(borrowed);
        m.tokens.push(token);
        m.positions.insert(token, at);
        true
    }

    /// Stops watching the member reported by `token`; false if none is.
    pub fn remove(&self, token: u64) -> bool {
        let mut m = self.inner.borrow_mut();
        let Some(at) = m.positions.remove(&token) else {
            return false;
        };
        // `ManuallyDrop` keeps the owner's handle alive.
        m.pollables.swap_remove(at);
        m.tokens.swap_remove(at);
        if let Some(&moved) = m.tokens.get(at) {
            m.positions.insert(moved, at);
        }
        true
    }

    /// Waits until at least one member is ready, then returns the tokens
    /// of up to `max` ready ones (at least one); empty at once if the set
    /// is empty.
    pub fn wait(&self, max: u32) -> Vec<u64> {
        let mut m = self.inner.borrow_mut();
        if m.pollables.is_empty() {
            return Vec::new();
        }
        let list: Vec<&Pollable> = m.pollables.iter().map(|p| &**p).collect();
        let ready = poll(&list);
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        // Ready positions in ascending order; start at `next`, wrap around.
        let split = ready.partition_point(|&i| (i as usize) < m.next);
        let chosen: Vec<usize> = ready[split..]
            .iter()
            .chain(&ready[..split])
            .take(max)
            .map(|&i| i as usize)
            .collect();
        if let Some(&last) = chosen.last() {
            m.next = last + 1;
        }
        chosen.into_iter().map(|i| m.tokens[i]).collect()
    }
}
