//! Reverse proxy of every path netstrap does not serve to the node's own REST API
//! (`NETSTRAP_REST_UPSTREAM`). EdgeLake's API is header-based (`command`, `User-Agent`), so
//! headers pass through unchanged except the hop-by-hop ones.
//!
//! A client sees what it would see talking to the node directly: the status, the reason
//! phrase (EdgeLake puts its error JSON there) and the body bytes, in a well-framed reply
//! (`Content-Length` or chunk framing), although EdgeLake frames some of its bodies wrongly
//! ([`super::upstream`] reads them).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{Limited, StreamBody};
use hyper::body::Frame;

use super::RestState;
use super::upstream::{self, SendError};

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
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let client_ip =
        parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    strip_hop_by_hop(&mut parts.headers);
    // hyper has answered the client's `Expect: 100-continue` already; the body is sent as is.
    parts.headers.remove(header::EXPECT);
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
    // client's error, not the node's: 400, not 502.
    let body = Body::new(Limited::new(body, max as usize));
    let (head, reply) = match upstream::send(upstream, &parts.method, &target, &parts.headers, body).await {
        Ok(r) => r,
        Err(SendError::ClientBody(why)) => {
            return error(StatusCode::BAD_REQUEST, format!("the request body could not be read: {why}"));
        }
        Err(SendError::Node(why)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("node REST API at {upstream} did not answer: {why}"),
            );
        }
    };

    let upstream::Head { status, reason, mut headers } = head;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length; the body is framed anew for the client.
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut headers);
    // REST_TIMEOUT bounds the wait for the head (`observe`); a body that then stalls is cut
    // off after REST_TIMEOUT without a byte, not held open for ever.
    let idle = s.options.timeout;
    let body = body_of(reply);
    let mut resp = if idle.is_zero() {
        Response::new(Body::new(body))
    } else {
        Response::new(Body::new(IdleBounded::new(body, idle)))
    };
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if status.canonical_reason().map(str::as_bytes) != Some(&reason[..])
        && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason)
    {
        resp.extensions_mut().insert(phrase);
    }
    resp
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Pieces =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<bytes::Bytes>, BoxError>> + Send>>;

/// The node's reply body as the client's, piece by piece; an error ends it (the client's
/// connection is then closed, as the node's was).
fn body_of(reply: upstream::Reply) -> StreamBody<Pieces> {
    let pieces = futures_util::stream::unfold(Some(reply), |state| async move {
        let mut reply = state?;
        match reply.next().await {
            Ok(Some(data)) => Some((Ok(Frame::data(data)), Some(reply))),
            Ok(None) => None,
            Err(e) => Some((Err(e.into()), None)),
        }
    });
    StreamBody::new(Box::pin(pieces))
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
