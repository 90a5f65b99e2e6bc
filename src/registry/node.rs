//! What a node policy says about reaching the node: the part of a policy the peer check and
//! `/v1/peers` need, read from the registry.

use serde_json::Value;

use crate::addr::host_port;

/// The node types whose policies describe dialable nodes.
pub const NODE_TYPES: &[&str] = &["master", "operator", "query", "publisher", "generic"];

/// What the peer check needs of a node policy: kept instead of the policy, so that a long
/// list of nodes costs a few hundred bytes each, not a parsed JSON tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub node_type: String,
    pub name: String,
    pub company: String,
    pub id: Option<String>,
    pub tcp: Option<String>,
    pub rest: Option<String>,
    pub broker: Option<String>,
}

impl Node {
    /// The node a policy (`{"<type>": {...}}`) describes; `None` for what is not a policy.
    pub fn from_policy(policy: &Value) -> Option<Node> {
        let (ty, inner) = policy.as_object().and_then(|o| o.iter().next())?;
        let inner = inner.as_object()?;
        let text = |k: &str| inner.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (tcp, rest, broker) = endpoints(inner);
        Some(Node {
            node_type: ty.clone(),
            name: text("name"),
            company: text("company"),
            id: inner.get("id").and_then(Value::as_str).map(String::from),
            tcp,
            rest,
            broker,
        })
    }
}

fn endpoints(inner: &serde_json::Map<String, Value>) -> (Option<String>, Option<String>, Option<String>) {
    let text = |k: &str| inner.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    let port = |k: &str| inner.get(k).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let Some(host) = text("ip").or_else(|| text("local_ip")) else { return (None, None, None) };
    let at = |k: &str| port(k).and_then(|p| u16::try_from(p).ok()).map(|p| host_port(&host, p));
    (at("port"), at("rest_port"), at("broker_port"))
}
