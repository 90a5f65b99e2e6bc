//! The broker plane: an embedded MQTT broker (rumqttd, MQTT 3.1.1 and 5), or an L4 relay to the
//! node's own broker; and `mqtt_ping`, the readiness probe "the broker answers a CONNECT".
//!
//! # Embedded mode: a front door before rumqttd
//!
//! rumqttd's `Broker::start` runs every server on a thread with its own runtime and only logs a
//! bind failure, so netstrap assembles the pieces itself: `Router::spawn` (the router runs on its
//! own thread) and a `Server::<V4>` and `Server::<V5>` that never listen. netstrap binds the
//! public address, accepts, reads the client's CONNECT and hands the stream to the server for
//! its MQTT version (rumqttd patch 11, `Handoff`), on the connection's own task. Owning the
//! accept and the stream buys what rumqttd's own accept loop cannot give:
//!
//! - bind errors on the public address name the address and the cause (`crate::bind`), and a
//!   pre-bound listener can be handed over ([`serve_embedded_on`]) without a bind race;
//! - a connection limit below the router's own: rumqttd refuses a CONNECT over its
//!   `max_connections` but leaves the refused client's will handler behind, and the next
//!   CONNECT with that client id panicked while holding a shared mutex, which poisoned it and
//!   broke every later connection (rumqttd 0.20 `server/broker.rs`, `remote()`; patched since,
//!   patch 9, and the limit stays as a second guard);
//! - the client's packets are read before rumqttd sees them (`broker_guard`, through the
//!   stream wrapper in `broker_stream`): protocol versions rumqttd cannot serve get a CONNACK
//!   saying so, and SUBSCRIBEs over the limits get a SUBACK failure written into the client's
//!   stream by netstrap;
//! - per-connection metrics (connections, bytes, clients, PUBLISH packets) from the bytes that
//!   pass, since rumqttd's meters need its private timer link;
//! - shutdown closes every client connection (the link's future is dropped);
//! - a client's DISCONNECT is not followed by an EOF towards rumqttd (see `broker_stream`):
//!   otherwise rumqttd may disconnect the *next* client, which reuses the router slot.
//!
//! One socket per client and no buffer of netstrap's: an idle client costs rumqttd's link and
//! the wrapper (docs/broker.md has the figures).
//!
//! Known rumqttd 0.20 deviation, not corrected here: a message is delivered at the QoS of the
//! subscription, not the minimum of publication and subscription (MQTT-3.8.4-6;
//! bytebeamio/rumqtt#707). rumqttd logs every client disconnect at `error` level (and every
//! accept at `info`), so a default log filter of `rumqttd=off` keeps the log readable.
//!
//! # TLS
//!
//! With TLS on for this plane (`NETSTRAP_TLS_PLANES`), the public listener accepts MQTT over
//! TLS only: netstrap terminates TLS in its accept loop (the handshake on the connection's own
//! task, bounded by `CONNECT_TIMEOUT`) and hands the plaintext stream to rumqttd, or in relay
//! mode splices it to the node's broker, exactly as a plain connection. [`mqtt_ping_tls`] speaks
//! TLS for the readiness check.
//!
//! The router thread cannot be stopped (it holds a sender to itself); it idles after shutdown
//! until the process exits. Memory is bounded by the front door's limits (`broker_guard`: the
//! distinct topic filters, each keeping at most `NETSTRAP_BROKER_BACKLOG` of recent messages
//! for lagging subscribers, given back when nobody reads it), rumqttd's patched bounds
//! (`vendor/rumqttd/NETSTRAP-PATCHES.md`) and the connection limit; docs/broker.md has the
//! arithmetic. A subscriber a whole backlog behind holds its publishers up (rumqttd patch 13:
//! no PUBACK, their sockets not read) until it reads on, or is disconnected after
//! `NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT`; `broker_drops` counts and reports those
//! disconnects, and the messages still skipped (a client's own subscriptions, or timeout 0).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::{ConnectionSettings, Handoff, Router, RouterConfig, Server, ServerSettings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tracing::{debug, info, warn};

use super::broker_guard::{self, Guard, Inspector, Limits};
use super::broker_stream::{Counters, Guarded, LINGER};
use super::{Shutdown, accept_loop};
use crate::bind::BindError;
use crate::metrics::{Metrics, PlaneLabel};
use crate::table::Plane;

/// The backlog of a topic filter is kept in this many segments; when a new one starts, the
/// oldest is dropped, so a filter keeps between (n-1)/n and all of the backlog.
const SEGMENT_COUNT: usize = 16;
/// Time a new client has to send CONNECT, and to reach an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent connections a relay accepts.
const RELAY_MAX_CONNECTIONS: usize = 10_000;
const BUFFER: usize = 8 * 1024;

/// Settings of the embedded broker.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// The public address clients connect to.
    pub listen: SocketAddr,
    /// `BROKER_THREADS`: workers of the runtime the caller runs this plane on (this module
    /// spawns no runtime of its own; rumqttd's router is one thread of its own).
    pub threads: usize,
    /// Concurrent client connections; more are closed at once (with a warning).
    pub max_connections: usize,
    /// Largest MQTT packet accepted; a bigger one closes the client's connection.
    pub max_payload_size: usize,
    /// Per subscribed topic filter, how many bytes of recent messages are kept for subscribers
    /// that lag (`NETSTRAP_BROKER_BACKLOG`).
    pub backlog: usize,
    /// How long publishers wait for a subscriber a whole backlog behind before it is
    /// disconnected (`NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT`, rumqttd patch 13); `None`: they
    /// never wait and it skips the oldest messages (see `broker_drops`).
    pub slow_subscriber_timeout: Option<Duration>,
    /// `(username, password)` every client must present, when set.
    pub credentials: Option<(String, String)>,
    /// Accept MQTT over TLS only, with this configuration (see `crate::tls`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Subscription limits the front door enforces (see `broker_guard`).
    pub limits: Limits,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 1883)),
            threads: 1,
            max_connections: 10_000,
            max_payload_size: 1024 * 1024,
            backlog: crate::config::DEFAULT_BROKER_BACKLOG,
            slow_subscriber_timeout: Some(crate::config::DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT),
            credentials: None,
            tls: None,
            limits: Limits::default(),
        }
    }
}

/// Why the broker plane could not serve.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("broker: {0}")]
    Config(String),
}

/// Bind `opts.listen` and serve the embedded broker until `shutdown`.
pub async fn serve_embedded(
    opts: BrokerOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let std_listener = crate::bind::bind(Plane::Broker, opts.listen)?;
    let listener = TcpListener::from_std(std_listener).map_err(|cause| BindError {
        plane: "broker",
        addr: opts.listen,
        cause,
        hint: String::new(),
    })?;
    serve_embedded_on(listener, opts, metrics, shutdown).await
}

/// Serve the embedded broker on an already bound listener (`opts.listen` is not used) until
/// `shutdown`: then stop accepting, close every client connection and return `Ok`.
pub async fn serve_embedded_on(
    listener: TcpListener,
    opts: BrokerOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<(), BrokerError> {
    if opts.max_connections == 0 {
        return Err(BrokerError::Config("max_connections must be at least 1".into()));
    }
    let router_tx = Router::new(0, router_config(&opts)).spawn();
    // rumqttd's servers never listen: netstrap hands each client's stream to the one for its
    // MQTT version (rumqttd patch 11), both on one router.
    let servers = Servers {
        v4: Server::new(server_settings(&opts), router_tx.clone(), V4).handoff(),
        v5: Server::new(server_settings(&opts), router_tx, V5).handoff(),
    };
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        max_connections = opts.max_connections,
        auth = opts.credentials.is_some(),
        "broker plane: embedded MQTT broker serving"
    );

    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let guard = Guard::new(opts.limits, metrics.broker_refused.clone());
    accept_loop(listener, "broker", opts.max_connections, &shutdown, |client, peer, permit| {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let guard = guard.clone();
        let servers = servers.clone();
        async move {
            let _permit = permit;
            let _conn = metrics.connection(Plane::Broker);
            let _client = GaugeGuard::inc(&metrics.broker_clients);
            let Some(client) = Client::accept(client, peer, tls.as_ref(), &shutdown).await else { return };
            // The connection's future (rumqttd's link in it) is built in place: a future moved
            // into another one before it is awaited takes its size twice.
            tokio::select! {
                r = async {
                    match client {
                        Client::Plain(s) => front_door(s, &servers, guard, &metrics).await,
                        Client::Tls(s) => front_door(s, &servers, guard, &metrics).await,
                    }
                } => if let Err(e) = r {
                    debug!(%peer, "broker connection ended: {e}");
                },
                // Dropping rumqttd's link closes the client's connection.
                () = shutdown.cancelled() => {}
            }
        }
    })
    .await;
    Ok(())
}

/// rumqttd's servers, one per MQTT version, taking over accepted streams.
#[derive(Clone)]
struct Servers {
    v4: Handoff<V4>,
    v5: Handoff<V5>,
}

/// Relay MQTT (any bytes, really) from `listener` to the node's own broker at `upstream` until
/// `shutdown`. Errors are per connection: logged, never returned.
pub async fn serve_relay(
    listener: TcpListener,
    upstream: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    serve_relay_tls(listener, upstream, None, metrics, shutdown).await
}

/// One line per 10 s while the node's broker refuses (the readiness ping alone dials it every
/// 100 ms), with a count of the connections not logged.
static RELAY_DOWN: crate::logging::Throttle = crate::logging::Throttle::new(Duration::from_secs(10));

/// [`serve_relay`], terminating TLS with `tls` when given (the node's broker gets plaintext).
pub async fn serve_relay_tls(
    listener: TcpListener,
    upstream: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        %upstream,
        tls = tls.is_some(),
        "broker plane: relaying to the node's broker"
    );
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    accept_loop(listener, "broker", RELAY_MAX_CONNECTIONS, &shutdown, |client, peer, permit| {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        async move {
            let _permit = permit;
            let _conn = metrics.connection(Plane::Broker);
            let Some(client) = Client::accept(client, peer, tls.as_ref(), &shutdown).await else { return };
            let server = match connect_to(upstream).await {
                Ok(s) => s,
                Err(e) => {
                    if let Some(more) = RELAY_DOWN.allow() {
                        warn!(%peer, suppressed = more, "broker relay: cannot reach the node's broker at {upstream}: {e}");
                    }
                    return;
                }
            };
            if let Err(e) = client.splice(server, &metrics, &shutdown).await {
                debug!(%peer, "broker relay connection ended: {e}");
            }
        }
    })
    .await;
}

fn router_config(opts: &BrokerOptions) -> RouterConfig {
    let (max_connections, backlog) = (opts.max_connections, opts.backlog);
    RouterConfig {
        // Headroom above our own limit: the router frees a slot only when it processes the
        // Disconnect event, which can trail our accept of the next client.
        max_connections: max_connections.saturating_add(max_connections / 8 + 16),
        max_outgoing_packet_count: 200,
        // rumqttd refuses segments under 1 KiB.
        max_segment_size: (backlog / SEGMENT_COUNT).max(4096),
        max_segment_count: SEGMENT_COUNT,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
        // rumqttd patch 13: a lagging subscriber slows its publishers rather than skipping.
        slow_subscriber_timeout_ms: opts.slow_subscriber_timeout.map(|t| t.as_millis() as u64),
    }
}

fn server_settings(opts: &BrokerOptions) -> ServerSettings {
    let auth = opts.credentials.as_ref().map(|(u, p)| HashMap::from([(u.clone(), p.clone())]));
    ServerSettings {
        name: "netstrap-broker".into(),
        // Not bound: connections come through `Handoff`.
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT.as_millis() as u16,
            max_payload_size: opts.max_payload_size,
            max_inflight_count: 100,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

async fn connect_to(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {CONNECT_TIMEOUT:?}"))
    })??;
    // MQTT packets are small and interactive: do not batch them.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Copy both ways until the server side closes (a client's EOF is passed on as a half-close,
/// and the server's answer still delivered for up to `LINGER`), an error, or `shutdown`.
/// Bytes are counted as they pass, so long-lived MQTT connections show up in the metrics
/// before they end.
///
/// An idle connection holds no buffer: reads go to a small inline one, and a heap buffer is
/// taken only while a read fills it (see [`ReadBuf`]).
async fn splice(
    (mut client_r, mut client_w): (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    mut server: TcpStream,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let label = PlaneLabel::of(Plane::Broker);
    let received = metrics.bytes_received.get_or_create(&label).clone();
    let sent = metrics.bytes_sent.get_or_create(&label).clone();
    let (mut server_r, mut server_w) = server.split();
    let inbound = async {
        let mut buf = ReadBuf::default();
        loop {
            let n = client_r.read(buf.slot()).await?;
            if n == 0 {
                return server_w.shutdown().await;
            }
            received.inc_by(n as u64);
            server_w.write_all(buf.filled(n)).await?;
        }
    };
    let outbound = async {
        let mut buf = ReadBuf::default();
        loop {
            let n = server_r.read(buf.slot()).await?;
            if n == 0 {
                // The server closed: for MQTT the connection is over, whatever the client does.
                let _ = client_w.shutdown().await;
                return Ok::<(), io::Error>(());
            }
            client_w.write_all(buf.filled(n)).await?;
            sent.inc_by(n as u64);
        }
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        r = &mut inbound => r?,
        r = &mut outbound => return r,
        () = shutdown.cancelled() => return Ok(()),
    }
    // The client is done sending; let the server finish its side, within bounds.
    tokio::select! {
        r = tokio::time::timeout(LINGER, &mut outbound) => r.unwrap_or(Ok(())),
        () = shutdown.cancelled() => Ok(()),
    }
}

/// A read buffer that costs an idle connection nothing on the heap: reads go to a small inline
/// array; when one fills it, the connection is busy and the next reads use a heap buffer of
/// `BUFFER` bytes, given back as soon as a read does not fill it.
struct ReadBuf {
    small: [u8; 512],
    big: Option<Box<[u8]>>,
    /// The last read filled its buffer.
    busy: bool,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf { small: [0; 512], big: None, busy: false }
    }
}

impl ReadBuf {
    fn slot(&mut self) -> &mut [u8] {
        if self.busy {
            self.big.get_or_insert_with(|| vec![0; BUFFER].into_boxed_slice())
        } else {
            self.big = None;
            &mut self.small
        }
    }

    /// The `n` bytes the last read put in `slot()`.
    fn filled(&mut self, n: usize) -> &[u8] {
        let buf: &[u8] = match &self.big {
            Some(big) if self.busy => big,
            _ => &self.small,
        };
        self.busy = n == buf.len();
        &buf[..n]
    }
}

/// A client connection, after the TLS handshake when TLS is on.
enum Client {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Client {
    /// Complete the TLS handshake when `tls` is set (within `CONNECT_TIMEOUT`); `None` when it
    /// failed (logged at debug: a port scanner or a plain-MQTT client is not news).
    async fn accept(
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<&tokio_rustls::TlsAcceptor>,
        shutdown: &Shutdown,
    ) -> Option<Client> {
        let Some(acceptor) = tls else { return Some(Client::Plain(stream)) };
        tokio::select! {
            () = shutdown.cancelled() => None,
            r = tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)) => match r {
                Ok(Ok(s)) => Some(Client::Tls(Box::new(s))),
                Ok(Err(e)) => {
                    debug!(%peer, "broker: TLS handshake failed: {e}");
                    None
                }
                Err(_) => {
                    debug!(%peer, "broker: no TLS handshake within {CONNECT_TIMEOUT:?}");
                    None
                }
            },
        }
    }

    /// Relay: copy bytes both ways.
    async fn splice(self, server: TcpStream, metrics: &Metrics, shutdown: &Shutdown) -> io::Result<()> {
        match self {
            Client::Plain(mut s) => splice(s.split(), server, metrics, shutdown).await,
            Client::Tls(s) => splice(tokio::io::split(*s), server, metrics, shutdown).await,
        }
    }
}

/// Embedded broker: read the client's CONNECT (within `CONNECT_TIMEOUT`) and decide on it, then
/// hand the stream to rumqttd's server for its MQTT version, behind the front door's inspection
/// (`broker_guard`, `broker_stream`). Returns when the client's link ends.
async fn front_door<S>(
    mut client: S,
    servers: &Servers,
    guard: Arc<Guard>,
    metrics: &Metrics,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read = broker_guard::read_packet(&mut client, broker_guard::MAX_INSPECTED);
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, read).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("no CONNECT within {CONNECT_TIMEOUT:?}"))
    })??;
    let label = PlaneLabel::of(Plane::Broker);
    let counters = Counters {
        received: metrics.bytes_received.get_or_create(&label).clone(),
        sent: metrics.bytes_sent.get_or_create(&label).clone(),
        publishes: metrics.broker_messages.clone(),
    };
    counters.received.inc_by(connect.len() as u64);
    let v5 = match broker_guard::connect(&guard, &connect) {
        broker_guard::Connect::Forward { v5 } => v5,
        broker_guard::Connect::Refuse(connack) => {
            client.write_all(&connack).await?;
            counters.sent.inc_by(connack.len() as u64);
            return client.shutdown().await;
        }
    };
    let stream = Box::new(Guarded::new(client, connect, Inspector::new(guard, v5), counters));
    if v5 {
        servers.v5.serve(stream).await
    } else {
        servers.v4.serve(stream).await
    }
    Ok(())
}

/// Holds a gauge up while alive.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn inc(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why an MQTT probe found no broker answering "accepted"; the text is the readiness reason.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("MQTT {0} longer than 65535 bytes")]
    FieldTooLong(&'static str),
    #[error("no broker at {addr}: {cause}")]
    NoBroker { addr: SocketAddr, cause: io::Error },
    #[error("broker at {addr}: TLS handshake failed: {cause}")]
    Tls { addr: SocketAddr, cause: io::Error },
    #[error("no CONNACK from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("broker at {addr}: sending CONNECT: {cause}")]
    Send { addr: SocketAddr, cause: io::Error },
    #[error("{addr} closed the connection without a CONNACK (wrong credentials, or not an MQTT broker)")]
    Closed { addr: SocketAddr },
    #[error("broker at {addr}: reading CONNACK: {cause}")]
    Read { addr: SocketAddr, cause: io::Error },
    #[error("{addr} is not an MQTT broker: it answered {answer:02x?} instead of a CONNACK")]
    NotMqtt { addr: SocketAddr, answer: [u8; 4] },
    #[error("broker at {addr} refused the connection: CONNACK code {code} ({})", connack_reason(*code))]
    Refused { addr: SocketAddr, code: u8 },
}

/// Prove an MQTT broker answers at `addr`: send an MQTT 3.1.1 CONNECT (clean session, client
/// id `netstrap-probe-<hex>`, `credentials` when given), expect CONNACK "accepted", then
/// DISCONNECT. The error says what was found instead, for the readiness reason.
pub async fn mqtt_ping(
    addr: SocketAddr,
    timeout: Duration,
    credentials: Option<(String, String)>,
) -> Result<(), PingError> {
    mqtt_ping_tls(addr, timeout, credentials, None).await
}

/// [`mqtt_ping`] over TLS when `tls` is given (the client configuration to use, e.g.
/// `crate::tls::loopback_client_config`); the server name presented is `addr`'s IP.
pub async fn mqtt_ping_tls(
    addr: SocketAddr,
    timeout: Duration,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(), PingError> {
    let connect =
        connect_packet(&format!("netstrap-probe-{:016x}", rand::random::<u64>()), credentials.as_ref())?;
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|cause| PingError::NoBroker { addr, cause })?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => ping_exchange(tcp, addr, &connect).await,
            Some(config) => {
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(crate::tls::server_name(addr.ip()), tcp)
                    .await
                    .map_err(|cause| PingError::Tls { addr, cause })?;
                ping_exchange(stream, addr, &connect).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| PingError::Timeout { addr, timeout })?
}

/// Send CONNECT on `stream`, expect CONNACK "accepted", then DISCONNECT.
async fn ping_exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    addr: SocketAddr,
    connect: &[u8],
) -> Result<(), PingError> {
    stream.write_all(connect).await.map_err(|cause| PingError::Send { addr, cause })?;
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).await.map_err(|cause| match cause.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => PingError::Closed { addr },
        _ => PingError::Read { addr, cause },
    })?;
    if ack[..2] != [0x20, 0x02] {
        return Err(PingError::NotMqtt { addr, answer: ack });
    }
    if ack[3] != 0 {
        return Err(PingError::Refused { addr, code: ack[3] });
    }
    // Best effort: the broker said yes, which is what the probe asked.
    let _ = stream.write_all(&[0xe0, 0x00]).await;
    let _ = stream.shutdown().await;
    Ok(())
}

fn connack_reason(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad username or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

/// An MQTT 3.1.1 CONNECT packet (clean session, keep-alive 10 s).
fn connect_packet(client_id: &str, credentials: Option<&(String, String)>) -> Result<Vec<u8>, PingError> {
    fn field(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), PingError> {
        let len = u16::try_from(s.len()).map_err(|_| PingError::FieldTooLong(what))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        Ok(())
    }
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
    body.push(if credentials.is_some() { 0xc2 } else { 0x02 }); // username, password, clean session
    body.extend_from_slice(&10u16.to_be_bytes());
    field(&mut body, client_id, "client id")?;
    if let Some((user, pass)) = credentials {
        field(&mut body, user, "username")?;
        field(&mut body, pass, "password")?;
    }
    let mut packet = vec![0x10];
    broker_guard::encode_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_mqtt_311() {
        let p = connect_packet("c", Some(&("u".into(), "p".into()))).unwrap();
        assert_eq!(
            p,
            [0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 10, 0, 1, b'c', 0, 1, b'u', 0, 1, b'p']
        );
    }
}
