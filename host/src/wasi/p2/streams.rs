//! A connection's `wasi:io` streams (WASI 0.2) over the version-independent
//! halves in crate::wasi::sockets::stream.

use crate::limits::connection::Policed;
use crate::wasi::sockets::stream::{Batched, Receiver, Sender, StreamFailure};
use crate::wasi::sockets::tcp::{Halves, TcpSocket};
use crate::wasi::view::GuestWasi;
use bytes::Bytes;
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

/// Pushes the input and output streams of `stream` as children of `socket`,
/// the input one known to the fast poll, and tells the socket of them (its
/// `shutdown` closes them).
pub fn push_streams(
    state: &mut GuestWasi,
    socket: &Resource<TcpSocket>,
    stream: &Arc<TcpStream>,
    policed: Arc<Policed>,
) -> wasmtime::Result<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
    let read_shut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let input: DynInputStream = Box::new(Reader(
        Receiver::new(
            stream.clone(),
            policed.clone(),
            state.fast.optimistic.clone(),
        )
        .closed_by(read_shut.clone()),
    ));
    let sender = Batched::new(Sender::new(stream.clone(), policed, state.tenant.clone()));
    let halves = Halves {
        read_shut,
        writer: Arc::downgrade(&sender),
    };
    let output: DynOutputStream = Box::new(Writer {
        sender,
        stream: stream.clone(),
    });
    let table = state.table();
    table.get_mut(socket)?.attach(halves);
    let input = table.push_child(input, socket)?;
    // Both or neither: a stream left behind would keep the connection
    // open and make the socket's drop fail.
    let output = match table.push_child(output, socket) {
        Ok(output) => output,
        Err(e) => {
            table.delete(input)?;
            return Err(e.into());
        }
    };
    state.fast.add_stream(input.rep(), stream.clone());
    Ok((input, output))
}

/// The read half of a connection, as a `wasi:io` input stream.
struct Reader(Receiver);

/// The write half of a connection, as a `wasi:io` output stream: shared
/// with its socket, whose `shutdown(send)` sends what it holds.
struct Writer {
    sender: Arc<Batched>,
    /// The connection, to wait on without holding the write half.
    stream: Arc<TcpStream>,
}

/// The `wasi:io` error for a stream failure.
fn stream_error(failure: StreamFailure) -> StreamError {
    match failure {
        StreamFailure::Closed => StreamError::Closed,
        StreamFailure::Failed(e) => StreamError::LastOperationFailed(e.into()),
        StreamFailure::Trap(why) => StreamError::Trap(wasmtime::format_err!("{why}")),
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Reader {
    async fn ready(&mut self) {
        self.0.ready().await;
    }
}

impl InputStream for Reader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.0.read(size).map_err(stream_error)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Writer {
    /// Ready once what was written is sent (or sending failed).
    async fn ready(&mut self) {
        while self.sender.lock().send_waiting() {
            if self.stream.writable().await.is_err() {
                return;
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sender.lock().write(bytes).map_err(stream_error)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.sender.lock().flush().map_err(stream_error)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.sender.lock().check_write().map_err(stream_error)
    }

    async fn cancel(&mut self) {
        self.sender.lock().linger();
    }
}
