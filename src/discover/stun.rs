//! STUN (RFC 5389) Binding as an external-IP source: ask a STUN server which address and
//! port our UDP traffic arrives from.
//!
//! The codec is pure and total — [`binding_request`] and [`parse_binding_response`] never
//! panic, whatever the bytes — and the client ([`mapped_address`], [`first_mapped`]) adds
//! resolution, RFC 5389 retransmission and a hard deadline. The answer is an *egress*
//! address: the NAT mapping of one UDP flow, not proof that anything reaches us.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::SourceError;

/// The fixed value in every RFC 5389 header; it tells STUN from RFC 3489 and from noise.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The STUN port used when a server is given without one.
pub const DEFAULT_PORT: u16 = 3478;

const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// RFC 5389 §7.2.1: the initial retransmission timeout, doubled after each send.
const INITIAL_RTO: Duration = Duration::from_millis(100);

/// Why a datagram is not a usable Binding response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("{0} bytes is too short for a STUN message (the header alone is 20)")]
    Truncated(usize),
    #[error("not a STUN message: {0}")]
    NotStun(&'static str),
    #[error("unexpected STUN message type {0:#06x}; expected a Binding response (0x0101)")]
    UnexpectedType(u16),
    #[error("transaction id does not match our request")]
    TransactionMismatch,
    #[error("header announces {header} bytes of attributes but {actual} follow")]
    LengthMismatch { header: usize, actual: usize },
    #[error("malformed attribute {attr:#06x}: {reason}")]
    MalformedAttribute { attr: u16, reason: &'static str },
    #[error("FINGERPRINT mismatch (carried {carried:#010x}, computed {computed:#010x}): damaged in transit")]
    FingerprintMismatch { carried: u32, computed: u32 },
    #[error("server answered with error {code}: {reason}")]
    ErrorResponse { code: u16, reason: String },
    #[error("Binding response has no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// A Binding request with transaction id `txid` and no attributes.
pub fn binding_request(txid: [u8; 12]) -> [u8; 20] {
    let mut msg = [0u8; HEADER_LEN];
    msg[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Length stays 0: no attributes.
    msg[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg[8..20].copy_from_slice(&txid);
    msg
}

/// The mapped address in a Binding success response to the request with `txid`.
///
/// XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS (a NAT that rewrites addresses inside
/// payloads corrupts only the latter). FINGERPRINT, when present, must verify;
/// MESSAGE-INTEGRITY cannot be checked without credentials and is skipped. Unknown
/// attributes are ignored: public servers still send RFC 3489 ones (SOURCE-ADDRESS, ...).
pub fn parse_binding_response(buf: &[u8], txid: &[u8; 12]) -> Result<SocketAddr, StunError> {
    if buf.len() < HEADER_LEN {
        return Err(StunError::Truncated(buf.len()));
    }
    let msg_type = be16(buf, 0);
    if msg_type & 0xC000 != 0 {
        return Err(StunError::NotStun("the first two bits are not zero"));
    }
    if be32(buf, 4) != MAGIC_COOKIE {
        return Err(StunError::NotStun("no magic cookie 0x2112A442"));
    }
    if msg_type != BINDING_SUCCESS && msg_type != BINDING_ERROR {
        return Err(StunError::UnexpectedType(msg_type));
    }
    if buf[8..20] != txid[..] {
        return Err(StunError::TransactionMismatch);
    }
    let header_len = usize::from(be16(buf, 2));
    let actual = buf.len() - HEADER_LEN;
    if header_len != actual || header_len % 4 != 0 {
        return Err(StunError::LengthMismatch { header: header_len, actual });
    }

    let mut xor_mapped = None;
    let mut mapped = None;
    let mut error_code = None;
    let mut after_integrity = false;
    let mut off = HEADER_LEN;
    while off < buf.len() {
        if buf.len() - off < 4 {
            return Err(StunError::MalformedAttribute { attr: 0, reason: "truncated attribute header" });
        }
        let attr = be16(buf, off);
        let len = usize::from(be16(buf, off + 2));
        let value = buf.get(off + 4..off + 4 + len).ok_or(StunError::MalformedAttribute {
            attr,
            reason: "value runs past the end of the message",
        })?;
        match attr {
            ATTR_FINGERPRINT => {
                verify_fingerprint(buf, off, value)?;
                // RFC 5389 §15.5: FINGERPRINT is last; anything after it is not covered.
                break;
            }
            // §15.4: only FINGERPRINT counts after MESSAGE-INTEGRITY.
            _ if after_integrity => {}
            ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256 => after_integrity = true,
            ATTR_XOR_MAPPED_ADDRESS if xor_mapped.is_none() => {
                xor_mapped = Some(decode_address(attr, value, Some(txid))?);
            }
            ATTR_MAPPED_ADDRESS if mapped.is_none() => {
                mapped = Some(decode_address(attr, value, None)?);
            }
            ATTR_ERROR_CODE if error_code.is_none() => error_code = Some(decode_error(value)?),
            _ => {}
        }
        // Padding to 4 bytes; the header length is a multiple of 4, so this cannot overshoot.
        off += 4 + len.div_ceil(4) * 4;
    }

    if msg_type == BINDING_ERROR {
        let (code, reason) =
            error_code.unwrap_or((0, "error response without an ERROR-CODE attribute".into()));
        return Err(StunError::ErrorResponse { code, reason });
    }
    xor_mapped.or(mapped).ok_or(StunError::NoMappedAddress)
}

/// FINGERPRINT: CRC-32 of the message up to the attribute, with the header length counting
/// the message as if FINGERPRINT were its last attribute, XOR 0x5354554e.
fn verify_fingerprint(buf: &[u8], off: usize, value: &[u8]) -> Result<(), StunError> {
    let carried: [u8; 4] = value
        .try_into()
        .map_err(|_| StunError::MalformedAttribute { attr: ATTR_FINGERPRINT, reason: "length is not 4" })?;
    let carried = u32::from_be_bytes(carried);
    // off + 8 - 20 fits in u16: off + 8 <= buf.len() <= 20 + u16::MAX.
    let covered_len = u16::try_from(off + 8 - HEADER_LEN).unwrap_or(u16::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[0..2]);
    crc.update(&covered_len.to_be_bytes());
    crc.update(&buf[4..off]);
    let computed = crc.finalize() ^ FINGERPRINT_XOR;
    if carried == computed { Ok(()) } else { Err(StunError::FingerprintMismatch { carried, computed }) }
}

/// (XOR-)MAPPED-ADDRESS: reserved, family (1 = IPv4, 2 = IPv6), port, address. With
/// `xor_txid` the port is XORed with the cookie's top half and the address with
/// cookie || transaction id.
fn decode_address(attr: u16, value: &[u8], xor_txid: Option<&[u8; 12]>) -> Result<SocketAddr, StunError> {
    let malformed = |reason| StunError::MalformedAttribute { attr, reason };
    if value.len() < 4 {
        return Err(malformed("shorter than 4 bytes"));
    }
    let mut mask = [0u8; 16];
    if let Some(txid) = xor_txid {
        mask[0..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..16].copy_from_slice(txid);
    }
    let port = be16(value, 2) ^ u16::from_be_bytes([mask[0], mask[1]]);
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut a = [0u8; 4];
            for (i, b) in a.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        (0x02, 20) => {
            let mut a = [0u8; 16];
            for (i, b) in a.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        (0x01 | 0x02, _) => return Err(malformed("length does not match the address family")),
        _ => return Err(malformed("unknown address family")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// ERROR-CODE: 21 reserved bits, class (hundreds), number, then a UTF-8 reason phrase.
fn decode_error(value: &[u8]) -> Result<(u16, String), StunError> {
    if value.len() < 4 {
        return Err(StunError::MalformedAttribute { attr: ATTR_ERROR_CODE, reason: "shorter than 4 bytes" });
    }
    let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
    let reason = String::from_utf8_lossy(&value[4..]).trim().to_string();
    Ok((code, reason))
}

fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Ask `server` (`host[:port]`, `[v6]:port`, optionally `stun:`-prefixed; port 3478 when
/// absent) for our mapped address. Resolution, sending and every retransmission fit in
/// `timeout`. Datagrams that do not parse or answer another transaction are ignored.
pub async fn mapped_address(server: &str, timeout: Duration) -> Result<SocketAddr, SourceError> {
    query(server, timeout).await.map_err(|e| mapped_error(server, e))
}

/// The mapped address from the first of `servers` that answers, each given `timeout`.
/// When all fail, the error lists every server's failure (for provenance).
pub async fn first_mapped(servers: &[String], timeout: Duration) -> Result<MappedAddress, SourceError> {
    if servers.is_empty() {
        return Err(SourceError::NotConfigured(
            "no STUN servers configured (set NETSTRAP_STUN_SERVERS)".into(),
        ));
    }
    let mut failures = Vec::with_capacity(servers.len());
    for server in servers {
        match query(server, timeout).await {
            Ok(address) => return Ok(MappedAddress { server: server.clone(), address }),
            Err(e) if servers.len() == 1 => return Err(mapped_error(server, e)),
            Err(e) => failures.push(format!("{server}: {e}")),
        }
    }
    Err(SourceError::Failed(format!("no STUN server answered: {}", failures.join("; "))))
}

/// Which server answered [`first_mapped`], and the address it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedAddress {
    pub server: String,
    pub address: SocketAddr,
}

fn mapped_error(server: &str, e: SourceError) -> SourceError {
    match e {
        SourceError::Failed(m) => SourceError::Failed(format!("STUN server {server}: {m}")),
        other => other,
    }
}

/// One Binding transaction; error texts do not name the server (callers add it).
async fn query(server: &str, timeout: Duration) -> Result<SocketAddr, SourceError> {
    let deadline = Instant::now() + timeout;
    let target = tokio::time::timeout_at(deadline, resolve(server))
        .await
        .map_err(|_| SourceError::Timeout(timeout))??;
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let io = |what: &str, e: std::io::Error| SourceError::Failed(format!("{what} ({target}): {e}"));
    let socket = UdpSocket::bind(local).await.map_err(|e| io("cannot open a UDP socket", e))?;
    // Connected: the kernel drops datagrams from anyone else, and reports ICMP unreachable.
    socket.connect(target).await.map_err(|e| io("cannot reach", e))?;

    let txid: [u8; 12] = rand::random();
    let request = binding_request(txid);
    let mut buf = [0u8; 1500];
    let mut rto = INITIAL_RTO;
    let mut ignored: Option<StunError> = None;
    loop {
        socket.send(&request).await.map_err(|e| io("cannot send", e))?;
        let retransmit_at = (Instant::now() + rto).min(deadline);
        loop {
            match tokio::time::timeout_at(retransmit_at, socket.recv(&mut buf)).await {
                Err(_) if retransmit_at >= deadline => {
                    return Err(match ignored {
                        Some(e) => SourceError::Failed(format!(
                            "no valid answer within {timeout:?} from {target}; ignored a reply: {e}"
                        )),
                        None => SourceError::Timeout(timeout),
                    });
                }
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(SourceError::Failed(format!(
                        "{target} refused (ICMP port unreachable): no STUN server listening there"
                    )));
                }
                Ok(Err(e)) => return Err(io("receive failed", e)),
                Ok(Ok(n)) => match parse_binding_response(&buf[..n], &txid) {
                    Ok(addr) => return Ok(addr),
                    // Our transaction, answered with an error: retrying will not help.
                    Err(e @ StunError::ErrorResponse { .. }) => {
                        return Err(SourceError::Failed(format!("{target}: {e}")));
                    }
                    Err(e) => ignored = Some(e),
                },
            }
        }
        rto = rto.saturating_mul(2);
    }
}

/// `host[:port]`, `[v6][:port]`, a bare IP, optionally prefixed `stun:` (RFC 7064).
async fn resolve(server: &str) -> Result<SocketAddr, SourceError> {
    let spec = server.trim();
    let spec = spec.strip_prefix("stun:").unwrap_or(spec);
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = spec.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let (host, port) = match spec.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| SourceError::Failed(format!("invalid port {port:?}; expected host[:port]")))?;
            (host, port)
        }
        None => (spec, DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err(SourceError::Failed("empty host; expected host[:port]".into()));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| SourceError::Failed(format!("cannot resolve {host}: {e}")))?;
    addrs.next().ok_or_else(|| SourceError::Failed(format!("{host} resolves to no address")))
}
