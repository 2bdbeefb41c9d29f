//! Free loopback ports for processes the tests start.

use std::{
    net::{Ipv4Addr, TcpListener},
    sync::atomic::{AtomicU32, Ordering},
};

/// Ports handed out lie below Linux's default ephemeral range (32768–60999), so an outgoing
/// connection made meanwhile (to etcd, to an agent under load) can never be given the port
/// before the server binds it.
const FIRST: u32 = 12_000;
const SPAN: u32 = 20_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A TCP port on 127.0.0.1 that was free a moment ago. Each test process walks the range
/// from its own starting point (from its pid), checking that the port binds; another test
/// process may still take it before the caller binds it, so harnesses that start servers
/// retry with fresh ports when that happens (see `Agent::wait_ready`).
pub fn free_port() -> u16 {
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + start.wrapping_add(n.wrapping_mul(13)) % SPAN;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    // The whole range is taken: fall back to one the kernel picks.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of a bound socket")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: std::collections::BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 200);
        assert!(
            ports.iter().all(|p| (12_000..32_000).contains(p)),
            "{ports:?}"
        );
    }
}
