//! Files for the co-located node, written atomically into the state dir:
//!
//! | File | Content |
//! |---|---|
//! | `netstrap.env` | `KEY=VALUE`: the resolved addresses and ports, with EdgeLake's own variable names (`DNS`, `EXTERNAL_IP`, ports, `LEDGER_CONN`, ...) so its scripts produce the same stable policy |
//! | `node_policy.json` | the node policy as declared |
//! | `config_policy.json` | the config policy (quoted `"!var"` literals) |
//! | `network.json` | the connection table and the discovery behind it |
//! | `netstrap.al` | EdgeLake commands: the node binds loopback on its internal ports (netstrap relays to them) and replies with the advertised address; on a host, where `netstrap.env` already binds it to loopback (docs/host.md), only the reply address |
//!
//! `netstrap.env` values are written bare when they are plain words, else in double quotes
//! with `\` and `"` escaped (docker compose and systemd read both forms).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde_json::Value;

use crate::config::Settings;
use crate::discover::Discovery;
use crate::policy::template::{NoVars, expand};
use crate::table::{ConnectionTable, Plane};

/// Everything the files are rendered from.
pub struct NodeFiles<'a> {
    pub settings: &'a Settings,
    pub discovery: &'a Discovery,
    pub table: &'a ConnectionTable,
    pub node_policy: &'a Value,
    pub config_policy: &'a Value,
    pub policy_id: Option<&'a str>,
}

/// The policy's inner object.
fn inner(policy: &Value) -> Option<&serde_json::Map<String, Value>> {
    policy.as_object()?.values().next()?.as_object()
}

fn field(policy: &Value, key: &str) -> Option<String> {
    inner(policy)?.get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl NodeFiles<'_> {
    /// The node variables the files are rendered from (`!name` in templates).
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        let s = self.settings;
        let ip = field(self.node_policy, "ip").unwrap_or_default();
        v.insert("external_ip".into(), ip.clone());
        v.insert("stable_name".into(), self.discovery.stable_name.value.clone());
        v.insert("advertised_port".into(), field(self.node_policy, "port").unwrap_or_default());
        for row in &self.table.rows {
            let p = row.plane.name();
            let internal = self.settings.upstream(row.plane).map(|a| a.port()).unwrap_or(row.port.value);
            v.insert(format!("{p}_internal_port"), internal.to_string());
            v.insert(format!("{p}_threads"), row.threads.value.to_string());
            let (host, port) = match row.plane {
                Plane::Tcp => (ip.clone(), field(self.node_policy, "port")),
                Plane::Rest => (ip.clone(), field(self.node_policy, "rest_port")),
                Plane::Broker => (ip.clone(), field(self.node_policy, "broker_port")),
            };
            v.insert(format!("{p}_external_ip"), host);
            v.insert(
                format!("{p}_external_port"),
                port.unwrap_or_else(|| row.external_port.value.to_string()),
            );
        }
        v.insert("rest_timeout".into(), s.rest.timeout.value.as_secs().to_string());
        v
    }

    /// `netstrap.al`: the listener commands for a node behind netstrap.
    pub fn al(&self) -> String {
        // The path where this file really is (the state dir, made absolute): the node's
        // working directory is not netstrap's.
        let dir =
            std::path::absolute(&self.settings.state_dir).unwrap_or_else(|_| self.settings.state_dir.clone());
        let mut t = format!(
            "# Rendered by netstrap: the node listens on loopback behind netstrap's relays and\n\
             # advertises the stable addresses. Apply with: process {}\n",
            dir.join("netstrap.al").display()
        );
        let loopback = self.loopback_node();
        for row in &self.table.rows {
            let p = row.plane.name();
            match (row.plane, self.settings.upstream(row.plane)) {
                // main.al already bound it from netstrap.env: a second `run ... server` would
                // start a listener thread that cannot bind and overwrite the node's record of
                // its addresses. Only the reply address is left to set.
                (_, Some(up)) if loopback && up.ip().is_loopback() => t.push_str(&format!(
                    "# {p}: bound on {up} by the node's main.al, from netstrap.env ({}_BIND=true, NIC_TYPE=lo)\n",
                    p.to_uppercase()
                )),
                (Plane::Tcp, Some(up)) => t.push_str(&format!(
                    "run tcp server where external_ip=!tcp_external_ip and external_port=!tcp_external_port and \
                     internal_ip={} and internal_port=!tcp_internal_port and bind=true and threads=!tcp_threads\n",
                    up.ip()
                )),
                (Plane::Rest, Some(up)) => t.push_str(&format!(
                    "run rest server where external_ip=!rest_external_ip and external_port=!rest_external_port and \
                     internal_ip={} and internal_port=!rest_internal_port and timeout=!rest_timeout and \
                     threads=!rest_threads and ssl=false and bind=true\n",
                    up.ip()
                )),
                (Plane::Broker, Some(up)) => t.push_str(&format!(
                    "run message broker where external_ip=!broker_external_ip and external_port=!broker_external_port \
                     and internal_ip={} and internal_port=!broker_internal_port and bind=true and \
                     threads=!broker_threads\n",
                    up.ip()
                )),
                (_, None) => t.push_str(&format!(
                    "# {p}: served by netstrap itself on port {} (no upstream configured)\n",
                    row.port.value
                )),
            }
        }
        // With bind=true EdgeLake records the loopback bind address as its own address, so
        // the address it puts in replies must be set explicitly.
        t.push_str("set reply ip and port = !external_ip:!advertised_port\n");
        // The template only uses variables defined above; a failure would be a netstrap bug.
        expand(&t, &self.vars(), &NoVars).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// `netstrap.env` for a node that declares itself (`NETSTRAP_DECLARE=node`): the inputs
    /// of EdgeLake's main.al that make its policy the advertised one and keep it the same
    /// across restarts. `ENABLE_DNS` + `EXTERNAL_DNS` put the advertised host (a name or an
    /// address) into `ip` and into the node's own TCP address, `DNS` puts the stable name into
    /// `local_ip`, the advertised ports are the ports it binds and declares (netstrap relays
    /// to them on loopback), and main.al's look-up (company, name, `ip`, `port`) finds the
    /// same policy after every restart.
    fn node_env(&self, put: &mut impl FnMut(&str, String)) {
        let s = self.settings;
        let d = self.discovery;
        put("NODE_NAME", crate::policy::render::node_name(s, d));
        let tcp = self.table.row(Plane::Tcp);
        let host = tcp.map(|r| r.external_host.value.clone()).unwrap_or_default();
        put("ENABLE_DNS", "true".into());
        put("EXTERNAL_DNS", host.clone());
        // EdgeLake pairs `local_ip` with the same port as `ip` (and replies from its internal
        // address to peers at private addresses): the Service name answers only on the Service
        // port, so where peers are given another port (a nodePort) `local_ip` is the advertised
        // host too. Outside Kubernetes the stable name is the host's, reachable on that port.
        let pairs = tcp.is_none_or(|r| r.cluster_port.value == r.external_port.value);
        let kubernetes = d.environment.value == crate::discover::environment::EnvironmentKind::Kubernetes;
        put("DNS", if pairs || !kubernetes { d.stable_name.value.clone() } else { host });
        for row in &self.table.rows {
            let (var, bind) = (row.plane.port_var(), row.plane.bind_var());
            put(var, row.external_port.value.to_string());
            // All interfaces: netstrap's relay dials the node on loopback.
            put(bind, "false".into());
        }
        put("LEDGER_CONN", self.table.ledger_conn.value.clone());
    }

    /// `netstrap.env`.
    pub fn env(&self) -> String {
        let s = self.settings;
        let d = self.discovery;
        let mut kv: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| kv.push((k.to_string(), v));
        if s.declare.value == crate::config::Declarer::Node {
            self.node_env(&mut put);
        } else {
            self.netstrap_env(&mut put);
        }
        put("NETSTRAP_STABLE_NAME", d.stable_name.value.clone());
        // Only an address that reaches this node from outside (never the pod IP).
        if d.advertises_external() {
            put("NETSTRAP_EXTERNAL_HOST", d.external.value.host.clone());
        }
        for row in &self.table.rows {
            let p = row.plane.name().to_uppercase();
            put(
                &format!("NETSTRAP_{p}_ADVERTISED"),
                crate::addr::host_port(&row.external_host.value, row.external_port.value),
            );
            put(
                &format!("NETSTRAP_{p}_CLUSTER"),
                crate::addr::host_port(&row.cluster_host.value, row.cluster_port.value),
            );
        }
        if let Some(id) = self.policy_id {
            put("NETSTRAP_POLICY_ID", id.to_string());
        }
        let mut out = String::from(
            "# Rendered by netstrap; do not edit (rewritten when an advertised value changes)\n",
        );
        for (k, v) in kv {
            out.push_str(&format!("{k}={}\n", env_value(&v)));
        }
        out
    }

    /// `netstrap.env` for a node netstrap declares for (`NETSTRAP_DECLARE=netstrap`).
    fn netstrap_env(&self, put: &mut impl FnMut(&str, String)) {
        let s = self.settings;
        let d = self.discovery;
        put("NODE_TYPE", s.node_type.value.name().into());
        put("NODE_NAME", field(self.node_policy, "name").unwrap_or_default());
        put("COMPANY_NAME", s.company_name.clone());
        let ip = field(self.node_policy, "ip").unwrap_or_default();
        let loopback = self.loopback_node();
        if loopback {
            self.loopback_env(put);
            if ip.parse::<std::net::IpAddr>().is_ok() {
                put("EXTERNAL_IP", ip.clone());
            }
        } else {
            // EdgeLake puts DNS into local_ip: the stable name instead of the pod IP.
            put("DNS", d.stable_name.value.clone());
            if ip.parse::<std::net::IpAddr>().is_ok() {
                put("EXTERNAL_IP", ip.clone());
            } else {
                put("ENABLE_DNS", "true".into());
                put("EXTERNAL_DNS", ip.clone());
            }
        }
        for row in &self.table.rows {
            let upstream = self.settings.upstream(row.plane);
            let internal = upstream.map(|a| a.port()).unwrap_or(row.port.value);
            let (var, bind) = (row.plane.port_var(), row.plane.bind_var());
            put(var, internal.to_string());
            // In a pod or container: never true, EdgeLake's scripts bind `*_BIND=true` to the
            // node's own (pod) IP, where netstrap's loopback relay cannot reach it; all
            // interfaces of the pod works behind the relay. On a host all interfaces are the
            // host's public ones: there `NIC_TYPE=lo` makes the bound address loopback.
            let on_loopback = loopback && upstream.is_some_and(|a| a.ip().is_loopback());
            put(bind, on_loopback.to_string());
        }
        put("LEDGER_CONN", self.table.ledger_conn.value.clone());
    }

    /// On a host, a node behind netstrap's loopback relays must not listen on the host's
    /// public addresses (`*_BIND=false` is all interfaces, around netstrap).
    fn loopback_node(&self) -> bool {
        self.settings.declare.value == crate::config::Declarer::Netstrap
            && self.discovery.environment.value == crate::discover::environment::EnvironmentKind::Host
            && self
                .table
                .rows
                .iter()
                .any(|r| self.settings.upstream(r.plane).is_some_and(|a| a.ip().is_loopback()))
    }

    /// The inputs of EdgeLake's main.al that make it bind loopback (docs/host.md): with
    /// `*_BIND=true` it binds TCP to `DNS` when set, else to its `ip`; REST and the broker to
    /// `EXTERNAL_DNS` with `ENABLE_DNS`, else `OVERLAY_IP`, else its `ip`; `NIC_TYPE=lo` makes
    /// its `ip` 127.0.0.1 (`set internal ip with lo`) and turns `OVERLAY_IP` off. The others
    /// are written empty so the node's own env file cannot bring them back. The node's own
    /// scripts would declare that loopback address: `IS_HIDDEN=true` stops them (netstrap
    /// declares the node; EdgeLake ignores it for an operator).
    fn loopback_env(&self, put: &mut impl FnMut(&str, String)) {
        put("NIC_TYPE", "lo".into());
        for var in ["DNS", "DNS_DOMAIN", "EXTERNAL_DNS", "OVERLAY_IP"] {
            put(var, String::new());
        }
        put("ENABLE_DNS", "false".into());
        put("IS_HIDDEN", "true".into());
    }

    /// Every file: its name in the state dir and its contents.
    pub fn render(&self) -> Rendered {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
        let network = serde_json::json!({ "table": self.table, "discovery": self.discovery });
        Rendered(vec![
            ("node_policy.json", pretty(self.node_policy)),
            ("config_policy.json", pretty(self.config_policy)),
            ("network.json", pretty(&network)),
            ("netstrap.al", self.al()),
            ("netstrap.env", self.env()),
        ])
    }
}

/// The node's files, rendered: owned, so that writing them (fsyncs) can run off the runtime.
pub struct Rendered(Vec<(&'static str, String)>);

impl Rendered {
    /// Write every file into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        // Unchanged files are left alone: no needless fsyncs every watch interval, and a
        // read-only or full disk matters only when something changed.
        let changed: Vec<(&str, &[u8])> = self
            .0
            .iter()
            .filter(|(name, body)| !std::fs::read(dir.join(name)).is_ok_and(|old| old == body.as_bytes()))
            .map(|(name, body)| (*name, body.as_bytes()))
            .collect();
        crate::state::write_all_atomic(dir, &changed)
    }
}

fn env_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | ',' | '[' | ']'));
    if plain { v.to_string() } else { format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")) }
}

/// The TCP address the last `netstrap.env` in `dir` advertised (`NETSTRAP_TCP_ADVERTISED`).
pub fn previous_advertised(dir: &Path) -> Option<super::node::Expected> {
    let text = std::fs::read_to_string(dir.join("netstrap.env")).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("NETSTRAP_TCP_ADVERTISED="))?;
    let value = value.trim().trim_matches('"');
    let (host, port) = value.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Some(super::node::Expected { host, port: port.parse().ok()? })
}
