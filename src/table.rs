//! The connection table (README, "What `netstrap run` serves"): for each plane, what netstrap binds and what it
//! advertises, and why. Computed from the settings and the discovery; printed at start,
//! by `netstrap discover`, and served as JSON.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Serialize;

use crate::addr::host_port;
pub use crate::config::Plane;
use crate::config::{BrokerMode, PlaneSettings, Settings};
use crate::discover::{Discovery, ExposedPort};
use crate::provenance::{Found, Provenance};

/// One row of the connection table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlaneRow {
    pub plane: Plane,
    /// How the plane serves (tcp: native/relay; rest: api/api+proxy; broker: embedded/relay).
    pub mode: Found<String>,
    /// The address the listener binds: the local IP when `*_BIND=true`, else all interfaces.
    pub bind_ip: Found<IpAddr>,
    /// The listening (internal) port.
    pub port: Found<u16>,
    /// What peers outside the cluster dial.
    pub external_host: Found<String>,
    pub external_port: Found<u16>,
    /// What peers inside the cluster dial: the stable name and the Service port.
    pub cluster_host: Found<String>,
    pub cluster_port: Found<u16>,
    pub threads: Found<u16>,
    /// Request timeout (rest only; zero = no limit).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub timeout: Option<Found<Duration>>,
}

/// The connection table: rows for the enabled planes, plus the master address the node
/// reports to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionTable {
    pub rows: Vec<PlaneRow>,
    /// `LEDGER_CONN` after EdgeLake's recompute rule.
    pub ledger_conn: Found<String>,
}

impl ConnectionTable {
    pub fn plan(settings: &Settings, d: &Discovery) -> ConnectionTable {
        let mut rows = Vec::new();
        let tcp_mode = Found::new(
            format!("{:?}", settings.tcp.mode.value).to_lowercase(),
            settings.tcp.mode.why.clone(),
        );
        rows.push(row(Plane::Tcp, &settings.tcp.listen, &d.tcp, tcp_mode, None, d));
        let rest_mode = match settings.rest.upstream {
            Some(up) => {
                Found::new(format!("api+proxy to {up}"), Provenance::new("env NETSTRAP_REST_UPSTREAM"))
            }
            None => Found::new("api".into(), Provenance::new("no NETSTRAP_REST_UPSTREAM")),
        };
        rows.push(row(
            Plane::Rest,
            &settings.rest.listen,
            &d.rest,
            rest_mode,
            Some(settings.rest.timeout.clone()),
            d,
        ));
        if settings.broker.mode.value != BrokerMode::Off
            && let Some(b) = &d.broker
        {
            let mode = Found::new(
                format!("{:?}", settings.broker.mode.value).to_lowercase(),
                settings.broker.mode.why.clone(),
            );
            rows.push(row(Plane::Broker, &settings.broker.listen, b, mode, None, d));
        }
        ConnectionTable { rows, ledger_conn: ledger_conn(settings, d) }
    }

    pub fn row(&self, plane: Plane) -> Option<&PlaneRow> {
        self.rows.iter().find(|r| r.plane == plane)
    }

    /// EdgeLake's connection table, filled in, followed by the reason for every value.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let headers =
            ["Connection", "External address", "Cluster address", "Local (bind) address", "Node command"];
        let mut lines: Vec<[String; 5]> = vec![headers.map(String::from)];
        for r in &self.rows {
            lines.push([
                r.plane.title().to_string(),
                host_port(&r.external_host.value, r.external_port.value),
                host_port(&r.cluster_host.value, r.cluster_port.value),
                host_port(&r.bind_ip.value.to_string(), r.port.value),
                r.plane.node_command().to_string(),
            ]);
        }
        let widths: Vec<usize> =
            (0..5).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        for (n, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
            }
        }
        for r in &self.rows {
            let _ = writeln!(out, "\n{} ({}):", r.plane.title(), r.mode.value);
            let mut why = |what: &str, value: String, p: &Provenance| {
                let _ = writeln!(out, "  {what:<14} {value:<40} {}", p.summary());
            };
            why("mode", r.mode.value.clone(), &r.mode.why);
            why("bind", r.bind_ip.value.to_string(), &r.bind_ip.why);
            why("port", r.port.value.to_string(), &r.port.why);
            why("external host", r.external_host.value.clone(), &r.external_host.why);
            why("external port", r.external_port.value.to_string(), &r.external_port.why);
            why("cluster host", r.cluster_host.value.clone(), &r.cluster_host.why);
            why("cluster port", r.cluster_port.value.to_string(), &r.cluster_port.why);
            why("threads", r.threads.value.to_string(), &r.threads.why);
            if let Some(t) = &r.timeout {
                why("timeout", format!("{}s", t.value.as_secs()), &t.why);
            }
        }
        let _ =
            writeln!(out, "\nLEDGER_CONN {} — {}", self.ledger_conn.value, self.ledger_conn.why.summary());
        out
    }
}

fn row(
    plane: Plane,
    s: &PlaneSettings,
    exposed: &ExposedPort,
    mode: Found<String>,
    timeout: Option<Found<Duration>>,
    d: &Discovery,
) -> PlaneRow {
    let var = plane.bind_var();
    let bind_ip = if s.bind.value {
        Found::new(d.local_ip.value, Provenance::new(format!("{var}=true: the local IP")))
    } else {
        let any: IpAddr = if d.local_ip.value.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        Found::new(any, Provenance::new(format!("{var}=false: all interfaces")))
    };
    // A broker row exists only with a port (checked by the configuration).
    let port = s.port.clone().unwrap_or_else(|| Found::new(0, Provenance::new("no port")));
    // Without an address that reaches us from outside, outside peers get what inside peers
    // get: the stable name and the Service port — never the pod IP.
    let (external_host, external_port) = if d.advertises_external() {
        (Found::new(d.external.value.host.clone(), d.external.why.clone()), exposed.external.clone())
    } else {
        (
            Found::new(
                d.stable_name.value.clone(),
                Provenance::new(format!(
                    "the stable name: no external address reaches this node ({})",
                    d.external.why.summary()
                )),
            ),
            // A port the operator configured (a Docker published port) still stands.
            if s.external_port.is_some() { exposed.external.clone() } else { exposed.cluster.clone() },
        )
    };
    PlaneRow {
        plane,
        mode,
        bind_ip,
        port,
        external_host,
        external_port,
        cluster_host: d.stable_name.clone(),
        cluster_port: exposed.cluster.clone(),
        threads: s.threads.clone(),
        timeout,
    }
}

/// EdgeLake's rule: a `LEDGER_CONN` starting with 127.0.0.1 is recomputed from the node's
/// own address (master: its own server port; others: 32048). Any other value is used as
/// given. The node's own address here is its stable name, never the pod IP. A name is then
/// replaced by the address it resolves to: EdgeLake reads a destination whose text holds
/// `master`, `operator`, `query` or `publisher` as a blockchain query, so a name such as
/// `edgelake-master` cannot reach the master (re-resolved every watch pass).
fn ledger_conn(settings: &Settings, d: &Discovery) -> Found<String> {
    let given = &settings.ledger_conn;
    if let Some(l) = &d.ledger {
        return match first_address(&l.resolution.addresses) {
            Some(ip) => Found::new(
                host_port(&ip.to_string(), l.port),
                Provenance::new(format!("LEDGER_CONN={}: {} resolved by the cluster DNS", l.given, l.name)),
            ),
            None => given.clone(),
        };
    }
    if !given.value.starts_with("127.0.0.1") {
        return given.clone();
    }
    let port = if settings.node_type.value.is_master() { d.tcp.cluster.value } else { 32048 };
    let why = if settings.node_type.value.is_master() {
        "master: own TCP port"
    } else {
        "not a master: port 32048"
    };
    let resolved = d.resolution.as_ref().and_then(|r| first_address(&r.addresses));
    let (host, how) = match resolved {
        Some(ip) => (ip.to_string(), format!(", {} resolved by the cluster DNS", d.stable_name.value)),
        None => (d.stable_name.value.clone(), String::new()),
    };
    Found::new(
        host_port(&host, port),
        Provenance::new(format!(
            "{} starts with 127.0.0.1: recomputed from this node's stable name ({why}){how}",
            given.value
        )),
    )
}

/// The address to give EdgeLake: IPv4 first (its parser splits `host:port` at the first colon).
fn first_address(addresses: &[IpAddr]) -> Option<IpAddr> {
    addresses.iter().find(|a| a.is_ipv4()).or_else(|| addresses.first()).copied()
}

mod opt_secs {
    use std::time::Duration;

    use serde::Serializer;

    use crate::provenance::Found;

    pub fn serialize<S: Serializer>(v: &Option<Found<Duration>>, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match v {
            None => s.serialize_none(),
            Some(f) => {
                let mut st = s.serialize_struct("Found", 2)?;
                st.serialize_field("value", &f.value.as_secs())?;
                st.serialize_field("why", &f.why)?;
                st.end()
            }
        }
    }
}
