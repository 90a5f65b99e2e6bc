//! Each plane's settings, read in one place per plane: where it listens ([`PlaneSettings`],
//! the part every plane has) and what only that plane has (its mode, upstream and limits).
//! [`Settings::listen`] and [`Settings::upstream`] match on [`Plane`], so a plane added there
//! cannot be left without its group.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::Settings;
use super::choices::{BrokerMode, Secret, TcpMode};
use super::error::ConfigError;
use super::node_type::NodeType;
use super::reader::{Reader, byte_size};
use crate::provenance::{Found, Provenance};

/// `NETSTRAP_BROKER_BACKLOG` when unset.
pub const DEFAULT_BROKER_BACKLOG: usize = 4 << 20;

/// `NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT` when unset (docs/broker.md says why 30 s).
pub const DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(30);

/// `NETSTRAP_REST_MAX_CONNECTIONS` when unset: concurrent connections of the rest plane.
pub const DEFAULT_REST_MAX_CONNECTIONS: usize = 4096;

/// One of the node's three listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    Tcp,
    Rest,
    Broker,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Tcp, Plane::Rest, Plane::Broker];

    /// The name in EdgeLake's connection table.
    pub fn title(self) -> &'static str {
        match self {
            Plane::Tcp => "TCP",
            Plane::Rest => "REST",
            Plane::Broker => "Message broker",
        }
    }

    /// The plane's name in logs, metrics, JSON and `NETSTRAP_TLS_PLANES`.
    pub fn name(self) -> &'static str {
        match self {
            Plane::Tcp => "tcp",
            Plane::Rest => "rest",
            Plane::Broker => "broker",
        }
    }

    /// EdgeLake's variable for the node's port of this plane.
    pub fn port_var(self) -> &'static str {
        match self {
            Plane::Tcp => "ANYLOG_SERVER_PORT",
            Plane::Rest => "ANYLOG_REST_PORT",
            Plane::Broker => "ANYLOG_BROKER_PORT",
        }
    }

    /// EdgeLake's variable for binding this plane to the local IP only.
    pub fn bind_var(self) -> &'static str {
        match self {
            Plane::Tcp => "TCP_BIND",
            Plane::Rest => "REST_BIND",
            Plane::Broker => "BROKER_BIND",
        }
    }

    /// netstrap's variable for its own listening port of this plane.
    pub fn own_port_var(self) -> &'static str {
        match self {
            Plane::Tcp => "NETSTRAP_TCP_PORT",
            Plane::Rest => "NETSTRAP_REST_PORT",
            Plane::Broker => "NETSTRAP_BROKER_PORT",
        }
    }

    /// netstrap's variable for the node's address this plane relays to.
    pub fn upstream_var(self) -> &'static str {
        match self {
            Plane::Tcp => "NETSTRAP_TCP_UPSTREAM",
            Plane::Rest => "NETSTRAP_REST_UPSTREAM",
            Plane::Broker => "NETSTRAP_BROKER_UPSTREAM",
        }
    }

    /// EdgeLake's variable for the plane's worker threads.
    pub fn threads_var(self) -> &'static str {
        match self {
            Plane::Tcp => "TCP_THREADS",
            Plane::Rest => "REST_THREADS",
            Plane::Broker => "BROKER_THREADS",
        }
    }

    /// netstrap's variable for the port peers dial, when no Service says it.
    pub fn external_port_var(self) -> &'static str {
        match self {
            Plane::Tcp => "NETSTRAP_TCP_EXTERNAL_PORT",
            Plane::Rest => "NETSTRAP_REST_EXTERNAL_PORT",
            Plane::Broker => "NETSTRAP_BROKER_EXTERNAL_PORT",
        }
    }

    /// The EdgeLake command that starts this listener on a node.
    pub fn node_command(self) -> &'static str {
        match self {
            Plane::Tcp => "run tcp server",
            Plane::Rest => "run rest server",
            Plane::Broker => "run message broker",
        }
    }
}

/// Where a plane listens and what it advertises: the settings every plane has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaneSettings {
    /// netstrap's listening port (`NETSTRAP_*_PORT`, else the node's port); `None` only for a
    /// broker that is off.
    pub port: Option<Found<u16>>,
    /// The node's own port (`ANYLOG_*_PORT`): what is advertised when nothing says otherwise
    /// (no Service, no `NETSTRAP_*_EXTERNAL_PORT`).
    pub node_port: Option<Found<u16>>,
    pub bind: Found<bool>,
    pub threads: Found<u16>,
    pub external_port: Option<Found<u16>>,
}

impl PlaneSettings {
    /// The variable the listening port came from, for error messages.
    pub(super) fn port_origin_var(&self, plane: Plane) -> &'static str {
        let own = plane.own_port_var();
        if self.port.as_ref().is_some_and(|f| f.why.source.contains(own)) { own } else { plane.port_var() }
    }
}

/// The tcp plane: EdgeLake's peer protocol, served or relayed to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSettings {
    pub listen: PlaneSettings,
    /// `NETSTRAP_TCP_MODE`.
    pub mode: Found<TcpMode>,
    /// `NETSTRAP_TCP_UPSTREAM`: the node's TCP server (with `NETSTRAP_DECLARE=node`, filled in
    /// from the advertised port once discovery knows it).
    pub upstream: Option<SocketAddr>,
    /// `NETSTRAP_TCP_PROXY_PROTOCOL`: the relay tells the node who the peer is.
    pub proxy_protocol: bool,
}

/// The rest plane: netstrap's API, and a proxy to the node's REST server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestSettings {
    pub listen: PlaneSettings,
    /// `NETSTRAP_REST_UPSTREAM`: the node's REST server, which every path netstrap does not
    /// answer itself is proxied to.
    pub upstream: Option<SocketAddr>,
    /// `REST_TIMEOUT`: the request timeout (zero: no limit).
    pub timeout: Found<Duration>,
    /// `NETSTRAP_REST_MAX_CONNECTIONS`: concurrent connections of the rest plane.
    pub max_connections: usize,
    /// `NETSTRAP_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is kept (appended to).
    pub trusted_proxies: Vec<IpNet>,
}

/// The broker plane: an embedded MQTT broker, or a relay to the node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    pub listen: PlaneSettings,
    /// `NETSTRAP_BROKER_MODE`.
    pub mode: Found<BrokerMode>,
    /// `NETSTRAP_BROKER_UPSTREAM`: the node's message broker.
    pub upstream: Option<SocketAddr>,
    /// `NETSTRAP_BROKER_BACKLOG`, bytes.
    pub backlog: usize,
    /// `NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT`: how long publishers wait for a subscriber that
    /// lags by the whole backlog before it is disconnected; `None` (0): they never wait, it skips.
    pub slow_subscriber_timeout: Option<Duration>,
    /// The embedded broker's subscription limits (`NETSTRAP_BROKER_MAX_SUBSCRIPTIONS`,
    /// `NETSTRAP_BROKER_MAX_FILTERS`).
    pub limits: BrokerLimits,
    /// `NETSTRAP_BROKER_ANONYMOUS`: the embedded broker may accept clients without
    /// credentials on an address beyond loopback.
    pub anonymous: Found<bool>,
    /// `NETSTRAP_BROKER_USERNAME` and `NETSTRAP_BROKER_PASSWORD`.
    pub credentials: Option<(String, Secret)>,
}

/// The embedded broker's front-door limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Topic filters one connection may hold (`NETSTRAP_BROKER_MAX_SUBSCRIPTIONS`).
    pub subscriptions_per_client: usize,
    /// Distinct topic filters the broker takes on since start (`NETSTRAP_BROKER_MAX_FILTERS`).
    pub filters: usize,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits { subscriptions_per_client: 32, filters: 64 }
    }
}

impl Settings {
    /// Where `plane` listens and what it advertises.
    pub fn listen(&self, plane: Plane) -> &PlaneSettings {
        match plane {
            Plane::Tcp => &self.tcp.listen,
            Plane::Rest => &self.rest.listen,
            Plane::Broker => &self.broker.listen,
        }
    }

    /// The node's address `plane` relays to, if it does: the tcp and broker planes only in
    /// relay mode, the rest plane whenever it has an upstream (it proxies what it does not
    /// answer itself).
    pub fn upstream(&self, plane: Plane) -> Option<SocketAddr> {
        match plane {
            Plane::Tcp => self.tcp.upstream.filter(|_| self.tcp.mode.value == TcpMode::Relay),
            Plane::Rest => self.rest.upstream,
            Plane::Broker => self.broker.upstream.filter(|_| self.broker.mode.value == BrokerMode::Relay),
        }
    }
}

/// What the planes' defaults depend on, read before them.
pub(super) struct PlaneDefaults<'a> {
    pub(super) node_type: NodeType,
    /// `NETSTRAP_PORT_OFFSET`.
    pub(super) port_offset: Option<&'a Found<u16>>,
    /// `NETSTRAP_DECLARE=node`: the node binds its own ports, so the planes relay to it.
    pub(super) node_declares: bool,
}

impl PlaneDefaults<'_> {
    /// The node's port of `plane` (`ANYLOG_*_PORT`), else this node type's, if it has one.
    fn node_port(&self, r: &mut Reader, plane: Plane, by_type: Option<u16>) -> Option<Found<u16>> {
        r.port(plane.port_var()).or_else(|| {
            let ty = self.node_type.name();
            by_type.map(|p| Found::new(p, Provenance::new(format!("default for NODE_TYPE={ty}"))))
        })
    }

    /// Where `plane` listens. netstrap's own listeners default to the node's ports; behind a
    /// node that binds its own (NETSTRAP_DECLARE=node) they must differ (checked once the
    /// ports are known). With host networking (NETSTRAP_PORT_OFFSET) they default to the
    /// node's + the offset, so several nodes on one host, each with its own ports, never share
    /// one.
    fn listen(&self, r: &mut Reader, plane: Plane, node_port: Option<Found<u16>>) -> PlaneSettings {
        let key = plane.own_port_var();
        let port = r.port(key).or_else(|| match (self.port_offset, node_port.clone()) {
            (Some(off), Some(n)) => Some(offset_port(r, key, n, off)),
            (None, node) => node,
            (Some(_), None) => None,
        });
        PlaneSettings {
            node_port: node_port.or_else(|| port.clone()),
            port,
            bind: r.bool(plane.bind_var(), false),
            threads: r.threads(plane.threads_var()),
            external_port: r.port(plane.external_port_var()),
        }
    }
}

/// netstrap's own port for `key`: the node's port `node` + `off` (an error past 65535).
fn offset_port(r: &mut Reader, key: &str, node: Found<u16>, off: &Found<u16>) -> Found<u16> {
    match node.value.checked_add(off.value) {
        Some(p) => Found::new(
            p,
            Provenance::new(format!(
                "{} + NETSTRAP_PORT_OFFSET={} ({})",
                node.value, off.value, node.why.source
            )),
        ),
        None => {
            r.errors.push(ConfigError::Invalid {
                key: "NETSTRAP_PORT_OFFSET".into(),
                value: off.value.to_string(),
                origin: off.why.source.clone(),
                problem: format!("{key} would be {} + {} > 65535", node.value, off.value),
                accepted: format!("a smaller offset, or set {key}"),
            });
            node
        }
    }
}

/// A whole number within `range`, else `default`.
fn count(r: &mut Reader, key: &str, range: std::ops::RangeInclusive<usize>, default: usize) -> usize {
    let accepted = format!("a whole number from {} to {}", range.start(), range.end());
    r.parse(key, &accepted, |s| match s.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        Ok(_) => Err("out of range".into()),
        Err(_) => Err("not a whole number".into()),
    })
    .map_or(default, |f| f.value)
}

pub(super) fn tcp(r: &mut Reader, d: &PlaneDefaults) -> TcpSettings {
    let node_port = d.node_port(r, Plane::Tcp, Some(d.node_type.server_port()));
    let listen = d.listen(r, Plane::Tcp, node_port);
    let upstream = r.socket("NETSTRAP_TCP_UPSTREAM");
    let mode = r
        .choice("NETSTRAP_TCP_MODE", &[("native", TcpMode::Native), ("relay", TcpMode::Relay)])
        .unwrap_or_else(|| match upstream {
            Some(_) => Found::new(TcpMode::Relay, Provenance::new("NETSTRAP_TCP_UPSTREAM is set")),
            None if d.node_declares => Found::new(
                TcpMode::Relay,
                Provenance::new("NETSTRAP_DECLARE=node: relay to the node's own TCP server"),
            ),
            None => Found::new(TcpMode::Native, Provenance::new("no NETSTRAP_TCP_UPSTREAM")),
        });
    TcpSettings { listen, mode, upstream, proxy_protocol: r.bool("NETSTRAP_TCP_PROXY_PROTOCOL", false).value }
}

pub(super) fn rest(r: &mut Reader, d: &PlaneDefaults) -> RestSettings {
    let node_port = d.node_port(r, Plane::Rest, Some(d.node_type.rest_port()));
    let listen = d.listen(r, Plane::Rest, node_port);
    let timeout = r
        .parse("REST_TIMEOUT", "whole seconds; 0 or negative = no limit", |s| {
            s.parse::<i64>()
                .map(|n| Duration::from_secs(n.max(0) as u64))
                .map_err(|_| "not a whole number".into())
        })
        .unwrap_or_else(|| Found::new(Duration::from_secs(30), Provenance::new("default REST_TIMEOUT=30")));
    let trusted_proxies = r.list_of(
        "NETSTRAP_TRUSTED_PROXIES",
        "not an address or CIDR",
        "comma-separated IPs or CIDRs, e.g. 10.0.0.5,10.244.0.0/16",
        |s| s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from)),
    );
    RestSettings {
        listen,
        upstream: r.socket("NETSTRAP_REST_UPSTREAM"),
        timeout,
        max_connections: count(
            r,
            "NETSTRAP_REST_MAX_CONNECTIONS",
            16..=1_000_000,
            DEFAULT_REST_MAX_CONNECTIONS,
        ),
        trusted_proxies,
    }
}

pub(super) fn broker(r: &mut Reader, d: &PlaneDefaults) -> BrokerSettings {
    // No node type has a broker by default: it is on when ANYLOG_BROKER_PORT is set.
    let node_port = d.node_port(r, Plane::Broker, None);
    let listen = d.listen(r, Plane::Broker, node_port);
    let upstream = r.socket("NETSTRAP_BROKER_UPSTREAM");
    let mode = r
        .choice(
            "NETSTRAP_BROKER_MODE",
            &[("embedded", BrokerMode::Embedded), ("relay", BrokerMode::Relay), ("off", BrokerMode::Off)],
        )
        .unwrap_or_else(|| match (&listen.port, upstream) {
            (None, _) => Found::new(BrokerMode::Off, Provenance::new("ANYLOG_BROKER_PORT is not set")),
            (Some(_), Some(_)) => {
                Found::new(BrokerMode::Relay, Provenance::new("NETSTRAP_BROKER_UPSTREAM is set"))
            }
            (Some(_), None) if d.node_declares => Found::new(
                BrokerMode::Relay,
                Provenance::new("NETSTRAP_DECLARE=node: relay to the node's own message broker"),
            ),
            (Some(_), None) => Found::new(BrokerMode::Embedded, Provenance::new("ANYLOG_BROKER_PORT is set")),
        });
    let backlog = r
        .parse(
            "NETSTRAP_BROKER_BACKLOG",
            "bytes, or a number with KiB, MiB or GiB, from 64KiB to 4GiB",
            byte_size,
        )
        .map_or(DEFAULT_BROKER_BACKLOG, |f| f.value);
    let slow_subscriber_timeout = r
        .parse("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT", "whole seconds from 0 (off) to 3600", |s| {
            match s.parse::<u64>() {
                Ok(0) => Ok(None),
                Ok(n) if n <= 3600 => Ok(Some(Duration::from_secs(n))),
                Ok(_) => Err("out of range".into()),
                Err(_) => Err("not a whole number".into()),
            }
        })
        .map_or(Some(DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT), |f| f.value);
    let defaults = BrokerLimits::default();
    let limits = BrokerLimits {
        subscriptions_per_client: count(
            r,
            "NETSTRAP_BROKER_MAX_SUBSCRIPTIONS",
            1..=65_535,
            defaults.subscriptions_per_client,
        ),
        filters: count(r, "NETSTRAP_BROKER_MAX_FILTERS", 1..=1_000_000, defaults.filters),
    };
    let anonymous = r.bool("NETSTRAP_BROKER_ANONYMOUS", false);
    let credentials = match (r.string("NETSTRAP_BROKER_USERNAME"), r.layers.get("NETSTRAP_BROKER_PASSWORD")) {
        (Some(u), Some((p, _))) => Some((u.value, Secret(p.to_string()))),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            r.errors.push(ConfigError::Invalid {
                key: "NETSTRAP_BROKER_USERNAME".into(),
                value: "(one of the pair)".into(),
                origin: "combination".into(),
                problem: "username and password go together".into(),
                accepted: "both NETSTRAP_BROKER_USERNAME and NETSTRAP_BROKER_PASSWORD, or neither".into(),
            });
            None
        }
    };
    BrokerSettings {
        listen,
        mode,
        upstream,
        backlog,
        slow_subscriber_timeout,
        limits,
        anonymous,
        credentials,
    }
}
