//! Prometheus metrics per plane (prometheus-client), served at `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
            registry: Mutex::new(Registry::with_prefix("netstrap")),
            connections_total: Family::default(),
            connections_active: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            http_requests: Family::default(),
            broker_clients: Gauge::default(),
            broker_messages: Counter::default(),
            broker_refused: Family::default(),
            ready: Gauge::default(),
            endpoint_verified: Family::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register("connections", "Connections accepted per plane", m.connections_total.clone());
            r.register("connections_active", "Open connections per plane", m.connections_active.clone());
            r.register("received_bytes", "Bytes received from clients per plane", m.bytes_received.clone());
            r.register("sent_bytes", "Bytes sent to clients per plane", m.bytes_sent.clone());
            r.register("http_requests", "HTTP requests on the rest plane", m.http_requests.clone());
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
                crate::planes::broker_drops::DROPPED.clone(),
            );
            r.register(
                "broker_slow_subscribers_disconnected",
                "Subscribers the embedded broker disconnected because publishers waited for them longer than NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT",
                crate::planes::broker_drops::SLOW_DISCONNECTED.clone(),
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
        }
        m
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
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
