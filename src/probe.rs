//! `netstrap probe live|ready`: an exec probe / Docker HEALTHCHECK for images without curl.
//! Asks this node's rest plane over loopback (or the local IP when `REST_BIND=true`) and
//! exits 0 on 200, 1 otherwise, within a short timeout. Speaks TLS when the rest plane does.

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

/// Why a probe got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: SocketAddr, cause: std::io::Error },
    #[error("cannot send to {addr}: {cause}")]
    Send { addr: SocketAddr, cause: std::io::Error },
    #[error("no answer from {addr}: {cause}")]
    NoAnswer { addr: SocketAddr, cause: std::io::Error },
    #[error("{addr} did not answer HTTP")]
    NotHttp { addr: SocketAddr },
    #[error("TLS client: {0}")]
    TlsClient(rustls::Error),
    #[error("{addr} did not answer plain HTTP, and over TLS: {over_tls}")]
    NeitherPlainNorTls { addr: SocketAddr, over_tls: Box<ProbeError> },
}

/// Ask `addr` and return the status line's code and the body, or why it failed.
///
/// The rest plane may serve HTTPS only (`NETSTRAP_TLS_PLANES`), and the probe does not read
/// the configuration file that says so: it asks in plain HTTP first and, when the answer is a
/// TLS alert or nothing at all, asks again over TLS.
pub fn probe(addr: SocketAddr, kind: ProbeKind, timeout: Duration) -> Result<(u16, String), ProbeError> {
    let path = match kind {
        ProbeKind::Live => "/livez",
        ProbeKind::Ready => "/readyz?verbose",
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: netstrap-probe\r\nConnection: close\r\n\r\n"
    );
    let reply = exchange(connect(addr, timeout)?, addr, &request)?;
    // 0x15: a TLS alert record (the server speaks TLS and rejected the plain request).
    if reply.is_empty() || reply[0] == 0x15 {
        let tls = probe_tls(addr, &request, timeout)
            .map_err(|e| ProbeError::NeitherPlainNorTls { addr, over_tls: Box::new(e) })?;
        return parse(&tls, addr);
    }
    parse(&reply, addr)
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProbeError> {
    let connect = || {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    };
    connect().map_err(|cause| ProbeError::Connect { addr, cause })
}

/// Send `request` and read the reply (bounded: a probe answer is small). A connection that
/// ends without a TLS close_notify after the reply is not an error.
fn exchange(mut stream: impl Read + Write, addr: SocketAddr, request: &str) -> Result<Vec<u8>, ProbeError> {
    stream.write_all(request.as_bytes()).map_err(|cause| ProbeError::Send { addr, cause })?;
    let mut reply = Vec::new();
    match stream.take(64 * 1024).read_to_end(&mut reply) {
        Ok(_) => Ok(reply),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => Ok(reply),
        // Reset after a TLS alert (or instead of one): what was read still tells the caller
        // what the server is.
        Err(_) if reply.first() == Some(&0x15) => Ok(reply),
        Err(e) if reply.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => Ok(reply),
        Err(cause) => Err(ProbeError::NoAnswer { addr, cause }),
    }
}

/// The same request over TLS. The server's certificate is not verified: the probe dials this
/// node's own listener over loopback (or its local IP), and asks whether it answers, not
/// whether its certificate is trusted (see `crate::tls::loopback_client_config`).
fn probe_tls(addr: SocketAddr, request: &str, timeout: Duration) -> Result<Vec<u8>, ProbeError> {
    let config = crate::tls::loopback_client_config(&[crate::tls::ALPN_HTTP1]);
    let conn = rustls::ClientConnection::new(config, crate::tls::server_name(addr.ip()))
        .map_err(ProbeError::TlsClient)?;
    let stream = rustls::StreamOwned::new(conn, connect(addr, timeout)?);
    exchange(stream, addr, request)
}

fn parse(reply: &[u8], addr: SocketAddr) -> Result<(u16, String), ProbeError> {
    let text = String::from_utf8_lossy(reply);
    let code = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ProbeError::NotHttp { addr })?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}
