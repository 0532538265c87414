//! The hostile guest on WASI 0.3: the same commands as `hostile` (one per
//! line, one answer line each, `ok ...` or `denied ...`), tried through
//! `wasi:sockets@0.3.0` and the other 0.3 interfaces directly, plus what
//! only 0.3 allows: `listen-unbound` (listen without bind: 0.3 binds
//! implicitly), `hoard-streams` (accept every client, drop its socket
//! and keep its receive stream, which outlives the socket in 0.3) and
//! `half-close` (answer, then drop the send stream and keep the socket and
//! its receive stream: the client should see the end of the stream) and
//! `gather N` (read a line from each of N more clients before answering
//! any of them), `socketpair`, `socketpairs N` and `random-loop N` (as the
//! 0.2 guest's). And what wasmtime's own socket test programs check, over
//! the instance's private loopback (as the 0.2 `socket-spec` guest's
//! `check NAME`): `transfer N` (N bytes through a pair whose sender has
//! a 1024-byte send buffer, in 256-byte writes, read as they come: all
//! arrive, in order), `non-unicast`, `wildcard-bind`, `wildcard-connect
//! ADDR`, `private-bind-connect`, `buffer-sizes`, `inherit-after-listen`,
//! `wildcard-hoard N`.
//! Serves one client at a time.
#![cfg_attr(target_family = "wasm", no_main)]

#[cfg(target_family = "wasm")]
mod guest {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit/p3",
            world: "tcphost:server/tcp-server-p3",
            generate_all,
        });
    }

    use bindings::exports::wasi::cli::run::Guest;
    use bindings::wasi::cli::environment::get_environment;
    use bindings::wasi::sockets::types::{
        IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, TcpSocket,
        UdpSocket,
    };
    use std::net::SocketAddr;
    use wit_bindgen::{StreamReader, StreamResult};

    struct Hostile;

    impl Guest for Hostile {
        async fn run() -> Result<(), ()> {
            let addr: SocketAddr = env("LISTEN_ADDR")
                .and_then(|a| a.parse().ok())
                .expect("the host sets LISTEN_ADDR");
            let listener = TcpSocket::create(family(&addr)).expect("a socket");
            listener
                .bind(to_wasi(addr))
                .expect("binding the granted address");
            let mut clients = listener.listen().expect("listening on the granted address");
            loop {
                let Some(client) = next(&mut clients).await else {
                    return Err(());
                };
                let (mut input, _) = client.receive();
                let (mut output, to_send) = bindings::wit_stream::new::<u8>();
                let _sent = client.send(to_send);
                let mut pending = Vec::new();
                while let Some(line) = read_line(&mut input, &mut pending).await {
                    let line = line.trim().to_owned();
                    if line == "hoard" || line == "hoard-streams" {
                        let _ = output.write_all(b"ok hoarding\n".to_vec()).await;
                        hoard(&mut clients, line == "hoard-streams", client).await;
                    }
                    if let Some(count) = line.strip_prefix("gather ") {
                        let count = gather(&mut clients, count.parse().unwrap_or(0)).await;
                        let _ = output
                            .write_all(format!("ok gathered {count}\n").into_bytes())
                            .await;
                        continue;
                    }
                    if line == "half-close" {
                        let _ = output.write_all(b"ok half-closing\n".to_vec()).await;
                        drop(output);
                        // Read on until the client goes.
                        while read_line(&mut input, &mut pending).await.is_some() {}
                        break;
                    }
                    let answer = attempt(&line).await;
                    println!("{line}: {answer}");
                    let rest = output.write_all(format!("{answer}\n").into_bytes()).await;
                    if !rest.is_empty() {
                        break;
                    }
                }
            }
        }
    }

    bindings::export!(Hostile with_types_in bindings);

    /// The next client of `clients`, or `None` once the stream ends.
    async fn next(clients: &mut StreamReader<TcpSocket>) -> Option<TcpSocket> {
        loop {
            let (result, mut got) = clients.read(Vec::with_capacity(1)).await;
            if let Some(client) = got.pop() {
                return Some(client);
            }
            if let StreamResult::Dropped = result {
                return None;
            }
        }
    }

    /// One line from `input` (without waiting for more than it needs).
    async fn read_line(input: &mut StreamReader<u8>, pending: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let (result, data) = input.read(Vec::with_capacity(1024)).await;
            if let StreamResult::Dropped = result {
                return None;
            }
            pending.extend_from_slice(&data);
        }
    }

    /// Accepts every client and holds it without reading, forever; with
    /// `streams`, drops each socket and holds its receive stream instead.
    async fn hoard(clients: &mut StreamReader<TcpSocket>, streams: bool, first: TcpSocket) -> ! {
        let mut held = vec![first];
        let mut inputs = Vec::new();
        loop {
            let Some(client) = next(clients).await else {
                continue;
            };
            if streams {
                inputs.push(client.receive());
                drop(client);
                println!("hoarding {} streams", inputs.len());
            } else {
                held.push(client);
                println!("hoarding {} connections", held.len());
            }
        }
    }

    /// Accepts `count` more clients and reads a line from each, keeping
    /// them all without reading again, then answers each `gathered`: many
    /// reads the guest does not come back from before it answers any.
    async fn gather(clients: &mut StreamReader<TcpSocket>, count: usize) -> usize {
        let mut gathered = Vec::new();
        while gathered.len() < count {
            let Some(client) = next(clients).await else {
                break;
            };
            let (mut input, _) = client.receive();
            if read_line(&mut input, &mut Vec::new()).await.is_none() {
                continue;
            }
            let (output, to_send) = bindings::wit_stream::new::<u8>();
            let sent = client.send(to_send);
            gathered.push((client, input, output, sent));
        }
        for (_, _, output, _) in &mut gathered {
            let _ = output.write_all(b"gathered\n".to_vec()).await;
        }
        gathered.len()
    }

    /// A pair of connected sockets made as CPython's `socket.socketpair()`
    /// makes one on WASI, and what keeps it open.
    struct Pair {
        listener_addr: SocketAddr,
        client_addr: SocketAddr,
        _listener: Option<(StreamReader<TcpSocket>, TcpSocket)>,
        _ends: (TcpSocket, TcpSocket),
        _streams: (StreamReader<u8>, StreamReader<u8>),
        _writers: (wit_bindgen::StreamWriter<u8>, wit_bindgen::StreamWriter<u8>),
    }

    /// Listens on 127.0.0.1:0, connects to it, takes the client from the
    /// listener, checks that each end's address is the other's peer and
    /// passes a byte each way; with `keep_listener` false the listener is
    /// closed again (as CPython does).
    async fn socketpair(keep_listener: bool) -> Result<Pair, String> {
        let fail = |e: bindings::wasi::sockets::types::ErrorCode| format!("{e:?}");
        let listener = TcpSocket::create(IpAddressFamily::Ipv4).map_err(fail)?;
        listener
            .bind(to_wasi(([127, 0, 0, 1], 0).into()))
            .map_err(fail)?;
        let mut clients = listener.listen().map_err(fail)?;
        let listener_addr = from_wasi(listener.get_local_address().map_err(fail)?);
        let client = TcpSocket::create(IpAddressFamily::Ipv4).map_err(fail)?;
        connect_within_2s(&client, listener_addr).await?;
        let server = next(&mut clients)
            .await
            .ok_or("the listener's stream ended")?;
        let client_addr = from_wasi(client.get_local_address().map_err(fail)?);
        if from_wasi(server.get_local_address().map_err(fail)?)
            != from_wasi(client.get_remote_address().map_err(fail)?)
            || from_wasi(server.get_remote_address().map_err(fail)?) != client_addr
        {
            return Err("the ends' addresses disagree".into());
        }
        let (mut from_client, _) = server.receive();
        let (mut from_server, _) = client.receive();
        let (mut to_server, data) = bindings::wit_stream::new::<u8>();
        let _ = client.send(data);
        let (mut to_client, data) = bindings::wit_stream::new::<u8>();
        let _ = server.send(data);
        let _ = to_server.write_all(b"x".to_vec()).await;
        let (_, got) = from_client.read(Vec::with_capacity(1)).await;
        let _ = to_client.write_all(b"y".to_vec()).await;
        let (_, back) = from_server.read(Vec::with_capacity(1)).await;
        if got != b"x" || back != b"y" {
            return Err(format!("passed {got:?} and {back:?}"));
        }
        Ok(Pair {
            listener_addr,
            client_addr,
            _listener: keep_listener.then_some((clients, listener)),
            _ends: (client, server),
            _streams: (from_client, from_server),
            _writers: (to_server, to_client),
        })
    }

    fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
        match addr {
            IpSocketAddress::Ipv4(a) => {
                let (x, y, z, w) = a.address;
                SocketAddr::from(([x, y, z, w], a.port))
            }
            IpSocketAddress::Ipv6(a) => {
                let (p, q, r, s, t, u, v, w) = a.address;
                SocketAddr::from(([p, q, r, s, t, u, v, w], a.port))
            }
        }
    }

    fn env(name: &str) -> Option<String> {
        get_environment()
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    fn family(addr: &SocketAddr) -> IpAddressFamily {
        match addr {
            SocketAddr::V4(_) => IpAddressFamily::Ipv4,
            SocketAddr::V6(_) => IpAddressFamily::Ipv6,
        }
    }

    fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
        match addr {
            SocketAddr::V4(a) => {
                let o = a.ip().octets();
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: a.port(),
                    address: (o[0], o[1], o[2], o[3]),
                })
            }
            SocketAddr::V6(a) => {
                let s = a.ip().segments();
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: a.port(),
                    flow_info: a.flowinfo(),
                    address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                    scope_id: a.scope_id(),
                })
            }
        }
    }

    /// Connects `socket` to `addr`, giving up (cancelling the call) after
    /// two seconds, as the 0.2 guest's `connect_timeout` does.
    async fn connect_within_2s(socket: &TcpSocket, addr: SocketAddr) -> Result<(), String> {
        use std::future::Future;
        use std::task::Poll;
        let mut connect = std::pin::pin!(socket.connect(to_wasi(addr)));
        let mut timer = std::pin::pin!(bindings::wasi::clocks::monotonic_clock::wait_for(
            2_000_000_000
        ));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = connect.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(|e| format!("{e:?}")));
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err("timed out".into()));
            }
            Poll::Pending
        })
        .await
    }

    /// Tries what `command` says and describes the outcome.
    async fn attempt(command: &str) -> String {
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        let outcome: Result<String, String> = match verb {
            "bind" => match arg.parse::<SocketAddr>() {
                Ok(addr) => TcpSocket::create(family(&addr))
                    .and_then(|s| s.bind(to_wasi(addr)).and_then(|()| s.listen()).map(drop))
                    .map(|()| format!("listening on {addr}"))
                    .map_err(|e| format!("{e:?}")),
                Err(e) => return format!("bad address: {e}"),
            },
            "listen-unbound" => TcpSocket::create(IpAddressFamily::Ipv4)
                .and_then(|s| s.listen().map(drop))
                .map(|()| "listening".into())
                .map_err(|e| format!("{e:?}")),
            "connect" => match arg.parse::<SocketAddr>() {
                Ok(addr) => match TcpSocket::create(family(&addr)) {
                    Ok(s) => connect_within_2s(&s, addr)
                        .await
                        .map(|()| "connected".into()),
                    Err(e) => Err(format!("{e:?}")),
                },
                Err(e) => return format!("bad address: {e}"),
            },
            "connect-hold" => {
                let (n, target) = arg.split_once(' ').unwrap_or(("1", arg));
                let Ok(target) = target.parse::<SocketAddr>() else {
                    return format!("bad address: {target}");
                };
                let (mut held, mut refused, mut first) = (Vec::new(), 0, None);
                for _ in 0..n.parse().unwrap_or(1) {
                    let socket = TcpSocket::create(family(&target)).expect("a socket");
                    match connect_within_2s(&socket, target).await {
                        Ok(()) => held.push(socket),
                        Err(e) => {
                            refused += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
                let connected = held.len();
                std::mem::forget(held);
                let why = first.map(|e| format!(" ({e})")).unwrap_or_default();
                Ok(format!("{connected} connected, {refused} refused{why}"))
            }
            "udp" => UdpSocket::create(IpAddressFamily::Ipv4)
                .map(|_| "a UDP socket".into())
                .map_err(|e| format!("{e:?}")),
            "resolve" => bindings::wasi::sockets::ip_name_lookup::resolve_addresses(arg.into())
                .await
                .map(|addrs| format!("{} addresses", addrs.len()))
                .map_err(|e| format!("{e:?}")),
            "read" => {
                let dirs = bindings::wasi::filesystem::preopens::get_directories();
                if dirs.is_empty() {
                    Err(format!("no directory to read {arg} from"))
                } else {
                    Ok(format!("{} directories", dirs.len()))
                }
            }
            "env" => {
                return env(arg).map_or_else(|| "denied not present".into(), |v| format!("ok {v}"));
            }
            "panic" => panic!("asked to panic"),
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "spin-clock" => {
                // Each `now` is a host call that returns at once.
                let mut last = 0;
                loop {
                    last = std::hint::black_box(
                        bindings::wasi::clocks::monotonic_clock::now().max(last),
                    );
                }
            }
            "say" => {
                let n: u32 = arg.parse().unwrap_or(1);
                for i in 0..n {
                    println!("chatter {i}");
                }
                Ok(format!("{n} lines"))
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "listen" => {
                let addr: SocketAddr = env("LISTEN_ADDR")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(([127, 0, 0, 1], 0).into());
                let (mut held, mut refused, mut first) = (Vec::new(), 0, None);
                for _ in 0..arg.parse().unwrap_or(1) {
                    let socket = TcpSocket::create(family(&addr)).expect("a socket");
                    match socket.bind(to_wasi(addr)).and_then(|()| socket.listen()) {
                        Ok(clients) => held.push((clients, socket)),
                        Err(e) => {
                            refused += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
                let listening = held.len();
                // Held for good: what they cost the host must stay bounded.
                std::mem::forget(held);
                let why = first.map(|e| format!(" ({e:?})")).unwrap_or_default();
                Ok(format!("{listening} listening, {refused} refused{why}"))
            }
            "random" => {
                let bytes =
                    bindings::wasi::random::random::get_random_bytes(arg.parse().unwrap_or(1));
                Ok(format!("{} random bytes", bytes.len()))
            }
            "random-loop" => loop {
                let bytes =
                    bindings::wasi::random::random::get_random_bytes(arg.parse().unwrap_or(1));
                std::hint::black_box(bytes);
            },
            "socketpair" => socketpair(true).await.map(|pair| {
                let described = format!("{} {}", pair.listener_addr, pair.client_addr);
                std::mem::forget(pair);
                described
            }),
            "socketpairs" => {
                let (mut held, mut first) = (Vec::new(), None);
                for _ in 0..arg.parse().unwrap_or(1) {
                    match socketpair(false).await {
                        Ok(pair) => held.push(pair),
                        Err(e) => {
                            first = Some(e);
                            break;
                        }
                    }
                }
                let made = held.len();
                std::mem::forget(held);
                let why = first.map(|e| format!(", then {e}")).unwrap_or_default();
                Ok(format!("{made} pairs{why}"))
            }
            "exit" => std::process::exit(arg.parse().unwrap_or(1)),
            "transfer" => {
                crate::reference::both(arg.parse().unwrap_or(0), crate::reference::transfer).await
            }
            "non-unicast" => crate::reference::non_unicast().await,
            "wildcard-bind" => crate::reference::both(0, crate::reference::wildcard_bind).await,
            "wildcard-connect" => match arg.parse::<SocketAddr>() {
                Ok(addr) => crate::reference::wildcard_connect(addr).await,
                Err(e) => return format!("bad address: {e}"),
            },
            "private-bind-connect" => {
                crate::reference::both(0, crate::reference::private_bind_connect).await
            }
            "buffer-sizes" => crate::reference::both(0, crate::reference::buffer_sizes).await,
            "inherit-after-listen" => {
                crate::reference::both(0, crate::reference::inherit_after_listen).await
            }
            "wildcard-hoard" => crate::reference::wildcard_hoard(arg.parse().unwrap_or(1)),
            _ => return format!("unknown command {verb:?}"),
        };
        match outcome {
            Ok(what) => format!("ok {what}"),
            Err(e) => format!("denied {e}"),
        }
    }
}

/// The behaviours of wasmtime's socket test programs, checked here.
#[cfg(target_family = "wasm")]
mod reference {
    use super::guest::bindings;
    use bindings::wasi::sockets::types::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
        TcpSocket,
    };
    use std::net::SocketAddr;
    use wit_bindgen::{StreamReader, StreamResult};

    const SECOND: u64 = 1_000_000_000;

    type Checked = Result<String, String>;

    /// `check` for IPv4, then IPv6.
    pub async fn both<F: Future<Output = Checked>>(
        arg: usize,
        check: fn(IpAddressFamily, usize) -> F,
    ) -> Checked {
        let v4 = check(IpAddressFamily::Ipv4, arg)
            .await
            .map_err(|e| format!("IPv4: {e}"))?;
        let v6 = check(IpAddressFamily::Ipv6, arg)
            .await
            .map_err(|e| format!("IPv6: {e}"))?;
        Ok(format!("{v4}; {v6}"))
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

    /// A listener on the instance's private loopback and its clients.
    fn listener(
        family: IpAddressFamily,
    ) -> Result<(TcpSocket, StreamReader<TcpSocket>, SocketAddr), String> {
        let listener = TcpSocket::create(family).map_err(fail("create"))?;
        listener
            .bind(to_wasi(loopback(family)))
            .map_err(fail("bind the listener"))?;
        let clients = listener.listen().map_err(fail("listen"))?;
        let addr = from_wasi(listener.get_local_address().map_err(fail("address"))?);
        Ok((listener, clients, addr))
    }

    async fn next(clients: &mut StreamReader<TcpSocket>) -> Result<TcpSocket, String> {
        loop {
            let (result, mut got) = clients.read(Vec::with_capacity(1)).await;
            if let Some(client) = got.pop() {
                return Ok(client);
            }
            if let StreamResult::Dropped = result {
                return Err("the listener's stream ended".into());
            }
        }
    }

    /// Connects `client` to `addr` and accepts it: the accepted socket.
    async fn connect_and_accept(
        client: &TcpSocket,
        clients: &mut StreamReader<TcpSocket>,
        addr: SocketAddr,
    ) -> Result<TcpSocket, String> {
        client
            .connect(to_wasi(addr))
            .await
            .map_err(fail("connect"))?;
        next(clients).await
    }

    pub async fn transfer(family: IpAddressFamily, size: usize) -> Checked {
        let (_listener, mut clients, addr) = listener(family)?;
        let client = TcpSocket::create(family).map_err(fail("create"))?;
        let server = connect_and_accept(&client, &mut clients, addr).await?;
        client
            .set_send_buffer_size(1024)
            .map_err(fail("send buffer"))?;
        let (mut writer, data) = bindings::wit_stream::new::<u8>();
        let sent = client.send(data);
        let sending = wit_bindgen::spawn_local(async move {
            let mut at = 0;
            while at < size {
                let chunk: Vec<u8> = (at..(at + 256).min(size))
                    .map(|i| (i % 251) as u8)
                    .collect();
                at += chunk.len();
                if !writer.write_all(chunk).await.is_empty() {
                    return Err(format!("the send stream closed after {at} bytes"));
                }
            }
            drop(writer);
            sent.await.map_err(|e| format!("send: {e:?}"))
        });
        let (mut input, _) = server.receive();
        let mut got = 0usize;
        loop {
            let (result, chunk) = input.read(Vec::with_capacity(4096)).await;
            for byte in &chunk {
                if *byte != (got % 251) as u8 {
                    return Err(format!("byte {got} is {byte}"));
                }
                got += 1;
            }
            if let StreamResult::Dropped = result {
                break;
            }
        }
        sending.await.ok_or("the sending task ended")??;
        if got != size {
            return Err(format!("got {got} of {size} bytes"));
        }
        Ok(format!("{got} bytes"))
    }

    pub async fn non_unicast() -> Checked {
        let addrs: [SocketAddr; 4] = [
            ([255, 255, 255, 255], 47).into(),
            ([224, 254, 0, 0], 47).into(),
            ([0xff00, 0, 0, 0, 0, 0, 0, 0], 47).into(),
            ([0, 0, 0, 0, 0, 0, 0x0102, 0x0304], 47).into(),
        ];
        for addr in addrs {
            let family = match addr {
                SocketAddr::V4(_) => IpAddressFamily::Ipv4,
                SocketAddr::V6(_) => IpAddressFamily::Ipv6,
            };
            let socket = TcpSocket::create(family).map_err(fail("create"))?;
            let got = socket.bind(to_wasi(addr));
            if !matches!(got, Err(ErrorCode::InvalidArgument)) {
                return Err(format!("bind {addr}: {got:?}"));
            }
            let socket = TcpSocket::create(family).map_err(fail("create"))?;
            let got = socket.connect(to_wasi(addr)).await;
            if !matches!(got, Err(ErrorCode::InvalidArgument)) {
                return Err(format!("connect {addr}: {got:?}"));
            }
        }
        Ok("invalid-argument".into())
    }

    pub async fn wildcard_bind(family: IpAddressFamily, _: usize) -> Checked {
        let (_listener, mut clients, addr) = listener(family)?;
        let client = TcpSocket::create(family).map_err(fail("create"))?;
        client
            .bind(to_wasi(wildcard(family)))
            .map_err(fail("bind the wildcard"))?;
        let bound = from_wasi(client.get_local_address().map_err(fail("bound address"))?);
        if bound.port() == 0 || !bound.ip().is_unspecified() {
            return Err(format!("bound to {bound}"));
        }
        let server = connect_and_accept(&client, &mut clients, addr).await?;
        let local = from_wasi(client.get_local_address().map_err(fail("local"))?);
        let peer = from_wasi(server.get_remote_address().map_err(fail("peer"))?);
        if local.port() != bound.port() || peer != local {
            return Err(format!(
                "bound {bound}, connected from {local}, seen from {peer}"
            ));
        }
        Ok(format!("port {} kept", bound.port()))
    }

    pub async fn wildcard_connect(to: SocketAddr) -> Checked {
        let family = match to {
            SocketAddr::V4(_) => IpAddressFamily::Ipv4,
            SocketAddr::V6(_) => IpAddressFamily::Ipv6,
        };
        let client = TcpSocket::create(family).map_err(fail("create"))?;
        client
            .bind(to_wasi(wildcard(family)))
            .map_err(fail("bind the wildcard"))?;
        let bound = from_wasi(client.get_local_address().map_err(fail("bound address"))?);
        client.connect(to_wasi(to)).await.map_err(fail("connect"))?;
        let local = from_wasi(client.get_local_address().map_err(fail("local"))?);
        if bound.port() == 0 || local.port() != bound.port() {
            return Err(format!("bound {bound}, connected from {local}"));
        }
        Ok(format!("{}", local.port()))
    }

    /// Binds up to `n` sockets to `0.0.0.0:0` and holds them: how many
    /// were bound, and the error that stopped the rest.
    pub fn wildcard_hoard(n: usize) -> Checked {
        let mut held = Vec::new();
        let mut stopped = None;
        for _ in 0..n {
            let socket = TcpSocket::create(IpAddressFamily::Ipv4).map_err(fail("create"))?;
            match socket.bind(to_wasi(wildcard(IpAddressFamily::Ipv4))) {
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

    pub async fn private_bind_connect(family: IpAddressFamily, _: usize) -> Checked {
        let (_listener, mut clients, addr) = listener(family)?;
        let client = TcpSocket::create(family).map_err(fail("create"))?;
        client
            .bind(to_wasi(loopback(family)))
            .map_err(fail("bind the client"))?;
        let bound = from_wasi(client.get_local_address().map_err(fail("bound address"))?);
        let server = connect_and_accept(&client, &mut clients, addr).await?;
        let local = from_wasi(client.get_local_address().map_err(fail("local"))?);
        let peer = from_wasi(server.get_remote_address().map_err(fail("peer"))?);
        if local != bound || peer != bound {
            return Err(format!(
                "bound {bound}, connected from {local}, seen from {peer}"
            ));
        }
        Ok(format!("from {bound}"))
    }

    pub async fn buffer_sizes(family: IpAddressFamily, _: usize) -> Checked {
        // Not 128 KiB: a private pair's own buffers read back as that.
        const SIZE: u64 = 0x18000;
        let sizes = |socket: &TcpSocket| -> Result<(u64, u64), String> {
            Ok((
                socket
                    .get_receive_buffer_size()
                    .map_err(fail("receive buffer"))?,
                socket.get_send_buffer_size().map_err(fail("send buffer"))?,
            ))
        };
        let (listener, mut clients, addr) = listener(family)?;
        listener
            .set_receive_buffer_size(SIZE)
            .map_err(fail("set receive buffer"))?;
        listener
            .set_send_buffer_size(SIZE)
            .map_err(fail("set send buffer"))?;
        let client = TcpSocket::create(family).map_err(fail("create"))?;
        client
            .set_receive_buffer_size(SIZE)
            .map_err(fail("set receive buffer"))?;
        client
            .set_send_buffer_size(SIZE)
            .map_err(fail("set send buffer"))?;
        let before = sizes(&client)?;
        let server = connect_and_accept(&client, &mut clients, addr).await?;
        let after = sizes(&client)?;
        let accepted = sizes(&server)?;
        let want = (SIZE, SIZE);
        if before != want || after != want || accepted != want {
            return Err(format!(
                "set {SIZE}: read {before:?} before connecting, {after:?} after, {accepted:?} accepted"
            ));
        }
        Ok(format!("{SIZE} throughout"))
    }

    pub async fn inherit_after_listen(family: IpAddressFamily, _: usize) -> Checked {
        let (listener, mut clients, addr) = listener(family)?;
        listener
            .set_keep_alive_enabled(true)
            .map_err(fail("keep-alive"))?;
        listener
            .set_keep_alive_idle_time(43 * SECOND)
            .map_err(fail("idle time"))?;
        listener.set_hop_limit(43).map_err(fail("hop limit"))?;
        let client = TcpSocket::create(family).map_err(fail("create"))?;
        let server = connect_and_accept(&client, &mut clients, addr).await?;
        let got = (
            server
                .get_keep_alive_enabled()
                .map_err(fail("keep-alive"))?,
            server
                .get_keep_alive_idle_time()
                .map_err(fail("idle time"))?,
            server.get_hop_limit().map_err(fail("hop limit"))?,
        );
        if got != (true, 43 * SECOND, 43) {
            return Err(format!("the accepted socket has {got:?}"));
        }
        Ok("inherited".into())
    }
}

#[cfg(not(target_family = "wasm"))]
fn main() {
    eprintln!("this guest is a WebAssembly component: build it with `--target wasm32-wasip2`");
    std::process::exit(2);
}
