//! What is never granted, in every WASI version: each version's bindings
//! call these at the entry points (p2::refuse, p3::sockets), so a refusal
//! is counted and logged the same way whichever version the guest targets.

use crate::account::{Account, Capability, Counters};

/// A UDP socket was asked for: refused (the guest is told
/// `access-denied`).
pub fn udp(account: &Account) {
    account.refuse(Capability::Udp, format_args!("UDP sockets are not granted"));
}

/// A name lookup of `name` was asked for: refused (`access-denied`).
pub fn name_lookup(account: &Account, name: &str) {
    account.refuse(
        Capability::Dns,
        format_args!("name lookup of {name:?} is not granted"),
    );
}

/// The guest asked for its preopened directories: none. Not a refusal:
/// language runtimes (libc, Python, JavaScript) ask at start-up whatever
/// the guest's code does. Counted apart; without a directory no file can
/// be opened at all.
pub fn preopens(account: &Account) {
    Counters::bump(&account.counters.preopen_queries);
    if let Some(note) = account.may_log() {
        let name = account.name();
        tracing::info!(
            tenant = name,
            "{name}: asked for its preopened directories: none are granted, so it can open no file{note}"
        );
    }
}
