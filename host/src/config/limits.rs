//! Every limit a tenant runs under, declared once: its manifest key, its
//! type, its default, the syntax it is written in and whether zero turns it
//! off. `limits!` makes from that table the tenant's effective [`Limits`],
//! their defaults, and [`LimitsTable`], the keys as a manifest's `[limits]`
//! or a tenant's `limits` writes them (each optional, over a fallback).
//! Adding a limit is one entry here plus its enforcement (crate::limits
//! has the table of where each is enforced).

use std::time::Duration;

/// How a limit merges over its fallback: `required` always has a value;
/// `optional` may be off (`None`), and zero written in a manifest turns it
/// off for that tenant.
macro_rules! limit_type {
    (required, $t:ty) => { $t };
    (optional, $t:ty) => { Option<$t> };
}

/// `written` over `fallback`, as [`limit_type!`] says.
macro_rules! limit_merge {
    (required, $written:expr, $fallback:expr) => {
        $written.unwrap_or($fallback)
    };
    (optional, $written:expr, $fallback:expr) => {
        $written.or($fallback).filter(|v| !Zero::is_zero(v))
    };
}

/// Declares the limits: see the module's header.
macro_rules! limits {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $kind:ident $t:ty = $default:expr, $syntax:literal;
    )*) => {
        /// A tenant's effective limits and restart behaviour.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Limits {
            $(
                $(#[doc = $doc])*
                pub $name: limit_type!($kind, $t),
            )*
        }

        impl Default for Limits {
            fn default() -> Self {
                Limits { $( $name: $default, )* }
            }
        }

        /// Limits as a manifest writes them: every key optional, so
        /// `[limits]` and each tenant's `limits` override only some.
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct LimitsTable {
            $(
                #[serde(default, deserialize_with = $syntax)]
                $name: Option<$t>,
            )*
        }

        impl LimitsTable {
            /// The keys written here, the rest from `fallback`.
            pub fn over(self, fallback: &Limits) -> Limits {
                Limits {
                    $( $name: limit_merge!($kind, self.$name, fallback.$name), )*
                }
            }
        }
    };
}

limits! {
    /// Largest linear memory, in bytes.
    max_memory: required u64 = 128 << 20, "super::values::memory";
    /// Most client connections open at once; past it clients are reset.
    max_connections: required u32 = 1024, "super::values::at_least_one";
    /// Most client connections open at once from one IP address; past it
    /// that address's new clients are reset. `None`: no such limit.
    max_connections_per_peer: optional u32 = None, "super::values::plain";
    /// Most outbound connections (under a connect grant) open or being
    /// opened at once; past it `start-connect` fails with
    /// `new-socket-limit`.
    max_outbound_connections: required u32 = 64, "super::values::at_least_one";
    /// Longest a guest may compute without returning to the host.
    cpu_limit: required Duration = Duration::from_millis(500), "super::values::at_least_a_millisecond";
    /// What to do when the guest stops.
    restart: required RestartPolicy = RestartPolicy::OnFailure, "super::values::plain";
    /// First restart delay; doubled after each restart in a row.
    restart_backoff: required Duration = Duration::from_millis(100), "super::values::duration";
    /// Largest restart delay.
    restart_backoff_max: required Duration = Duration::from_secs(10), "super::values::at_least_a_millisecond";
    /// Restarts allowed within `crash_loop_window` before the tenant is
    /// marked failed.
    crash_loop_limit: required u32 = 5, "super::values::plain";
    /// The window `crash_loop_limit` counts in.
    crash_loop_window: required Duration = Duration::from_secs(60), "super::values::at_least_a_millisecond";
    /// After a live swap, or when the host is stopping, how long a guest
    /// version may keep serving the connections it has before they are
    /// closed and it is dropped.
    drain_timeout: required Duration = Duration::from_secs(30), "super::values::duration";
    /// A client connection with no byte in either direction for this long
    /// is closed by the host; `None`: never.
    idle_timeout: optional Duration = None, "super::values::duration";
    /// Bytes one client connection may send to the guest before the host
    /// closes it; `None`: unlimited.
    max_bytes_in: optional u64 = None, "super::values::size";
    /// Bytes the guest may send on one client connection before the host
    /// closes it; `None`: unlimited.
    max_bytes_out: optional u64 = None, "super::values::size";
    /// Lines of the guest's output logged per second; the rest are counted
    /// and left out. `None`: unlimited. Finite by default: whatever a guest
    /// prints, one tenant adds at most about 2.8 GB a day to the host's log.
    log_lines_per_sec: optional u32 = Some(DEFAULT_LOG_LINES_PER_SEC), "super::values::plain";
    /// Bytes of the guest's output logged per second (as written to the
    /// log, control characters escaped); lines past it are counted and
    /// left out. `None`: unlimited.
    log_bytes_per_sec: optional u64 = Some(DEFAULT_LOG_BYTES_PER_SEC), "super::values::size";
    /// How many instances of the component serve the tenant's addresses
    /// at once, each in its own store under these limits. One by default:
    /// a guest that keeps state in its memory (a key-value store, say)
    /// must not silently become several stores.
    instances: required Instances = Instances::Fixed(1), "super::values::instances";
}

/// A value that, written as zero, turns an optional limit off.
trait Zero {
    fn is_zero(&self) -> bool;
}

impl Zero for u32 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl Zero for u64 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl Zero for Duration {
    fn is_zero(&self) -> bool {
        Duration::is_zero(self)
    }
}

impl Limits {
    /// The limits that must agree with each other: the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.restart_backoff > self.restart_backoff_max {
            return Err((
                "restart_backoff",
                format!(
                    "{} is longer than restart_backoff_max ({})",
                    humantime::format_duration(self.restart_backoff),
                    humantime::format_duration(self.restart_backoff_max)
                ),
            ));
        }
        Ok(())
    }
}

/// What happens when a tenant's guest stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave it stopped.
    Never,
    /// Restart after a trap, an error or a non-zero exit, not after a clean exit.
    OnFailure,
    /// Restart whenever it stops.
    Always,
}

/// Lines of guest output a tenant may log per second by default.
pub const DEFAULT_LOG_LINES_PER_SEC: u32 = 100;

/// Bytes of guest output a tenant may log per second by default.
pub const DEFAULT_LOG_BYTES_PER_SEC: u64 = 32 * 1024;

/// How many instances of a tenant's component run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// This many (from 1 to [`MAX_INSTANCES`]).
    Fixed(u32),
    /// One per guest thread (`"auto"`).
    Auto,
}

/// The most instances one tenant may run at once.
pub const MAX_INSTANCES: u32 = 256;

impl Instances {
    /// How many, on a host with `guest_threads` guest threads.
    pub fn resolve(self, guest_threads: usize) -> u32 {
        match self {
            Instances::Fixed(n) => n,
            Instances::Auto => u32::try_from(guest_threads.max(1))
                .unwrap_or(MAX_INSTANCES)
                .min(MAX_INSTANCES),
        }
    }
}

impl std::fmt::Display for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Instances::Fixed(n) => write!(f, "{n}"),
            Instances::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for Instances {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Instances::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=MAX_INSTANCES).contains(&n) => Ok(Instances::Fixed(n)),
            _ => Err(format!(
                "{s:?} is neither \"auto\" nor a count from 1 to {MAX_INSTANCES}"
            )),
        }
    }
}
