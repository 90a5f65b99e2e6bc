//! The tcp plane on loopback: the native peer protocol (answers, bad input, line and idle
//! limits, the `hello` client) and the relay (bytes both ways, half-close, PROXY v2, upstream
//! down or stuck), and shutdown of both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstrap::metrics::Metrics;
use netstrap::planes::tcp::{self, NativeOptions, RelayOptions};
use netstrap::planes::{Identity, NodeSnapshot, Shutdown};
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Bound on every wait in these tests: a hang fails instead of blocking the suite.
const WAIT: Duration = Duration::from_secs(5);

async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("{what}: no outcome within {WAIT:?}"))
}

use crate::support::snapshot as support_snapshot;

fn identity() -> Identity {
    Identity {
        name: "op-1".into(),
        node_type: "operator".into(),
        instance_id: "inst-42".into(),
        policy_id: Some("abc".into()),
        endpoints: vec!["tcp op-1.edge.svc.cluster.local:32048".into()],
    }
}

async fn snapshot() -> NodeSnapshot {
    support_snapshot::snapshot(identity()).await
}

struct Native {
    addr: SocketAddr,
    snap: watch::Sender<Arc<NodeSnapshot>>,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

async fn start_native(opts: NativeOptions) -> Native {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (snap, rx) = watch::channel(Arc::new(snapshot().await));
    let shutdown = Shutdown::new();
    let task =
        tokio::spawn(tcp::serve_native(listener, opts, rx, Arc::new(Metrics::new()), shutdown.clone()));
    Native { addr, snap, shutdown, task }
}

/// A peer-protocol client speaking raw lines.
struct Peer {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Peer {
    async fn connect(addr: SocketAddr) -> Peer {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        Peer { reader: BufReader::new(r), writer: w }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn answer(&mut self) -> Value {
        let mut line = String::new();
        let n = bounded("answer line", self.reader.read_line(&mut line)).await.unwrap();
        assert!(n > 0 && line.ends_with('\n'), "expected one answer line, got {line:?}");
        serde_json::from_str(&line).unwrap()
    }

    async fn ask(&mut self, request: &str) -> Value {
        self.send(format!("{request}\n").as_bytes()).await;
        self.answer().await
    }

    /// Reads until the server closes; returns what came before.
    async fn rest_until_closed(&mut self) -> String {
        let mut rest = String::new();
        bounded("server close", self.reader.read_to_string(&mut rest)).await.unwrap();
        rest
    }
}

#[tokio::test]
async fn native_answers_hello_ping_policy_and_table() {
    let node = start_native(NativeOptions::default()).await;
    let mut peer = Peer::connect(node.addr).await;

    let nonce = "n-1 \"quoted\" ü \\ end";
    let hello = peer.ask(&json!({"op": "hello", "nonce": nonce}).to_string()).await;
    assert_eq!(hello["ok"], true);
    assert_eq!(hello["op"], "hello");
    assert_eq!(hello["nonce"], nonce, "the nonce comes back exactly");
    assert_eq!(hello["identity"]["instance_id"], "inst-42");
    assert_eq!(hello["identity"]["policy_id"], "abc");

    assert_eq!(peer.ask(r#"{"op":"ping"}"#).await, json!({"ok": true, "op": "pong"}));
    assert_eq!(peer.ask(r#"{"op":"policy"}"#).await, json!({"ok": false, "error": "no policy rendered yet"}));
    let policy = json!({"operator": {"name": "op-1", "port": 32048}});
    node.snap.send_modify(|s| Arc::make_mut(s).policy = Some(policy.clone()));
    let answer = peer.ask("{\"op\":\"policy\"}\r").await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["policy"], policy, "the latest snapshot is served on an open connection");
    let table = peer.ask(r#"{"op":"table"}"#).await["table"].take();
    assert_eq!(table["rows"][0]["plane"], "tcp", "{table}");
    assert_eq!(table["rows"][0]["port"]["value"], 32148, "{table}");
    assert_eq!(table["rows"][0]["external_host"]["value"], "1.2.3.4", "{table}");

    // The client: DNS name accepted, identity and nonce checked.
    let port = node.addr.port();
    let answered = tcp::hello(&format!("localhost:{port}"), "verify-1", WAIT).await.unwrap();
    assert_eq!(answered, identity());
    let refused = tcp::hello(&node.addr.to_string(), &"x".repeat(300), WAIT).await.unwrap_err().to_string();
    assert!(refused.contains("256"), "{refused}");
}

#[tokio::test]
async fn hello_client_names_what_answered_instead_of_a_peer() {
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = tcp::hello(&closed.to_string(), "n", WAIT).await.unwrap_err().to_string();
    assert!(err.contains("cannot connect"), "{err}");

    // Something that echoes (not a peer) and something that never answers.
    let echo = upstream(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await;
    let err = tcp::hello(&echo.to_string(), "n", WAIT).await.unwrap_err().to_string();
    assert!(err.contains("not a netstrap peer"), "{err}");
    let silent = upstream(|s| async move {
        let _held = s;
        std::future::pending::<()>().await;
    })
    .await;
    let err = tcp::hello(&silent.to_string(), "n", Duration::from_millis(200)).await.unwrap_err().to_string();
    assert!(err.contains("no hello answer within"), "{err}");
}

#[tokio::test]
async fn native_bad_requests_get_an_error_line_and_the_connection_stays_open() {
    let node = start_native(NativeOptions::default()).await;
    let mut peer = Peer::connect(node.addr).await;
    let long_nonce = json!({"op": "hello", "nonce": "x".repeat(257)}).to_string();
    for bad in ["garbage", "{not json", "[1,2]", "\"ping\"", r#"{"nop":1}"#, r#"{"op":7}"#, "", &long_nonce] {
        let answer = peer.ask(bad).await;
        assert_eq!(answer["ok"], false, "{bad:?} -> {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad:?} -> {answer}");
    }
    let unknown = peer.ask(r#"{"op":"fly"}"#).await;
    assert!(unknown["error"].as_str().unwrap().contains("unknown op \"fly\""), "{unknown}");
    peer.send(b"{\"op\":\"\xff\xfe\"}\n").await;
    let answer = peer.answer().await;
    assert_eq!(answer["error"], "request is not valid UTF-8");
    assert_eq!(peer.ask(r#"{"op":"ping"}"#).await["op"], "pong", "the connection still answers");

    // The pure function answers the same way.
    let line = tcp::handle_line("{\"op\":\"ping\"}", &snapshot().await);
    assert_eq!(line, r#"{"ok":true,"op":"pong"}"#);
}

#[tokio::test]
async fn native_overlong_line_closes_that_connection_only() {
    let node = start_native(NativeOptions::default()).await;
    let mut peer = Peer::connect(node.addr).await;
    let flood = vec![b'a'; 1024 * 1024];
    let writer = &mut peer.writer;
    let reader = &mut peer.reader;
    let (_, rest) = tokio::join!(writer.write_all(&flood), async {
        let mut rest = String::new();
        bounded("server close", reader.read_to_string(&mut rest)).await.map(|_| rest)
    });
    let rest = rest.unwrap();
    let answer: Value = serde_json::from_str(rest.trim_end()).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().unwrap().contains("longer than 65536 bytes"), "{answer}");

    let mut next = Peer::connect(node.addr).await;
    assert_eq!(next.ask(r#"{"op":"ping"}"#).await["op"], "pong", "the server still serves new connections");
}

#[tokio::test]
async fn native_idle_connection_is_closed_after_the_idle_timeout() {
    let opts = NativeOptions { idle_timeout: Duration::from_millis(200), ..Default::default() };
    let node = start_native(opts).await;
    let mut peer = Peer::connect(node.addr).await;
    assert_eq!(peer.ask(r#"{"op":"ping"}"#).await["op"], "pong");
    let since = Instant::now();
    assert_eq!(peer.rest_until_closed().await, "", "EOF, no answer");
    assert!(since.elapsed() >= Duration::from_millis(100), "closed after {:?}", since.elapsed());
}

#[tokio::test]
async fn native_shutdown_closes_idle_connections_and_stops_accepting() {
    let node = start_native(NativeOptions::default()).await;
    let mut peer = Peer::connect(node.addr).await;
    assert_eq!(peer.ask(r#"{"op":"ping"}"#).await["op"], "pong");
    node.shutdown.cancel();
    assert_eq!(peer.rest_until_closed().await, "");
    bounded("serve_native returns", node.task).await.unwrap();
    assert!(TcpStream::connect(node.addr).await.is_err(), "the listener is closed");
}

// ---------------------------------------------------------------------------------------------
// Relay

/// An upstream node: every accepted connection handled by `handle` on its own task.
async fn upstream<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_upstream(listener, handle);
    addr
}

fn serve_upstream<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
}

/// Echoes everything; after the client's EOF, sends `trailer(bytes seen)` and closes.
async fn echo_then_trailer(mut s: TcpStream) {
    let (mut r, mut w) = s.split();
    let n = tokio::io::copy(&mut r, &mut w).await.unwrap_or(0);
    let _ = w.write_all(trailer(n).as_bytes()).await;
}

fn trailer(n: u64) -> String {
    format!("[upstream saw EOF after {n} bytes]")
}

struct Relay {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

async fn start_relay(upstream: SocketAddr, proxy_protocol: bool) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    let opts = RelayOptions { upstream, proxy_protocol, ..Default::default() };
    let task = tokio::spawn(tcp::serve_relay(listener, opts, metrics.clone(), shutdown.clone()));
    Relay { addr, metrics, shutdown, task }
}

fn random(len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; len];
    rand::rng().fill(&mut payload[..]);
    payload
}

/// Writes `payload`, shuts the write half, and reads until the relay closes — concurrently.
async fn exchange(stream: TcpStream, payload: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = stream.into_split();
    let (written, received) = tokio::join!(
        async {
            w.write_all(payload).await?;
            w.shutdown().await
        },
        async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.map(|_| got)
        }
    );
    written.unwrap();
    received.unwrap()
}

#[tokio::test]
async fn relay_round_trips_a_payload_and_passes_half_close_on() {
    let up = upstream(echo_then_trailer).await;
    let relay = start_relay(up, false).await;
    let payload = random(1024 * 1024);
    let client = TcpStream::connect(relay.addr).await.unwrap();
    let got = bounded("relayed exchange", exchange(client, &payload)).await;

    // Client shut its write half → the upstream saw EOF → its later reply still arrived.
    let (echoed, tail) = got.split_at(payload.len().min(got.len()));
    assert!(echoed == payload.as_slice(), "1 MiB came back intact");
    assert_eq!(tail, trailer(payload.len() as u64).as_bytes());

    let text = relay.metrics.encode();
    assert!(text.contains("netstrap_received_bytes_total{plane=\"tcp\"} 1048576"), "{text}");
    let sent = payload.len() + tail.len();
    assert!(text.contains(&format!("netstrap_sent_bytes_total{{plane=\"tcp\"}} {sent}")), "{text}");
}

#[tokio::test]
async fn relay_sends_a_proxy_v2_header_with_the_client_address() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let up = upstream(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut head = [0u8; 16];
            s.read_exact(&mut head).await.unwrap();
            let mut header = head.to_vec();
            header.resize(16 + usize::from(u16::from_be_bytes([head[14], head[15]])), 0);
            s.read_exact(&mut header[16..]).await.unwrap();
            let parsed =
                ppp::v2::Header::try_from(header.as_slice()).map(|h| (h.command, h.protocol, h.addresses));
            let _ = tx.send(parsed.map_err(|e| e.to_string()));
            echo_then_trailer(s).await;
        }
    })
    .await;
    let relay = start_relay(up, true).await;
    let client = TcpStream::connect(relay.addr).await.unwrap();
    let me = client.local_addr().unwrap();
    let got = bounded("relayed exchange", exchange(client, b"after the header")).await;
    assert!(got.starts_with(b"after the header"), "the payload follows the header untouched");

    let (command, protocol, addresses) = bounded("header", rx.recv()).await.unwrap().unwrap();
    assert_eq!(command, ppp::v2::Command::Proxy);
    assert_eq!(protocol, ppp::v2::Protocol::Stream);
    let ppp::v2::Addresses::IPv4(a) = addresses else { panic!("expected IPv4 addresses, got {addresses:?}") };
    assert_eq!(SocketAddr::from((a.source_address, a.source_port)), me, "the client's real address and port");
    assert_eq!(SocketAddr::from((a.destination_address, a.destination_port)), relay.addr);
}

#[tokio::test]
async fn relay_closes_clients_promptly_while_the_upstream_is_down_and_recovers() {
    // A port with nothing behind it: connections are refused.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = start_relay(down, false).await;
    for _ in 0..2 {
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        let mut got = Vec::new();
        match bounded("client closed", client.read_to_end(&mut got)).await {
            Ok(_) => assert!(got.is_empty(), "nothing relayed: {got:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // The node comes back on its port: the next client is relayed.
    serve_upstream(TcpListener::bind(down).await.unwrap(), echo_then_trailer);
    let client = TcpStream::connect(relay.addr).await.unwrap();
    let got = bounded("relayed exchange", exchange(client, b"back")).await;
    assert_eq!(got, [b"back".as_slice(), trailer(4).as_bytes()].concat());
}

#[tokio::test]
async fn relay_upstream_that_stops_reading_does_not_stall_other_clients() {
    // The first upstream connection is held and never read; later ones echo.
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<TcpStream>();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let up = upstream(move |s| {
        let first = first.swap(false, std::sync::atomic::Ordering::SeqCst);
        let held_tx = held_tx.clone();
        async move {
            if first {
                let _ = held_tx.send(s);
            } else {
                echo_then_trailer(s).await;
            }
        }
    })
    .await;
    let relay = start_relay(up, false).await;
    let mut stuck = TcpStream::connect(relay.addr).await.unwrap();
    let _held = bounded("first upstream connection", held_rx.recv()).await.unwrap();
    // Fill every buffer on the stuck path: this writer blocks for good.
    let flood = tokio::spawn(async move {
        let _ = stuck.write_all(&vec![0u8; 64 * 1024 * 1024]).await;
    });

    let client = TcpStream::connect(relay.addr).await.unwrap();
    let got = bounded("second client's exchange", exchange(client, b"still here")).await;
    assert_eq!(got, [b"still here".as_slice(), trailer(10).as_bytes()].concat());
    assert!(!flood.is_finished(), "the stuck client is still stuck (the test is meaningful)");
    flood.abort();
}

#[tokio::test]
async fn relay_shutdown_stops_accepting_and_finishes_in_flight_transfers() {
    let up = upstream(echo_then_trailer).await;
    let relay = start_relay(up, false).await;
    let (mut r, mut w) = TcpStream::connect(relay.addr).await.unwrap().into_split();
    let first = random(64 * 1024);
    w.write_all(&first).await.unwrap();
    let mut echoed = vec![0u8; first.len()];
    bounded("first half echoed", r.read_exact(&mut echoed)).await.unwrap();
    assert!(echoed == first);

    relay.shutdown.cancel();
    bounded("listener closed", async {
        while TcpStream::connect(relay.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // The transfer that was in flight runs to its end.
    let second = random(256 * 1024);
    let (written, received) = tokio::join!(
        async {
            w.write_all(&second).await?;
            w.shutdown().await
        },
        async {
            let mut got = Vec::new();
            bounded("in-flight transfer", r.read_to_end(&mut got)).await.map(|_| got)
        }
    );
    written.unwrap();
    let got = received.unwrap();
    let total = (first.len() + second.len()) as u64;
    assert!(got == [second.as_slice(), trailer(total).as_bytes()].concat(), "rest of the transfer intact");
    bounded("serve_relay returns once the transfer is done", relay.task).await.unwrap();
}
