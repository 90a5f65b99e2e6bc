//! Reverse proxy of every path netstrap does not serve to the node's own REST API
//! (`NETSTRAP_REST_UPSTREAM`). EdgeLake's API is header-based (`command`, `User-Agent`), so
//! headers pass through unchanged except the hop-by-hop ones.
//!
//! EdgeLake answers errors with the message in the status line's reason phrase and a body
//! that claims to be chunked but is not; the reason phrase is passed on, and a body that
//! fails to read after a non-2xx head ends the response instead of failing it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use std::sync::Arc;

use super::RestState;

pub type Client = HyperClient<HttpConnector, Body>;

pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

/// Largest error body kept from the upstream.
const MAX_ERROR_BODY: usize = 1024 * 1024;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for h in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(h);
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message + "\n").into_response()
}

pub async fn forward(State(s): State<RestState>, req: Request) -> Response {
    let Some(upstream) = s.options.upstream else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{} is not a netstrap path and NETSTRAP_REST_UPSTREAM is not set", req.uri().path()),
        );
    };
    let max = s.options.max_body;
    if let Some(len) =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max
    {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes exceeds {max} bytes"),
        );
    }

    if req.uri().path() == "*" {
        // `OPTIONS *` asks about a server, not a resource: there is nothing to forward.
        return error(
            StatusCode::BAD_REQUEST,
            format!("{} * (asterisk-form) is not forwarded: ask about a path", req.method()),
        );
    }
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = match format!("http://{upstream}{path}").parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request target: {e}")),
    };
    let client_ip =
        parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    strip_hop_by_hop(&mut parts.headers);
    // What a client says about where it came from is believed only from a trusted proxy:
    // from anyone else, the node would see a spoofed first address.
    let trusted = client_ip.is_some_and(|ip| s.options.trusted_proxies.iter().any(|net| net.contains(&ip)));
    if !trusted {
        for h in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            parts.headers.remove(h);
        }
    }
    if let Some(ip) = client_ip
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        parts.headers.append("x-forwarded-for", v);
    }
    // A failure reading the client's body (malformed chunks, over the limit, cut short) is the
    // client's error, not the node's: it is kept here to answer 400 instead of 502.
    let client_error = Arc::new(std::sync::OnceLock::new());
    let body = Body::new(ClientBody { body: Limited::new(body, max as usize), error: client_error.clone() });
    let upstream_req = axum::http::Request::from_parts(parts, body);

    let resp = match s.client.request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(why) = client_error.get() {
                return error(StatusCode::BAD_REQUEST, format!("the request body could not be read: {why}"));
            }
            return error(
                StatusCode::BAD_GATEWAY,
                format!("node REST API at {upstream} did not answer: {e}"),
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if parts.status.is_success() {
        // REST_TIMEOUT bounds the wait for the head (`observe`); a body that then stalls is
        // cut off after REST_TIMEOUT without a byte, not held open for ever.
        let idle = s.options.timeout;
        if idle.is_zero() {
            return Response::from_parts(parts, Body::new(body));
        }
        return Response::from_parts(parts, Body::new(IdleBounded::new(body, idle)));
    }
    // Error replies: keep what can be read (EdgeLake's body framing is broken).
    let mut kept = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    kept.extend_from_slice(d);
                    if kept.len() > MAX_ERROR_BODY {
                        kept.truncate(MAX_ERROR_BODY);
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(kept))
}

/// The client's request body, remembering why it failed to read, if it did.
struct ClientBody<B> {
    body: B,
    error: Arc<std::sync::OnceLock<String>>,
}

impl<B> hyper::body::Body for ClientBody<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        std::pin::Pin::new(&mut this.body).poll_frame(cx).map(|frame| {
            frame.map(|f| {
                f.map_err(|e| {
                    let e: Self::Error = e.into();
                    let _ = this.error.set(crate::discover::http::error_chain(&*e));
                    e
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that fails when no frame arrives for `idle` (the client's connection is
/// then closed, as a stalled upstream's would be).
struct IdleBounded<B> {
    body: B,
    idle: std::time::Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleBounded<B> {
    fn new(body: B, idle: std::time::Duration) -> Self {
        IdleBounded { body, idle, timer: Box::pin(tokio::time::sleep(idle)) }
    }
}

impl<B> hyper::body::Body for IdleBounded<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the node's reply stalled: no byte for REST_TIMEOUT={}s",
                    this.idle.as_secs()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
