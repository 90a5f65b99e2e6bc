//! Prometheus metrics (prometheus-client), served at `/metrics`: per plane, the REST plane's
//! request latencies, the control plane's registry calls, declares and verifications
//! ([`control`]), the build and the process ([`process`]). The text format is chosen by the
//! scraper's `Accept` header ([`exposition`]): Prometheus text 0.0.4 unless it asks for
//! OpenMetrics.

pub mod control;
pub mod exposition;
pub mod process;

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::table::Plane;

/// The `plane` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaneLabel {
    pub plane: &'static str,
}

impl PlaneLabel {
    pub fn of(plane: Plane) -> PlaneLabel {
        PlaneLabel { plane: plane.name() }
    }
}

/// Labels of HTTP request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// `api` (served by netstrap) or `proxy` (sent to the node's REST API).
    pub route: &'static str,
    pub code: u16,
}

/// The label of REST plane latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `api` (served by netstrap) or `proxy` (sent to the node's REST API).
    pub route: &'static str,
}

/// `netstrap_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: &'static str,
    pub commit: &'static str,
    pub target: &'static str,
}

/// This build: the crate version, the commit (`REVISION` when it was built, else `unknown`)
/// and the target triple (see build.rs).
pub const BUILD: BuildLabel = BuildLabel {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("NETSTRAP_REVISION"),
    target: env!("NETSTRAP_TARGET"),
};

/// Buckets of REST plane latencies, in seconds: netstrap's own answers take tens of
/// microseconds, a proxied request what the node takes, up to `REST_TIMEOUT` (30 s default).
pub const HTTP_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// Labels of self-verification results.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub plane: String,
    pub endpoint: String,
}

/// Why the embedded broker refused something (`broker_guard`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    pub reason: &'static str,
}

/// All of netstrap's metrics. Cheap to clone handles out of; counters are atomics.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub connections_total: Family<PlaneLabel, Counter>,
    pub connections_active: Family<PlaneLabel, Gauge>,
    pub bytes_received: Family<PlaneLabel, Counter>,
    pub bytes_sent: Family<PlaneLabel, Counter>,
    pub http_requests: Family<RequestLabel, Counter>,
    /// Time from a request's head to its response head, by route (kubelet's `GET /livez` and
    /// `GET /readyz`, answered before the router, are counted in `http_requests` only).
    pub http_duration: control::Histograms<RouteLabel>,
    pub broker_clients: Gauge,
    pub broker_messages: Counter,
    /// What the embedded broker's front door refused, by reason.
    pub broker_refused: Family<RefusedLabel, Counter>,
    pub ready: Gauge,
    /// 1 when the advertised endpoint answered with this node's identity, else 0.
    pub endpoint_verified: Family<EndpointLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            connections_total: Family::default(),
            connections_active: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            broker_clients: Gauge::default(),
            broker_messages: Counter::default(),
            broker_refused: Family::default(),
            ready: Gauge::default(),
            endpoint_verified: Family::default(),
        };
        if let Ok(mut root) = m.registry.lock() {
            root.register_collector(Box::new(process::ProcessCollector));
            let r = root.sub_registry_with_prefix("netstrap");
            let build: Family<BuildLabel, Gauge> = Family::default();
            build.get_or_create(&BUILD).set(1);
            r.register("build_info", "netstrap's version, commit and target; always 1", build);
            r.register("connections", "Connections accepted per plane", m.connections_total.clone());
            r.register("connections_active", "Open connections per plane", m.connections_active.clone());
            r.register("received_bytes", "Bytes received from clients per plane", m.bytes_received.clone());
            r.register("sent_bytes", "Bytes sent to clients per plane", m.bytes_sent.clone());
            r.register("http_requests", "HTTP requests on the rest plane", m.http_requests.clone());
            r.register(
                "http_request_duration_seconds",
                "Rest plane request latency in seconds, by route (api: netstrap's own endpoints but the kubelet probes; proxy: the node's REST API)",
                m.http_duration.clone(),
            );
            r.register(
                "broker_clients",
                "MQTT clients connected to the embedded broker",
                m.broker_clients.clone(),
            );
            r.register(
                "broker_messages",
                "MQTT messages published to the embedded broker",
                m.broker_messages.clone(),
            );
            r.register(
                "broker_dropped_messages",
                "MQTT messages the embedded broker skipped for a subscriber further behind than NETSTRAP_BROKER_BACKLOG",
                crate::logging::broker_drops::DROPPED.clone(),
            );
            r.register(
                "broker_slow_subscribers_disconnected",
                "Subscribers the embedded broker disconnected because publishers waited for them longer than NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT",
                crate::logging::broker_drops::SLOW_DISCONNECTED.clone(),
            );
            r.register(
                "broker_refused",
                "Packets and connections the embedded broker refused (SUBACK failure, CONNACK refusal, close), by reason",
                m.broker_refused.clone(),
            );
            r.register("ready", "1 when /readyz answers 200", m.ready.clone());
            r.register(
                "endpoint_verified",
                "1 when the advertised endpoint answered as this node",
                m.endpoint_verified.clone(),
            );
            r.register(
                "registry_calls",
                "Calls to the registry (NETSTRAP_LEDGER), by operation and outcome",
                control::REGISTRY_CALLS.clone(),
            );
            r.register(
                "registry_call_duration_seconds",
                "Registry call latency in seconds, by operation",
                control::REGISTRY_DURATION.clone(),
            );
            r.register(
                "declares",
                "Policies declared in the registry, by policy (node, config, cluster) and outcome",
                control::DECLARES.clone(),
            );
            r.register(
                "verifications",
                "Self-verifications of advertised endpoints, by plane and result",
                control::VERIFICATIONS.clone(),
            );
        }
        m
    }

    /// The OpenMetrics 1.0 exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// The Prometheus text format 0.0.4 exposition.
    pub fn encode(&self) -> String {
        exposition::to_text(&self.encode_openmetrics())
    }

    /// `/metrics` for a request with this `Accept` header: its `Content-Type` and body.
    pub fn render(&self, accept: Option<&str>) -> (&'static str, String) {
        match exposition::negotiate(accept) {
            exposition::Format::OpenMetrics => (exposition::OPENMETRICS, self.encode_openmetrics()),
            exposition::Format::Text => (exposition::TEXT, self.encode()),
        }
    }

    /// Count a new connection on `plane`; the guard decrements the open count when dropped.
    pub fn connection(&self, plane: Plane) -> ConnectionGuard {
        let label = PlaneLabel::of(plane);
        self.connections_total.get_or_create(&label).inc();
        let active = self.connections_active.get_or_create(&label).clone();
        active.inc();
        ConnectionGuard { active }
    }

    pub fn add_bytes(&self, plane: Plane, received: u64, sent: u64) {
        let label = PlaneLabel::of(plane);
        self.bytes_received.get_or_create(&label).inc_by(received);
        self.bytes_sent.get_or_create(&label).inc_by(sent);
    }
}

/// Keeps a connection counted as open.
pub struct ConnectionGuard {
    active: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.active.dec();
        crate::memory::connection_closed();
    }
}
