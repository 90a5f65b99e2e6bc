//! Self-verification (README, "Advertising: one identity across restarts"): dial every advertised endpoint — the cluster name
//! and the external address — and prove with a nonce that *this* process answered, not
//! another replica behind the same Service.
//!
//! - rest: `GET /v1/identity?nonce=` must echo the nonce with this process's instance id;
//! - tcp in native mode: the peer protocol's `hello` likewise;
//! - tcp in relay mode and the broker: reachability only (a relay or an MQTT broker cannot
//!   say which replica answered).
//!
//! A Service routes only to ready pods, so verification reports by default and gates
//! readiness only with `NETSTRAP_VERIFY=gate` (then use `publishNotReadyAddresses: true` on
//! the Service, or the first check can never pass).

use std::time::Duration;

use crate::addr::host_port;
use crate::planes::tcp;
use crate::snapshot::Identity;
use crate::table::{ConnectionTable, Plane};

pub use crate::snapshot::EndpointCheck;

/// A fresh random nonce.
fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Check that `answer` (identity + echoed nonce) is this process.
fn judge(me: &Identity, nonce: &str, echoed: &str, answer: &Identity) -> (bool, String) {
    if echoed != nonce {
        return (false, "answered with a different nonce".into());
    }
    if answer.instance_id != me.instance_id {
        return (
            false,
            format!(
                "answered by another instance ({} \"{}\"), not this one ({}): the address reaches a different replica",
                answer.instance_id, answer.name, me.instance_id
            ),
        );
    }
    (true, "answered as this instance".into())
}

/// Why an endpoint gave no HTTP reply to read; the text is the check's reason.
#[derive(Debug, thiserror::Error)]
enum NoReply {
    #[error("{host}: not a TLS server name: {cause}")]
    ServerName { host: String, cause: rustls::pki_types::InvalidDnsNameError },
    #[error("cannot connect to {endpoint}: {cause}")]
    Connect { endpoint: String, cause: std::io::Error },
    #[error("TLS handshake with {endpoint}: {cause}")]
    Handshake { endpoint: String, cause: std::io::Error },
    #[error("{endpoint}: {cause}")]
    Http { endpoint: String, cause: hyper::Error },
    #[error("{path}: not a request path: {cause}")]
    Path { path: String, cause: hyper::http::Error },
    #[error("{endpoint}: reading the reply: {cause}")]
    Body { endpoint: String, cause: Box<dyn std::error::Error + Send + Sync> },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// Plain HTTP, through discovery's client.
    #[error("{0}")]
    Plain(#[from] crate::discover::SourceError),
}

/// `GET path` over TLS on `endpoint`. The chain is not verified (the nonce proves who
/// answered; the SAN check at start covers the names): see [`crate::tls::loopback_client_config`].
async fn https_get(endpoint: &str, path: &str) -> Result<(hyper::StatusCode, bytes::Bytes), NoReply> {
    use http_body_util::BodyExt;
    let host = endpoint.rsplit_once(':').map(|(h, _)| h).unwrap_or(endpoint);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => crate::tls::server_name(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|cause| NoReply::ServerName { host: host.to_string(), cause })?,
    };
    let at = || endpoint.to_string();
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|cause| NoReply::Connect { endpoint: at(), cause })?;
    let connector =
        tokio_rustls::TlsConnector::from(crate::tls::loopback_client_config(&[crate::tls::ALPN_HTTP1]));
    let stream =
        connector.connect(name, tcp).await.map_err(|cause| NoReply::Handshake { endpoint: at(), cause })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|cause| NoReply::Http { endpoint: at(), cause })?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, endpoint)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|cause| NoReply::Path { path: path.to_string(), cause })?;
    let resp = sender.send_request(req).await.map_err(|cause| NoReply::Http { endpoint: at(), cause })?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|cause| NoReply::Body { endpoint: at(), cause })?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

async fn check_rest(me: &Identity, endpoint: &str, tls: bool, timeout: Duration) -> (bool, String) {
    let n = nonce();
    let path = format!("/v1/identity?nonce={n}");
    let reply = if tls {
        match tokio::time::timeout(timeout, https_get(endpoint, &path)).await {
            Ok(r) => r,
            Err(_) => Err(NoReply::Timeout(timeout)),
        }
    } else {
        let url = format!("http://{endpoint}{path}");
        crate::discover::with_timeout(timeout, crate::discover::http::request(hyper::Method::GET, &url, &[]))
            .await
            .map(|(status, _, body)| (status, body))
            .map_err(NoReply::from)
    };
    match reply {
        Ok((status, body)) if status.is_success() => {
            #[derive(serde::Deserialize)]
            struct Reply {
                nonce: String,
                identity: Identity,
            }
            match serde_json::from_slice::<Reply>(&body) {
                Ok(r) => judge(me, &n, &r.nonce, &r.identity),
                Err(_) => (false, "answered, but not with a netstrap identity".into()),
            }
        }
        Ok((status, _)) => (false, format!("answered {status}")),
        Err(e) => (false, e.to_string()),
    }
}

async fn check_tcp(me: &Identity, endpoint: &str, native: bool, timeout: Duration) -> (bool, String) {
    if native {
        let n = nonce();
        return match tcp::hello(endpoint, &n, timeout).await {
            Ok(answer) => judge(me, &n, &n, &answer),
            Err(e) => (false, e.to_string()),
        };
    }
    reachable(endpoint, timeout).await
}

async fn reachable(endpoint: &str, timeout: Duration) -> (bool, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint)).await {
        Ok(Ok(_)) => {
            (true, "reachable (a connection proves the port is open, not which process answered)".into())
        }
        Ok(Err(e)) => (false, format!("cannot connect: {e}")),
        Err(_) => (false, format!("no connection within {timeout:?}")),
    }
}

/// A relayed endpoint serves only while the node behind it accepts: netstrap's listener
/// alone accepts and closes every connection when the node is down.
async fn relayed(endpoint: &str, upstream: std::net::SocketAddr, timeout: Duration) -> (bool, String) {
    let (ok, detail) = reachable(endpoint, timeout).await;
    if !ok {
        return (ok, detail);
    }
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(upstream)).await {
        Ok(Ok(_)) => (
            true,
            format!(
                "reachable, relayed to the node at {upstream} (a relay cannot prove which process answered)"
            ),
        ),
        Ok(Err(e)) => (false, format!("reaches netstrap, but the node behind it refuses: {upstream}: {e}")),
        Err(_) => (
            false,
            format!(
                "reaches netstrap, but the node behind it ({upstream}) does not accept within {timeout:?}"
            ),
        ),
    }
}

/// Verify every advertised endpoint of `table`, concurrently. `relays` are the planes netstrap
/// relays to the node, with the node's address.
pub async fn verify(
    table: &ConnectionTable,
    me: &Identity,
    tcp_native: bool,
    rest_tls: bool,
    timeout: Duration,
    relays: &[(Plane, std::net::SocketAddr)],
) -> Vec<EndpointCheck> {
    let mut targets = Vec::new();
    for row in &table.rows {
        for endpoint in [
            host_port(&row.cluster_host.value, row.cluster_port.value),
            host_port(&row.external_host.value, row.external_port.value),
        ] {
            if !targets.contains(&(row.plane, endpoint.clone())) {
                targets.push((row.plane, endpoint));
            }
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, (plane, endpoint)) in targets.into_iter().enumerate() {
        let me = me.clone();
        let relay = relays.iter().find(|(p, _)| *p == plane).map(|(_, up)| *up);
        set.spawn(async move {
            let (ok, detail) = match (plane, relay) {
                (Plane::Rest, _) => check_rest(&me, &endpoint, rest_tls, timeout).await,
                (Plane::Tcp, None) => check_tcp(&me, &endpoint, tcp_native, timeout).await,
                (_, Some(up)) => relayed(&endpoint, up, timeout).await,
                // The embedded broker: MQTT has no nonce to echo, so an open port is all it shows.
                (Plane::Broker, None) => match reachable(&endpoint, timeout).await {
                    (true, _) => (
                        true,
                        "reachable (the embedded broker accepts; MQTT carries no instance id to check)"
                            .into(),
                    ),
                    failed => failed,
                },
            };
            (i, EndpointCheck { plane, endpoint, ok, detail })
        });
    }
    let mut out: Vec<(usize, EndpointCheck)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, c)| c).collect()
}
