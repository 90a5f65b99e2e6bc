//! Rendering the node policy and the config policy from the settings, the discovery and the
//! connection table (README, "Advertising: one identity across restarts").
//!
//! - `local_ip` is the stable name; `ip` is the external address when an *ingress* source
//!   gave one (LoadBalancer, node address, explicit), else the stable name too. An egress
//!   address (STUN, echo, metadata public IP) says how we leave, not how to reach us, so it
//!   is reported but not advertised.
//! - `port`/`rest_port`/`broker_port` are the ports that go with `ip`; `local_port` is the
//!   in-cluster Service port when it differs. The pod IP never appears.
//! - `hostname` is stable too: in Kubernetes the Service name (the pod name changes on every
//!   restart, and the policy with it), or the pod's own name with per-pod names (StatefulSet
//!   pod names are stable).

use serde_json::{Map, Value, json};

use crate::config::{NodeType, Settings};
use crate::discover::Discovery;
use crate::discover::environment::EnvironmentKind;
use crate::table::{ConnectionTable, Plane};

/// Why a policy cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "an operator policy must name its cluster: set NETSTRAP_CLUSTER_ID, or CLUSTER_NAME so netstrap can \
         look the cluster policy up in the registry"
    )]
    NoCluster,
}

/// The cluster an operator belongs to, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// `NETSTRAP_CLUSTER_ID`: used as given.
    Id(String),
    /// `CLUSTER_NAME`: the cluster policy, looked up (declared when missing) in the registry;
    /// offline its id is the policy's own.
    Policy(Value),
}

impl Cluster {
    /// The id when nothing is looked up (`netstrap policy`, or no registry).
    pub fn offline_id(&self) -> String {
        match self {
            Cluster::Id(id) => id.clone(),
            Cluster::Policy(p) => crate::policy::id::policy_id(p).unwrap_or_default(),
        }
    }
}

/// The cluster of this node: `None` for a node type that has none; an operator must name it.
/// `netstrap policy` and `netstrap run` both start here, so they cannot disagree.
pub fn cluster(settings: &Settings) -> Result<Option<Cluster>, RenderError> {
    if !matches!(settings.node_type.value, NodeType::Operator | NodeType::MasterOperator) {
        return Ok(None);
    }
    if let Some(id) = &settings.cluster_id {
        return Ok(Some(Cluster::Id(id.clone())));
    }
    let name = settings.cluster_name.as_ref().ok_or(RenderError::NoCluster)?;
    Ok(Some(Cluster::Policy(json!({"cluster": {"company": settings.company_name, "name": name}}))))
}

/// An operator without its cluster cannot have a node policy: `policy` fails on it, and
/// `discover` says so too (exit 1), so that the two dry runs agree before `run` waits on it.
pub fn missing_cluster(settings: &Settings) -> Option<RenderError> {
    cluster(settings).err()
}

/// The stable hostname that goes into the policy and the default node name.
pub fn stable_hostname(settings: &Settings, d: &Discovery) -> String {
    let hostname = settings.hostname.clone();
    match (d.environment.value, &settings.service) {
        (EnvironmentKind::Kubernetes, Some(_)) if settings.per_pod_name => {
            hostname.or_else(|| settings.pod_name.clone()).unwrap_or_else(|| d.stable_name.value.clone())
        }
        (EnvironmentKind::Kubernetes, Some(svc)) => {
            svc.value.split('.').next().unwrap_or_default().to_string()
        }
        // Outside Kubernetes: HOSTNAME (Docker sets it), else the stable name when it is a name
        // (DNS, DNS_DOMAIN), else this machine's own name, which stays when the address changes.
        _ => {
            let stable = &d.stable_name.value;
            let is_address = stable.parse::<std::net::IpAddr>().is_ok();
            hostname
                .or_else(|| (!is_address).then(|| stable.clone()))
                .or_else(system_hostname)
                .unwrap_or_else(|| stable.clone())
        }
    }
}

/// The machine's hostname (its UTS name, what `hostname` prints); none when unset.
fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "(none)" && name != "localhost").then(|| name.to_string())
}

/// `NODE_NAME`, else `<stable hostname> <node_type>`; with Open Horizon's `HZN_DEVICE_ID`,
/// `<NODE_NAME>_<device id>` (the device id alone without `NODE_NAME`), as EdgeLake's
/// deploy_edgelake.sh sets it.
pub fn node_name(settings: &Settings, d: &Discovery) -> String {
    let given = settings.node_name.as_ref().map(|n| n.value.as_str());
    if let Some(name) = settings.horizon.node_name(given) {
        return name;
    }
    match given {
        Some(n) => n.to_string(),
        None => format!("{} {}", stable_hostname(settings, d), settings.node_type.value.name()),
    }
}

/// The node policy `{"<type>": {...}}` in EdgeLake's field order.
pub fn node_policy(
    settings: &Settings,
    d: &Discovery,
    table: &ConnectionTable,
    cluster_id: Option<&str>,
) -> Result<Value, RenderError> {
    let external = d.advertises_external();
    let port = |plane: Plane| {
        table.row(plane).map(|r| if external { r.external_port.value } else { r.cluster_port.value })
    };
    let mut p = Map::new();
    p.insert("name".into(), json!(node_name(settings, d)));
    p.insert("company".into(), json!(settings.company_name));
    p.insert("hostname".into(), json!(stable_hostname(settings, d)));
    for (k, v) in settings.horizon.after_hostname() {
        p.insert(k.into(), json!(v));
    }
    let ip = if external { d.external.value.host.clone() } else { d.stable_name.value.clone() };
    p.insert("ip".into(), json!(ip));
    p.insert("local_ip".into(), json!(d.stable_name.value));
    if let Some(tcp) = port(Plane::Tcp) {
        p.insert("port".into(), json!(tcp));
        if let Some(row) = table.row(Plane::Tcp)
            && external
            && row.cluster_port.value != tcp
        {
            p.insert("local_port".into(), json!(row.cluster_port.value));
        }
    }
    if let Some(rest) = port(Plane::Rest) {
        p.insert("rest_port".into(), json!(rest));
    }
    if let Some(broker) = port(Plane::Broker) {
        p.insert("broker_port".into(), json!(broker));
    }
    if matches!(settings.node_type.value, NodeType::Operator | NodeType::MasterOperator) {
        let id = cluster_id.ok_or(RenderError::NoCluster)?;
        p.insert("cluster".into(), json!(id));
    }
    p.insert("loc".into(), json!(settings.location));
    p.insert("country".into(), json!(settings.country));
    p.insert("state".into(), json!(settings.state));
    p.insert("city".into(), json!(settings.city));
    for (k, v) in settings.horizon.after_location() {
        p.insert(k.into(), json!(v));
    }
    Ok(json!({ settings.node_type.value.policy_type(): Value::Object(p) }))
}

/// EdgeLake's default config policy name (set_params.al: `!node_type.name + - +
/// !company_name.name + -configs`, `-configs-broker` when `ANYLOG_BROKER_PORT` is set), where
/// `.name` is lower-case with spaces as `_`, and `node_type` is the policy type
/// (master-operator → operator): `operator-new_company-configs`.
pub fn config_name(settings: &Settings) -> String {
    if let Some(n) = &settings.config_name {
        return n.clone();
    }
    let company = settings.company_name.to_lowercase().replace(' ', "_");
    let suffix = if settings.broker.listen.node_port.is_some() { "configs-broker" } else { "configs" };
    format!("{}-{company}-{suffix}", settings.node_type.value.policy_type())
}

/// The config policy: shared by every node of a type, so every address and port is a quoted
/// `"!var"` literal EdgeLake resolves on each node (`config from policy where id=...`), and
/// it stays the same across restarts. Only keys EdgeLake's `config from policy` reads.
pub fn config_policy(settings: &Settings) -> Value {
    let mut p = Map::new();
    p.insert("name".into(), json!(config_name(settings)));
    p.insert("company".into(), json!(settings.company_name));
    p.insert("node_type".into(), json!(settings.node_type.value.name()));
    p.insert("ip".into(), json!("!external_ip"));
    p.insert("port".into(), json!("!anylog_server_port.int"));
    p.insert("local_ip".into(), json!("!ip"));
    p.insert("local_port".into(), json!("!anylog_server_port.int"));
    p.insert("rest_port".into(), json!("!anylog_rest_port.int"));
    if settings.broker.listen.port.is_some() {
        p.insert("broker_port".into(), json!("!anylog_broker_port.int"));
    }
    p.insert("tcp_bind".into(), json!("!tcp_bind"));
    p.insert("rest_bind".into(), json!("!rest_bind"));
    p.insert("broker_bind".into(), json!("!broker_bind"));
    p.insert("tcp_threads".into(), json!("!tcp_threads.int"));
    p.insert("rest_threads".into(), json!("!rest_threads.int"));
    p.insert("msg_threads".into(), json!("!broker_threads.int"));
    json!({ "config": Value::Object(p) })
}
