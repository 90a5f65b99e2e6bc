//! The closed sets of values some variables take, and secrets.

use std::fmt;

/// A value that must never be logged or served (passwords): `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the environment kind is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentChoice {
    Auto,
    Kubernetes,
    Docker,
    Host,
}

/// Preferred IP family for the local IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

/// One step of the external IP chain (`NETSTRAP_EXTERNAL_SOURCES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalStep {
    Explicit,
    Overlay,
    Service,
    Node,
    Aws,
    Gcp,
    Azure,
    Stun,
    Echo,
    Fallback,
}

impl ExternalStep {
    pub(super) const ALL: &[(&str, ExternalStep)] = &[
        ("explicit", ExternalStep::Explicit),
        ("overlay", ExternalStep::Overlay),
        ("service", ExternalStep::Service),
        ("node", ExternalStep::Node),
        ("aws", ExternalStep::Aws),
        ("gcp", ExternalStep::Gcp),
        ("azure", ExternalStep::Azure),
        ("stun", ExternalStep::Stun),
        ("echo", ExternalStep::Echo),
        ("fallback", ExternalStep::Fallback),
    ];
}

/// What self-verification does (`NETSTRAP_VERIFY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    Off,
    Report,
    Gate,
}

/// How the tcp plane serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    Native,
    Relay,
}

/// How the broker plane serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    Embedded,
    Relay,
    Off,
}

/// Who declares the node policy (`NETSTRAP_DECLARE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Declarer {
    /// netstrap renders and declares the node policy (a node without its own scripts).
    Netstrap,
    /// The node declares it with its own scripts (EdgeLake's main.al); netstrap gives them
    /// stable inputs in `netstrap.env`, relays to the node's own listeners, checks the
    /// registry and removes stale copies of the node's policy (docs/edgelake.md).
    Node,
}
