//! Address helpers every stage uses (a leaf: depends on nothing in netstrap).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `host:port`, bracketing IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Where to reach a listener bound to `ip` from this host: loopback for a wildcard address.
pub fn local_target(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        IpAddr::V6(v6) if v6.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        _ => SocketAddr::new(ip, port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed_and_wildcards_dialed_on_loopback() {
        assert_eq!(host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(local_target("0.0.0.0".parse().unwrap(), 5), "127.0.0.1:5".parse().unwrap());
        assert_eq!(local_target("::".parse().unwrap(), 5), "[::1]:5".parse().unwrap());
        assert_eq!(local_target("10.1.1.1".parse().unwrap(), 5), "10.1.1.1:5".parse().unwrap());
    }
}
