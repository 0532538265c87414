//! A guest that listens on its granted address and then panics at once: a
//! broken release that a live swap must catch after it has listened.

fn main() {
    let addr = std::env::var("LISTEN_ADDR").expect("the host sets LISTEN_ADDR");
    let _listener = std::net::TcpListener::bind(&addr).expect("binding the granted address");
    panic!("broken just after listening");
}
