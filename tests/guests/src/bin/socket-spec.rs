//! A guest that checks the host's `wasi:sockets/tcp` against what the
//! WASI 0.2 specification documents, on request: a client sends `check`
//! and gets one line, `ok N checks` or `fail: WHAT`. Serves with the guest
//! library's event loop, which holds the granted addresses meanwhile.
//!
//! `check NAME [ARG]` runs one of the behaviours wasmtime's own socket
//! test programs check, over the instance's private loopback (pairs of
//! sockets it listens and connects on itself), and answers the same way:
//! `shutdown-send` (bytes still buffered when the socket is shut down for
//! sending all arrive, then the end; the stream is closed to the guest),
//! `shutdown-receive` (the input stream is closed, queued data dropped),
//! `non-unicast` (broadcast and multicast addresses are
//! `invalid-argument`), `wildcard-bind` (a bind of `0.0.0.0:0` and
//! `[::]:0` tells its real port at once and connects from it),
//! `wildcard-connect ADDR` (the same, connecting to ADDR: answers the
//! port), `private-bind-connect` (a client bound to a loopback port 0
//! connects from it), `buffer-sizes` (a size set reads back as set,
//! before and after connecting), `inherit-after-listen` (an accepted
//! socket takes the listener's options as they are when it is accepted),
//! `wildcard-hoard N` (bind N sockets to `0.0.0.0:0` and hold them:
//! answers how many were bound and what stopped the rest).
#![cfg_attr(target_family = "wasm", no_main)]

use std::net::SocketAddr;

struct Checks;

impl guest::Protocol for Checks {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), data: &[u8], reply: &mut Vec<u8>) {
        let line = String::from_utf8_lossy(data.trim_ascii()).into_owned();
        let result = match line.strip_prefix("check ") {
            None if line == "check" => run_checks().map(|n| format!("{n} checks")),
            None => Err(format!("unknown command {line:?}")),
            Some(check) => reference::run(check),
        };
        let answer = match result {
            Ok(what) => format!("ok {what}\n"),
            Err(what) => format!("fail: {what}\n"),
        };
        reply.extend_from_slice(answer.as_bytes());
    }
}

guest::serve!(Checks, Checks);

#[cfg(target_family = "wasm")]
fn run_checks() -> Result<usize, String> {
    use guest::bindings::wasi::sockets::instance_network::instance_network;
    use guest::bindings::wasi::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress,
    };
    use guest::bindings::wasi::sockets::tcp_create_socket::create_tcp_socket;

    let mut checks = 0;
    let mut expect = |what: &str, got: Result<(), ErrorCode>, want: Result<(), ErrorCode>| {
        checks += 1;
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: got {got:?}, want {want:?}"))
        }
    };
    let v4 = |ip: (u8, u8, u8, u8), port: u16| {
        IpSocketAddress::Ipv4(Ipv4SocketAddress { address: ip, port })
    };
    let network = instance_network();
    let granted: std::net::SocketAddrV4 = std::env::var("LISTEN_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .ok_or("LISTEN_ADDR is not an IPv4 address")?;
    let o = granted.ip().octets();
    let granted = v4((o[0], o[1], o[2], o[3]), granted.port());

    // Listening needs a bound socket: WASI has no implicit bind for it.
    let socket = create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| format!("{e:?}"))?;
    expect(
        "start-listen unbound",
        socket.start_listen(),
        Err(ErrorCode::InvalidState),
    )?;
    // The event loop's listener holds the granted address.
    expect(
        "a second bind of a bound address",
        socket.start_bind(&network, granted),
        Err(ErrorCode::AddressInUse),
    )?;
    // One operation at a time.
    expect(
        "start-bind of the wildcard",
        socket.start_bind(&network, v4((0, 0, 0, 0), 0)),
        Ok(()),
    )?;
    expect(
        "start-bind while a bind is in progress",
        socket.start_bind(&network, v4((0, 0, 0, 0), 0)),
        Err(ErrorCode::ConcurrencyConflict),
    )?;
    expect(
        "start-connect while a bind is in progress",
        socket.start_connect(&network, v4((127, 0, 0, 1), 9)),
        Err(ErrorCode::ConcurrencyConflict),
    )?;
    expect("finish-bind", socket.finish_bind(), Ok(()))?;
    expect(
        "finish-bind again",
        socket.finish_bind(),
        Err(ErrorCode::NotInProgress),
    )?;
    expect(
        "start-bind of a bound socket",
        socket.start_bind(&network, v4((0, 0, 0, 0), 0)),
        Err(ErrorCode::InvalidState),
    )?;
    // Options are kept, and zero is refused where WASI says so.
    expect(
        "set keep-alive",
        socket.set_keep_alive_enabled(true),
        Ok(()),
    )?;
    expect(
        "keep-alive kept",
        socket.keep_alive_enabled().map(|on| assert!(on)),
        Ok(()),
    )?;
    expect(
        "a hop limit of zero",
        socket.set_hop_limit(0),
        Err(ErrorCode::InvalidArgument),
    )?;
    expect(
        "a receive buffer size",
        socket.set_receive_buffer_size(65536),
        Ok(()),
    )?;
    expect(
        "the receive buffer size asked for, before connecting",
        socket
            .receive_buffer_size()
            .map(|n| assert_eq!(n, 65536, "receive buffer size")),
        Ok(()),
    )?;
    drop(socket);

    // Grants and families.
    let first = create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| format!("{e:?}"))?;
    let second = create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| format!("{e:?}"))?;
    expect(
        "an ungranted address",
        first.start_bind(&network, v4((127, 0, 0, 1), 1)),
        Err(ErrorCode::AccessDenied),
    )?;
    expect(
        "the wrong family",
        second.start_bind(
            &network,
            IpSocketAddress::Ipv6(guest::bindings::wasi::sockets::network::Ipv6SocketAddress {
                address: (0, 0, 0, 0, 0, 0, 0, 1),
                port: 1,
                flow_info: 0,
                scope_id: 0,
            }),
        ),
        Err(ErrorCode::InvalidArgument),
    )?;
    // IPv4 written as IPv6: WASI sockets are IPv6-only.
    let v6 = create_tcp_socket(IpAddressFamily::Ipv6).map_err(|e| format!("{e:?}"))?;
    let mapped =
        IpSocketAddress::Ipv6(guest::bindings::wasi::sockets::network::Ipv6SocketAddress {
            address: (0, 0, 0, 0, 0, 0xffff, 0x7f00, 1),
            port: 9,
            flow_info: 0,
            scope_id: 0,
        });
    expect(
        "start-bind of an IPv4-mapped address",
        v6.start_bind(&network, mapped),
        Err(ErrorCode::InvalidArgument),
    )?;
    expect(
        "start-connect to an IPv4-mapped address",
        v6.start_connect(&network, mapped),
        Err(ErrorCode::InvalidArgument),
    )?;
    Ok(checks)
}

#[cfg(not(target_family = "wasm"))]
fn run_checks() -> Result<usize, String> {
    Err("not a wasm build".into())
}

/// The behaviours of wasmtime's socket test programs, checked here.
#[cfg(target_family = "wasm")]
mod reference {
    use guest::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
    use guest::bindings::wasi::sockets::instance_network::instance_network;
    use guest::bindings::wasi::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    };
    use guest::bindings::wasi::sockets::tcp::{ShutdownType, TcpSocket};
    use guest::bindings::wasi::sockets::tcp_create_socket::create_tcp_socket;
    use std::net::SocketAddr;

    const SECOND: u64 = 1_000_000_000;

    type Checked = Result<String, String>;

    pub fn run(check: &str) -> Checked {
        let (name, arg) = check.split_once(' ').unwrap_or((check, ""));
        let both = |f: fn(IpAddressFamily) -> Checked| -> Checked {
            let v4 = f(IpAddressFamily::Ipv4).map_err(|e| format!("IPv4: {e}"))?;
            let v6 = f(IpAddressFamily::Ipv6).map_err(|e| format!("IPv6: {e}"))?;
            Ok(format!("{v4}; {v6}"))
        };
        match name {
            "shutdown-send" => both(shutdown_send),
            "shutdown-receive" => both(shutdown_receive),
            "non-unicast" => non_unicast(),
            "wildcard-bind" => both(wildcard_bind),
            "wildcard-connect" => wildcard_connect(arg.parse().map_err(|e| format!("{e}"))?),
            "private-bind-connect" => both(private_bind_connect),
            "buffer-sizes" => both(buffer_sizes),
            "inherit-after-listen" => both(inherit_after_listen),
            "wildcard-hoard" => wildcard_hoard(arg.parse().map_err(|e| format!("{e}"))?),
            _ => Err(format!("unknown check {name:?}")),
        }
    }

    fn fail(what: &str) -> impl Fn(ErrorCode) -> String + '_ {
        move |e| format!("{what}: {e:?}")
    }

    fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
        match addr {
            SocketAddr::V4(a) => {
                let o = a.ip().octets();
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    address: (o[0], o[1], o[2], o[3]),
                    port: a.port(),
                })
            }
            SocketAddr::V6(a) => {
                let s = a.ip().segments();
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                    port: a.port(),
                    flow_info: 0,
                    scope_id: 0,
                })
            }
        }
    }

    fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
        match addr {
            IpSocketAddress::Ipv4(a) => {
                let (x0, x1, x2, x3) = a.address;
                SocketAddr::from(([x0, x1, x2, x3], a.port))
            }
            IpSocketAddress::Ipv6(a) => {
                let (x0, x1, x2, x3, x4, x5, x6, x7) = a.address;
                SocketAddr::from(([x0, x1, x2, x3, x4, x5, x6, x7], a.port))
            }
        }
    }

    fn loopback(family: IpAddressFamily) -> SocketAddr {
        match family {
            IpAddressFamily::Ipv4 => ([127, 0, 0, 1], 0).into(),
            IpAddressFamily::Ipv6 => ([0, 0, 0, 0, 0, 0, 0, 1], 0).into(),
        }
    }

    fn wildcard(family: IpAddressFamily) -> SocketAddr {
        match family {
            IpAddressFamily::Ipv4 => ([0, 0, 0, 0], 0).into(),
            IpAddressFamily::Ipv6 => ([0u16; 8], 0).into(),
        }
    }

    fn family_of(addr: &SocketAddr) -> IpAddressFamily {
        match addr {
            SocketAddr::V4(_) => IpAddressFamily::Ipv4,
            SocketAddr::V6(_) => IpAddressFamily::Ipv6,
        }
    }

    fn bind(socket: &TcpSocket, addr: SocketAddr) -> Result<(), ErrorCode> {
        socket.start_bind(&instance_network(), to_wasi(addr))?;
        loop {
            match socket.finish_bind() {
                Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
                done => return done,
            }
        }
    }

    fn listen(socket: &TcpSocket) -> Result<(), ErrorCode> {
        socket.start_listen()?;
        loop {
            match socket.finish_listen() {
                Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
                done => return done,
            }
        }
    }

    fn connect(
        socket: &TcpSocket,
        to: SocketAddr,
    ) -> Result<(InputStream, OutputStream), ErrorCode> {
        socket.start_connect(&instance_network(), to_wasi(to))?;
        loop {
            match socket.finish_connect() {
                Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
                done => return done,
            }
        }
    }

    fn accept(socket: &TcpSocket) -> Result<(TcpSocket, InputStream, OutputStream), ErrorCode> {
        loop {
            match socket.accept() {
                Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
                done => return done,
            }
        }
    }

    /// One end of a connection. Fields in drop order: streams before
    /// their socket.
    struct End {
        input: InputStream,
        output: OutputStream,
        socket: TcpSocket,
    }

    /// A listener on the instance's private loopback, bound and listening.
    fn listener(family: IpAddressFamily) -> Result<(TcpSocket, SocketAddr), String> {
        let listener = create_tcp_socket(family).map_err(fail("create"))?;
        bind(&listener, loopback(family)).map_err(fail("bind the listener"))?;
        listen(&listener).map_err(fail("listen"))?;
        let addr = from_wasi(listener.local_address().map_err(fail("listener address"))?);
        Ok((listener, addr))
    }

    /// A connected pair over the private loopback: (server, client).
    fn pair(family: IpAddressFamily) -> Result<(End, End), String> {
        let (listener, addr) = listener(family)?;
        let client = create_tcp_socket(family).map_err(fail("create"))?;
        let (input, output) = connect(&client, addr).map_err(fail("connect"))?;
        let (socket, server_in, server_out) = accept(&listener).map_err(fail("accept"))?;
        Ok((
            End {
                input: server_in,
                output: server_out,
                socket,
            },
            End {
                input,
                output,
                socket: client,
            },
        ))
    }

    /// Reads `input` to its end: every byte, or a failure.
    fn read_to_end(input: &InputStream) -> Result<Vec<u8>, String> {
        let mut got = Vec::new();
        loop {
            match input.blocking_read(65536) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(StreamError::Closed) => return Ok(got),
                Err(e) => return Err(format!("read after {} bytes: {e:?}", got.len())),
            }
        }
    }

    fn shutdown_send(family: IpAddressFamily) -> Checked {
        let (server, client) = pair(family)?;
        client
            .socket
            .set_send_buffer_size(1024)
            .map_err(fail("send buffer"))?;
        let permit = client.output.check_write().map_err(|e| format!("{e:?}"))?;
        let data: Vec<u8> = (0..permit).map(|i| (i % 251) as u8).collect();
        client
            .output
            .write(&data)
            .map_err(|e| format!("write: {e:?}"))?;
        client
            .socket
            .shutdown(ShutdownType::Send)
            .map_err(fail("shutdown"))?;
        let closed = |what: &str, r: Result<(), StreamError>| match r {
            Err(StreamError::Closed) => Ok(()),
            other => Err(format!("{what} after shutdown(send): {other:?}")),
        };
        closed("write", client.output.write(b"x"))?;
        closed("check-write", client.output.check_write().map(drop))?;
        closed("flush", client.output.flush())?;
        let got = read_to_end(&server.input)?;
        if got != data {
            return Err(format!(
                "the peer got {} of {} bytes",
                got.len(),
                data.len()
            ));
        }
        Ok(format!("{} bytes then the end", got.len()))
    }

    fn shutdown_receive(family: IpAddressFamily) -> Checked {
        let (server, client) = pair(family)?;
        server
            .output
            .blocking_write_and_flush(b"queued and never read")
            .map_err(|e| format!("write: {e:?}"))?;
        client.input.subscribe().block();
        client
            .socket
            .shutdown(ShutdownType::Receive)
            .map_err(fail("shutdown"))?;
        for size in [10, 0] {
            match client.input.read(size) {
                Err(StreamError::Closed) => {}
                other => return Err(format!("read({size}) after shutdown(receive): {other:?}")),
            }
        }
        Ok("closed".into())
    }

    fn non_unicast() -> Checked {
        let addrs: [SocketAddr; 4] = [
            ([255, 255, 255, 255], 47).into(),
            ([224, 254, 0, 0], 47).into(),
            ([0xff00, 0, 0, 0, 0, 0, 0, 0], 47).into(),
            // IPv4-compatible IPv6 (::1.2.3.4), deprecated since 2006.
            ([0, 0, 0, 0, 0, 0, 0x0102, 0x0304], 47).into(),
        ];
        for addr in addrs {
            for what in ["bind", "connect"] {
                let socket = create_tcp_socket(family_of(&addr)).map_err(fail("create"))?;
                let got = if what == "bind" {
                    socket.start_bind(&instance_network(), to_wasi(addr))
                } else {
                    socket.start_connect(&instance_network(), to_wasi(addr))
                };
                if got != Err(ErrorCode::InvalidArgument) {
                    return Err(format!("{what} {addr}: {got:?}"));
                }
            }
        }
        Ok("invalid-argument".into())
    }

    fn wildcard_bind(family: IpAddressFamily) -> Checked {
        let (listener, addr) = listener(family)?;
        let client = create_tcp_socket(family).map_err(fail("create"))?;
        bind(&client, wildcard(family)).map_err(fail("bind the wildcard"))?;
        let bound = from_wasi(client.local_address().map_err(fail("bound address"))?);
        if bound.port() == 0 || !bound.ip().is_unspecified() {
            return Err(format!("bound to {bound}"));
        }
        let streams = connect(&client, addr).map_err(fail("connect"))?;
        let local = from_wasi(client.local_address().map_err(fail("local address"))?);
        let (server, ..) = accept(&listener).map_err(fail("accept"))?;
        let peer = from_wasi(server.remote_address().map_err(fail("peer"))?);
        drop(streams);
        if local.port() != bound.port() || peer != local {
            return Err(format!(
                "bound {bound}, connected from {local}, seen from {peer}"
            ));
        }
        Ok(format!("port {} kept", bound.port()))
    }

    fn wildcard_connect(to: SocketAddr) -> Checked {
        let family = family_of(&to);
        let client = create_tcp_socket(family).map_err(fail("create"))?;
        bind(&client, wildcard(family)).map_err(fail("bind the wildcard"))?;
        let bound = from_wasi(client.local_address().map_err(fail("bound address"))?);
        let streams = connect(&client, to).map_err(fail("connect"))?;
        let local = from_wasi(client.local_address().map_err(fail("local address"))?);
        drop(streams);
        if bound.port() == 0 || local.port() != bound.port() {
            return Err(format!("bound {bound}, connected from {local}"));
        }
        Ok(format!("{}", local.port()))
    }

    /// Binds up to `n` sockets to `0.0.0.0:0` and holds them: how many
    /// were bound, and the error that stopped the rest.
    fn wildcard_hoard(n: usize) -> Checked {
        let mut held = Vec::new();
        let mut stopped = None;
        for _ in 0..n {
            let socket = create_tcp_socket(IpAddressFamily::Ipv4).map_err(fail("create"))?;
            match bind(&socket, wildcard(IpAddressFamily::Ipv4)) {
                Ok(()) => held.push(socket),
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            }
        }
        let bound = held.len();
        std::mem::forget(held);
        Ok(format!("{bound} bound, then {stopped:?}"))
    }

    fn private_bind_connect(family: IpAddressFamily) -> Checked {
        let (listener, addr) = listener(family)?;
        let client = create_tcp_socket(family).map_err(fail("create"))?;
        bind(&client, loopback(family)).map_err(fail("bind the client"))?;
        let bound = from_wasi(client.local_address().map_err(fail("bound address"))?);
        let streams = connect(&client, addr).map_err(fail("connect"))?;
        let local = from_wasi(client.local_address().map_err(fail("local address"))?);
        let (server, ..) = accept(&listener).map_err(fail("accept"))?;
        let peer = from_wasi(server.remote_address().map_err(fail("peer"))?);
        drop(streams);
        if local != bound || peer != bound {
            return Err(format!(
                "bound {bound}, connected from {local}, seen from {peer}"
            ));
        }
        Ok(format!("from {bound}"))
    }

    fn buffer_sizes(family: IpAddressFamily) -> Checked {
        // Not 128 KiB: a private pair's own buffers read back as that.
        const SIZE: u64 = 0x18000;
        let sizes = |socket: &TcpSocket| -> Result<(u64, u64), String> {
            Ok((
                socket
                    .receive_buffer_size()
                    .map_err(fail("receive buffer"))?,
                socket.send_buffer_size().map_err(fail("send buffer"))?,
            ))
        };
        let (listener, addr) = listener(family)?;
        listener
            .set_receive_buffer_size(SIZE)
            .map_err(fail("set receive buffer"))?;
        listener
            .set_send_buffer_size(SIZE)
            .map_err(fail("set send buffer"))?;
        let client = create_tcp_socket(family).map_err(fail("create"))?;
        let fresh = sizes(&client)?;
        if fresh.0 == 0 || fresh.1 == 0 {
            return Err(format!("a fresh socket's sizes: {fresh:?}"));
        }
        client
            .set_receive_buffer_size(SIZE)
            .map_err(fail("set receive buffer"))?;
        client
            .set_send_buffer_size(SIZE)
            .map_err(fail("set send buffer"))?;
        let before = sizes(&client)?;
        let streams = connect(&client, addr).map_err(fail("connect"))?;
        let after = sizes(&client)?;
        let (server, ..) = accept(&listener).map_err(fail("accept"))?;
        let accepted = sizes(&server)?;
        drop(streams);
        let want = (SIZE, SIZE);
        if before != want || after != want || accepted != want {
            return Err(format!(
                "set {SIZE}: read {before:?} before connecting, {after:?} after, {accepted:?} accepted"
            ));
        }
        Ok(format!("{SIZE} throughout"))
    }

    fn inherit_after_listen(family: IpAddressFamily) -> Checked {
        let (listener, addr) = listener(family)?;
        listener
            .set_keep_alive_enabled(true)
            .map_err(fail("keep-alive"))?;
        listener
            .set_keep_alive_idle_time(43 * SECOND)
            .map_err(fail("idle time"))?;
        listener.set_hop_limit(43).map_err(fail("hop limit"))?;
        let client = create_tcp_socket(family).map_err(fail("create"))?;
        let streams = connect(&client, addr).map_err(fail("connect"))?;
        let (server, ..) = accept(&listener).map_err(fail("accept"))?;
        drop(streams);
        let got = (
            server.keep_alive_enabled().map_err(fail("keep-alive"))?,
            server.keep_alive_idle_time().map_err(fail("idle time"))?,
            server.hop_limit().map_err(fail("hop limit"))?,
        );
        if got != (true, 43 * SECOND, 43) {
            return Err(format!("the accepted socket has {got:?}"));
        }
        Ok("inherited".into())
    }
}

#[cfg(not(target_family = "wasm"))]
mod reference {
    pub fn run(_: &str) -> Result<String, String> {
        Err("not a wasm build".into())
    }
}
