//! The small HTTP/1.1 client the cloud-metadata and HTTP-echo sources share.
//!
//! Plain `http://` only: instance metadata endpoints are link-local plain HTTP, and keeping
//! TLS out of this path keeps the sources small. Responses are read whole, up to
//! [`MAX_BODY`] bytes — every answer these sources expect is one short line. Callers bound
//! the call with [`crate::discover::with_timeout`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::SourceError;

/// Largest response body accepted. An address is a few dozen bytes; anything near this
/// size is not the service the source expects.
pub const MAX_BODY: usize = 64 * 1024;

/// Send one request to `url` with `headers` and read the whole response.
///
/// Transport failures, an `https://` URL and an oversized body are [`SourceError::Failed`];
/// any HTTP status is returned to the caller, which knows what a 404 means for it.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, Bytes), SourceError> {
    let uri: Uri = url.parse().map_err(|e| SourceError::Failed(format!("invalid URL {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(SourceError::Failed(format!(
                "{url}: https is not supported for this source; use an http:// URL \
                 (instance metadata endpoints are plain http)"
            )));
        }
        _ => {
            return Err(SourceError::Failed(format!(
                "invalid URL {url:?}: expected http://host[:port]/path"
            )));
        }
    }
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();

    let mut builder = Request::builder().method(method.clone()).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| SourceError::Failed(format!("{method} {url}: cannot build request: {e}")))?;

    // One-shot client: no idle connections outlive the call (discovery runs rarely).
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Full<Bytes>>();
    let resp = client.request(req).await.map_err(|e| {
        if e.is_connect() {
            SourceError::Failed(format!("cannot connect to {authority}: {}", root_cause(&e)))
        } else {
            SourceError::Failed(format!("{method} {url}: {}", error_chain(&e)))
        }
    })?;

    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                SourceError::Failed(format!(
                    "{method} {url}: response body larger than {MAX_BODY} bytes; \
                     this is not the service expected here"
                ))
            } else {
                SourceError::Failed(format!(
                    "{method} {url}: reading the response: {}",
                    error_chain(e.as_ref())
                ))
            }
        })?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// A short, printable rendering of a body for error messages: what came back, not all of it.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut:?}… ({} bytes)", body.len())
    } else {
        format!("{text:?}")
    }
}

/// `err: its source: its source ...`, the whole chain on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}
