//! Random bytes for guests (`get-random-bytes`, `get-insecure-random-bytes`,
//! WASI 0.2 and 0.3), bounded and charged: at most [`MAX_PER_CALL`] bytes
//! per call (WASI 0.2 traps past it, as its spec allows a host to; WASI 0.3
//! returns that many, a short read its spec allows), filled a block at a
//! time rather than a byte at a time, and the time it takes counted
//! against the guest's CPU limit.
//!
//! Both the secure and the insecure interface get the thread's
//! cryptographically secure generator: as fast, and never worse.

use crate::account::Account;
use crate::limits::cpu::HostWork;
use rand::Rng as _;
use std::sync::Mutex;

/// The most random bytes one call returns: what a guest needs to seed its
/// own generators many times over (wasi-libc's `getentropy` asks for at
/// most 256), filled in well under a millisecond.
pub const MAX_PER_CALL: u64 = 1 << 20;

/// Why a call for random bytes traps.
#[derive(Debug, thiserror::Error)]
pub enum RandomError {
    /// WASI 0.2: more than [`MAX_PER_CALL`] at once.
    #[error(
        "asked for {0} random bytes in one call; the host gives at most {MAX_PER_CALL} per call"
    )]
    TooManyAtOnce(u64),
    /// The calls made the host work past the guest's CPU limit.
    #[error(transparent)]
    HostWork(#[from] crate::limits::cpu::HostWorkExceeded),
}

/// `len` (at most [`MAX_PER_CALL`]) fresh random bytes, charged to the
/// guest's CPU limit.
fn fill(host_work: &Mutex<HostWork>, account: &Account, len: u64) -> Result<Vec<u8>, RandomError> {
    let started = std::time::Instant::now();
    let len = usize::try_from(len.min(MAX_PER_CALL)).unwrap_or(0);
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    crate::limits::cpu::charge(host_work, account, started)?;
    Ok(bytes)
}

/// WASI 0.2: `len` bytes, or a trap past [`MAX_PER_CALL`]; the work
/// charged to `host_work`, counted in `account`.
pub fn exactly(
    host_work: &Mutex<HostWork>,
    account: &Account,
    len: u64,
) -> Result<Vec<u8>, RandomError> {
    if len > MAX_PER_CALL {
        return Err(RandomError::TooManyAtOnce(len));
    }
    fill(host_work, account, len)
}

/// WASI 0.3: up to `max_len` bytes (at least one when `max_len` is not
/// zero), a short read past [`MAX_PER_CALL`].
pub fn up_to(
    host_work: &Mutex<HostWork>,
    account: &Account,
    max_len: u64,
) -> Result<Vec<u8>, RandomError> {
    fill(host_work, account, max_len.min(MAX_PER_CALL))
}
