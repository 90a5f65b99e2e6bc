//! Discovery: the environment kind, the local (virtual) IP, the external IP chain, the
//! stable cluster name and the external ports — each with its provenance.

pub mod chain;
pub mod cloud;
pub mod cluster_api;
pub mod dns;
pub mod echo;
pub mod environment;
pub mod external;
pub mod http;
pub mod kubernetes;
pub mod local_ip;
pub mod name;
pub mod overlay;
pub mod stun;

use std::time::Duration;

/// Why a discovery source gave no value. The text is shown to operators in provenance,
/// so it says what happened and, where it can, what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source is off (not configured, or not applicable in this environment).
    #[error("{0}")]
    NotConfigured(String),
    /// The source did not answer within its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The API refused the call (RBAC); degraded, never fatal.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The object asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The source answered, but not with something usable, or the transport failed.
    #[error("{0}")]
    Failed(String),
}

/// Run `fut` with `timeout`, mapping an elapsed timer to [`SourceError::Timeout`].
pub async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Timeout(timeout)),
    }
}

pub use chain::{MachineFacts, discover, discover_with};

use std::net::IpAddr;

use serde::Serialize;

use crate::provenance::Found;
use environment::EnvironmentKind;
use external::ExternalCandidate;

/// The port peers use to reach one plane: inside the cluster (the Service port) and from
/// outside (nodePort, LoadBalancer port, a published port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExposedPort {
    pub cluster: Found<u16>,
    pub external: Found<u16>,
}

/// `LEDGER_CONN`'s host, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerResolution {
    /// The name as given and the port.
    pub given: String,
    pub port: u16,
    /// The name that was looked up (after the search list).
    pub name: String,
    pub resolution: Resolution,
}

/// Where the stable name resolves to, as the cluster resolver answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub addresses: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything discovery found, each value with its provenance. Plain data: the connection
/// table and the policy are computed from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub environment: Found<EnvironmentKind>,
    pub local_ip: Found<IpAddr>,
    /// The overlay address (`OVERLAY_IP`, or found by `NETSTRAP_OVERLAY`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Found<IpAddr>>,
    /// The node's own address (downward API HOST_IP), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Found<IpAddr>>,
    /// The external address chosen for advertising.
    pub external: Found<ExternalCandidate>,
    /// Every candidate the chain produced, in chain order.
    pub candidates: Vec<ExternalCandidate>,
    /// The stable name peers inside the cluster use (the Service FQDN, or `DNS`, ...).
    pub stable_name: Found<String>,
    /// What the stable name resolves to; `None` when it is an IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// This node's Service as the Kubernetes API described it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<kubernetes::ServiceFacts>,
    /// The master's address as given in `LEDGER_CONN`, resolved when it is a name (EdgeLake
    /// reads a destination whose text holds `master`, `operator`, `query` or `publisher` as a
    /// blockchain query, so the node is given the address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerResolution>,
    pub tcp: ExposedPort,
    pub rest: ExposedPort,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<ExposedPort>,
    /// Things an operator should look at; netstrap still runs.
    pub warnings: Vec<String>,
    /// Values that are needed and could not be determined: `netstrap discover` fails.
    pub problems: Vec<String>,
}

impl Discovery {
    /// Whether the external address is one outside peers can dial.
    pub fn advertises_external(&self) -> bool {
        self.external.value.reach == external::Reach::Ingress
            && self.external.value.source != external::ExternalIpSource::LocalFallback
    }
}
