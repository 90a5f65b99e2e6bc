//! The network sources of the external-IP chain against real sockets: the STUN codec on the
//! RFC 5769 vectors, the STUN client against UDP responders on 127.0.0.1, and the cloud
//! metadata and HTTP echo sources against HTTP servers shaped like AWS IMDSv2, GCP, Azure
//! IMDS and ipify/ifconfig.me.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use netstrap::discover::SourceError;
use netstrap::discover::cloud::{aws_public_ipv4, azure_public_ip, gcp_external_ip};
use netstrap::discover::echo::http_echo;
use netstrap::discover::stun::{
    MAGIC_COOKIE, StunError, binding_request, first_mapped, mapped_address, parse_binding_response,
};
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, UdpSocket};

// ---------------------------------------------------------------- STUN codec (RFC 5769)

const TXID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

/// RFC 5769 §2.2, sample IPv4 response (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
/// FINGERPRINT).
const RFC5769_IPV4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, //
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, //
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, //
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, //
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3, sample IPv6 response.
const RFC5769_IPV6: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, //
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, //
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, //
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14, //
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75, //
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

const ATTR_MAPPED: u16 = 0x0001;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_XOR_MAPPED: u16 = 0x0020;

/// A STUN message built independently of the code under test.
fn stun_message(msg_type: u16, txid: &[u8; 12], attrs: &[(u16, Vec<u8>)], fingerprint: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.extend(t.to_be_bytes());
        body.extend((v.len() as u16).to_be_bytes());
        body.extend(v);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let len = body.len() + if fingerprint { 8 } else { 0 };
    let mut msg = Vec::new();
    msg.extend(msg_type.to_be_bytes());
    msg.extend((len as u16).to_be_bytes());
    msg.extend(MAGIC_COOKIE.to_be_bytes());
    msg.extend(txid);
    msg.extend(body);
    if fingerprint {
        let crc = crc32fast::hash(&msg) ^ 0x5354_554e;
        msg.extend([0x80, 0x28, 0x00, 0x04]);
        msg.extend(crc.to_be_bytes());
    }
    msg
}

fn xor_mapped(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let mut mask = MAGIC_COOKIE.to_be_bytes().to_vec();
    mask.extend(txid);
    let mut v = vec![0, if addr.is_ipv4() { 1 } else { 2 }];
    v.extend((addr.port() ^ 0x2112).to_be_bytes());
    let ip = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend(ip.iter().zip(&mask).map(|(b, m)| b ^ m));
    v
}

#[test]
fn rfc5769_vectors_fingerprints_are_the_published_crcs() {
    // Guards the copied bytes: the last 4 bytes are CRC-32 of the rest XOR 0x5354554e.
    for v in [&RFC5769_IPV4[..], &RFC5769_IPV6[..]] {
        let (covered, fp) = v.split_at(v.len() - 4);
        let crc = crc32fast::hash(&covered[..covered.len() - 4]) ^ 0x5354_554e;
        assert_eq!(fp, crc.to_be_bytes());
    }
}

#[test]
fn rfc5769_ipv4_response_gives_192_0_2_1_port_32853() {
    let addr = parse_binding_response(&RFC5769_IPV4, &TXID).unwrap();
    assert_eq!(addr, "192.0.2.1:32853".parse().unwrap());
}

#[test]
fn rfc5769_ipv6_response_gives_the_documented_address() {
    let addr = parse_binding_response(&RFC5769_IPV6, &TXID).unwrap();
    assert_eq!(addr, "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap());
}

#[test]
fn a_byte_flipped_under_the_fingerprint_is_rejected() {
    // Byte 24 is inside SOFTWARE, which the parser otherwise ignores: only FINGERPRINT
    // can notice.
    let mut v = RFC5769_IPV4;
    v[24] ^= 0x01;
    assert!(matches!(parse_binding_response(&v, &TXID), Err(StunError::FingerprintMismatch { .. })));
    let mut v = RFC5769_IPV6;
    v[45] ^= 0x80; // inside the XOR-MAPPED-ADDRESS
    assert!(matches!(parse_binding_response(&v, &TXID), Err(StunError::FingerprintMismatch { .. })));
}

#[test]
fn every_flipped_byte_and_every_prefix_of_the_vectors_is_an_error_not_a_panic() {
    for v in [&RFC5769_IPV4[..], &RFC5769_IPV6[..]] {
        for len in 0..v.len() {
            assert!(parse_binding_response(&v[..len], &TXID).is_err(), "prefix of {len} bytes");
        }
        // Except the FINGERPRINT type itself: flipped, it is an unknown attribute and the
        // message is a valid one without a fingerprint.
        for i in (0..v.len()).filter(|i| !(v.len() - 8..v.len() - 6).contains(i)) {
            let mut bad = v.to_vec();
            bad[i] ^= 0xff;
            assert!(parse_binding_response(&bad, &TXID).is_err(), "byte {i} flipped");
        }
    }
}

#[test]
fn random_garbage_behind_a_valid_header_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5389);
    for _ in 0..20_000 {
        let n = rng.random_range(0..120usize) & !3;
        let body: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let mut msg = stun_message(0x0101, &TXID, &[], false);
        msg[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        msg.extend(&body);
        let _ = parse_binding_response(&msg, &TXID);
        let raw: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        assert!(parse_binding_response(&raw, &TXID).is_err());
    }
}

#[test]
fn another_transaction_is_not_our_answer() {
    let mut other = TXID;
    other[0] ^= 1;
    assert_eq!(parse_binding_response(&RFC5769_IPV4, &other), Err(StunError::TransactionMismatch));
}

#[test]
fn xor_mapped_address_wins_over_mapped_address() {
    let nat_rewritten = vec![0, 1, 0x00, 0x50, 10, 0, 0, 1];
    let real: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let msg = stun_message(
        0x0101,
        &TXID,
        &[(ATTR_MAPPED, nat_rewritten.clone()), (ATTR_XOR_MAPPED, xor_mapped(real, &TXID))],
        true,
    );
    assert_eq!(parse_binding_response(&msg, &TXID), Ok(real));
    // Alone, MAPPED-ADDRESS is used (an RFC 3489 server).
    let msg = stun_message(0x0101, &TXID, &[(ATTR_MAPPED, nat_rewritten)], false);
    assert_eq!(parse_binding_response(&msg, &TXID), Ok("10.0.0.1:80".parse().unwrap()));
}

#[test]
fn an_error_response_reports_code_and_reason() {
    let mut v = vec![0, 0, 4, 20];
    v.extend(b"Unknown Attribute");
    let msg = stun_message(0x0111, &TXID, &[(ATTR_ERROR_CODE, v)], true);
    assert_eq!(
        parse_binding_response(&msg, &TXID),
        Err(StunError::ErrorResponse { code: 420, reason: "Unknown Attribute".into() })
    );
}

#[test]
fn binding_request_is_a_bare_rfc5389_header() {
    let req = binding_request(TXID);
    assert_eq!(req[..4], [0x00, 0x01, 0x00, 0x00]);
    assert_eq!(req[4..8], [0x21, 0x12, 0xa4, 0x42]);
    assert_eq!(req[8..], TXID);
}

// ---------------------------------------------------------------- STUN client

/// What a fake STUN server does with Binding requests.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Ignore the first `drop_first` requests, then answer; precede the answer with a
    /// datagram for another transaction, which the client must ignore.
    Answer {
        drop_first: usize,
    },
    Silent,
}

struct FakeStun {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    answered: tokio::sync::mpsc::UnboundedReceiver<SocketAddr>,
}

async fn fake_stun(behaviour: Behaviour) -> FakeStun {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let (tx, answered) = tokio::sync::mpsc::unbounded_channel();
    let count = requests.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let req = &buf[..n];
            let is_binding = n == 20 && req[..4] == [0, 1, 0, 0] && req[4..8] == MAGIC_COOKIE.to_be_bytes();
            if !is_binding {
                continue;
            }
            let seen = count.fetch_add(1, Ordering::SeqCst) + 1;
            let Behaviour::Answer { drop_first } = behaviour else { continue };
            if seen <= drop_first {
                continue;
            }
            let txid: [u8; 12] = req[8..20].try_into().unwrap();
            let mut stray = txid;
            stray[11] ^= 0xff;
            let noise = stun_message(0x0101, &stray, &[(ATTR_XOR_MAPPED, xor_mapped(peer, &stray))], true);
            let answer = stun_message(0x0101, &txid, &[(ATTR_XOR_MAPPED, xor_mapped(peer, &txid))], true);
            let _ = socket.send_to(&noise, peer).await;
            let _ = socket.send_to(&answer, peer).await;
            let _ = tx.send(peer);
        }
    });
    FakeStun { addr, requests, answered }
}

#[tokio::test]
async fn stun_returns_the_address_the_server_saw() {
    let mut server = fake_stun(Behaviour::Answer { drop_first: 0 }).await;
    let mapped = mapped_address(&server.addr.to_string(), Duration::from_secs(2)).await.unwrap();
    let seen = server.answered.recv().await.unwrap();
    assert_eq!(mapped, seen);
    assert_eq!(mapped.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_ne!(mapped.port(), server.addr.port());
}

#[tokio::test]
async fn stun_retransmits_until_the_server_answers() {
    let server = fake_stun(Behaviour::Answer { drop_first: 2 }).await;
    let started = Instant::now();
    let mapped = mapped_address(&server.addr.to_string(), Duration::from_secs(2)).await.unwrap();
    assert_eq!(mapped.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    // 100 ms then 200 ms of RTO before the third request.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_stun_server_costs_no_more_than_the_timeout() {
    let server = fake_stun(Behaviour::Silent).await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = mapped_address(&server.addr.to_string(), timeout).await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(SourceError::Timeout(timeout)));
    assert!(elapsed >= timeout && elapsed < timeout + Duration::from_millis(150), "{elapsed:?}");
    assert!(server.requests.load(Ordering::SeqCst) >= 2, "no retransmission");
}

#[tokio::test]
async fn first_mapped_skips_failing_servers_and_names_each_failure() {
    let silent = fake_stun(Behaviour::Silent).await;
    let good = fake_stun(Behaviour::Answer { drop_first: 0 }).await;
    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let t = Duration::from_millis(300);

    let servers = vec![silent.addr.to_string(), good.addr.to_string()];
    let found = first_mapped(&servers, t).await.unwrap();
    assert_eq!(found.server, good.addr.to_string());
    assert_eq!(found.address.ip(), IpAddr::from([127, 0, 0, 1]));

    let servers = vec![silent.addr.to_string(), closed.to_string()];
    let Err(SourceError::Failed(text)) = first_mapped(&servers, t).await else { panic!("expected Failed") };
    assert!(text.contains(&format!("{}: no answer within 300ms", silent.addr)), "{text}");
    assert!(text.contains(&closed.to_string()) && text.contains("refused"), "{text}");

    assert!(matches!(first_mapped(&[], t).await, Err(SourceError::NotConfigured(_))));
}

// ---------------------------------------------------------------- HTTP fakes

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Accepts connections and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, [("content-type", "text/plain")], body.to_string()).into_response()
}

const AWS_TOKEN: &str = "AQAEAFakeTokenForTests==";

/// IMDSv2 with HttpTokens=required: a token from PUT (TTL header mandatory), then GETs
/// carrying it; anything else is 401.
async fn fake_aws(public_ip: Option<&'static str>, token_status: StatusCode) -> String {
    let router = Router::new()
        .route(
            "/latest/api/token",
            put(move |headers: HeaderMap| async move {
                let ttl = headers
                    .get("x-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
                match ttl {
                    _ if token_status != StatusCode::OK => text(token_status, ""),
                    Some(1..=21600) => text(StatusCode::OK, AWS_TOKEN),
                    _ => text(StatusCode::BAD_REQUEST, "Bad Request"),
                }
            }),
        )
        .route(
            "/latest/meta-data/public-ipv4",
            get(move |headers: HeaderMap| async move {
                if headers.get("x-aws-ec2-metadata-token").is_none_or(|t| t != AWS_TOKEN) {
                    return text(StatusCode::UNAUTHORIZED, "");
                }
                match public_ip {
                    Some(ip) => text(StatusCode::OK, ip),
                    None => text(StatusCode::NOT_FOUND, "<html><body>404 - Not Found</body></html>"),
                }
            }),
        );
    serve(router).await
}

const GCP_PATH: &str = "/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip";

/// The GCP metadata server: requires `Metadata-Flavor: Google`, and says so on every reply
/// (unless `lookalike`, a server at the same path that is not GCP's).
async fn fake_gcp(ip: &'static str, lookalike: bool) -> String {
    let router = Router::new().route(
        GCP_PATH,
        get(move |headers: HeaderMap| async move {
            let mut resp = if headers.get("metadata-flavor").is_some_and(|v| v == "Google") {
                text(StatusCode::OK, ip)
            } else {
                text(StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.")
            };
            if !lookalike {
                resp.headers_mut().insert("metadata-flavor", "Google".parse().unwrap());
            }
            resp
        }),
    );
    serve(router).await
}

/// Azure IMDS: requires `Metadata: true` and an api-version.
async fn fake_azure(body: &'static str) -> String {
    let router = Router::new().route(
        "/metadata/instance/network/interface/0/ipv4/ipAddress/0/publicIpAddress",
        get(move |headers: HeaderMap, uri: axum::http::Uri| async move {
            let query = uri.query().unwrap_or("");
            if headers.get("metadata").is_none_or(|v| v != "true") || !query.contains("api-version=") {
                return text(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"Bad request. Required metadata header not specified"}"#,
                );
            }
            text(StatusCode::OK, body)
        }),
    );
    serve(router).await
}

async fn fake_echo(status: StatusCode, body: String) -> String {
    serve(Router::new().route("/", get(move || async move { (status, body).into_response() }))).await
}

const T: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- cloud metadata

#[tokio::test]
async fn aws_imdsv2_gives_the_public_ipv4() {
    let base = fake_aws(Some("203.0.113.10"), StatusCode::OK).await;
    // The fake is IMDSv2-only: a GET without a token is refused, as on a hardened instance.
    let url = format!("{base}/latest/meta-data/public-ipv4");
    let (status, _, _) = netstrap::discover::http::request(hyper::Method::GET, &url, &[]).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(aws_public_ipv4(&base, T).await, Ok("203.0.113.10".parse().unwrap()));
}

#[tokio::test]
async fn aws_instance_without_public_ip_is_not_found() {
    let base = fake_aws(None, StatusCode::OK).await;
    assert_eq!(
        aws_public_ipv4(&base, T).await,
        Err(SourceError::NotFound("instance has no public IPv4 address".into()))
    );
}

#[tokio::test]
async fn aws_token_refused_is_forbidden_with_the_hop_limit_hint() {
    let base = fake_aws(Some("203.0.113.10"), StatusCode::FORBIDDEN).await;
    let Err(SourceError::Forbidden(text)) = aws_public_ipv4(&base, T).await else {
        panic!("expected Forbidden")
    };
    assert!(text.contains("HttpPutResponseHopLimit"), "{text}");
}

#[tokio::test]
async fn a_metadata_server_that_never_answers_times_out_within_the_bound() {
    let base = black_hole().await;
    let timeout = Duration::from_millis(300);
    for source in ["aws", "gcp", "azure"] {
        let started = Instant::now();
        let result = match source {
            "aws" => aws_public_ipv4(&base, timeout).await,
            "gcp" => gcp_external_ip(&base, timeout).await,
            _ => azure_public_ip(&base, timeout).await,
        };
        let elapsed = started.elapsed();
        assert_eq!(result, Err(SourceError::Timeout(timeout)), "{source}");
        assert!(elapsed < timeout + Duration::from_millis(150), "{source}: {elapsed:?}");
    }
}

#[tokio::test]
async fn gcp_metadata_gives_the_external_ip() {
    let base = fake_gcp("34.118.2.5", false).await;
    assert_eq!(gcp_external_ip(&base, T).await, Ok("34.118.2.5".parse().unwrap()));
}

#[tokio::test]
async fn gcp_instance_without_external_ip_is_not_found() {
    let base = fake_gcp("", false).await;
    assert!(matches!(gcp_external_ip(&base, T).await, Err(SourceError::NotFound(_))));
}

#[tokio::test]
async fn a_gcp_lookalike_without_the_flavor_header_is_rejected() {
    let base = fake_gcp("34.118.2.5", true).await;
    let Err(SourceError::Failed(text)) = gcp_external_ip(&base, T).await else { panic!("expected Failed") };
    assert!(text.contains("Metadata-Flavor") && text.contains("not a GCP metadata server"), "{text}");
}

#[tokio::test]
async fn azure_imds_gives_the_public_ip() {
    let base = fake_azure("20.51.7.99").await;
    assert_eq!(azure_public_ip(&base, T).await, Ok("20.51.7.99".parse().unwrap()));
    let base = fake_azure("").await;
    assert!(matches!(azure_public_ip(&base, T).await, Err(SourceError::NotFound(_))));
}

#[tokio::test]
async fn a_metadata_body_that_is_not_an_ip_is_named_in_the_error() {
    let base = fake_azure("<html>captive portal</html>").await;
    let Err(SourceError::Failed(text)) = azure_public_ip(&base, T).await else { panic!("expected Failed") };
    assert!(text.contains("<html>captive portal</html>") && text.contains("not an IP"), "{text}");
}

#[tokio::test]
async fn https_is_refused_with_advice() {
    let Err(SourceError::Failed(text)) = http_echo("https://ifconfig.me/ip", T).await else {
        panic!("expected Failed")
    };
    assert!(text.contains("https is not supported") && text.contains("http://"), "{text}");
}

// ---------------------------------------------------------------- HTTP echo

#[tokio::test]
async fn echo_plain_text_and_json_forms() {
    let plain = fake_echo(StatusCode::OK, "198.51.100.23\n".into()).await;
    assert_eq!(http_echo(&plain, T).await, Ok("198.51.100.23".parse().unwrap()));
    let json = fake_echo(StatusCode::OK, r#"{"ip":"2001:db8::23"}"#.into()).await;
    assert_eq!(http_echo(&json, T).await, Ok("2001:db8::23".parse().unwrap()));
}

#[tokio::test]
async fn echo_garbage_non_2xx_and_oversized_bodies_are_errors() {
    let garbage = fake_echo(StatusCode::OK, "hello from nginx".into()).await;
    let Err(SourceError::Failed(text)) = http_echo(&garbage, T).await else { panic!("expected Failed") };
    assert!(text.contains("hello from nginx"), "{text}");

    let down = fake_echo(StatusCode::SERVICE_UNAVAILABLE, "busy".into()).await;
    let Err(SourceError::Failed(text)) = http_echo(&down, T).await else { panic!("expected Failed") };
    assert!(text.contains("503"), "{text}");

    let huge = fake_echo(StatusCode::OK, "1".repeat(100 * 1024)).await;
    let Err(SourceError::Failed(text)) = http_echo(&huge, T).await else { panic!("expected Failed") };
    assert!(text.contains("larger than"), "{text}");
}

#[tokio::test]
async fn echo_nobody_listening_says_cannot_connect() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let Err(SourceError::Failed(text)) = http_echo(&format!("http://{closed}/"), T).await else {
        panic!("expected Failed")
    };
    assert!(text.contains(&format!("cannot connect to {closed}")), "{text}");
}
