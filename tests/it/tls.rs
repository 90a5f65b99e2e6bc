//! TLS on the rest and broker planes, end to end: certificates made at test time (a CA and
//! leaves with chosen SANs, by rcgen), `netstrap run` as a process, real TLS clients
//! (tokio-rustls, mosquitto's command-line clients) over real sockets on 127.0.0.1.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstrap::metrics::Metrics;
use netstrap::planes::Shutdown;
use netstrap::planes::broker::{BrokerOptions, mqtt_ping, mqtt_ping_tls, serve_embedded_on, serve_relay_tls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
// `free_port` (support/ports.rs): these tests read the process's log (reloads, SAN warnings, what it refused).
use support::process::{Netstrap, free_port, http_get, run_fails, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(20);

/// A test CA that signs leaves.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate (PEM), its key (PEM) and its DER, to recognise it on the wire.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "netstrap test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki { ca_pem: cert.pem(), ca_der: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    fn leaf(&self, sans: &[&str], serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.serial_number = Some(serial.into());
        params.distinguished_name.push(DnType::CommonName, format!("netstrap test leaf {serial}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().clone() }
    }

    /// A client that trusts only this CA.
    fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Replace `path` atomically (write beside it, rename), as a Secret volume update does.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_pair(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    replace(&cert, &leaf.cert);
    replace(&key, &leaf.key);
    (cert, key)
}

fn tls_env(cert: &Path, key: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("NETSTRAP_TLS_CERT", cert.display().to_string()),
        ("NETSTRAP_TLS_KEY", key.display().to_string()),
        ("NETSTRAP_SHUTDOWN_GRACE", "2".to_string()),
    ]
}

/// A TLS connection to 127.0.0.1:`port`, verifying the certificate for `name`.
async fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .map_err(|_| "no TLS handshake within 5 s".to_string())?
        .map_err(|e| e.to_string())
}

/// The server's leaf certificate on `stream`.
fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("a certificate")[0].clone().into_owned()
}

/// One HTTP/1.1 request on a kept-alive connection: the status and the body.
async fn request(stream: &mut TlsStream<TcpStream>, path: &str) -> Result<(u16, String), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("connection closed after {:?}", String::from_utf8_lossy(&buf)));
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| format!("no content-length in {head:?}"))?;
                if body.len() >= length {
                    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    return Ok((code, body[..length].to_string()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

/// GET over a new TLS connection: status, body and the certificate the server presented.
async fn https_get(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String, CertificateDer<'static>), String> {
    // A full handshake, as a new client makes: a resumed session shows no certificate (rustls
    // reports the one of the session it resumed).
    let mut fresh = (**config).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let mut stream = tls_connect(port, Arc::new(fresh), "localhost").await?;
    let leaf = peer_leaf(&stream);
    let (code, body) = request(&mut stream, path).await?;
    Ok((code, body, leaf))
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready_https(n: &Netstrap, config: &Arc<rustls::ClientConfig>) {
    wait_for("ready over HTTPS", async || {
        https_get(n.rest, config, "/readyz").await.ok().filter(|(c, _, _)| *c == 200)
    })
    .await;
}

async fn network(n: &Netstrap, config: &Arc<rustls::ClientConfig>) -> serde_json::Value {
    let (code, body, _) = https_get(n.rest, config, "/v1/network").await.unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn probe(kind: &str, rest: u16) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["probe", kind])
        .env_clear()
        .env("ANYLOG_REST_PORT", rest.to_string())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// netstrap with TLS on the rest plane only, for a leaf covering localhost and 127.0.0.1.
fn start_rest_tls(dir: &Path, extra: &[(&'static str, String)]) -> (Pki, Leaf, Netstrap) {
    let pki = Pki::new();
    let leaf = pki.leaf(&["localhost", "127.0.0.1"], 1);
    let (cert, key) = write_pair(dir, &leaf);
    let mut env = tls_env(&cert, &key);
    env.push(("NETSTRAP_TLS_PLANES", "rest".into()));
    env.extend(extra.iter().cloned());
    let n = start(&dir.join("state"), &env);
    (pki, leaf, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_plane_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, leaf, n) = start_rest_tls(dir.path(), &[]);
    let client = pki.client(&[b"http/1.1"]);

    let (code, body, presented) =
        wait_for("/livez over HTTPS", async || https_get(n.rest, &client, "/livez").await.ok()).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(presented, leaf.der, "the server presents the configured certificate");
    wait_ready_https(&n, &client).await;

    // Plain HTTP on the same port gets no HTTP answer.
    assert_eq!(http_get(n.rest, "/livez"), None, "plain HTTP must not be served on the TLS port");
    // The certificate is verified for the name dialed: one it does not cover fails.
    let err = tls_connect(n.rest, client.clone(), "other.example").await.unwrap_err();
    assert!(err.contains("NotValidForName") || err.contains("not valid for"), "{err}");

    // `netstrap probe` finds TLS by itself.
    for kind in ["live", "ready"] {
        let (ok, stderr) = probe(kind, n.rest);
        assert!(ok, "netstrap probe {kind} over TLS failed: {stderr}");
    }

    let net = network(&n, &client).await;
    let tls = &net["tls"];
    assert_eq!(tls["enabled"], true, "{tls}");
    assert_eq!(tls["planes"], serde_json::json!(["rest"]));
    assert_eq!(tls["certificate"]["serial"], "01");
    assert_eq!(tls["certificate"]["dns_names"], serde_json::json!(["localhost"]));
    assert_eq!(tls["certificate"]["ip_addresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(tls["missing"], serde_json::json!([]), "127.0.0.1 is advertised and covered: {tls}");

    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("the certificate covers every advertised name"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_plane_serves_mqtt_over_tls_to_mosquitto_clients() {
    for tool in ["mosquitto_sub", "mosquitto_pub"] {
        if let Err(e) = Command::new(tool).arg("--help").output() {
            panic!("{tool} not runnable ({e}): install mosquitto-clients");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(&["localhost", "127.0.0.1"], 7);
    let (cert, key) = write_pair(dir.path(), &leaf);
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let broker = free_port();
    let mut env = tls_env(&cert, &key);
    env.push(("ANYLOG_BROKER_PORT", broker.to_string()));
    let n = start(&dir.path().join("state"), &env);
    let client = pki.client(&[b"http/1.1"]);
    // Ready includes the `broker` check: netstrap's own MQTT ping over TLS got a CONNACK.
    wait_ready_https(&n, &client).await;
    let (_, body, _) = https_get(n.rest, &client, "/readyz?verbose").await.unwrap();
    assert!(body.contains("[+]broker ok"), "{body}");

    let port = broker.to_string();
    let ca = ca.display().to_string();
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile", &ca, "-t", "t", "-C", "1", "-W", "10", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // mosquitto_sub gives no sign on stdout once subscribed: publish (retained) until it exits.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let publish = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "--cafile", &ca, "-t", "t", "-m", "hello", "-q", "1"])
            .output()
            .unwrap();
        assert!(
            publish.status.success(),
            "mosquitto_pub over TLS: {}",
            String::from_utf8_lossy(&publish.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mosquitto_sub received nothing");
    };
    let out = sub.wait_with_output().unwrap();
    assert!(status.success(), "mosquitto_sub over TLS: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // Plain MQTT is refused: no CONNACK without a TLS handshake.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, broker));
    let plain = mqtt_ping(addr, Duration::from_secs(3), None).await;
    assert!(plain.is_err(), "plain MQTT answered on the TLS port");
    let plain_pub = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "plain", "-q", "1"])
        .output()
        .unwrap();
    assert!(!plain_pub.status.success(), "mosquitto_pub without TLS succeeded");
    // A client that trusts the CA pings through TLS, verifying the IP SAN.
    mqtt_ping_tls(addr, Duration::from_secs(5), None, Some(pki.client(&[]))).await.unwrap();

    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_relay_terminates_tls_and_relays_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(&["127.0.0.1"], 3);
    let (cert, key) = write_pair(dir.path(), &leaf);
    let store = netstrap::tls::CertStore::open(netstrap::tls::TlsFiles { cert, key }).unwrap();
    let server = netstrap::tls::server_config(store, &[]).unwrap();

    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    // The node's own broker, plain, on loopback.
    let node = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let node_addr = node.local_addr().unwrap();
    let opts = BrokerOptions { listen: node_addr, ..Default::default() };
    tokio::spawn(serve_embedded_on(node, opts, metrics.clone(), shutdown.clone()));
    // netstrap's relay in front of it, TLS outside.
    let relay = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    tokio::spawn(serve_relay_tls(relay, node_addr, Some(server), metrics, shutdown.clone()));

    wait_for("a CONNACK through the TLS relay", async || {
        mqtt_ping_tls(relay_addr, Duration::from_secs(2), None, Some(pki.client(&[]))).await.ok()
    })
    .await;
    assert!(mqtt_ping(relay_addr, Duration::from_secs(2), None).await.is_err(), "plain MQTT relayed");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_used_for_new_connections_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let first = pki.leaf(&["localhost", "127.0.0.1"], 1);
    let (cert, key) = write_pair(dir.path(), &first);
    let n = start(&dir.path().join("state"), &tls_env(&cert, &key));
    let client = pki.client(&[b"http/1.1"]);
    wait_ready_https(&n, &client).await;

    let mut kept = tls_connect(n.rest, client.clone(), "localhost").await.unwrap();
    assert_eq!(peer_leaf(&kept), first.der);
    assert_eq!(request(&mut kept, "/livez").await.unwrap().0, 200);

    let second = pki.leaf(&["localhost", "127.0.0.1", "reloaded.example"], 2);
    let replaced = Instant::now();
    write_pair(dir.path(), &second);
    let deadline = Instant::now() + WAIT;
    loop {
        if https_get(n.rest, &client, "/livez").await.is_ok_and(|(_, _, leaf)| leaf == second.der) {
            break;
        }
        if Instant::now() > deadline {
            let (_, log) = n.stop();
            panic!("the new certificate was not served within {WAIT:?}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = replaced.elapsed();
    assert!(took < Duration::from_secs(6), "the new certificate took {took:?}");
    eprintln!("new certificate served {took:?} after the files changed");
    // The connection made before the change is unaffected.
    assert_eq!(request(&mut kept, "/livez").await.unwrap().0, 200);
    assert_eq!(peer_leaf(&kept), first.der);
    let net = network(&n, &client).await;
    assert_eq!(net["tls"]["certificate"]["serial"], "02");
    assert_eq!(net["tls"]["certificate"]["dns_names"], serde_json::json!(["localhost", "reloaded.example"]));

    // A broken certificate file: logged, and the last good pair keeps serving.
    replace(&cert, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (code, _, leaf) = https_get(n.rest, &client, "/livez").await.unwrap();
    assert_eq!((code, leaf), (200, second.der.clone()), "the previous certificate must stay in use");

    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("TLS: certificate reloaded"), "{log}");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&format!("TLS certificate file {}", cert.display())))
        .unwrap_or_else(|| panic!("no warning naming {}:\n{log}", cert.display()));
    assert!(warning.contains("keeping the previous certificate (serial 02)"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_name_missing_from_the_certificate_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(&["localhost", "127.0.0.1", "*.covered.example"], 5);
    let (cert, key) = write_pair(dir.path(), &leaf);
    let mut env = tls_env(&cert, &key);
    // The stable name (cluster and, with no external address, external host) is not in the
    // certificate.
    env.push(("DNS", "unlisted.example".into()));
    let n = start(&dir.path().join("state"), &env);
    let client = pki.client(&[b"http/1.1"]);
    wait_ready_https(&n, &client).await;

    let net = network(&n, &client).await;
    let tls = &net["tls"];
    assert_eq!(tls["missing"], serde_json::json!(["rest unlisted.example"]), "{tls}");
    assert_eq!(tls["advertised"][0]["covered"], false, "{tls}");

    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("advertised rest host unlisted.example is not in the certificate's SANs")),
        "{log}"
    );
}

#[test]
fn bad_tls_configuration_stops_netstrap_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pki = Pki::new();
    let a = pki.leaf(&["localhost"], 1);
    let b = pki.leaf(&["localhost"], 2);
    let (cert, key) = write_pair(dir.path(), &a);
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &b.key).unwrap();
    let key_as_cert = dir.path().join("key-as-cert.pem");
    std::fs::write(&key_as_cert, &a.key).unwrap();
    let missing = dir.path().join("missing.crt");
    let path = |p: &Path| p.display().to_string();

    // A certificate without a key.
    let err = run_fails(&state, &[("NETSTRAP_TLS_CERT", path(&cert))]);
    assert!(err.contains("NETSTRAP_TLS_CERT") && err.contains("NETSTRAP_TLS_KEY"), "{err}");
    // A key without a certificate.
    let err = run_fails(&state, &[("NETSTRAP_TLS_KEY", path(&key))]);
    assert!(err.contains("NETSTRAP_TLS_KEY is set but NETSTRAP_TLS_CERT is not"), "{err}");
    // A key that is not the certificate's.
    let err =
        run_fails(&state, &[("NETSTRAP_TLS_CERT", path(&cert)), ("NETSTRAP_TLS_KEY", path(&other_key))]);
    assert!(
        err.contains(&format!(
            "TLS key file {} does not match the certificate in {}",
            path(&other_key),
            path(&cert)
        )),
        "{err}"
    );
    // An unreadable (missing) file.
    let err = run_fails(&state, &[("NETSTRAP_TLS_CERT", path(&missing)), ("NETSTRAP_TLS_KEY", path(&key))]);
    assert!(err.contains(&format!("TLS certificate file {}: cannot read it", path(&missing))), "{err}");
    // A file with no certificate in it.
    let err =
        run_fails(&state, &[("NETSTRAP_TLS_CERT", path(&key_as_cert)), ("NETSTRAP_TLS_KEY", path(&key))]);
    assert!(
        err.contains(&format!("TLS certificate file {}: no certificate in it", path(&key_as_cert))),
        "{err}"
    );
    // A key file with no key in it.
    let err = run_fails(&state, &[("NETSTRAP_TLS_CERT", path(&cert)), ("NETSTRAP_TLS_KEY", path(&cert))]);
    assert!(err.contains(&format!("TLS key file {}: no private key in it", path(&cert))), "{err}");
    // The tcp plane has no TLS; planes need a certificate.
    let err = run_fails(
        &state,
        &[
            ("NETSTRAP_TLS_CERT", path(&cert)),
            ("NETSTRAP_TLS_KEY", path(&key)),
            ("NETSTRAP_TLS_PLANES", "rest,tcp".into()),
        ],
    );
    assert!(err.contains("NETSTRAP_TLS_PLANES") && err.contains("tcp plane cannot use TLS"), "{err}");
    let err = run_fails(&state, &[("NETSTRAP_TLS_PLANES", "rest".into())]);
    assert!(err.contains("NETSTRAP_TLS_PLANES") && err.contains("no certificate is set"), "{err}");
    assert!(!state.join("netstrap.env").exists(), "nothing may be written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_verification_speaks_tls_to_a_tls_rest_plane_and_gates_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, _, n) =
        start_rest_tls(dir.path(), &[("DNS", "127.0.0.1".into()), ("NETSTRAP_VERIFY", "gate".into())]);
    let client = pki.client(&[b"http/1.1"]);
    wait_ready_https(&n, &client).await;
    let (_, body, _) = https_get(n.rest, &client, "/readyz?verbose").await.unwrap();
    assert!(body.contains(&format!("verify rest 127.0.0.1:{} ok", n.rest)), "{body}");
    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("invalid HTTP version"), "plain HTTP was spoken to the TLS port: {log}");
}
