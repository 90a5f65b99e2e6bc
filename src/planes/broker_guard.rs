//! The embedded broker's front door: what netstrap checks in a client's MQTT stream before
//! rumqttd spends memory on it.
//!
//! Every client connection of the embedded broker passes through netstrap's own splice (see
//! `broker`), so the limits are enforced there, on packets rumqttd has not seen:
//!
//! - **CONNECT**: read in full before rumqttd is dialled. MQTT 3.1.1 goes to rumqttd's 3.1.1
//!   server, MQTT 5 to its MQTT 5 server (both on one router, so they share topics); MQTT 3.1
//!   (`MQIsdp`, level 3) and other levels get the CONNACK "unacceptable protocol version" (1)
//!   — rumqttd used to close such a connection without a word.
//! - **SUBSCRIBE**: a filter longer than [`MAX_FILTER_LEN`], more than
//!   `subscriptions_per_client` filters on one connection, or more distinct filters than
//!   `filters` in the whole broker is refused with a SUBACK whose every return code is 0x80
//!   (failure), written by netstrap into the client's stream at a packet boundary; rumqttd
//!   never sees the packet. rumqttd keeps a filter's state until the process ends (~7 KiB
//!   empty; its log, up to the backlog, is given back when nobody reads it, patch 14), and this
//!   front door does not know which filters rumqttd still reads, so `filters` counts every
//!   distinct filter forwarded since start, not only the live ones: the bound holds against a
//!   client that subscribes, unsubscribes and subscribes to new filters.
//! - Each refusal counts in `netstrap_broker_refused_total{reason}` and is logged at most once
//!   per 10 s with the number not logged.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::warn;

use crate::logging::Throttle;
use crate::metrics::RefusedLabel;

/// Longest topic filter accepted, in bytes (MQTT allows 65 535; EdgeLake's are a few dozen).
pub const MAX_FILTER_LEN: usize = 1024;
/// Largest CONNECT, SUBSCRIBE or UNSUBSCRIBE packet inspected; a bigger one closes the
/// connection (a SUBSCRIBE this big is a flood, not a client).
pub const MAX_INSPECTED: usize = 64 * 1024;

/// The front door's limits (configured in [`crate::config`]).
pub use crate::config::BrokerLimits as Limits;

/// State shared by every connection of one embedded broker.
pub struct Guard {
    limits: Limits,
    /// Every filter forwarded to rumqttd since start.
    filters: Mutex<HashSet<Box<str>>>,
    refused: Family<RefusedLabel, Counter>,
}

static REFUSED_LOG: Throttle = Throttle::new(Duration::from_secs(10));

impl Guard {
    pub fn new(limits: Limits, refused: Family<RefusedLabel, Counter>) -> Arc<Guard> {
        Arc::new(Guard { limits, filters: Mutex::new(HashSet::new()), refused })
    }

    fn refuse(&self, reason: &'static str, detail: std::fmt::Arguments<'_>) {
        self.refused.get_or_create(&RefusedLabel { reason }).inc();
        if let Some(suppressed) = REFUSED_LOG.allow() {
            warn!(reason, suppressed, "broker: refused {detail}");
        }
    }

    /// Distinct filters forwarded since start.
    pub fn filters(&self) -> usize {
        self.filters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What to do with a client's CONNECT.
#[derive(Debug, PartialEq, Eq)]
pub enum Connect {
    /// MQTT 3.1.1 (`false`) or 5 (`true`): pass it on to rumqttd's server for that version.
    Forward { v5: bool },
    /// Answer with this CONNACK and close.
    Refuse(Vec<u8>),
}

/// Decide on a complete CONNECT packet (fixed header included).
pub fn connect(guard: &Guard, packet: &[u8]) -> Connect {
    let body = match split_header(packet) {
        Some((0x10, body)) => body,
        // Not a CONNECT: rumqttd closes such a connection.
        _ => return Connect::Forward { v5: false },
    };
    let mut r = Reader(body);
    let (Some(name), Some(level)) = (r.string(), r.u8()) else { return Connect::Forward { v5: false } };
    match (name, level) {
        (b"MQTT", 4) => Connect::Forward { v5: false },
        (b"MQTT", 5) => Connect::Forward { v5: true },
        _ => {
            guard.refuse(
                "protocol",
                format_args!("a CONNECT for protocol level {level} (this broker speaks MQTT 3.1.1 and 5)"),
            );
            // MQTT 3.1 / 3.1.1 CONNACK: return code 1, unacceptable protocol version.
            Connect::Refuse(vec![0x20, 0x02, 0x00, 0x01])
        }
    }
}

/// One client connection's inspection of the packets it sends after CONNECT.
pub struct Inspector {
    guard: Arc<Guard>,
    /// The connection speaks MQTT 5 (properties in (UN)SUBSCRIBE, reason codes in SUBACK).
    v5: bool,
    state: State,
    /// The filters this connection holds.
    filters: HashSet<Box<str>>,
    /// The client sent DISCONNECT.
    pub disconnected: bool,
}

enum State {
    /// Reading a fixed header: the bytes so far.
    Header { bytes: [u8; 5], len: usize },
    /// Passing on the body of a packet not inspected.
    Pass(usize),
    /// Collecting a SUBSCRIBE or UNSUBSCRIBE (header and body) to decide on it.
    Collect { packet: Vec<u8>, total: usize },
    /// The stream is not MQTT (bad length, or too big to inspect): close.
    Broken,
}

/// What a chunk of client bytes turned into.
#[derive(Default)]
pub struct Out {
    /// Bytes for rumqttd.
    pub forward: Vec<u8>,
    /// Packets netstrap answers the client with itself.
    pub replies: Vec<Vec<u8>>,
    /// PUBLISH packets that started in the chunk.
    pub publishes: u64,
    /// Close the connection (after `forward` and `replies`).
    pub close: bool,
}

impl Inspector {
    pub fn new(guard: Arc<Guard>, v5: bool) -> Inspector {
        Inspector {
            guard,
            v5,
            state: State::Header { bytes: [0; 5], len: 0 },
            filters: HashSet::new(),
            disconnected: false,
        }
    }

    /// Feed the next bytes from the client.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Out) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Broken => {
                    out.close = true;
                    return;
                }
                State::Pass(remaining) => {
                    let take = (*remaining).min(bytes.len());
                    out.forward.extend_from_slice(&bytes[..take]);
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = State::Header { bytes: [0; 5], len: 0 };
                    }
                    bytes = &bytes[take..];
                }
                State::Collect { packet, total } => {
                    let take = (*total - packet.len()).min(bytes.len());
                    packet.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if packet.len() == *total {
                        let packet = std::mem::take(packet);
                        self.state = State::Header { bytes: [0; 5], len: 0 };
                        self.decide(packet, out);
                    }
                }
                State::Header { bytes: header, len } => {
                    header[*len] = bytes[0];
                    *len += 1;
                    bytes = &bytes[1..];
                    let header = &header[..*len];
                    let Some(remaining) = remaining_length(&header[1..]) else {
                        if header.len() == 5 {
                            self.state = State::Broken;
                        }
                        continue;
                    };
                    let kind = header[0] >> 4;
                    match kind {
                        3 => out.publishes += 1,
                        14 => self.disconnected = true,
                        _ => {}
                    }
                    if kind == 8 || kind == 10 {
                        if remaining > MAX_INSPECTED {
                            self.guard.refuse(
                                "packet_size",
                                format_args!("a {remaining}-byte (UN)SUBSCRIBE (at most {MAX_INSPECTED})"),
                            );
                            self.state = State::Broken;
                            continue;
                        }
                        let mut packet = Vec::with_capacity(header.len() + remaining);
                        packet.extend_from_slice(header);
                        let total = header.len() + remaining;
                        if remaining == 0 {
                            self.state = State::Header { bytes: [0; 5], len: 0 };
                            self.decide(packet, out);
                        } else {
                            self.state = State::Collect { packet, total };
                        }
                    } else {
                        out.forward.extend_from_slice(header);
                        self.state = if remaining == 0 {
                            State::Header { bytes: [0; 5], len: 0 }
                        } else {
                            State::Pass(remaining)
                        };
                    }
                }
            }
        }
    }

    /// A complete SUBSCRIBE or UNSUBSCRIBE: forward it, or answer it.
    fn decide(&mut self, packet: Vec<u8>, out: &mut Out) {
        let Some((first, body)) = split_header(&packet) else { return out.forward.extend(packet) };
        let mut r = Reader(body);
        let Some(pkid) = r.u16() else { return out.forward.extend(packet) };
        if self.v5 && r.properties().is_none() {
            return out.forward.extend(packet);
        }
        let subscribe = first >> 4 == 8;
        let mut filters = Vec::new();
        while !r.0.is_empty() {
            let Some(filter) = r.string() else { return out.forward.extend(packet) };
            if subscribe && r.u8().is_none() {
                return out.forward.extend(packet);
            }
            filters.push(filter);
        }
        // Not valid UTF-8: rumqttd closes the connection; let it.
        let Ok(filters) = filters.into_iter().map(std::str::from_utf8).collect::<Result<Vec<_>, _>>() else {
            return out.forward.extend(packet);
        };
        if !subscribe {
            for f in filters {
                self.filters.remove(f);
            }
            return out.forward.extend(packet);
        }
        if let Some(long) = filters.iter().find(|f| f.len() > MAX_FILTER_LEN) {
            self.guard.refuse(
                "filter_length",
                format_args!("a {}-byte topic filter (at most {MAX_FILTER_LEN})", long.len()),
            );
            return out.replies.push(suback_failure(pkid, filters.len(), self.v5));
        }
        let new: HashSet<&str> = filters.iter().copied().filter(|f| !self.filters.contains(*f)).collect();
        let limits = self.guard.limits;
        if self.filters.len() + new.len() > limits.subscriptions_per_client {
            self.guard.refuse(
                "subscriptions_per_client",
                format_args!(
                    "a SUBSCRIBE to {} more filters on a connection holding {} (at most {} per connection: \
                     NETSTRAP_BROKER_MAX_SUBSCRIPTIONS)",
                    new.len(),
                    self.filters.len(),
                    limits.subscriptions_per_client
                ),
            );
            return out.replies.push(suback_failure(pkid, filters.len(), self.v5));
        }
        {
            let mut all = self.guard.filters.lock().unwrap_or_else(|p| p.into_inner());
            let unseen = new.iter().filter(|f| !all.contains(**f)).count();
            if all.len() + unseen > limits.filters {
                drop(all);
                self.guard.refuse(
                    "filters",
                    format_args!(
                        "a SUBSCRIBE to {unseen} new filters: the broker has taken on its {} \
                         (NETSTRAP_BROKER_MAX_FILTERS)",
                        limits.filters
                    ),
                );
                return out.replies.push(suback_failure(pkid, filters.len(), self.v5));
            }
            for f in &new {
                if !all.contains(*f) {
                    all.insert((*f).into());
                }
            }
        }
        self.filters.extend(new.into_iter().map(Box::from));
        out.forward.extend(packet);
    }
}

/// A SUBACK refusing `n` filters: return code 0x80 (MQTT 3.1.1), or reason 0x97 "Quota
/// exceeded" after an empty property list (MQTT 5).
fn suback_failure(pkid: u16, n: usize, v5: bool) -> Vec<u8> {
    let mut packet = vec![0x90];
    encode_length(2 + usize::from(v5) + n, &mut packet);
    packet.extend_from_slice(&pkid.to_be_bytes());
    if v5 {
        packet.push(0);
    }
    packet.extend(std::iter::repeat_n(if v5 { 0x97 } else { 0x80 }, n));
    packet
}

/// MQTT's variable-length "remaining length".
pub fn encode_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
}

/// The remaining length encoded in `bytes` (the fixed header after its first byte), when
/// complete.
fn remaining_length(bytes: &[u8]) -> Option<usize> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A complete packet's first byte and body.
fn split_header(packet: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = packet.split_first()?;
    let len = remaining_length(rest)?;
    let header = rest.iter().position(|b| b & 0x80 == 0)? + 1;
    let body = rest.get(header..)?;
    (body.len() == len).then_some((first, body))
}

/// Reads MQTT fields from a packet body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        let (v, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_be_bytes(*v))
    }
    /// Skip an MQTT 5 property list (a variable-length size, then that many bytes).
    fn properties(&mut self) -> Option<()> {
        let header = self.0.iter().position(|b| b & 0x80 == 0).filter(|&i| i < 4)? + 1;
        let len = remaining_length(&self.0[..header])?;
        self.0 = self.0.get(header + len..)?;
        Some(())
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?);
        let (s, rest) = (self.0.get(..len)?, &self.0[len..]);
        self.0 = rest;
        Some(s)
    }
}

/// Reads one complete packet (fixed header included) from `r`, at most `max` bytes of body:
/// the client's CONNECT, before rumqttd is dialled.
pub async fn read_packet(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    max: usize,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut packet = vec![r.read_u8().await?];
    loop {
        let b = r.read_u8().await?;
        packet.push(b);
        if let Some(len) = remaining_length(&packet[1..]) {
            if len > max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a {len}-byte first packet (at most {max})"),
                ));
            }
            let start = packet.len();
            packet.resize(start + len, 0);
            r.read_exact(&mut packet[start..]).await?;
            return Ok(packet);
        }
        if packet.len() == 5 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not MQTT: bad packet length"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_client: usize, total: usize) -> Arc<Guard> {
        Guard::new(Limits { subscriptions_per_client: per_client, filters: total }, Family::default())
    }

    fn subscribe(pkid: u16, filters: &[&str]) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        for f in filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(0);
        }
        let mut p = vec![0x82];
        encode_length(body.len(), &mut p);
        p.extend(body);
        p
    }

    #[test]
    fn subscribes_pass_until_the_per_client_limit_then_suback_failure() {
        let g = guard(2, 100);
        let mut i = Inspector::new(g.clone(), false);
        let mut out = Out::default();
        let ok = subscribe(1, &["a", "b"]);
        // Byte by byte: boundaries anywhere.
        for b in &ok {
            i.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out.forward, ok);
        let mut out = Out::default();
        i.feed(&subscribe(7, &["a", "c"]), &mut out);
        assert!(out.forward.is_empty());
        assert_eq!(out.replies, vec![vec![0x90, 4, 0, 7, 0x80, 0x80]]);
        assert_eq!(g.filters(), 2);
    }

    #[test]
    fn mqtt5_subscribes_are_read_past_their_properties_and_refused_with_quota_exceeded() {
        let g = guard(1, 100);
        let mut i = Inspector::new(g, true);
        let mut out = Out::default();
        // pkid 9, properties: subscription identifier 5 (0x0b 0x05), filters "a" and "b".
        let p = [0x82, 12, 0, 9, 2, 0x0b, 5, 0, 1, b'a', 0, 0, 1, b'b', 0];
        let p = {
            let mut v = p.to_vec();
            v[1] = (v.len() - 2) as u8;
            v
        };
        i.feed(&p, &mut out);
        assert!(out.forward.is_empty());
        assert_eq!(out.replies, vec![vec![0x90, 5, 0, 9, 0, 0x97, 0x97]]);
    }

    #[test]
    fn the_total_counts_filters_since_start_across_connections() {
        let g = guard(10, 3);
        let mut a = Inspector::new(g.clone(), false);
        let mut out = Out::default();
        a.feed(&subscribe(1, &["x", "y", "z"]), &mut out);
        // Unsubscribing does not give back what rumqttd keeps.
        a.feed(&[0xa2, 5, 0, 2, 0, 1, b'x'], &mut out);
        let mut b = Inspector::new(g.clone(), false);
        let mut out = Out::default();
        b.feed(&subscribe(3, &["y"]), &mut out);
        assert!(out.replies.is_empty(), "a filter already taken on costs nothing");
        b.feed(&subscribe(4, &["w"]), &mut out);
        assert_eq!(out.replies.len(), 1);
    }

    #[test]
    fn publishes_pass_through_untouched_and_are_counted() {
        let g = guard(1, 1);
        let mut i = Inspector::new(g, false);
        let mut out = Out::default();
        let mut stream = vec![0x30, 0x05, 0x00, 0x01, b't', b'h', b'i', 0xc0, 0x00];
        stream.extend([0x32, 0xc8, 0x01]);
        stream.extend(std::iter::repeat_n(0xe0u8, 200));
        stream.extend([0xe0, 0x00]);
        for chunk in stream.chunks(3) {
            i.feed(chunk, &mut out);
        }
        assert_eq!(out.forward, stream);
        assert_eq!(out.publishes, 2);
        assert!(i.disconnected);
    }

    #[test]
    fn protocol_versions_get_their_connack() {
        let g = guard(1, 1);
        let v = |name: &[u8], level: u8| {
            let mut body = (name.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(name);
            body.extend([level, 0x02, 0, 0, 0, 0]);
            let mut p = vec![0x10, body.len() as u8];
            p.extend(body);
            connect(&g, &p)
        };
        assert_eq!(v(b"MQTT", 4), Connect::Forward { v5: false });
        assert_eq!(v(b"MQTT", 5), Connect::Forward { v5: true });
        assert_eq!(v(b"MQIsdp", 3), Connect::Refuse(vec![0x20, 2, 0, 1]));
    }
}
