//! A guest that checks the host's `wasi:sockets/tcp` against what the
//! WASI 0.2 specification documents, on request: a client sends `check`
//! and gets one line, `ok N checks` or `fail: WHAT`. Serves with the guest
//! library's event loop, which holds the granted addresses meanwhile.
#![cfg_attr(target_family = "wasm", no_main)]

use std::net::SocketAddr;

struct Checks;

impl guest::Protocol for Checks {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), data: &[u8], reply: &mut Vec<u8>) {
        let answer = if data.trim_ascii() == b"check" {
            match run_checks() {
                Ok(n) => format!("ok {n} checks\n"),
                Err(what) => format!("fail: {what}\n"),
            }
        } else {
            "unknown command\n".to_owned()
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
