//! What the planes serve about the node (`/v1/*`, the peer protocol's `hello` and `table`):
//! one immutable snapshot, replaced as a whole when something changes. It stays typed until
//! the HTTP/TCP edge serializes it.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::discover::Discovery;
use crate::registry::declare::Declared;
use crate::table::{ConnectionTable, Plane};

/// Who this node is, as the peer protocol's `hello` and `/v1/identity` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Identity {
    pub name: String,
    pub node_type: String,
    /// Random per process: tells replicas behind one Service apart.
    pub instance_id: String,
    /// The declared node policy's id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Advertised endpoints, `plane -> host:port` strings.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// Self-verification of one advertised endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointCheck {
    pub plane: Plane,
    pub endpoint: String,
    pub ok: bool,
    pub detail: String,
}

/// `NETSTRAP_DECLARE=node`: the node as it reports itself over its REST API.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeStatus {
    /// `get processes where format=json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Value>,
    /// `get connections where format=json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Value>,
    /// Why the node does not serve what is advertised; empty when it does.
    pub problems: Vec<String>,
}

/// The address and port the node's policy must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expected {
    pub host: String,
    pub port: u16,
}

/// What declaring the node policy did last (`declared` in `/v1/policy` and `/v1/network`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Declaration {
    /// netstrap declared it.
    Netstrap(Declared),
    /// `NETSTRAP_DECLARE=node`: the node declares itself; what netstrap found in the registry.
    Node {
        /// Always `"node"`.
        by: &'static str,
        expected: Expected,
        current: Option<Value>,
        stale: Vec<Value>,
    },
}

/// What the planes serve about the node; replaced as a whole when it changes (cloning it is
/// a handful of reference counts).
#[derive(Clone, Debug, Serialize)]
pub struct NodeSnapshot {
    pub identity: Identity,
    /// The connection table.
    pub table: Arc<ConnectionTable>,
    /// The discovery behind it.
    pub discovery: Arc<Discovery>,
    /// The node policy, once rendered (EdgeLake policies are JSON documents).
    pub policy: Option<Value>,
    /// The config policy, once rendered.
    pub config_policy: Option<Value>,
    /// What declaring the node policy did last.
    pub declared: Option<Declaration>,
    /// Self-verification of every advertised endpoint.
    pub verification: Arc<[EndpointCheck]>,
    /// The last reachability check of the registry's nodes (JSON list of `PeerReport`, or an
    /// error), serialized once: it can list thousands of nodes, and the snapshot is cloned
    /// on every change and read on every request.
    pub peers: Option<Arc<serde_json::value::RawValue>>,
    /// Set by `GET /v1/peers`, cleared by the peer check it asks for: the check (every node
    /// read from the registry, each dialed) runs only for someone who looks at its result.
    #[serde(skip)]
    pub peers_asked: Arc<std::sync::atomic::AtomicBool>,
    /// `NETSTRAP_DECLARE=node`: how the node reports itself.
    pub node: Option<Arc<NodeStatus>>,
}

impl NodeSnapshot {
    /// The first snapshot: who the node is and its table; nothing declared or verified yet.
    pub fn new(identity: Identity, table: ConnectionTable, discovery: Discovery) -> NodeSnapshot {
        NodeSnapshot {
            identity,
            table: Arc::new(table),
            discovery: Arc::new(discovery),
            policy: None,
            config_policy: None,
            declared: None,
            verification: Arc::from([]),
            peers: None,
            peers_asked: Arc::default(),
            node: None,
        }
    }
}

/// The current snapshot, readable from any plane.
pub type SnapshotRx = tokio::sync::watch::Receiver<Arc<NodeSnapshot>>;
