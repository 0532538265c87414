//! The guest's WASI, as the host implements it, behind one seam.
//!
//! Like wasmtime-wasi, this layer sees only its own state,
//! [`view::GuestWasi`] (wasmtime-wasi's context and the guest's resource
//! table, plus the host's sockets and poll state), found in a store's data
//! through [`view::WasiHost`]; never the embedder's store type. What it may
//! ask of the tenant it serves is the narrow [`seam::Tenancy`] trait: the
//! host's listener for an address, whether a guest version may accept,
//! that a version listens, the tenant's limits, its account and admission
//! state.
//!
//! - [`sockets`]: TCP independent of the WASI version: the socket's state
//!   machine, accepting (gate, caps, readiness as exact as POSIX `poll`),
//!   connecting, socket options, and a connection's read and write halves.
//! - [`poll`]: which pollables the host can check directly (version
//!   independent: keyed by the guest's resource handles).
//! - [`p2`]: the WASI 0.2 bindings over those: `wasi:sockets/tcp`, the
//!   connection streams, `wasi:io/poll`, the ready sets, the refusals of
//!   what is never granted.
//! - [`p3`]: the WASI 0.3 bindings over the same socket core:
//!   `wasi:sockets@0.3.0`, whose listener and connection streams are the
//!   component model's own (`stream<tcp-socket>`, `stream<u8>`).
//! - [`deny`]: what is never granted, counted and logged alike for both
//!   versions.
//! - [`stdio`]: the guest's stdout and stderr, into the host's log.
//! - [`random`]: random bytes, bounded per call and charged to the guest.
//!
//! Within the layer, dependencies point one way too: `p2` and `p3` use the
//! rest (never each other); `view` uses `poll`, `sockets`, `stdio` and
//! `seam`; `poll` uses `sockets`; `sockets` uses `seam`.

pub mod deny;
pub mod p2;
pub mod p3;
pub mod poll;
pub mod random;
pub mod seam;
pub mod sockets;
pub mod stdio;
pub mod view;
