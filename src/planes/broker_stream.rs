//! The embedded broker's client stream as rumqttd sees it: the client's own socket (or TLS
//! stream), with netstrap's front door (`broker_guard`) between it and rumqttd's reads and
//! writes, on rumqttd's own task (rumqttd patch 11, `Handoff`). No second socket, no task or
//! buffer of netstrap's per connection: an idle client costs what rumqttd's link costs plus
//! this struct.
//!
//! - Reads: the client's bytes go through the [`Inspector`]; what it forwards is what rumqttd
//!   reads. The CONNECT the front door already read comes first.
//! - Writes: rumqttd's bytes go to the client as they are; netstrap's own answers (a SUBACK
//!   refusing a SUBSCRIBE) go in between rumqttd's packets, at the first packet boundary.
//! - After the client's DISCONNECT packet its EOF is held back for up to [`LINGER`]: rumqttd
//!   ends the link because its router dropped it, not because the socket closed; on a socket
//!   close it sends the router a second Disconnect for the connection id, which by then may
//!   belong to the next client (the router reuses ids) and drops that client instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::broker_guard::{Inspector, Out};

/// How long the server side may take to finish after the client stopped sending: rumqttd to
/// end a link after the client's DISCONNECT and EOF, or, relayed, the node's broker to answer.
pub const LINGER: Duration = Duration::from_secs(5);

/// The counters a connection adds to as bytes pass.
#[derive(Clone)]
pub struct Counters {
    pub received: Counter,
    pub sent: Counter,
    pub publishes: Counter,
}

/// A client connection of the embedded broker, inspected.
pub struct Guarded<S> {
    inner: S,
    inspector: Inspector,
    /// Client bytes inspected and due to rumqttd (`taken` of them delivered).
    incoming: Vec<u8>,
    taken: usize,
    /// netstrap's answers waiting for a packet boundary in rumqttd's stream (`written` of
    /// them written).
    replies: Vec<u8>,
    written: usize,
    framer: Framer,
    /// The client sent what the broker refuses: rumqttd's next read fails.
    refused: bool,
    /// Running after the client's DISCONNECT and EOF.
    linger: Option<Pin<Box<Sleep>>>,
    counters: Counters,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Guarded<S> {
    /// `connect` is the client's CONNECT packet, already read from `inner`.
    pub fn new(inner: S, connect: Vec<u8>, inspector: Inspector, counters: Counters) -> Guarded<S> {
        Guarded {
            inner,
            inspector,
            incoming: connect,
            taken: 0,
            replies: Vec::new(),
            written: 0,
            framer: Framer::default(),
            refused: false,
            linger: None,
            counters,
        }
    }

    /// Write the waiting answers, when rumqttd's stream is between packets (or one of them is
    /// half written already).
    fn poll_replies(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.written == 0 && !self.framer.at_boundary() {
            return Poll::Ready(Ok(()));
        }
        while self.written < self.replies.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.replies[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.counters.sent.inc_by(n as u64);
            self.written += n;
        }
        self.replies = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(e)) = this.poll_replies(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if this.taken < this.incoming.len() {
                let n = buf.remaining().min(this.incoming.len() - this.taken);
                buf.put_slice(&this.incoming[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.incoming.len() {
                    this.incoming = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.refused {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "client sent what the broker refuses",
                )));
            }
            if let Some(linger) = &mut this.linger {
                ready!(linger.as_mut().poll(cx));
                return Poll::Ready(Ok(()));
            }
            // The client's bytes land in rumqttd's buffer, are inspected there, and are replaced
            // by what the inspector forwards (usually the same bytes).
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let got = &buf.filled()[start..];
            if got.is_empty() {
                if this.inspector.disconnected {
                    this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            this.counters.received.inc_by(got.len() as u64);
            let mut out = Out::default();
            this.inspector.feed(got, &mut out);
            buf.set_filled(start);
            this.counters.publishes.inc_by(out.publishes);
            this.incoming = out.forward;
            this.refused = out.close;
            if !out.replies.is_empty() {
                this.replies.extend(out.replies.concat());
                if let Poll::Ready(Err(e)) = this.poll_replies(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replies(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.framer.feed(&data[..n]);
        this.counters.sent.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replies(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replies(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Finds MQTT packet boundaries in the broker's stream to a client (fixed header: type byte,
/// then a 1–4 byte remaining length), skipping bodies without looking at them, so that
/// netstrap's own answers go in between packets. A malformed length stops it (no boundary is
/// reported again; rumqttd does not send such a thing).
#[derive(Debug, Default)]
struct Framer {
    state: Scan,
}

#[derive(Debug, Default)]
enum Scan {
    #[default]
    Header,
    Length {
        value: usize,
        shift: u32,
    },
    Body(usize),
    Malformed,
}

impl Framer {
    fn at_boundary(&self) -> bool {
        matches!(self.state, Scan::Header)
    }

    /// Feed the next bytes; returns the offset in them just after the last packet that ended
    /// in them (0 when they start at a boundary and no packet ends in them).
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut last = self.at_boundary().then_some(0);
        let mut pos = 0;
        while pos < bytes.len() {
            let b = bytes[pos];
            match self.state {
                Scan::Header => {
                    self.state = Scan::Length { value: 0, shift: 0 };
                    pos += 1;
                }
                Scan::Length { value, shift } => {
                    let value = value | (usize::from(b & 0x7f) << shift);
                    pos += 1;
                    self.state = match (b & 0x80 != 0, shift) {
                        (true, 21) => Scan::Malformed,
                        (true, _) => Scan::Length { value, shift: shift + 7 },
                        (false, _) if value == 0 => Scan::Header,
                        (false, _) => Scan::Body(value),
                    };
                }
                Scan::Body(remaining) => {
                    let take = remaining.min(bytes.len() - pos);
                    pos += take;
                    self.state = if take == remaining { Scan::Header } else { Scan::Body(remaining - take) };
                }
                Scan::Malformed => return None,
            }
            if self.at_boundary() {
                last = Some(pos);
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_finds_the_last_boundary_across_chunk_boundaries() {
        // PUBLISH "t" "hi" (QoS 0), PINGRESP, PUBLISH with a 200-byte body (2-byte length).
        let mut stream = vec![0x30, 0x05, 0x00, 0x01, b't', b'h', b'i', 0xd0, 0x00, 0x32, 0xc8, 0x01];
        stream.extend(std::iter::repeat_n(0xe0u8, 200));
        let ends = [7, 9, stream.len()];
        for split in 0..stream.len() {
            let mut f = Framer::default();
            let first = f.feed(&stream[..split]);
            let expected = ends.iter().copied().filter(|&e| e <= split).max().or(Some(0));
            assert_eq!(first, expected, "first part, split at {split}");
            let second = f.feed(&stream[split..]);
            assert_eq!(second, Some(stream.len() - split), "second part, split at {split}");
            assert!(f.at_boundary());
        }
    }
}
