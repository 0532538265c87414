//! The guest's loop on WASI 0.3: one task per listener takes clients from
//! its `stream<tcp-socket>`, and one task per connection reads from the
//! connection's `receive` stream, hands what arrives to the [`Protocol`]
//! and writes the answer into its `send` stream.
//!
//! The component model does the waiting: a task that awaits a read or a
//! write is parked in the runtime's waitable set, which the runtime keeps
//! from one wait to the next, so a turn costs time for the connections
//! that have something to do, not for every one connected (no list of
//! every member is handed over, as `wasi:io/poll` needs). Reads land
//! straight in the task's buffer.
//!
//! Memory is bounded as in the 0.2 loop, more simply: a connection does not
//! read again until its answer has been taken by the host, so at most one
//! read and one answer are held per connection.

use crate::bindings::wasi::sockets::types::TcpSocket;
use crate::bindings::wit_stream;
use crate::net::{self, Listener};
use crate::{Protocol, log};
use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use wit_bindgen::StreamResult;

/// The largest read handed to the protocol, as in the seed server.
pub const READ_SIZE: u64 = 2048;

/// Room for clients in one read of a listener's stream (a host may hand
/// over fewer: this one gives one per read).
const ACCEPT_BATCH: usize = 64;

/// Serves clients on every granted address with `protocol`, forever;
/// returns only if it cannot start or a listener fails, saying why.
pub async fn run<P: Protocol>(protocol: P) -> Result<Infallible, String> {
    let protocol = Rc::new(RefCell::new(protocol));
    let mut listeners = Vec::new();
    for addr in net::listen_addrs()? {
        let listener = net::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e:?}"))?;
        log!("listening on {addr}");
        listeners.push((addr, listener));
    }
    // Log lines gathered while tasks run go out together, every few ms.
    wit_bindgen::spawn_local(crate::log::flush_periodically());
    let Some(first) = listeners.pop() else {
        return Err("no address to listen on".into());
    };
    for (addr, listener) in listeners {
        let protocol = protocol.clone();
        wit_bindgen::spawn_local(async move {
            let reason = accept_loop(addr, listener, protocol).await;
            log!("error: {reason}");
        });
    }
    let (addr, listener) = first;
    Err(accept_loop(addr, listener, protocol).await)
}

/// Takes the clients of one listener, each into a task of its own, until
/// the listener's stream ends; returns why it ended.
async fn accept_loop<P: Protocol>(
    addr: std::net::SocketAddr,
    mut listener: Listener,
    protocol: Rc<RefCell<P>>,
) -> String {
    let mut batch = Vec::with_capacity(ACCEPT_BATCH);
    loop {
        let (result, clients) = listener.clients.read(batch).await;
        batch = clients;
        if let StreamResult::Dropped = result {
            return format!("the host closed the listener on {addr}");
        }
        for socket in batch.drain(..) {
            wit_bindgen::spawn_local(serve(socket, protocol.clone()));
        }
    }
}

/// Serves one client until it closes, stops reading, or fails.
async fn serve<P: Protocol>(socket: TcpSocket, protocol: Rc<RefCell<P>>) {
    let peer = match socket.get_remote_address() {
        Ok(peer) => net::from_wasi(peer),
        // The client is already gone; nothing to serve.
        Err(_) => return,
    };
    log!("connected: {peer}");
    let session = protocol.borrow_mut().connect(peer);
    let mut session = Some(session);
    let (mut input, received) = socket.receive();
    let (mut output, to_send) = wit_stream::new::<u8>();
    let sent = socket.send(to_send);
    let mut data = Vec::with_capacity(READ_SIZE as usize);
    let mut reply = Vec::new();
    loop {
        let (result, read) = input.read(data).await;
        data = read;
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped => break,
            StreamResult::Cancelled => continue,
        }
        if data.is_empty() {
            continue;
        }
        log!(
            "received {} bytes from {peer}: {}",
            data.len(),
            crate::log::escape(&data)
        );
        if let Some(session) = session.as_mut() {
            protocol.borrow_mut().receive(session, &data, &mut reply);
        }
        data.clear();
        if reply.is_empty() {
            continue;
        }
        // Not reading again until the answer is taken keeps one answer per
        // connection in memory, however slowly the client reads.
        let rest = output.write_all(std::mem::take(&mut reply)).await;
        if !rest.is_empty() {
            log!("{peer} stopped reading");
            break;
        }
        reply = rest;
    }
    drop(input);
    if let Err(e) = received.await {
        log!("read from {peer} failed: {e:?}");
    }
    // The end of the send stream: the host sends what is left, then the
    // connection's end.
    drop(output);
    if let Err(e) = sent.await {
        log!("write to {peer} failed: {e:?}");
    }
    log!("disconnected: {peer}");
    if let Some(session) = session.take() {
        protocol.borrow_mut().disconnect(session);
    }
}
