//! `NETSTRAP_DECLARE=node`: the node declares its own policy with its own scripts (EdgeLake's
//! main.al), so exactly one component declares it. netstrap's part (docs/edgelake.md):
//!
//! - give the scripts inputs that stay the same across restarts (`netstrap.env`: the advertised
//!   host as `EXTERNAL_DNS`, the stable name as `DNS`, the advertised ports as the node's own
//!   ports, `LEDGER_CONN` as an address): main.al's look-up then finds the policy it declared
//!   before and keeps its id;
//! - check that the registry holds the node's policy with the advertised addresses, and remove
//!   stale copies of it (an earlier pod-IP policy of the same node makes EdgeLake refuse the
//!   operator's declaration, "Non unique policy values");
//! - ask the node whether it serves (its TCP and REST servers, for an operator the operator
//!   process) and names itself with the advertised address: readiness check [`CHECK_NODE`].

use serde::Serialize;
use serde_json::Value;

use crate::addr::host_port;
use crate::config::NodeType;
use crate::registry::anylog::AnylogClient;
use crate::table::{ConnectionTable, Plane};

/// Readiness check: the node serves and names itself with the advertised addresses.
pub const CHECK_NODE: &str = "node";

pub use crate::snapshot::Expected;

impl Expected {
    pub fn from_table(table: &ConnectionTable) -> Option<Expected> {
        let tcp = table.row(Plane::Tcp)?;
        Some(Expected { host: tcp.external_host.value.clone(), port: tcp.external_port.value })
    }

    /// Whether a stored policy (`{"<type>": {...}}`) carries this address and port.
    pub fn matches(&self, policy: &Value) -> bool {
        let Some(inner) = policy.as_object().and_then(|o| o.values().next()) else { return false };
        let ip = inner.get("ip").and_then(Value::as_str).unwrap_or_default();
        let port = match inner.get("port") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        ip.eq_ignore_ascii_case(&self.host) && port == Some(u64::from(self.port))
    }
}

/// What the registry holds for this node.
#[derive(Debug, Default, Serialize)]
pub struct Found {
    /// The node's policy with the advertised addresses, if declared.
    pub current: Option<Value>,
    /// Policies of the same type, company and name with other addresses.
    pub stale: Vec<Value>,
}

impl Found {
    pub fn split(policies: Vec<Value>, expected: &Expected) -> Found {
        let mut found = Found::default();
        for p in policies {
            if expected.matches(&p) && found.current.is_none() {
                found.current = Some(p);
            } else {
                found.stale.push(p);
            }
        }
        found
    }

    /// Stale policies safe to remove: all of them once the node has declared its current one;
    /// before that all but the one at `previous`, the address the node still runs with (it
    /// read an earlier `netstrap.env`; that policy is its own until it restarts). A node that
    /// restarts with the new address finds the old policy gone, so its own declaration is not
    /// refused as a duplicate.
    pub fn removable(&self, previous: Option<&Expected>) -> Vec<String> {
        self.stale
            .iter()
            .filter(|p| self.current.is_some() || previous.is_none_or(|prev| !prev.matches(p)))
            .filter_map(policy_id)
            .collect()
    }
}

pub fn policy_id(policy: &Value) -> Option<String> {
    let inner = policy.as_object()?.values().next()?;
    inner.get("id").and_then(Value::as_str).map(String::from)
}

pub use crate::snapshot::NodeStatus;

impl NodeStatus {
    /// Whether the node's TCP server names itself with this address.
    pub fn names_itself(&self, e: &Expected) -> bool {
        let have =
            self.connections.as_ref().and_then(|c| c.get("TCP")?.get("external")?.as_str().map(String::from));
        have.is_some_and(|h| h.eq_ignore_ascii_case(&host_port(&e.host, e.port)))
    }
}

/// Ask the node (through its REST server) what it runs and how it names itself.
pub async fn status(node: &AnylogClient, node_type: NodeType, table: &ConnectionTable) -> NodeStatus {
    let mut st = NodeStatus::default();
    match node.get_json("get processes where format=json").await {
        Ok(p) => {
            let mut needed = vec!["TCP", "REST"];
            if matches!(node_type, NodeType::Operator | NodeType::MasterOperator) {
                needed.push("Operator");
            }
            for name in needed {
                let status = p.get(name).and_then(|v| v.get("Status")).and_then(Value::as_str);
                if status != Some("Running") {
                    let why = if name == "Operator" {
                        " (EdgeLake's scripts run `run operator` only when they found or declared the \
                         node's policy: see the node's log; a stale policy of the same name blocks it)"
                    } else {
                        ""
                    };
                    st.problems.push(format!(
                        "the node's {name} process is {}{why}",
                        status.unwrap_or("not reported")
                    ));
                }
            }
            st.processes = Some(p);
        }
        Err(e) => st.problems.push(format!("the node does not answer on its REST server: {e}")),
    }
    if st.processes.is_some() {
        match node.get_json("get connections where format=json").await {
            Ok(c) => {
                for (plane, key) in [(Plane::Tcp, "TCP"), (Plane::Rest, "REST"), (Plane::Broker, "Messaging")]
                {
                    let Some(row) = table.row(plane) else { continue };
                    let want = host_port(&row.external_host.value, row.external_port.value);
                    let have = c.get(key).and_then(|v| v.get("external")).and_then(Value::as_str);
                    if have.is_some_and(|h| !h.eq_ignore_ascii_case(&want)) {
                        st.problems.push(format!(
                            "the node names its {key} address {}, not the advertised {want} (it reads \
                             netstrap.env at start: restart it)",
                            have.unwrap_or_default()
                        ));
                    }
                }
                st.connections = Some(c);
            }
            Err(e) => st.problems.push(format!("`get connections` failed: {e}")),
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(ip: &str, port: Value, id: &str) -> Value {
        json!({"operator": {"name": "op", "company": "c", "ip": ip, "port": port, "id": id}})
    }

    #[test]
    fn current_and_stale_are_told_apart() {
        let e = Expected { host: "op.edge.svc.cluster.local".into(), port: 32148 };
        let found = Found::split(
            vec![op("10.244.1.7", json!(32148), "a"), op("OP.edge.svc.cluster.local", json!("32148"), "b")],
            &e,
        );
        assert_eq!(found.current.as_ref().and_then(policy_id).as_deref(), Some("b"));
        assert_eq!(found.removable(None), vec!["a".to_string()]);
    }

    #[test]
    fn the_previous_advertised_policy_stays_until_the_node_declares_the_new_one() {
        let now = Expected { host: "203.0.113.9".into(), port: 32148 };
        let before = Expected { host: "203.0.113.7".into(), port: 32148 };
        let policies = vec![op("203.0.113.7", json!(32148), "old"), op("10.244.1.7", json!(32148), "pod")];
        let found = Found::split(policies.clone(), &now);
        assert!(found.current.is_none());
        assert_eq!(found.removable(Some(&before)), vec!["pod".to_string()], "the node still runs with 'old'");
        let mut declared = policies;
        declared.push(op("203.0.113.9", json!(32148), "new"));
        let found = Found::split(declared, &now);
        assert_eq!(found.removable(Some(&before)), vec!["old".to_string(), "pod".to_string()]);
    }
}
