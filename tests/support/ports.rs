//! Ports for a netstrap process to bind, chosen by the test before the process starts. Only for
//! tests of netstrap as a process (its signals, exit codes, log, memory, the binary itself):
//! netstrap takes no listeners from its parent, so the port is chosen free here and bound by
//! the process a moment later. Everything else runs in-process (`support::harness`), on
//! listeners bound before and handed in, with no such gap.

use std::net::TcpListener;

/// A port free on every address now, and below the kernel's ephemeral range
/// (`ip_local_port_range`, from 32768 by default): a port the kernel hands out (`bind(0)`) is
/// also what it gives the next outgoing connection, and tests open thousands of those, so one
/// could take it between this check and netstrap's bind (netstrap then exits "address in use").
/// Random, so that tests running at once rarely pick the same one.
pub fn free_port() -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let top = ephemeral.max(20_000);
    for _ in 0..1_000 {
        let port = rand::random_range(10_000..top);
        if TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000..{top}");
}
