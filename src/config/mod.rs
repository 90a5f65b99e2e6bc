//! Configuration: flags > environment > optional TOML file > defaults.
//!
//! EdgeLake variables keep EdgeLake's names, meanings and defaults (README, "EdgeLake variables") so an
//! existing ConfigMap or `.env` file works unchanged; netstrap's own settings are
//! `NETSTRAP_*`. [`Settings::parse`] is a pure function of [`Layers`]; every wrong value is
//! reported (all of them, not just the first) naming the variable, the value and what is
//! accepted.

mod choices;
mod error;
pub mod horizon;
pub mod ledger;
mod node_type;
pub mod overlay;
mod planes;
mod reader;
mod source;
mod tls;
pub mod variables;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use choices::{
    BrokerMode, Declarer, EnvironmentChoice, ExternalStep, IpFamily, Secret, TcpMode, VerifyMode,
};
pub use error::{ConfigError, ConfigErrors};
pub use ledger::Ledger;
pub use node_type::NodeType;
pub use planes::{
    BrokerLimits, DEFAULT_BROKER_BACKLOG, DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT,
    DEFAULT_REST_MAX_CONNECTIONS,
};
use reader::{Reader, byte_size};
pub use source::{Layers, Origin, parse_toml, read_toml_file};
pub use tls::TlsSettings;
use tls::tls_settings;

use crate::provenance::{Found, Provenance};

/// The variable a plane's listening port came from, for error messages.
fn listen_key(p: &PlaneSettings, own: &'static str, node: &'static str) -> &'static str {
    if p.port.as_ref().is_some_and(|f| f.why.source.contains(own)) { own } else { node }
}

/// Per-plane settings.
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

/// The parsed configuration. Values that end up in the connection table carry their
/// provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub node_type: Found<NodeType>,
    pub node_name: Option<Found<String>>,
    pub company_name: String,
    pub location: String,
    pub country: String,
    pub state: String,
    pub city: String,
    pub config_name: Option<String>,
    pub cluster_name: Option<String>,
    pub cluster_id: Option<String>,
    pub hostname: Option<String>,

    pub tcp: PlaneSettings,
    pub rest: PlaneSettings,
    pub broker: PlaneSettings,
    pub rest_timeout: Found<Duration>,
    pub ledger_conn: Found<String>,

    pub local_ip: Option<Found<IpAddr>>,
    pub external_ip: Option<Found<IpAddr>>,
    pub overlay_ip: Option<Found<IpAddr>>,
    /// `NETSTRAP_OVERLAY`: the overlay interface or range (docs/overlay.md).
    pub overlay: Option<Found<overlay::OverlaySpec>>,
    /// `HZN_*`: Open Horizon's device, node and organization.
    pub horizon: horizon::Horizon,
    /// `NETSTRAP_PORT_OFFSET`: netstrap's own ports default to the node's + this (host networking).
    pub port_offset: Option<Found<u16>>,
    pub enable_dns: bool,
    pub external_dns: Option<Found<String>>,
    pub dns: Option<Found<String>>,
    pub dns_domain: Option<Found<String>>,
    pub proxy_ip: Option<String>,

    pub pod_ip: Option<Found<IpAddr>>,
    pub pod_ips: Vec<IpAddr>,
    pub pod_name: Option<String>,
    pub namespace: Option<Found<String>>,
    pub host_ip: Option<Found<IpAddr>>,
    pub k8s_node_name: Option<String>,
    pub kubernetes_service_host: Option<String>,
    pub kubernetes_service_port: u16,

    pub environment: EnvironmentChoice,
    pub service: Option<Found<String>>,
    pub cluster_domain: Option<Found<String>>,
    pub per_pod_name: bool,
    pub interface: Option<String>,
    pub cidr: Option<IpNet>,
    pub ip_family: IpFamily,
    pub external_sources: Vec<ExternalStep>,
    pub source_timeout: Duration,
    pub stun_servers: Vec<String>,
    pub echo_url: Option<String>,
    pub metadata_url: Option<String>,
    pub sa_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub resolv_conf: PathBuf,
    pub nameservers: Vec<SocketAddr>,
    /// `NETSTRAP_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is kept (appended to).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `NETSTRAP_REST_MAX_CONNECTIONS`: concurrent connections of the rest plane.
    pub rest_max_connections: usize,
    /// `NETSTRAP_ADMIN_ADDR`: the admin listener (`/metrics`, `/v1/*`); `None`: they are on
    /// the rest plane.
    pub admin_addr: Option<SocketAddr>,

    pub tcp_mode: Found<TcpMode>,
    pub tcp_upstream: Option<SocketAddr>,
    pub tcp_proxy_protocol: bool,
    pub rest_upstream: Option<SocketAddr>,
    pub broker_mode: Found<BrokerMode>,
    pub broker_upstream: Option<SocketAddr>,
    /// `NETSTRAP_BROKER_BACKLOG`, bytes.
    pub broker_backlog: usize,
    /// `NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT`: how long publishers wait for a subscriber that
    /// lags by the whole backlog before it is disconnected; `None` (0): they never wait, it skips.
    pub broker_slow_subscriber_timeout: Option<Duration>,
    /// The embedded broker's subscription limits (`NETSTRAP_BROKER_MAX_SUBSCRIPTIONS`,
    /// `NETSTRAP_BROKER_MAX_FILTERS`).
    pub broker_limits: BrokerLimits,
    /// `NETSTRAP_BROKER_ANONYMOUS`: the embedded broker may accept clients without
    /// credentials on an address beyond loopback.
    pub broker_anonymous: Found<bool>,
    /// `NETSTRAP_READY_UPSTREAM`: readiness requires the node's upstreams to accept.
    pub ready_upstream: bool,

    /// `NETSTRAP_LEDGER`.
    pub ledger: Ledger,
    pub declare: Found<Declarer>,
    /// `IS_HIDDEN`: EdgeLake's scripts declare no node policy for this master/query/publisher.
    pub is_hidden: bool,
    pub verify: VerifyMode,
    pub state_dir: PathBuf,
    pub watch_interval: Duration,
    /// `None`: the default for the environment kind (decided after discovery).
    pub shutdown_delay: Option<Duration>,
    pub shutdown_grace: Duration,
    /// `NETSTRAP_DATA_NICE`: nice value of the tcp and broker planes' threads.
    pub data_nice: u8,
    pub broker_credentials: Option<(String, Secret)>,
    /// TLS, when `NETSTRAP_TLS_CERT` and `NETSTRAP_TLS_KEY` are set.
    pub tls: Option<TlsSettings>,

    pub log: String,
    pub log_json: bool,
}

/// Default log filter: netstrap at info; rumqttd's per-connection chatter (it logs every
/// accept at info and a routing "error" on every clean disconnect) only when it matters, and
/// not its line per skipped read position (`rumqttd::segments`), which can come thousands of
/// times a second: `logging::broker_drops` reports those, counted and at most every 10 s.
pub const DEFAULT_LOG: &str = "info,rumqttd=warn,rumqttd::router::routing=off,rumqttd::segments=off";

/// `NETSTRAP_PORT_OFFSET`: 1 to 64511.
fn port_offset(r: &mut Reader) -> Option<Found<u16>> {
    r.parse("NETSTRAP_PORT_OFFSET", "a whole number from 1 to 64511, e.g. 1000", |s| match s.parse::<u32>() {
        Ok(n) if (1..=64511).contains(&n) => Ok(n as u16),
        Ok(_) => Err("out of range".into()),
        Err(_) => Err("not a whole number".into()),
    })
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

impl Settings {
    /// Whether EdgeLake's own main.al declares a node policy for this node: not for a generic
    /// node (its config script has no node_policy.al) nor a hidden one (`IS_HIDDEN`, any type
    /// but operator).
    pub fn node_declares_a_policy(&self) -> bool {
        match self.node_type.value {
            NodeType::Generic => false,
            NodeType::Operator | NodeType::MasterOperator => true,
            _ => !self.is_hidden,
        }
    }

    /// Parse the configuration from its sources. Pure: no I/O, no process environment.
    pub fn parse(layers: &Layers) -> Result<Settings, ConfigErrors> {
        let mut r = Reader { layers, errors: layers.unknown_keys() };

        let node_type = r
            .choice("NODE_TYPE", NodeType::NAMES)
            .unwrap_or_else(|| Found::new(NodeType::Generic, Provenance::new("default NODE_TYPE=generic")));
        let nt = node_type.value;
        let by_type = |_port: u16| Provenance::new(format!("default for NODE_TYPE={}", nt.name()));

        let tcp_port = r.port("ANYLOG_SERVER_PORT").unwrap_or_else(|| {
            let p = nt.server_port();
            Found::new(p, by_type(p))
        });
        let rest_port = r.port("ANYLOG_REST_PORT").unwrap_or_else(|| {
            let p = nt.rest_port();
            Found::new(p, by_type(p))
        });
        let node_broker_port = r.port("ANYLOG_BROKER_PORT");
        // netstrap's own listeners default to the node's ports; behind a node that binds its
        // own (NETSTRAP_DECLARE=node) they must differ (checked once the ports are known).
        // With host networking (NETSTRAP_PORT_OFFSET) they default to the node's + the offset,
        // so several nodes on one host, each with its own ports, never share one.
        let port_offset = port_offset(&mut r);
        let own = |r: &mut Reader, key: &str, node: Option<Found<u16>>| {
            r.port(key).or_else(|| match (&port_offset, node) {
                (Some(off), Some(n)) => Some(offset_port(r, key, n, off)),
                (None, node) => node,
                (Some(_), None) => None,
            })
        };
        let tcp_listen = own(&mut r, "NETSTRAP_TCP_PORT", Some(tcp_port.clone()));
        let rest_listen = own(&mut r, "NETSTRAP_REST_PORT", Some(rest_port.clone()));
        let broker_port = own(&mut r, "NETSTRAP_BROKER_PORT", node_broker_port.clone());

        let tcp = PlaneSettings {
            port: tcp_listen,
            node_port: Some(tcp_port.clone()),
            bind: r.bool("TCP_BIND", false),
            threads: r.threads("TCP_THREADS"),
            external_port: r.port("NETSTRAP_TCP_EXTERNAL_PORT"),
        };
        let rest = PlaneSettings {
            port: rest_listen,
            node_port: Some(rest_port),
            bind: r.bool("REST_BIND", false),
            threads: r.threads("REST_THREADS"),
            external_port: r.port("NETSTRAP_REST_EXTERNAL_PORT"),
        };
        let broker = PlaneSettings {
            port: broker_port.clone(),
            node_port: node_broker_port.or(broker_port.clone()),
            bind: r.bool("BROKER_BIND", false),
            threads: r.threads("BROKER_THREADS"),
            external_port: r.port("NETSTRAP_BROKER_EXTERNAL_PORT"),
        };
        let declare = r
            .choice("NETSTRAP_DECLARE", &[("netstrap", Declarer::Netstrap), ("node", Declarer::Node)])
            .unwrap_or_else(|| {
                Found::new(Declarer::Netstrap, Provenance::new("default NETSTRAP_DECLARE=netstrap"))
            });
        let node_declares = declare.value == Declarer::Node;

        let rest_timeout = r
            .parse("REST_TIMEOUT", "whole seconds; 0 or negative = no limit", |s| {
                s.parse::<i64>()
                    .map(|n| Duration::from_secs(n.max(0) as u64))
                    .map_err(|_| "not a whole number".into())
            })
            .unwrap_or_else(|| {
                Found::new(Duration::from_secs(30), Provenance::new("default REST_TIMEOUT=30"))
            });

        let ledger_conn = r
            .string("LEDGER_CONN")
            .unwrap_or_else(|| Found::new("127.0.0.1:32048".into(), Provenance::new("default LEDGER_CONN")));

        let environment = match r.choice(
            "NETSTRAP_ENVIRONMENT",
            &[
                ("auto", EnvironmentChoice::Auto),
                ("kubernetes", EnvironmentChoice::Kubernetes),
                ("docker", EnvironmentChoice::Docker),
                ("host", EnvironmentChoice::Host),
            ],
        ) {
            Some(f) => f.value,
            None => match layers.get("IS_KUBERNETES") {
                Some(_) => {
                    if r.bool("IS_KUBERNETES", false).value {
                        EnvironmentChoice::Kubernetes
                    } else {
                        EnvironmentChoice::Auto
                    }
                }
                None => EnvironmentChoice::Auto,
            },
        };

        let pod_ips = r
            .list("POD_IPS")
            .into_iter()
            .filter_map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    r.errors.push(ConfigError::Invalid {
                        key: "POD_IPS".into(),
                        value: s,
                        origin: layers.get("POD_IPS").map(|(_, o)| o.to_string()).unwrap_or_default(),
                        problem: "not an IP address".into(),
                        accepted: "comma-separated IP addresses (downward API status.podIPs)".into(),
                    });
                    None
                }
            })
            .collect();

        let service = match r.string("NETSTRAP_SERVICE") {
            Some(s) => Some(s),
            None => r.string("KUBERNETES_SERVICE_IP"),
        };
        let namespace = match r.string("NETSTRAP_NAMESPACE") {
            Some(s) => Some(s),
            None => r.string("POD_NAMESPACE"),
        };

        let external_sources = r
            .parse(
                "NETSTRAP_EXTERNAL_SOURCES",
                "a comma-separated list of explicit, overlay, service, node, aws, gcp, azure, stun, echo, fallback",
                |s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|item| {
                            ExternalStep::ALL
                                .iter()
                                .find(|(n, _)| n.eq_ignore_ascii_case(item))
                                .map(|(_, st)| *st)
                                .ok_or_else(|| format!("unknown source `{item}`"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                },
            )
            .map(|f| f.value)
            .unwrap_or_else(|| {
                use ExternalStep::*;
                vec![Explicit, Overlay, Service, Node, Stun, Echo, Fallback]
            });

        let source_timeout = r
            .parse("NETSTRAP_SOURCE_TIMEOUT_MS", "milliseconds from 1 to 60000", |s| match s.parse::<u64>() {
                Ok(n) if (1..=60_000).contains(&n) => Ok(Duration::from_millis(n)),
                Ok(_) => Err("out of range".into()),
                Err(_) => Err("not a whole number".into()),
            })
            .map(|f| f.value)
            .unwrap_or(Duration::from_secs(2));

        let cidr = r
            .parse("NETSTRAP_CIDR", "a CIDR such as 10.244.0.0/16 or fd00::/64", |s| {
                s.parse::<IpNet>().map_err(|_| "not a CIDR".into())
            })
            .map(|f| f.value);

        let nameservers = r
            .list("NETSTRAP_NAMESERVER")
            .into_iter()
            .filter_map(|s| {
                let parsed = s
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
                if parsed.is_none() {
                    r.errors.push(ConfigError::Invalid {
                        key: "NETSTRAP_NAMESERVER".into(),
                        value: s,
                        origin: layers
                            .get("NETSTRAP_NAMESERVER")
                            .map(|(_, o)| o.to_string())
                            .unwrap_or_default(),
                        problem: "not an address".into(),
                        accepted: "comma-separated ip or ip:port, e.g. 10.96.0.10 or 127.0.0.1:5353".into(),
                    });
                }
                parsed
            })
            .collect();

        let trusted_proxies = r
            .list("NETSTRAP_TRUSTED_PROXIES")
            .into_iter()
            .filter_map(|s| {
                let parsed = s
                    .parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from));
                if parsed.is_none() {
                    r.errors.push(ConfigError::Invalid {
                        key: "NETSTRAP_TRUSTED_PROXIES".into(),
                        value: s,
                        origin: layers
                            .get("NETSTRAP_TRUSTED_PROXIES")
                            .map(|(_, o)| o.to_string())
                            .unwrap_or_default(),
                        problem: "not an address or CIDR".into(),
                        accepted: "comma-separated IPs or CIDRs, e.g. 10.0.0.5,10.244.0.0/16".into(),
                    });
                }
                parsed
            })
            .collect();
        let rest_max_connections = r
            .parse("NETSTRAP_REST_MAX_CONNECTIONS", "a whole number from 16 to 1000000", |s| {
                match s.parse::<usize>() {
                    Ok(n) if (16..=1_000_000).contains(&n) => Ok(n),
                    Ok(_) => Err("out of range".into()),
                    Err(_) => Err("not a whole number".into()),
                }
            })
            .map_or(DEFAULT_REST_MAX_CONNECTIONS, |f| f.value);

        let tcp_upstream = r.socket("NETSTRAP_TCP_UPSTREAM");
        let tcp_mode = r
            .choice("NETSTRAP_TCP_MODE", &[("native", TcpMode::Native), ("relay", TcpMode::Relay)])
            .unwrap_or_else(|| match tcp_upstream {
                Some(_) => Found::new(TcpMode::Relay, Provenance::new("NETSTRAP_TCP_UPSTREAM is set")),
                None if node_declares => Found::new(
                    TcpMode::Relay,
                    Provenance::new("NETSTRAP_DECLARE=node: relay to the node's own TCP server"),
                ),
                None => Found::new(TcpMode::Native, Provenance::new("no NETSTRAP_TCP_UPSTREAM")),
            });
        let broker_upstream = r.socket("NETSTRAP_BROKER_UPSTREAM");
        let broker_mode = r
            .choice(
                "NETSTRAP_BROKER_MODE",
                &[("embedded", BrokerMode::Embedded), ("relay", BrokerMode::Relay), ("off", BrokerMode::Off)],
            )
            .unwrap_or_else(|| match (&broker_port, broker_upstream) {
                (None, _) => Found::new(BrokerMode::Off, Provenance::new("ANYLOG_BROKER_PORT is not set")),
                (Some(_), Some(_)) => {
                    Found::new(BrokerMode::Relay, Provenance::new("NETSTRAP_BROKER_UPSTREAM is set"))
                }
                (Some(_), None) if node_declares => Found::new(
                    BrokerMode::Relay,
                    Provenance::new("NETSTRAP_DECLARE=node: relay to the node's own message broker"),
                ),
                (Some(_), None) => {
                    Found::new(BrokerMode::Embedded, Provenance::new("ANYLOG_BROKER_PORT is set"))
                }
            });

        let broker_backlog = r
            .parse(
                "NETSTRAP_BROKER_BACKLOG",
                "bytes, or a number with KiB, MiB or GiB, from 64KiB to 4GiB",
                byte_size,
            )
            .map(|f| f.value)
            .unwrap_or(DEFAULT_BROKER_BACKLOG);

        let broker_slow_subscriber_timeout = r
            .parse("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT", "whole seconds from 0 (off) to 3600", |s| {
                match s.parse::<u64>() {
                    Ok(0) => Ok(None),
                    Ok(n) if n <= 3600 => Ok(Some(Duration::from_secs(n))),
                    Ok(_) => Err("out of range".into()),
                    Err(_) => Err("not a whole number".into()),
                }
            })
            .map(|f| f.value)
            .unwrap_or(Some(DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT));

        let mut count = |key: &str, max: usize, default: usize| {
            r.parse(key, &format!("a whole number from 1 to {max}"), |s| match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                Ok(_) => Err("out of range".into()),
                Err(_) => Err("not a whole number".into()),
            })
            .map(|f| f.value)
            .unwrap_or(default)
        };
        let defaults = BrokerLimits::default();
        let broker_limits = BrokerLimits {
            subscriptions_per_client: count(
                "NETSTRAP_BROKER_MAX_SUBSCRIPTIONS",
                65_535,
                defaults.subscriptions_per_client,
            ),
            filters: count("NETSTRAP_BROKER_MAX_FILTERS", 1_000_000, defaults.filters),
        };
        let broker_anonymous = r.bool("NETSTRAP_BROKER_ANONYMOUS", false);

        let log_json = r
            .choice("NETSTRAP_LOG_FORMAT", &[("text", false), ("json", true)])
            .map(|f| f.value)
            .unwrap_or(false);

        let seconds = |r: &mut Reader, key: &str| {
            r.parse(key, "whole seconds from 0 to 3600", |s| match s.parse::<u64>() {
                Ok(n) if n <= 3600 => Ok(Duration::from_secs(n)),
                Ok(_) => Err("out of range".into()),
                Err(_) => Err("not a whole number".into()),
            })
            .map(|f| f.value)
        };
        let shutdown_delay = seconds(&mut r, "NETSTRAP_SHUTDOWN_DELAY");
        let shutdown_grace = seconds(&mut r, "NETSTRAP_SHUTDOWN_GRACE").unwrap_or(Duration::from_secs(20));
        let data_nice = r
            .parse("NETSTRAP_DATA_NICE", "a whole number from 0 to 19", |s| match s.parse::<u8>() {
                Ok(n) if n <= 19 => Ok(n),
                _ => Err("not a nice value from 0 to 19".into()),
            })
            .map(|f| f.value)
            .unwrap_or(10);
        let broker_credentials =
            match (r.string("NETSTRAP_BROKER_USERNAME"), layers.get("NETSTRAP_BROKER_PASSWORD")) {
                (Some(u), Some((p, _))) => Some((u.value, Secret(p.to_string()))),
                (None, None) => None,
                (Some(_), None) | (None, Some(_)) => {
                    r.errors.push(ConfigError::Invalid {
                        key: "NETSTRAP_BROKER_USERNAME".into(),
                        value: "(one of the pair)".into(),
                        origin: "combination".into(),
                        problem: "username and password go together".into(),
                        accepted: "both NETSTRAP_BROKER_USERNAME and NETSTRAP_BROKER_PASSWORD, or neither"
                            .into(),
                    });
                    None
                }
            };

        let tls = tls_settings(&mut r, layers);

        let settings = Settings {
            tls,
            node_name: r.policy_text("NODE_NAME", true),
            company_name: r
                .policy_text("COMPANY_NAME", true)
                .map_or_else(|| "New Company".into(), |f| f.value),
            location: r.policy_text("LOCATION", false).map_or_else(|| "0.0, 0.0".into(), |f| f.value),
            country: r.policy_text("COUNTRY", false).map_or_else(|| "Unknown".into(), |f| f.value),
            state: r.policy_text("STATE", false).map_or_else(|| "Unknown".into(), |f| f.value),
            city: r.policy_text("CITY", false).map_or_else(|| "Unknown".into(), |f| f.value),
            config_name: r.policy_text("CONFIG_NAME", true).map(|f| f.value),
            cluster_name: r.policy_text("CLUSTER_NAME", true).map(|f| f.value),
            cluster_id: r.string("NETSTRAP_CLUSTER_ID").map(|f| f.value),
            hostname: r.string("HOSTNAME").map(|f| f.value),
            tcp,
            rest,
            broker,
            rest_timeout,
            ledger_conn,
            local_ip: r.ip("LOCAL_IP"),
            external_ip: r.ip("EXTERNAL_IP"),
            overlay_ip: r.ip("OVERLAY_IP"),
            overlay: overlay::read(&mut r),
            horizon: horizon::read(&mut r),
            port_offset,
            enable_dns: r.bool("ENABLE_DNS", false).value,
            external_dns: r.string("EXTERNAL_DNS"),
            dns: r.string("DNS"),
            dns_domain: r.string("DNS_DOMAIN"),
            proxy_ip: r.string("PROXY_IP").map(|f| f.value),
            pod_ip: r.ip("POD_IP"),
            pod_ips,
            pod_name: r.string("POD_NAME").map(|f| f.value),
            namespace,
            host_ip: r.ip("HOST_IP"),
            k8s_node_name: r.string("K8S_NODE_NAME").map(|f| f.value),
            kubernetes_service_host: r.string("KUBERNETES_SERVICE_HOST").map(|f| f.value),
            kubernetes_service_port: r.port("KUBERNETES_SERVICE_PORT").map(|f| f.value).unwrap_or(443),
            environment,
            service,
            cluster_domain: r.string("NETSTRAP_CLUSTER_DOMAIN"),
            per_pod_name: r.bool("NETSTRAP_PER_POD_NAME", false).value,
            interface: r.string("NETSTRAP_INTERFACE").map(|f| f.value),
            cidr,
            ip_family: r
                .choice("NETSTRAP_IP_FAMILY", &[("ipv4", IpFamily::Ipv4), ("ipv6", IpFamily::Ipv6)])
                .map(|f| f.value)
                .unwrap_or(IpFamily::Ipv4),
            external_sources,
            source_timeout,
            stun_servers: r.list("NETSTRAP_STUN_SERVERS"),
            echo_url: r.string("NETSTRAP_ECHO_URL").map(|f| f.value),
            metadata_url: r.string("NETSTRAP_METADATA_URL").map(|f| f.value),
            sa_dir: r
                .string("NETSTRAP_SA_DIR")
                .map(|f| PathBuf::from(f.value))
                .unwrap_or_else(|| PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount")),
            kubeconfig: r
                .string("NETSTRAP_KUBECONFIG")
                .or_else(|| r.string("KUBECONFIG"))
                .map(|f| PathBuf::from(f.value)),
            resolv_conf: r
                .string("NETSTRAP_RESOLV_CONF")
                .map(|f| PathBuf::from(f.value))
                .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf")),
            nameservers,
            trusted_proxies,
            rest_max_connections,
            admin_addr: r
                .parse("NETSTRAP_ADMIN_ADDR", "ip:port, e.g. 127.0.0.1:9090 or 0.0.0.0:9090", |s| {
                    match s.parse::<SocketAddr>() {
                        Ok(a) if a.port() == 0 => {
                            Err("port 0 is not a port a scraper can be pointed at".into())
                        }
                        Ok(a) => Ok(a),
                        Err(_) => Err("not an ip:port address".into()),
                    }
                })
                .map(|f| f.value),
            tcp_mode,
            tcp_upstream,
            tcp_proxy_protocol: r.bool("NETSTRAP_TCP_PROXY_PROTOCOL", false).value,
            ready_upstream: r.bool("NETSTRAP_READY_UPSTREAM", node_declares).value,
            rest_upstream: r.socket("NETSTRAP_REST_UPSTREAM"),
            broker_mode,
            broker_upstream,
            broker_backlog,
            broker_slow_subscriber_timeout,
            broker_limits,
            broker_anonymous,
            ledger: r
                .parse("NETSTRAP_LEDGER", ledger::ACCEPTED, |s| Ledger::parse(s).map_err(String::from))
                .map(|f| f.value)
                .unwrap_or_default(),
            declare,
            is_hidden: r.bool("IS_HIDDEN", false).value,
            verify: r
                .choice(
                    "NETSTRAP_VERIFY",
                    &[("off", VerifyMode::Off), ("report", VerifyMode::Report), ("gate", VerifyMode::Gate)],
                )
                .map(|f| f.value)
                .unwrap_or(VerifyMode::Report),
            state_dir: r
                .string("NETSTRAP_STATE_DIR")
                .map(|f| PathBuf::from(f.value))
                .unwrap_or_else(|| PathBuf::from("./netstrap-state")),
            watch_interval: r
                .parse("NETSTRAP_WATCH_INTERVAL", "whole seconds from 1 to 86400", |s| {
                    match s.parse::<u64>() {
                        Ok(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
                        Ok(_) => Err("out of range".into()),
                        Err(_) => Err("not a whole number".into()),
                    }
                })
                .map(|f| f.value)
                .unwrap_or(Duration::from_secs(30)),
            shutdown_delay,
            shutdown_grace,
            data_nice,
            broker_credentials,
            log: r.text("NETSTRAP_LOG", DEFAULT_LOG),
            log_json,
            node_type,
        };

        let mut errors = r.errors;
        errors.extend(settings.consistency_errors());
        // A filter that does not parse was silently replaced by `info`: say so instead.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log) {
            errors.push(ConfigError::Invalid {
                key: "NETSTRAP_LOG".into(),
                value: settings.log.clone(),
                origin: layers.get("NETSTRAP_LOG").map(|(_, o)| o.to_string()).unwrap_or_default(),
                problem: format!("not a log filter ({e})"),
                accepted: "a level (error, warn, info, debug, trace) and/or target=level, comma-separated, \
                           e.g. info,netstrap::advertise=debug"
                    .into(),
            });
        }
        if errors.is_empty() { Ok(settings) } else { Err(ConfigErrors(errors)) }
    }

    /// Combinations that cannot work, found before anything is bound.
    fn consistency_errors(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut invalid = |key: &str, value: &str, problem: &str, accepted: &str| {
            errors.push(ConfigError::Invalid {
                key: key.into(),
                value: value.into(),
                origin: "combination".into(),
                problem: problem.into(),
                accepted: accepted.into(),
            })
        };
        // Behind a node that declares itself the upstreams default to its advertised ports
        // (filled in once discovery knows them: `Settings::node_upstreams`).
        let node = self.declare.value == Declarer::Node;
        if let Some(off) = self.port_offset.as_ref().filter(|_| !node) {
            invalid(
                "NETSTRAP_PORT_OFFSET",
                &off.value.to_string(),
                "netstrap's ports derive from the node's only when the node binds its own (NETSTRAP_DECLARE=node)",
                "NETSTRAP_DECLARE=node, or unset NETSTRAP_PORT_OFFSET and set NETSTRAP_*_UPSTREAM",
            );
        }
        if self.tcp_mode.value == TcpMode::Relay && self.tcp_upstream.is_none() && !node {
            invalid(
                "NETSTRAP_TCP_MODE",
                "relay",
                "relay needs an upstream",
                "set NETSTRAP_TCP_UPSTREAM=ip:port, or use native",
            );
        }
        if self.broker_mode.value == BrokerMode::Relay && self.broker_upstream.is_none() && !node {
            invalid(
                "NETSTRAP_BROKER_MODE",
                "relay",
                "relay needs an upstream",
                "set NETSTRAP_BROKER_UPSTREAM=ip:port",
            );
        }
        if self.broker_mode.value != BrokerMode::Off && self.broker.port.is_none() {
            invalid(
                "NETSTRAP_BROKER_MODE",
                "on",
                "the broker needs a port",
                "set ANYLOG_BROKER_PORT, or NETSTRAP_BROKER_MODE=off",
            );
        }
        let ports = [
            (listen_key(&self.tcp, "NETSTRAP_TCP_PORT", "ANYLOG_SERVER_PORT"), self.tcp.port.as_ref()),
            (listen_key(&self.rest, "NETSTRAP_REST_PORT", "ANYLOG_REST_PORT"), self.rest.port.as_ref()),
            (
                listen_key(&self.broker, "NETSTRAP_BROKER_PORT", "ANYLOG_BROKER_PORT"),
                self.broker.port.as_ref().filter(|_| self.broker_mode.value != BrokerMode::Off),
            ),
        ];
        for (i, (ka, a)) in ports.iter().enumerate() {
            for (kb, b) in &ports[i + 1..] {
                if let (Some(a), Some(b)) = (a, b)
                    && a.value == b.value
                {
                    invalid(
                        kb,
                        &b.value.to_string(),
                        &format!("same port as {ka}"),
                        "a port not used by another plane",
                    );
                }
            }
        }
        errors
    }
}
