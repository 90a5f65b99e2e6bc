//! netstrap's own endpoints on the rest plane.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use serde_json::json;

use super::RestState;

/// On the rest plane always: kubelet's probes, EdgeLake's health answers, and
/// `/v1/identity`, which self-verification (`crate::verify`) asks through the advertised
/// endpoints — the public ones.
pub fn public() -> axum::Router<RestState> {
    axum::Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/api/status", get(status))
        .route("/v1/identity", get(identity))
}

/// `/metrics` and the rest of `/v1/*`: on the admin listener when there is one, else on the
/// rest plane.
pub fn admin() -> axum::Router<RestState> {
    axum::Router::new()
        .route("/v1/network", get(network))
        .route("/metrics", get(metrics))
        .route("/v1/policy", get(policy))
        .route("/v1/policy/config", get(config_policy))
        .route("/v1/peers", get(peers))
}

/// The rest plane beside an admin listener: what moved there is not found here (nor proxied;
/// `/v1/identity`, routed by [`public`], takes precedence over the wildcard).
pub fn moved() -> axum::Router<RestState> {
    axum::Router::new()
        .route("/metrics", any(not_found))
        .route("/v1", any(not_found))
        .route("/v1/{*rest}", any(not_found))
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n")
        .into_response()
}

/// `/livez`'s body.
pub const LIVEZ: &str = "ok\n";

async fn livez() -> &'static str {
    LIVEZ
}

/// `?verbose` and `?exclude=a&exclude=b` as kube-apiserver takes them.
fn readiness_query(raw: Option<&str>) -> (bool, Vec<String>) {
    let mut verbose = false;
    let mut exclude = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "verbose" => verbose = v != "false" && v != "0",
            "exclude" => exclude.push(v.to_string()),
            _ => {}
        }
    }
    (verbose, exclude)
}

async fn readyz(State(s): State<RestState>, RawQuery(q): RawQuery) -> Response {
    readyz_response(&s, q.as_deref())
}

/// `/readyz` with its query (`?verbose`, `?exclude=`).
pub fn readyz_response(s: &RestState, q: Option<&str>) -> Response {
    let (verbose, exclude) = readiness_query(q);
    let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
    let r = s.health.readiness(&exclude);
    s.metrics.ready.set(i64::from(r.ready));
    let code = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Like kube-apiserver: the check list when asked, and always on failure.
    let mut body = if verbose || !r.ready { r.render() } else { "ok\n".to_string() };
    if verbose {
        // Self-verification per endpoint; it gates readiness only as the `verify` check.
        let snap = s.snapshot.borrow().clone();
        for c in snap.verification.iter() {
            body.push_str(&format!(
                "verify {} {} {}: {}\n",
                c.plane.name(),
                c.endpoint,
                if c.ok { "ok" } else { "failed" },
                c.detail
            ));
        }
    }
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// EdgeLake's `/health` shape; the status follows readiness so an existing probe keeps
/// its meaning.
async fn health(State(s): State<RestState>) -> Response {
    let ready = s.health.readiness(&[]).ready;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let status = if ready { "healthy" } else { "unhealthy" };
    (code, Json(json!({"status": status, "service": "netstrap", "timestamp": now()}))).into_response()
}

async fn status() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn network(State(s): State<RestState>) -> Json<serde_json::Value> {
    let snap = s.snapshot.borrow().clone();
    Json(json!({
        "table": snap.table,
        "discovery": snap.discovery,
        "readiness": s.health.readiness(&[]),
        "verification": snap.verification,
        // NETSTRAP_DECLARE=node: the node's own report and its policy in the registry.
        "node": snap.node,
        "declared": snap.declared,
        "tls": match &s.tls {
            Some(tls) => tls.status(&snap.table),
            None => json!({"enabled": false}),
        },
    }))
}

#[derive(Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn identity(State(s): State<RestState>, Query(q): Query<NonceQuery>) -> Response {
    let nonce = q.nonce.unwrap_or_default();
    if nonce.len() > 256 {
        return (StatusCode::BAD_REQUEST, "nonce longer than 256 bytes\n").into_response();
    }
    let snap = s.snapshot.borrow().clone();
    Json(json!({"nonce": nonce, "identity": snap.identity})).into_response()
}

/// Prometheus text 0.0.4, or OpenMetrics when the `Accept` header prefers it
/// (`crate::metrics::exposition`).
async fn metrics(State(s): State<RestState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = s.metrics.render(accept);
    ([(header::CONTENT_TYPE, content_type), (header::VARY, "accept")], body).into_response()
}

fn not_yet(what: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{what} not rendered yet\n")).into_response()
}

async fn policy(State(s): State<RestState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    match &snap.policy {
        Some(p) => Json(json!({"policy": p, "id": snap.identity.policy_id, "declared": snap.declared}))
            .into_response(),
        None => not_yet("the node policy is"),
    }
}

async fn config_policy(State(s): State<RestState>) -> Response {
    let snap = s.snapshot.borrow().clone();
    match &snap.config_policy {
        Some(p) => Json(p.clone()).into_response(),
        None => not_yet("the config policy is"),
    }
}

async fn peers(State(s): State<RestState>) -> Response {
    let peers = {
        let snapshot = s.snapshot.borrow();
        // The next watch pass checks again.
        snapshot.peers_asked.store(true, std::sync::atomic::Ordering::Relaxed);
        snapshot.peers.clone()
    };
    match peers {
        Some(raw) => {
            ([(axum::http::header::CONTENT_TYPE, "application/json")], raw.get().to_owned()).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no peer check yet: asking starts one at the next watch pass (NETSTRAP_WATCH_INTERVAL), which \
             reads the registry's nodes (NETSTRAP_LEDGER) and dials each\n",
        )
            .into_response(),
    }
}
