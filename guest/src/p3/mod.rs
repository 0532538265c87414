//! The WASI 0.3 form of the guest library: the listeners ([`net`]) and the
//! loop that serves them ([`event_loop`]), over `wasi:sockets@0.3.0` and the
//! component model's async, with no `wasi:io/poll` and no extension.

pub mod event_loop;
pub mod net;
