//! Cloud instance metadata as an external-IP source: AWS IMDSv2, GCP and Azure IMDS.
//!
//! Each function asks one metadata service for the instance's public address. The answer is
//! an *egress* address (the 1:1 NAT of the instance), never a pod's. Every call, including
//! both steps of IMDSv2, is bounded by its `timeout`; `base` is the service root so that
//! tests and `NETSTRAP_METADATA_URL` can point elsewhere.

use std::net::IpAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};

use super::http::{excerpt, request};
use super::{SourceError, with_timeout};

/// AWS instance metadata service (IMDS) root.
pub const AWS_METADATA_BASE: &str = "http://169.254.169.254";
/// GCP metadata server root (the link-local address: `metadata.google.internal` needs DNS).
pub const GCP_METADATA_BASE: &str = "http://169.254.169.254";
/// Azure instance metadata service root.
pub const AZURE_METADATA_BASE: &str = "http://169.254.169.254";

/// The hint shown when IMDSv2 refuses a token: the usual causes, and the fix.
const AWS_TOKEN_HINT: &str = "check the instance metadata options: HttpEndpoint enabled, and \
     from a container HttpPutResponseHopLimit >= 2 (aws ec2 modify-instance-metadata-options \
     --http-put-response-hop-limit 2); IMDS also refuses requests carrying X-Forwarded-For";

/// AWS IMDSv2: `PUT /latest/api/token`, then `GET /latest/meta-data/public-ipv4` with it.
pub async fn aws_public_ipv4(base: &str, timeout: Duration) -> Result<IpAddr, SourceError> {
    let base = base.trim_end_matches('/');
    with_timeout(timeout, async {
        let token_url = format!("{base}/latest/api/token");
        let (status, _, body) =
            request(Method::PUT, &token_url, &[("X-aws-ec2-metadata-token-ttl-seconds", "60")]).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(SourceError::Forbidden(format!(
                    "AWS IMDSv2 refused a session token (HTTP {status}) at {token_url}: {AWS_TOKEN_HINT}"
                )));
            }
            _ => return Err(unexpected("AWS IMDSv2 token request", &token_url, status, &body)),
        }
        let token = std::str::from_utf8(&body).map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(SourceError::Failed(format!(
                "AWS IMDSv2 at {token_url} returned an empty or non-text token: {}",
                excerpt(&body)
            )));
        }

        let ip_url = format!("{base}/latest/meta-data/public-ipv4");
        let (status, _, body) = request(Method::GET, &ip_url, &[("X-aws-ec2-metadata-token", token)]).await?;
        match status {
            StatusCode::OK => parse_ip("AWS public-ipv4", &ip_url, &body),
            StatusCode::NOT_FOUND => Err(SourceError::NotFound("instance has no public IPv4 address".into())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(SourceError::Forbidden(format!(
                "AWS IMDS refused the metadata token (HTTP {status}) at {ip_url}"
            ))),
            _ => Err(unexpected("AWS public-ipv4", &ip_url, status, &body)),
        }
    })
    .await
}

/// GCP: the external IP of the first access config of the first network interface.
pub async fn gcp_external_ip(base: &str, timeout: Duration) -> Result<IpAddr, SourceError> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip");
    with_timeout(timeout, async {
        let (status, headers, body) = request(Method::GET, &url, &[("Metadata-Flavor", "Google")]).await?;
        // The real server sets this on every reply; anything else at 169.254.169.254 (another
        // cloud, a proxy's error page) must not be read as GCP's answer.
        let flavor = headers.get("metadata-flavor").and_then(|v| v.to_str().ok());
        if flavor != Some("Google") {
            return Err(SourceError::Failed(format!(
                "{base} answered without the `Metadata-Flavor: Google` header (HTTP {status}): \
                 not a GCP metadata server"
            )));
        }
        match status {
            StatusCode::OK if body.iter().all(u8::is_ascii_whitespace) => {
                Err(SourceError::NotFound("instance has no external IP address".into()))
            }
            StatusCode::OK => parse_ip("GCP external-ip", &url, &body),
            StatusCode::NOT_FOUND => Err(SourceError::NotFound(
                "instance has no external IP address (no access config on nic0)".into(),
            )),
            StatusCode::FORBIDDEN => Err(SourceError::Forbidden(format!(
                "GCP metadata server refused the request (HTTP {status}) at {url}"
            ))),
            _ => Err(unexpected("GCP external-ip", &url, status, &body)),
        }
    })
    .await
}

/// Azure IMDS: the public IP of the first IP configuration of the first interface.
pub async fn azure_public_ip(base: &str, timeout: Duration) -> Result<IpAddr, SourceError> {
    let base = base.trim_end_matches('/');
    let url = format!(
        "{base}/metadata/instance/network/interface/0/ipv4/ipAddress/0/publicIpAddress\
         ?api-version=2021-02-01&format=text"
    );
    with_timeout(timeout, async {
        let (status, _, body) = request(Method::GET, &url, &[("Metadata", "true")]).await?;
        match status {
            StatusCode::OK if body.iter().all(u8::is_ascii_whitespace) => {
                Err(SourceError::NotFound("instance has no public IP address on interface 0".into()))
            }
            StatusCode::OK => parse_ip("Azure publicIpAddress", &url, &body),
            StatusCode::NOT_FOUND => {
                Err(SourceError::NotFound("instance has no public IP address on interface 0".into()))
            }
            StatusCode::FORBIDDEN => Err(SourceError::Forbidden(format!(
                "Azure IMDS refused the request (HTTP {status}) at {url}; IMDS refuses \
                 requests sent through a proxy (X-Forwarded-For)"
            ))),
            _ => Err(unexpected("Azure publicIpAddress", &url, status, &body)),
        }
    })
    .await
}

/// Read a body that should be exactly one IP address (surrounding whitespace allowed).
fn parse_ip(what: &str, url: &str, body: &[u8]) -> Result<IpAddr, SourceError> {
    std::str::from_utf8(body).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
        SourceError::Failed(format!("{what} at {url} returned {}, not an IP address", excerpt(body)))
    })
}

fn unexpected(what: &str, url: &str, status: StatusCode, body: &[u8]) -> SourceError {
    SourceError::Failed(format!("{what} at {url}: unexpected HTTP {status}: {}", excerpt(body)))
}
