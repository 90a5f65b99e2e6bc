//! `netstrap probe live|ready`: an exec probe / Docker HEALTHCHECK for images without curl.
//! Asks this node's rest plane over loopback (or the local IP when `REST_BIND=true`) and
//! exits 0 on 200, 1 otherwise, within a short timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Which endpoint to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeKind {
    Live,
    Ready,
}

/// The address of the local rest plane: loopback when it listens on all interfaces.
pub fn target(bind_ip: Option<IpAddr>, port: u16) -> SocketAddr {
    let ip = match bind_ip {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => Ipv4Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, port)
}

/// Ask `addr` and return the status line's code and the body, or why it failed.
pub fn probe(addr: SocketAddr, kind: ProbeKind, timeout: Duration) -> Result<(u16, String), String> {
    let path = match kind {
        ProbeKind::Live => "/livez",
        ProbeKind::Ready => "/readyz?verbose",
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: netstrap-probe\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut reply = Vec::new();
    // Bounded: a probe answer is small.
    stream.take(64 * 1024).read_to_end(&mut reply).map_err(|e| format!("no answer from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let code = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}
