//! Native mode: netstrap's peer protocol (README, "What `netstrap run` serves", tcp).
//!
//! Newline-delimited JSON over TCP; every request line gets exactly one response line, and a
//! response is always a JSON object with `"ok"`:
//!
//! | Request | Response |
//! |---|---|
//! | `{"op":"hello","nonce":"<≤256 chars>"}` | `{"ok":true,"op":"hello","nonce":"<echo>","identity":{..}}` |
//! | `{"op":"ping"}` | `{"ok":true,"op":"pong"}` |
//! | `{"op":"policy"}` | `{"ok":true,"op":"policy","policy":{..}}`, or `{"ok":false,"error":"no policy rendered yet"}` |
//! | `{"op":"table"}` | `{"ok":true,"op":"table","table":{..}}` |
//! | anything else | `{"ok":false,"error":"<what was wrong and what to send>"}` |
//!
//! A bad request (not JSON, not an object, no or unknown `op`, invalid UTF-8, an empty line)
//! gets an error line and the connection stays open. A line longer than `max_line` gets an
//! error line and the connection is closed: the reader never holds more than `max_line` bytes.
//! A trailing `\r` is ignored (telnet and `nc -C` send CRLF). A connection that sends nothing
//! for `idle_timeout` is closed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::{DEFAULT_MAX_CONNECTIONS, accept_loop};
use crate::metrics::Metrics;
use crate::planes::{NodeSnapshot, Shutdown, SnapshotRx};
use crate::table::Plane;

/// Longest `hello` nonce accepted, in characters.
pub const MAX_NONCE: usize = 256;
/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// so the client receives the error line instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// Settings of native mode.
#[derive(Clone, Debug)]
pub struct NativeOptions {
    /// Longest request line in bytes (without the newline); a longer one closes the connection.
    pub max_line: usize,
    /// A connection with no complete request for this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// Concurrent connections; more are closed at once.
    pub max_connections: usize,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            max_line: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Answer one request line (without its newline) from `snapshot`. Pure: the response line,
/// without its newline, for any input.
pub fn handle_line(line: &str, snapshot: &NodeSnapshot) -> String {
    match answer(line, snapshot) {
        Ok(reply) => reply.to_string(),
        Err(error) => error_line(&error),
    }
}

fn error_line(error: &str) -> String {
    json!({"ok": false, "error": error}).to_string()
}

fn answer(line: &str, snapshot: &NodeSnapshot) -> Result<Value, String> {
    const EXAMPLE: &str = r#"send one JSON object per line, e.g. {"op":"ping"}"#;
    let line = line.trim();
    if line.is_empty() {
        return Err(format!("empty request line; {EXAMPLE}"));
    }
    let request: Value =
        serde_json::from_str(line).map_err(|e| format!("request is not JSON ({e}); {EXAMPLE}"))?;
    let Value::Object(request) = request else {
        return Err(format!("request is not a JSON object; {EXAMPLE}"));
    };
    let op = match request.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err("`op` must be a string: hello, ping, policy or table".into()),
        None => return Err("request has no `op`; expected hello, ping, policy or table".into()),
    };
    match op {
        "hello" => {
            let nonce = match request.get("nonce") {
                None => "",
                Some(Value::String(n)) if n.chars().count() <= MAX_NONCE => n.as_str(),
                Some(Value::String(_)) => {
                    return Err(format!("`nonce` is longer than {MAX_NONCE} characters"));
                }
                Some(_) => return Err("`nonce` must be a string".into()),
            };
            let identity = serde_json::to_value(&snapshot.identity).map_err(|e| format!("identity: {e}"))?;
            Ok(json!({"ok": true, "op": "hello", "nonce": nonce, "identity": identity}))
        }
        "ping" => Ok(json!({"ok": true, "op": "pong"})),
        "policy" => match &snapshot.policy {
            Some(policy) => Ok(json!({"ok": true, "op": "policy", "policy": policy})),
            None => Err("no policy rendered yet".into()),
        },
        "table" => Ok(json!({"ok": true, "op": "table", "table": snapshot.table})),
        other => {
            // The op comes from the network: quote a bounded prefix of it, not all of it.
            let shown: String = other.chars().take(64).collect();
            Err(format!("unknown op {shown:?}; expected hello, ping, policy or table"))
        }
    }
}

/// Serve the peer protocol on `listener` until `shutdown`, answering from the latest
/// `snapshot`; returns once every connection has closed (see the module docs on shutdown).
pub async fn serve_native(
    listener: TcpListener,
    opts: NativeOptions,
    snapshot: SnapshotRx,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        max_line = opts.max_line,
        idle_timeout_s = opts.idle_timeout.as_secs_f64(),
        "tcp plane: serving the peer protocol"
    );
    let opts = Arc::new(opts);
    let max = opts.max_connections;
    let token = shutdown.clone();
    accept_loop(listener, "tcp", max, &token, move |stream, peer, permit| {
        let conn = Connection {
            opts: opts.clone(),
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        };
        conn.serve(stream, peer, permit)
    })
    .await;
}

struct Connection {
    opts: Arc<NativeOptions>,
    snapshot: SnapshotRx,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl Connection {
    async fn serve(self, stream: TcpStream, peer: SocketAddr, _permit: tokio::sync::OwnedSemaphorePermit) {
        let _open = self.metrics.connection(Plane::Tcp);
        let _ = stream.set_nodelay(true);
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        let idle = self.opts.idle_timeout;
        loop {
            line.clear();
            let read = tokio::select! {
                // Between requests nothing is in flight: close at once.
                () = self.shutdown.cancelled() => return,
                r = within(idle, read_line_bounded(&mut reader, &mut line, self.opts.max_line)) => r,
            };
            let (mut reply, keep_open) = match read {
                None => return debug!(%peer, "tcp peer idle for {idle:?}; closing"),
                Some(Err(e)) => return debug!(%peer, "tcp peer connection failed: {e}"),
                Some(Ok(Line::Eof)) => return,
                Some(Ok(Line::TooLong)) => {
                    self.metrics.add_bytes(Plane::Tcp, self.opts.max_line as u64, 0);
                    debug!(%peer, "tcp peer sent a line over {} bytes; closing", self.opts.max_line);
                    let error = format!(
                        "request line longer than {} bytes; closing the connection",
                        self.opts.max_line
                    );
                    (error_line(&error), false)
                }
                Some(Ok(Line::Complete | Line::Partial)) => {
                    self.metrics.add_bytes(Plane::Tcp, line.len() as u64 + 1, 0);
                    let reply = match std::str::from_utf8(&line) {
                        Ok(text) => {
                            let snapshot = self.snapshot.borrow().clone();
                            handle_line(text, &snapshot)
                        }
                        Err(_) => error_line("request is not valid UTF-8"),
                    };
                    (reply, true)
                }
            };
            reply.push('\n');
            // A client that does not read its answers is idle too.
            match within(idle, writer.write_all(reply.as_bytes())).await {
                Some(Ok(())) => self.metrics.add_bytes(Plane::Tcp, 0, reply.len() as u64),
                Some(Err(e)) => return debug!(%peer, "tcp peer connection failed: {e}"),
                None => return debug!(%peer, "tcp peer does not read its answers; closing"),
            }
            if !keep_open {
                // Send FIN, then swallow what the client is still sending: closing a socket
                // with unread input sends a reset, which can destroy the error line in flight.
                let _ = writer.shutdown().await;
                let mut rest = (&mut reader).take(LINGER_BYTES);
                let _ =
                    tokio::time::timeout(LINGER, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
                return;
            }
        }
    }
}

/// `fut` bounded by `limit`, zero meaning no limit; `None` when the time ran out.
pub(super) async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    if limit.is_zero() { Some(fut.await) } else { tokio::time::timeout(limit, fut).await.ok() }
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line ended by `\n` (both `\n` and a `\r` before it removed).
    Complete,
    /// The peer closed after some bytes without a newline: the last line.
    Partial,
    /// The peer closed before sending anything more.
    Eof,
    /// More than `max` bytes without a newline; `buf` holds what came before them.
    TooLong,
}

/// Append the next line to `buf` without ever holding more than `max` bytes of it (unlike
/// `read_until`, which buffers whatever the peer sends).
pub(super) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() { Line::Eof } else { Line::Partial });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let content = newline.unwrap_or(available.len());
        if buf.len() + content > max {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&available[..content]);
        reader.consume(newline.map_or(content, |i| i + 1));
        if newline.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
    }
}
