//! Loopback ports for the servers that tests and the demo start as
//! processes (shards, etcd members).
//!
//! A port is picked, released, and bound again by the server a moment
//! later. Picked from the kernel's ephemeral range (what a bind to port 0
//! returns), it could be taken in that moment by any listener bound to
//! port 0 in the same process — a router under test — and the server's
//! readiness probe would then talk to that listener instead. So ports come
//! from below the ephemeral range, walked by one process-wide counter
//! (started at an offset from the pid, so concurrent test processes start
//! apart), each checked free by binding it.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out.
const FIRST: u32 = 10_000;

/// `n` distinct loopback ports, free when checked, never from the
/// ephemeral range, never handed out twice by this process (until the
/// range wraps).
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let end = ephemeral_start();
    let span = end - FIRST;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919) % span));
    let mut out = Vec::with_capacity(n);
    for _ in 0..span {
        if out.len() == n {
            return Ok(out);
        }
        let port = (FIRST + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free loopback port below the ephemeral range",
    ))
}

/// One port, as [`free_ports`].
pub fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Where the kernel's ephemeral range starts (Linux's default when it
/// cannot be read), kept above [`FIRST`].
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768u32)
        .max(FIRST + 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports = free_ports(50).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 50);
        assert!(ports
            .iter()
            .all(|&p| u32::from(p) >= FIRST && u32::from(p) < ephemeral_start()));
    }
}
