//! Loopback ports for the servers the tests start (registry, Git servers, the operator's
//! listeners).

#![allow(dead_code)] // each suite uses part of this module

use std::time::{Duration, Instant};

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Waits until something listens on `port`; after `limit`, fails saying `what` did not start,
/// with its `log`.
pub fn wait_for_port(port: u16, limit: Duration, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
