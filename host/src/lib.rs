//! The host as a library: everything the `tcphost` binary is made of, so the
//! tests and fuzz targets can drive its parts directly.
//!
//! # Layout
//!
//! Layers from the top down; each uses only the layers below it, and no
//! two files of the host import each other in a loop (`tests/layout.rs`
//! checks both on every test run: `cargo test -p host --test layout`).
//!
//! - The process: `main.rs` parses the command line ([`cli`]) and calls
//!   [`app`], which starts the rest and waits for signals.
//! - [`ops`]: what operators see: the read-only admin endpoint and the
//!   control endpoint (`ops::admin`), Prometheus metrics (`ops::metrics`).
//! - [`tenancy`]: the tenants: each one's record (`tenancy::tenant`), the
//!   host's listeners for their addresses (`tenancy::listeners`), the
//!   supervisor that runs a tenant's guest (`tenancy::supervisor`), the
//!   running set (`tenancy::control`) with where components come from
//!   (`control::load`), the one swap path (`control::swap`) and the
//!   manifest reload (`control::reload`), the file watchers
//!   (`tenancy::watch`).
//! - [`registry`]: components from OCI registries: pulled with the
//!   ecosystem's client, checked against their digests and bounds, kept in
//!   a content-addressed store.
//! - [`runtime`]: running guests: the engine and component cache, the
//!   built-in guests, one instance's store with its limits wired in, the
//!   guest threads.
//! - [`wasi`]: the guest's WASI as the host implements it, behind one seam:
//!   its own state and view (`wasi::view`), the narrow trait through which
//!   it asks the tenant layer (`wasi::seam`), sockets independent of the
//!   WASI version (`wasi::sockets`), the poll fast path (`wasi::poll`),
//!   the WASI 0.2 and 0.3 bindings over them (`wasi::p2`, `wasi::p3`),
//!   guest stdio (`wasi::stdio`).
//! - [`limits`]: each limit a unit of its own, with a table of where each
//!   is enforced.
//! - [`policy`]: grants as data, and the decision for each attempt.
//! - [`config`]: the configuration's model (`config::model`, its limits
//!   declared once in `config::limits`), apart from the manifest's parser
//!   (`config::manifest`), and the reload plan.
//! - [`account`]: a tenant's name, counters and log budgets: a leaf every
//!   layer counts and logs through.
//!
//! # Where things happen (one answer each)
//!
//! - **A grant is decided** in [`policy::Grant::decide`], and nowhere
//!   else. The WASI layer enforces the decision: TCP binds, listens and
//!   connects in `wasi::sockets::tcp`; UDP and name lookups, never granted,
//!   refused at their entry points (`wasi::p2::refuse`, `wasi::p3::sockets`)
//!   through `wasi::deny`.
//! - **A limit is declared** (key, type, default, syntax) once, in
//!   `config::limits`, and **enforced** where the table in [`limits`] says: memory
//!   and handles in `limits::memory`, CPU time in `limits::cpu`,
//!   connection caps and file-descriptor back-off in `limits::admission`,
//!   bytes and idle time in `limits::connection`, log lines in
//!   `account::log_budget`.
//! - **A component is swapped** through `tenancy::control::swap`
//!   (`Control::swap_to`), whatever state the tenant is in and whoever
//!   asks (the control endpoint, a component file's change, a reload, a
//!   failed tenant's retry): live through the supervisor's
//!   `tenancy::supervisor::swap` for a running tenant, by starting it again
//!   for a stopped or failed one.
//! - **The manifest is reloaded** in `tenancy::control::reload`: prepared
//!   whole, planned as a pure difference (`config::reload`), then applied.
//! - **A tenant is started, restarted and stopped** by
//!   `tenancy::supervisor` (one task per tenant, running the tenant's
//!   `instances` of its component, each restarted on its own), on the orders of
//!   `tenancy::control` (add, remove, graceful stop). A
//!   tenant's state is written only from within `tenancy` (its writers are
//!   `pub(in crate::tenancy)`): by the supervisor as its guest runs, ends
//!   and is restarted or swapped; by control when it starts a tenant (new,
//!   or again after its restart policy left it stopped) or removes one; and
//!   by the tenant itself when the WASI layer says, through the seam, that
//!   a version listens.
//! - **Whether an instance takes a client now** is decided in
//!   `wasi::sockets::turn::turn` (its version accepts, accepting is not
//!   paused, a client waits, no idle sibling should take it:
//!   `limits::admission::defer_to_sibling`), for an accept and for a
//!   listener's readiness alike.
//! - **A connection is admitted** in `wasi::sockets::accept`, which asks
//!   the tenant's admission unit (`limits::admission::Admission::admit`:
//!   the caps, per client address too), then the tenant, through the seam,
//!   to count it open (`OpenConnection`) and to police it (`Policed`);
//!   outbound connections are counted by `limits::admission::Outbound`.
//!
//! Nothing of a running host is process-wide (the guest threads, the
//! host's own endpoints, the draining bound are values a `Control` holds),
//! so a test can run hosts in-process, side by side
//! (`tenancy::control::running`'s tests do).

pub mod account;
pub mod app;
pub mod cli;
pub mod config;
pub mod limits;
pub mod ops;
pub mod policy;
pub mod registry;
pub mod runtime;
pub mod tenancy;
pub mod wasi;
