//! The rest plane: netstrap's HTTP API (README, "What `netstrap run` serves") and a reverse proxy to the node's own
//! REST API for every other path.
//!
//! | Path | Answer |
//! |---|---|
//! | `GET /livez` | 200 `ok` while the process runs (depends on nothing outside it) |
//! | `GET /readyz` | 200 when every readiness check passes and not draining, else 503; `?verbose` lists the checks, `?exclude=<check>` skips one |
//! | `GET /health`, `GET /api/status` | EdgeLake's probe answers (`{"status": "healthy", ...}`, `{"status": "ok"}`) |
//! | `GET /v1/network` | the connection table, the discovery behind it and readiness |
//! | `GET /v1/identity?nonce=` | this node's identity and the nonce (self-verification) |
//! | `GET /metrics` | Prometheus text 0.0.4, OpenMetrics when `Accept` asks for it |
//! | anything else | proxied to `NETSTRAP_REST_UPSTREAM`, else 404 |
//!
//! With `NETSTRAP_ADMIN_ADDR` set, `/metrics` and `/v1/*` but `/v1/identity` move to that
//! listener ([`Endpoints`]) and answer 404 here; the probes and `/v1/identity` (which
//! self-verification asks through the public endpoints) stay.
//!
//! Connections are served by hyper directly (not `axum::serve`) so the header-read time and
//! header size are bounded and shutdown is graceful.
//!
//! With TLS on for this plane (`NETSTRAP_TLS_PLANES`), every connection on the listener is
//! TLS (ALPN `http/1.1`); plain HTTP is not served there. The handshake runs on the
//! connection's own task, bounded by the header-read timeout.

mod api;
mod proxy;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::{Shutdown, SnapshotRx};
use crate::health::Health;
use crate::metrics::{Metrics, RequestLabel, RouteLabel};
use crate::table::Plane;

/// Settings of the rest plane.
#[derive(Clone, Debug)]
pub struct RestOptions {
    /// The node's own REST API; paths netstrap does not serve go there.
    pub upstream: Option<SocketAddr>,
    /// `REST_TIMEOUT`: bounds a whole request (zero = no limit).
    pub timeout: Duration,
    /// Time allowed to send the request headers (slow clients are cut off).
    pub header_read_timeout: Duration,
    /// Largest request body accepted (413 above).
    pub max_body: u64,
    /// Largest request head (431 above).
    pub max_header_bytes: usize,
    /// Serve HTTPS only, with this configuration (see `crate::tls`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Peers whose `X-Forwarded-For` is kept and appended to (`NETSTRAP_TRUSTED_PROXIES`);
    /// from anyone else it is replaced by the peer's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Concurrent connections, over all event loops (`NETSTRAP_REST_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Which of netstrap's endpoints this listener serves.
    pub endpoints: Endpoints,
}

/// Which endpoints a listener serves (`NETSTRAP_ADMIN_ADDR`, README "Metrics and the admin
/// listener").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Endpoints {
    /// The rest plane without an admin listener: everything, the rest proxied.
    #[default]
    All,
    /// The rest plane beside an admin listener: the probes, EdgeLake's health answers and
    /// `/v1/identity`; `/metrics` and the rest of `/v1/*` answer 404 (they are not proxied
    /// either); the rest proxied.
    Public,
    /// The admin listener: `/metrics`, `/v1/*` and the probes; 404 for anything else
    /// (nothing is proxied).
    Admin,
}

/// `NETSTRAP_REST_MAX_CONNECTIONS` by default: ~45 MiB of idle connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = crate::config::DEFAULT_REST_MAX_CONNECTIONS;

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            upstream: None,
            timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_body: 16 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            tls: None,
            trusted_proxies: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            endpoints: Endpoints::All,
        }
    }
}

/// Everything the handlers share: one `Arc`, since axum clones the state for the middleware
/// and for every handler of every request (a struct of several `Arc`s cost ~12 % of the CPU
/// of a `/livez` load in atomic reference counting between the workers).
#[derive(Clone)]
pub struct RestState(Arc<Shared>);

/// What [`RestState`] holds.
#[derive(Clone)]
pub struct Shared {
    pub health: Health,
    pub snapshot: SnapshotRx,
    pub metrics: Arc<Metrics>,
    pub options: Arc<RestOptions>,
    /// The TLS setup, for the `tls` object of `/v1/network` (`None`: TLS is off).
    pub tls: Option<crate::tls::Tls>,
    /// One permit per open connection, shared by every event loop.
    connections: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for RestState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl RestState {
    pub fn new(
        health: Health,
        snapshot: SnapshotRx,
        metrics: Arc<Metrics>,
        options: RestOptions,
    ) -> RestState {
        RestState(Arc::new(Shared {
            health,
            snapshot,
            metrics,
            connections: Arc::new(tokio::sync::Semaphore::new(options.max_connections)),
            options: Arc::new(options),
            tls: None,
        }))
    }

    /// Report `tls` in `/v1/network`.
    pub fn with_tls(self, tls: Option<crate::tls::Tls>) -> RestState {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.tls = tls;
        RestState(Arc::new(shared))
    }
}

/// The router, for serving and for tests.
pub fn router(state: RestState) -> axum::Router {
    let routes = match state.options.endpoints {
        Endpoints::All => api::public().merge(api::admin()).fallback(proxy::forward),
        Endpoints::Public => api::public().merge(api::moved()).fallback(proxy::forward),
        Endpoints::Admin => api::public().merge(api::admin()).fallback(api::not_found),
    };
    routes.layer(axum::middleware::from_fn_with_state(state.clone(), observe)).with_state(state)
}

/// Bound every proxied request by `REST_TIMEOUT`, count every request by route and status and
/// observe its latency (request head to response head) by route.
/// netstrap's own endpoints answer from memory without waiting on anything, so they are not
/// given a timer (one per request was measurable under load).
async fn observe(State(s): State<RestState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = if req.extensions().get::<MatchedPath>().is_some() { "api" } else { "proxy" };
    let limit = s.options.timeout;
    let resp = if limit.is_zero() || route == "api" {
        next.run(req).await
    } else {
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                (StatusCode::GATEWAY_TIMEOUT, format!("no answer within REST_TIMEOUT={}s\n", limit.as_secs()))
                    .into_response()
            }
        }
    };
    s.metrics.http_requests.get_or_create(&RequestLabel { route, code: resp.status().as_u16() }).inc();
    s.metrics.http_duration.get_or_create(&RouteLabel { route }).observe(started.elapsed().as_secs_f64());
    resp
}

/// Serve the rest plane with `loops` event loops until `shutdown` (then in-flight requests
/// finish; the caller bounds that with its grace period).
///
/// Like nginx's worker processes: the calling task runs one loop, and each further loop is a
/// thread of its own (named `netstrap-rest`) with a single-threaded runtime, every loop
/// accepting from the same listening socket and serving its connections itself. One
/// work-stealing runtime with `loops` workers spent ~20 % of a saturated plane's CPU handing
/// connections between its workers (`/livez` with wrk: 0.75× nginx with two workers, 1.0× with
/// one); see docs/benchmarks.md. A loop that cannot start is logged; the others serve.
pub async fn serve_loops(
    listener: std::net::TcpListener,
    state: RestState,
    shutdown: Shutdown,
    loops: usize,
) {
    let mut finished = Vec::new();
    for i in 1..loops.max(1) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let started = listener.try_clone().and_then(|listener| {
            let (state, shutdown) = (state.clone(), shutdown.clone());
            std::thread::Builder::new().name("netstrap-rest".into()).spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                match runtime {
                    Ok(rt) => rt.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => serve(listener, state, shutdown).await,
                            Err(e) => tracing::warn!(error = %e, "rest: event loop {i} cannot listen"),
                        }
                    }),
                    Err(e) => tracing::warn!(error = %e, "rest: event loop {i} cannot start its runtime"),
                }
                let _ = tx.send(());
            })
        });
        match started {
            Ok(_) => finished.push(rx),
            Err(e) => tracing::warn!(error = %e, "rest: cannot start event loop {i}"),
        }
    }
    match TcpListener::from_std(listener) {
        Ok(listener) => serve(listener, state, shutdown).await,
        Err(e) => tracing::warn!(error = %e, "rest: event loop 0 cannot listen"),
    }
    for rx in finished {
        let _ = rx.await;
    }
}

static ACCEPT_FAILED: crate::logging::Throttle = crate::logging::Throttle::new(Duration::from_secs(10));
static OVER_LIMIT: crate::logging::Throttle = crate::logging::Throttle::new(Duration::from_secs(10));

/// Serve the rest plane on `listener` until `shutdown`, then let in-flight requests finish
/// (the caller bounds that with its grace period).
pub async fn serve(listener: TcpListener, state: RestState, shutdown: Shutdown) {
    let metrics = state.metrics.clone();
    let options = state.options.clone();
    let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    if let Some(suppressed) = ACCEPT_FAILED.allow() {
                        tracing::warn!(error = %e, suppressed, "rest: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = state.connections.clone().try_acquire_owned() else {
            if let Some(suppressed) = OVER_LIMIT.allow() {
                tracing::warn!(
                    %peer,
                    suppressed,
                    max = options.max_connections,
                    "rest: connection limit reached (NETSTRAP_REST_MAX_CONNECTIONS); closing the new connection"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let guard = (metrics.connection(Plane::Rest), permit);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(options.max_header_bytes.max(8192));
        // The client address, for X-Forwarded-For on proxied requests.
        let routed = TowerToHyperService::new(app.clone().map_request(
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let ok = metrics.http_requests.get_or_create(&RequestLabel { route: "api", code: 200 }).clone();
        let service = Probes { state: state.clone(), routed, ok };
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "rest: connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let shutdown = shutdown.clone();
                let limit = options.header_read_timeout;
                tokio::spawn(async move {
                    let _guard = guard;
                    let handshake = tokio::time::timeout(limit, acceptor.accept(stream));
                    let stream = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "rest: TLS handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "rest: no TLS handshake within {limit:?}"),
                        },
                    };
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "rest: connection ended with an error");
                    }
                });
            }
        }
    }
    graceful.shutdown().await;
}

/// kubelet's probes, `GET /livez` and `GET /readyz`, answered before the router: the same
/// answers and the same request metrics as through it, without its per-request layers (they
/// were most of netstrap's user-space CPU per probe). Everything else goes to `routed`.
#[derive(Clone)]
struct Probes<S> {
    state: RestState,
    routed: S,
    /// The counter of `route="api",code="200"`, looked up once per connection.
    ok: prometheus_client::metrics::counter::Counter,
}

impl<S> hyper::service::Service<Request<hyper::body::Incoming>> for Probes<S>
where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        use futures_util::future::Either;
        if req.method() == axum::http::Method::GET {
            let resp = match req.uri().path() {
                "/livez" => Some(
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], api::LIVEZ)
                        .into_response(),
                ),
                "/readyz" => Some(api::readyz_response(&self.state, req.uri().query())),
                _ => None,
            };
            if let Some(resp) = resp {
                match resp.status() {
                    StatusCode::OK => self.ok.inc(),
                    other => {
                        let label = RequestLabel { route: "api", code: other.as_u16() };
                        self.state.metrics.http_requests.get_or_create(&label).inc()
                    }
                };
                return Either::Left(std::future::ready(Ok(resp)));
            }
        }
        Either::Right(self.routed.call(req))
    }
}
