//! An HTTP echo service (`NETSTRAP_ECHO_URL`) as an external-IP source: a URL that answers
//! with the caller's address, as plain text (ifconfig.me, checkip) or as a JSON object with
//! an `ip` field (ipify `?format=json`). The answer is an *egress* address.

use std::net::IpAddr;
use std::time::Duration;

use hyper::Method;

use super::http::{excerpt, request};
use super::{SourceError, with_timeout};

/// Ask `url` for our address; the whole call is bounded by `timeout`.
pub async fn http_echo(url: &str, timeout: Duration) -> Result<IpAddr, SourceError> {
    with_timeout(timeout, async {
        // Some echo services answer HTML to browsers; ask for text or JSON explicitly.
        let (status, _, body) =
            request(Method::GET, url, &[("Accept", "text/plain, application/json;q=0.9, */*;q=0.1")]).await?;
        if !status.is_success() {
            return Err(SourceError::Failed(format!(
                "echo service {url} answered HTTP {status}: {}",
                excerpt(&body)
            )));
        }
        parse_echo_body(&body).ok_or_else(|| {
            SourceError::Failed(format!(
                "echo service {url} returned {}, not an IP address \
                 (expected plain text or JSON with an \"ip\" field)",
                excerpt(&body)
            ))
        })
    })
    .await
}

/// The address in an echo body: the trimmed text itself, or the `ip` field of a JSON object.
fn parse_echo_body(body: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    json.get("ip")?.as_str()?.trim().parse().ok()
}
