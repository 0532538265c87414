//! A TCP socket's options as a guest sets them (keep-alive, hop limit,
//! buffer sizes), and how they reach the kernel's socket: applied to a
//! connection when it is made, inherited by a listener's clients.

use super::Family;

/// Socket options a guest may set; applied to connected sockets. Durations
/// in nanoseconds, as WASI gives them.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `SO_KEEPALIVE`.
    pub keep_alive: bool,
    /// `TCP_KEEPIDLE`.
    pub keep_alive_idle: u64,
    /// `TCP_KEEPINTVL`.
    pub keep_alive_interval: u64,
    /// `TCP_KEEPCNT`.
    pub keep_alive_count: u32,
    /// TTL or unicast hops.
    pub hop_limit: u8,
    /// Kernel buffer sizes the guest asked for, applied once connected.
    pub receive_buffer: Option<usize>,
    /// The same for sending.
    pub send_buffer: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_alive: false,
            keep_alive_idle: 7_200_000_000_000,
            keep_alive_interval: 75_000_000_000,
            keep_alive_count: 9,
            hop_limit: 64,
            receive_buffer: None,
            send_buffer: None,
        }
    }
}

impl Options {
    /// Applies the options that differ from a fresh socket's to `socket`
    /// (best effort: the kernel may round or refuse a value); costs nothing
    /// for the defaults, the common case on every accept.
    pub(super) fn apply(&self, socket: &socket2::SockRef<'_>, family: Family) {
        let defaults = Options::default();
        if self.keep_alive != defaults.keep_alive {
            self.apply_keep_alive(socket, family);
        }
        if self.keep_alive_params() != defaults.keep_alive_params() {
            self.apply_keep_alive_params(socket, family);
        }
        if self.hop_limit != defaults.hop_limit {
            self.apply_hop_limit(socket, family);
        }
        self.apply_buffers(socket, family);
    }

    pub(super) fn keep_alive_params(&self) -> (u64, u64, u32) {
        (
            self.keep_alive_idle,
            self.keep_alive_interval,
            self.keep_alive_count,
        )
    }

    /// Applies `keep_alive`.
    pub fn apply_keep_alive(&self, socket: &socket2::SockRef<'_>, _: Family) {
        let _ = socket.set_keepalive(self.keep_alive);
    }

    /// Applies the keep-alive idle time, interval and count.
    pub fn apply_keep_alive_params(&self, socket: &socket2::SockRef<'_>, _: Family) {
        let secs = |nanos: u64| std::time::Duration::from_nanos(nanos);
        let _ = socket.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(secs(self.keep_alive_idle))
                .with_interval(secs(self.keep_alive_interval))
                .with_retries(self.keep_alive_count),
        );
    }

    /// Applies the hop limit.
    pub fn apply_hop_limit(&self, socket: &socket2::SockRef<'_>, family: Family) {
        let hops = u32::from(self.hop_limit);
        let _ = match family {
            Family::Ipv4 => socket.set_ttl_v4(hops),
            Family::Ipv6 => socket.set_unicast_hops_v6(hops),
        };
    }

    /// Applies the buffer sizes asked for.
    pub fn apply_buffers(&self, socket: &socket2::SockRef<'_>, _: Family) {
        if let Some(size) = self.receive_buffer {
            let _ = socket.set_recv_buffer_size(size);
        }
        if let Some(size) = self.send_buffer {
            let _ = socket.set_send_buffer_size(size);
        }
    }
}

/// Which kernel buffer of a socket.
#[derive(Debug, Clone, Copy)]
pub enum Buffer {
    /// `SO_RCVBUF`.
    Receive,
    /// `SO_SNDBUF`.
    Send,
}

/// The buffer size a guest's `set-*-buffer-size(value)` asks of the
/// kernel: capped where the kernel's argument ends (a hint, as WASI says;
/// zero is refused before this).
pub fn buffer_request(value: u64) -> usize {
    usize::try_from(value.min(i32::MAX as u64)).unwrap_or(usize::MAX)
}

/// A fresh TCP socket's kernel buffer size, halved as
/// [`TcpSocket::buffer_size`] reports sizes (asked once per process).
pub(super) fn default_buffer(which: Buffer) -> usize {
    static SIZES: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    let (receive, send) = *SIZES.get_or_init(|| {
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let size = |get: fn(&socket2::Socket) -> std::io::Result<usize>| {
            probe
                .as_ref()
                .ok()
                .and_then(|s| get(s).ok())
                .map_or(65_536, |doubled| doubled / 2)
        };
        (
            size(socket2::Socket::recv_buffer_size),
            size(socket2::Socket::send_buffer_size),
        )
    });
    match which {
        Buffer::Receive => receive,
        Buffer::Send => send,
    }
}
