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
    BrokerLimits, BrokerSettings, DEFAULT_BROKER_BACKLOG, DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT,
    DEFAULT_REST_MAX_CONNECTIONS, Plane, PlaneSettings, RestSettings, TcpSettings,
};
use reader::Reader;
pub use source::{Layers, Origin, parse_toml, read_toml_file};
pub use tls::TlsSettings;
use tls::tls_settings;

use crate::provenance::{Found, Provenance};

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

    /// Each plane's settings ([`Settings::listen`]: the part every plane has).
    pub tcp: TcpSettings,
    pub rest: RestSettings,
    pub broker: BrokerSettings,
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
    /// `NETSTRAP_ADMIN_ADDR`: the admin listener (`/metrics`, `/v1/*`); `None`: they are on
    /// the rest plane.
    pub admin_addr: Option<SocketAddr>,

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
        let port_offset = port_offset(&mut r);
        let declare = r
            .choice("NETSTRAP_DECLARE", &[("netstrap", Declarer::Netstrap), ("node", Declarer::Node)])
            .unwrap_or_else(|| {
                Found::new(Declarer::Netstrap, Provenance::new("default NETSTRAP_DECLARE=netstrap"))
            });
        let node_declares = declare.value == Declarer::Node;
        let defaults = planes::PlaneDefaults {
            node_type: node_type.value,
            port_offset: port_offset.as_ref(),
            node_declares,
        };
        let tcp = planes::tcp(&mut r, &defaults);
        let rest = planes::rest(&mut r, &defaults);
        let broker = planes::broker(&mut r, &defaults);

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

        let pod_ips = r.list_of(
            "POD_IPS",
            "not an IP address",
            "comma-separated IP addresses (downward API status.podIPs)",
            |s| s.parse::<IpAddr>().ok(),
        );

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

        let nameservers = r.list_of(
            "NETSTRAP_NAMESERVER",
            "not an address",
            "comma-separated ip or ip:port, e.g. 10.96.0.10 or 127.0.0.1:5353",
            |s| {
                s.parse::<SocketAddr>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
            },
        );

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
            ready_upstream: r.bool("NETSTRAP_READY_UPSTREAM", node_declares).value,
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
        if self.tcp.mode.value == TcpMode::Relay && self.tcp.upstream.is_none() && !node {
            invalid(
                "NETSTRAP_TCP_MODE",
                "relay",
                "relay needs an upstream",
                "set NETSTRAP_TCP_UPSTREAM=ip:port, or use native",
            );
        }
        if self.broker.mode.value == BrokerMode::Relay && self.broker.upstream.is_none() && !node {
            invalid(
                "NETSTRAP_BROKER_MODE",
                "relay",
                "relay needs an upstream",
                "set NETSTRAP_BROKER_UPSTREAM=ip:port",
            );
        }
        if self.broker.mode.value != BrokerMode::Off && self.broker.listen.port.is_none() {
            invalid(
                "NETSTRAP_BROKER_MODE",
                "on",
                "the broker needs a port",
                "set ANYLOG_BROKER_PORT, or NETSTRAP_BROKER_MODE=off",
            );
        }
        // A broker that is off listens nowhere, whatever its port.
        let listening = |p: Plane| p != Plane::Broker || self.broker.mode.value != BrokerMode::Off;
        let ports: Vec<_> = Plane::ALL
            .into_iter()
            .filter(|&p| listening(p))
            .map(|p| (self.listen(p).port_origin_var(p), self.listen(p).port.as_ref()))
            .collect();
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
