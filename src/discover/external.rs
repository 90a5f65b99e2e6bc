//! The external IP: candidates from the ordered source chain (README, "How values are discovered").

use serde::Serialize;

/// Where an external address candidate came from, in chain order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExternalIpSource {
    /// `EXTERNAL_IP` (or `EXTERNAL_DNS` with `ENABLE_DNS`).
    Explicit,
    /// The overlay address (`OVERLAY_IP`, or found by `NETSTRAP_OVERLAY`).
    Overlay,
    /// The Service's `status.loadBalancer.ingress`.
    ServiceIngress,
    /// The Node's `ExternalIP` (then `InternalIP`) address.
    NodeAddress,
    /// AWS instance metadata (IMDSv2) `public-ipv4`.
    Aws,
    /// GCP metadata `access-configs/0/external-ip`.
    Gcp,
    /// Azure IMDS `publicIpAddress`.
    Azure,
    /// A STUN binding response's XOR-MAPPED-ADDRESS.
    Stun,
    /// An HTTP echo service (`NETSTRAP_ECHO_URL`).
    HttpEcho,
    /// Nothing else answered: the local IP, with a warning.
    LocalFallback,
}

/// Whether a candidate is an address that reaches us (ingress) or merely the address our
/// traffic leaves through (egress). Ingress is preferred for advertising.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    Ingress,
    Egress,
}

impl ExternalIpSource {
    pub fn reach(self) -> Reach {
        match self {
            ExternalIpSource::Explicit
            | ExternalIpSource::Overlay
            | ExternalIpSource::ServiceIngress
            | ExternalIpSource::NodeAddress
            | ExternalIpSource::LocalFallback => Reach::Ingress,
            _ => Reach::Egress,
        }
    }
}

/// One answer of the chain: a host (an IP, or a DNS name: a LoadBalancer ingress may be a
/// hostname) and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalCandidate {
    pub host: String,
    pub source: ExternalIpSource,
    pub reach: Reach,
}
