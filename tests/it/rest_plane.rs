//! The rest plane on loopback: probes, readiness latches, netstrap's API, and the reverse
//! proxy to a node REST API that behaves like EdgeLake's (header commands, errors in the
//! reason phrase with a broken chunked body, `Connection: close`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netstrap::health::{Check, Health};
use netstrap::metrics::Metrics;
use netstrap::planes::rest::{self, RestOptions, RestState};
use netstrap::planes::{Identity, NodeSnapshot, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::snapshot as support_snapshot;

struct Plane {
    addr: SocketAddr,
    health: Health,
    shutdown: Shutdown,
    snapshot: tokio::sync::watch::Receiver<Arc<NodeSnapshot>>,
}

async fn start(options: RestOptions) -> Plane {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = Health::new();
    let identity = Identity {
        name: "op-1 operator".into(),
        node_type: "operator".into(),
        instance_id: "abc123".into(),
        ..Default::default()
    };
    let snap = support_snapshot::snapshot(identity).await;
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(snap));
    std::mem::forget(_tx);
    let state = RestState::new(health.clone(), rx.clone(), Arc::new(Metrics::new()), options);
    let shutdown = Shutdown::new();
    tokio::spawn(rest::serve(listener, state, shutdown.clone()));
    Plane { addr, health, shutdown, snapshot: rx }
}

/// A rest plane proxying to `upstream` with this REST_TIMEOUT.
async fn proxy(upstream: SocketAddr, timeout: Duration) -> Plane {
    start(RestOptions { upstream: Some(upstream), timeout, ..Default::default() }).await
}

/// Send a raw request and read the whole reply (the server closes: `Connection: close`).
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .unwrap();
    let text = String::from_utf8_lossy(&reply).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default().to_string();
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await
}

#[tokio::test]
async fn livez_is_independent_of_readiness_and_readyz_follows_the_latches() {
    let p = start(RestOptions::default()).await;
    p.health.ok("listeners");
    p.health.register("broker", "waiting for CONNACK");
    assert_eq!(get(p.addr, "/livez").await.0, 200);

    let (code, _, body) = get(p.addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body.contains("[-]broker pending: waiting for CONNACK") && body.contains("[+]listeners ok"),
        "{body}"
    );
    assert_eq!(get(p.addr, "/readyz?exclude=broker").await.0, 200, "an excluded check is skipped");

    p.health.ok("broker");
    let (code, _, body) = get(p.addr, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (_, _, body) = get(p.addr, "/readyz?verbose").await;
    assert!(body.contains("[+]broker ok") && body.contains("readyz check passed"), "{body}");

    p.health.set("broker", Check::Failed("CONNACK refused".into()));
    assert_eq!(get(p.addr, "/health").await.0, 503);
    p.health.ok("broker");
    let (code, head, body) = get(p.addr, "/health").await;
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "healthy");
    assert!(v["timestamp"].as_f64().unwrap() > 1.7e9);
    assert_eq!(get(p.addr, "/api/status").await.2, r#"{"status":"ok"}"#);

    p.health.start_draining();
    let (code, _, body) = get(p.addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(get(p.addr, "/livez").await.0, 200, "draining is not death");
}

#[tokio::test]
async fn identity_network_and_metrics() {
    let p = start(RestOptions::default()).await;
    let (code, _, body) = get(p.addr, "/v1/identity?nonce=n-42").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["nonce"], "n-42");
    assert_eq!(v["identity"]["instance_id"], "abc123");
    let long = "x".repeat(300);
    assert_eq!(get(p.addr, &format!("/v1/identity?nonce={long}")).await.0, 400);

    let (_, _, body) = get(p.addr, "/v1/network").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["table"]["rows"][0]["plane"], "tcp");
    assert!(v["readiness"].is_object());

    let (code, _, body) = get(p.addr, "/v1/peers").await;
    assert_eq!(code, 503, "no check yet is not an empty answer: {body}");
    assert!(body.contains("no peer check yet") && body.contains("NETSTRAP_LEDGER"), "{body}");
    assert!(p.snapshot.borrow().peers_asked.load(std::sync::atomic::Ordering::Relaxed), "asking starts one");

    let (code, _, body) = get(p.addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("netstrap_http_requests_total{route=\"api\",code=\"200\"}"), "{body}");
    assert!(body.contains("netstrap_connections_total{plane=\"rest\"}"), "{body}");
}

/// A node REST API shaped like EdgeLake 1.4: the command arrives in a header; success is
/// `200` with an empty `text` body; errors put JSON in the reason phrase and send a body
/// that claims chunked framing but is not; every reply closes the connection.
async fn fake_edgelake() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.trim().to_string())
                    })
                };
                if head.split_whitespace().nth(1) == Some("/hang") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                if head.starts_with("GET /stall") {
                    // A head and the first tenth of the body, then nothing.
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                if head.starts_with("GET /echo-forwarded") {
                    // Every forwarding header as the node received it, one per line.
                    let seen: Vec<String> = head
                        .lines()
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            l.starts_with("x-forwarded-for:")
                                || l.starts_with("forwarded:")
                                || l.starts_with("x-real-ip:")
                        })
                        .map(|l| l.to_ascii_lowercase())
                        .collect();
                    let body = seen.join("\n");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                    return;
                }
                let reply = match (header("command"), header("user-agent")) {
                    (Some(cmd), Some(ua)) if ua.starts_with("AnyLog/") && cmd == r#"blockchain get operator where company="Acme Co" and name=op-1"# => {
                        let body = r#"[{"operator": {"name": "op-1", "company": "Acme Co"}}]"#;
                        format!("HTTP/1.1 200 OK\r\nContent-Type: text/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    }
                    _ => "HTTP/1.1 400 {\"method\": \"get\", \"err_code\": 2, \"err_text\": \"Command structure error\"}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{\"err_code\": 2}".to_string(),
                };
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn other_paths_are_proxied_to_the_node_with_headers_intact() {
    let upstream = fake_edgelake().await;
    let p = proxy(upstream, Duration::from_secs(1)).await;
    let (code, _, body) = raw(
        p.addr,
        "GET / HTTP/1.1\r\nHost: x\r\ncommand: blockchain get operator where company=\"Acme Co\" and name=op-1\r\nUser-Agent: AnyLog/1.23\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"op-1\""), "{body}");

    // EdgeLake's error: status and reason phrase survive the broken body.
    let (code, head, body) =
        raw(p.addr, "GET / HTTP/1.1\r\nHost: x\r\ncommand: nonsense\r\nUser-Agent: AnyLog/1.23\r\nConnection: close\r\n\r\n").await;
    assert_eq!(code, 400);
    assert!(head.lines().next().unwrap().contains("Command structure error"), "reason phrase kept: {head}");
    assert!(body.contains("err_code") || body.is_empty(), "{body}");

    let (code, _, body) = get(p.addr, "/hang").await;
    assert_eq!(code, 504, "REST_TIMEOUT bounds a proxied request: {body}");

    let (code, _, body) =
        raw(p.addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(code, 413, "{body}");
    p.shutdown.cancel();
}

#[tokio::test]
async fn without_upstream_other_paths_are_404_and_a_dead_upstream_is_502() {
    let p = start(RestOptions::default()).await;
    let (code, _, body) = get(p.addr, "/query").await;
    assert_eq!(code, 404);
    assert!(body.contains("NETSTRAP_REST_UPSTREAM"), "{body}");

    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let p = start(RestOptions { upstream: Some(dead), ..Default::default() }).await;
    let (code, _, body) = get(p.addr, "/query").await;
    assert_eq!(code, 502);
    assert!(body.contains(&dead.to_string()), "{body}");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let p = start(RestOptions::default()).await;
    assert_eq!(get(p.addr, "/livez").await.0, 200);
    p.shutdown.cancel();
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(p.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener closed after shutdown");
}

/// `/livez` and `/readyz` are answered before the router (the probes' fast path): same
/// answers, same content type, same request metrics; HEAD and other methods still routed.
#[tokio::test]
async fn probes_answer_the_same_on_the_fast_path_and_are_counted() {
    let p = start(RestOptions::default()).await;
    p.health.register("broker", "waiting for CONNACK");
    let (code, head, body) = get(p.addr, "/livez").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; charset=utf-8"), "{head}");
    let (code, _, body) = get(p.addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("[-]broker pending"), "{body}");
    let (code, head, _) = raw(p.addr, "HEAD /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(code, 200, "{head}");
    assert_eq!(
        raw(p.addr, "POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .0,
        405
    );

    let (_, _, metrics) = get(p.addr, "/metrics").await;
    let count = |code: u16| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("netstrap_http_requests_total{{route=\"api\",code=\"{code}\"}} "))
            })
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    // GET /livez and HEAD /livez were 200; /metrics itself is counted after it answers.
    assert_eq!(count(200), 2, "{metrics}");
    assert_eq!(count(503), 1, "{metrics}");
    assert_eq!(count(405), 1, "{metrics}");
}

#[tokio::test]
async fn a_clients_own_forwarding_headers_reach_the_node_only_through_a_trusted_proxy() {
    let upstream = fake_edgelake().await;
    let spoofed = "GET /echo-forwarded HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n";
    let p = start(RestOptions { upstream: Some(upstream), ..Default::default() }).await;
    let (code, _, body) = raw(p.addr, spoofed).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "x-forwarded-for: 127.0.0.1", "the node sees the real peer only");
    p.shutdown.cancel();

    let trusted = start(RestOptions {
        upstream: Some(upstream),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let (_, _, body) = raw(trusted.addr, spoofed).await;
    assert!(
        body.contains("x-forwarded-for: 6.6.6.6") && body.contains("x-forwarded-for: 127.0.0.1"),
        "{body}"
    );
    trusted.shutdown.cancel();
}

#[tokio::test]
async fn a_reply_body_that_stalls_is_cut_off_after_rest_timeout() {
    let upstream = fake_edgelake().await;
    let p = proxy(upstream, Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let (code, _, body) = get(p.addr, "/stall").await;
    assert_eq!(code, 200);
    assert_eq!(body, "0123456789", "what arrived is passed on");
    // Before: the client was held open as long as the node held its side (30 s here).
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    p.shutdown.cancel();
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_accept_and_the_rest_carry_on() {
    let p = start(RestOptions { max_connections: 16, ..Default::default() }).await;
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let closed =
        tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(closed, Ok(0) | Err(_)), "the connection over the limit is closed: {closed:?}");
    drop(idle);
    // Slots come back as connections close.
    let mut answered = false;
    for _ in 0..50 {
        if get(p.addr, "/livez").await.0 == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "served again once the idle connections closed");
    p.shutdown.cancel();
}

#[tokio::test]
async fn a_clients_malformed_body_or_options_star_is_a_400_naming_the_client_not_a_502() {
    let upstream = fake_edgelake().await;
    let p = proxy(upstream, Duration::from_secs(5)).await;
    // "ZZ" is not a chunk size. The node (here: one that never answers) is not to blame.
    let (code, _, body) = raw(
        p.addr,
        "POST /hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("the request body could not be read"), "{body}");
    let (code, _, body) = raw(p.addr, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("asterisk-form"), "{body}");
    p.shutdown.cancel();
}

/// Replies exactly as EdgeLake 1.4.2604's REST server wrote them (captured from a live node:
/// `get xyz`, a GET without a command, the URL form `/?User-Agent=AnyLog/1.23?destination=
/// ...?command=get status`, the same with a `destination` header, `blockchain get operator`):
/// the first three claim `Transfer-Encoding: chunked` and write the body unframed.
const EDGELAKE_HEAD: &str = "Server: BaseHTTP/0.6 Python/3.11.7\r\nDate: Sun, 06 Dec 2026 21:21:30 GMT\r\nContent-Type: text/json\r\nAccess-Control-Allow-Origin: *\r\nVary: Origin\r\nAccess-Control-Expose-Headers: *\r\n";
const EDGELAKE_ERROR: &str =
    r#"{"method": "get", "node": "127.0.0.1", "err_code": 2, "err_text": "Error Command Structure"}"#;
const EDGELAKE_URL_FORM: &str = "\r\n[From Node 127.0.0.1:32048] edgelake-master@127.0.0.1:32048 running";

/// The bytes of EdgeLake's reply to `path`: status line, head, body as the node frames it.
fn edgelake_reply(path: &str) -> Vec<u8> {
    let chunked = "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    match path {
        "/error" => format!("HTTP/1.1 400 {EDGELAKE_ERROR}\r\n{EDGELAKE_HEAD}{chunked}{EDGELAKE_ERROR}"),
        "/empty" => format!("HTTP/1.1 200 OK\r\n{EDGELAKE_HEAD}{chunked}"),
        "/url-form" => format!("HTTP/1.1 200 OK\r\n{EDGELAKE_HEAD}{chunked}{EDGELAKE_URL_FORM}"),
        "/framed" => format!(
            "HTTP/1.1 200 OK\r\n{EDGELAKE_HEAD}{chunked}{:x}\r\n{EDGELAKE_URL_FORM}\r\n0\r\n\r\n",
            EDGELAKE_URL_FORM.len()
        ),
        _ => format!("HTTP/1.1 200 OK\r\n{EDGELAKE_HEAD}Content-Length: 2\r\nConnection: close\r\n\r\n[]"),
    }
    .into_bytes()
}

/// A node that answers every request with [`edgelake_reply`] of its path, then closes.
async fn edgelake_bytes() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                if path == "/echo" {
                    // The request as it arrived, head and body (read until the client's
                    // framing says it is complete), back as a Content-Length body.
                    let lower = text.to_ascii_lowercase();
                    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let complete = |got: &[u8]| match lower.split("content-length: ").nth(1) {
                        Some(v) => {
                            got.len() - end >= v.split("\r\n").next().unwrap().parse::<usize>().unwrap()
                        }
                        None => !lower.contains("chunked") || got.ends_with(b"0\r\n\r\n"),
                    };
                    while !complete(&head) {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len());
                    let _ = s.write_all(&[reply.as_bytes(), &head].concat()).await;
                    return;
                }
                let _ = s.write_all(&edgelake_reply(&path)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A reply read to the close: status line, headers, and the body with its framing checked —
/// `Content-Length` and exactly that many bytes, or chunk framing ending in the last chunk.
async fn framed(addr: SocketAddr, path: &str) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: AnyLog/1.23\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await.expect("in time").unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{path}: no reply head: {:?}", String::from_utf8_lossy(&reply)));
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    let mut raw = &reply[split + 4..];
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    let header = |name: &str| {
        headers.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
        })
    };
    let body = if let Some(len) = header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), raw.len(), "{path}: Content-Length and body: {head}");
        raw.to_vec()
    } else {
        assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"), "{path}: unframed: {head}");
        let mut out = Vec::new();
        loop {
            let end = raw.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap(), 16).unwrap();
            raw = &raw[end + 2..];
            if size == 0 {
                assert_eq!(raw, b"\r\n", "{path}: the last chunk ends the reply");
                break out;
            }
            assert_eq!(&raw[size..size + 2], b"\r\n", "{path}: chunk framing");
            out.extend_from_slice(&raw[..size]);
            raw = &raw[size + 2..];
        }
    };
    (status.to_string(), headers.to_string(), body)
}

/// Issue 16: EdgeLake's errors reached the client with `content-length: 0` and its unframed
/// 2xx bodies as nothing at all, not even a status line. Through netstrap the client now gets
/// the node's status line, headers and body bytes, well framed.
#[tokio::test]
async fn edgelake_replies_pass_through_with_status_reason_and_body_intact() {
    let upstream = edgelake_bytes().await;
    let p = proxy(upstream, Duration::from_secs(5)).await;
    for (path, status, body) in [
        ("/error", format!("HTTP/1.1 400 {EDGELAKE_ERROR}"), EDGELAKE_ERROR),
        ("/empty", "HTTP/1.1 200 OK".to_string(), ""),
        ("/url-form", "HTTP/1.1 200 OK".to_string(), EDGELAKE_URL_FORM),
        ("/framed", "HTTP/1.1 200 OK".to_string(), EDGELAKE_URL_FORM),
        ("/list", "HTTP/1.1 200 OK".to_string(), "[]"),
    ] {
        let (got_status, headers, got_body) = framed(p.addr, path).await;
        assert_eq!(got_status, status, "{path}: the node's status line");
        assert_eq!(String::from_utf8_lossy(&got_body), body, "{path}: the node's body");
        let headers = headers.to_ascii_lowercase();
        assert!(headers.contains("content-type: text/json"), "{path}: the node's headers: {headers}");
        assert!(headers.contains("access-control-allow-origin: *"), "{path}: {headers}");
    }
    p.shutdown.cancel();
}

/// A request body reaches the node as the client framed it: with its `Content-Length`, or
/// chunked; `Expect` and hop-by-hop headers stay with netstrap, `Connection: close` is sent.
#[tokio::test]
async fn a_request_body_reaches_the_node_as_the_client_framed_it() {
    let upstream = edgelake_bytes().await;
    let p = start(RestOptions { upstream: Some(upstream), ..Default::default() }).await;
    let rows = r#"[{"timestamp": "2026-12-02 12:00:00", "value": 1}]"#;
    let (code, _, seen) = raw(
        p.addr,
        &format!(
            "PUT /echo HTTP/1.1\r\nHost: x\r\ntype: json\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{rows}",
            rows.len()
        ),
    )
    .await;
    // hyper answers the client's Expect itself; the node's reply follows.
    assert_eq!(code, 100, "{seen}");
    let (status, seen) = seen.split_once("\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.1 200 OK"), "{status}");
    let (head, body) = seen.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("PUT /echo HTTP/1.1\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("content-length: {}", rows.len())) && lower.contains("type: json"),
        "{head}"
    );
    assert!(lower.contains("connection: close") && !lower.contains("expect:"), "{head}");
    assert_eq!(body, rows);

    let (code, _, seen) = raw(
        p.addr,
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "{seen}");
    let (head, body) = seen.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let body: String = body.split("\r\n").skip(1).step_by(2).collect();
    assert_eq!(body, "hello world", "the chunks' data, in order");
    p.shutdown.cancel();
}
