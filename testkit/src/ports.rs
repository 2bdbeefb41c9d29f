//! Free loopback ports for processes the tests start.

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port the
/// kernel chose, and closes the socket. Another process may take it before the caller binds
/// it; harnesses that start servers retry with fresh ports when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of a bound socket")
        .port()
}
