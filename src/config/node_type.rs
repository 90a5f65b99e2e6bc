//! EdgeLake node types and their default ports.

use serde::Serialize;

/// The kind of EdgeLake node (`NODE_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeType {
    Master,
    Operator,
    Query,
    Publisher,
    Generic,
    MasterOperator,
    MasterPublisher,
}

impl NodeType {
    pub const NAMES: &[(&str, NodeType)] = &[
        ("master", NodeType::Master),
        ("operator", NodeType::Operator),
        ("query", NodeType::Query),
        ("publisher", NodeType::Publisher),
        ("generic", NodeType::Generic),
        ("master-operator", NodeType::MasterOperator),
        ("master-publisher", NodeType::MasterPublisher),
    ];

    pub fn name(self) -> &'static str {
        NodeType::NAMES.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).unwrap_or("generic")
    }

    /// `ANYLOG_SERVER_PORT` default. EdgeLake's scripts give the combined types the
    /// "other" port.
    pub fn server_port(self) -> u16 {
        match self {
            NodeType::Master => 32048,
            NodeType::Operator => 32148,
            NodeType::Publisher => 32248,
            NodeType::Query => 32348,
            _ => 32548,
        }
    }

    /// `ANYLOG_REST_PORT` default: the server port + 1.
    pub fn rest_port(self) -> u16 {
        self.server_port() + 1
    }

    /// The policy type key this node declares (`{"operator": {...}}`). Combined types
    /// declare their data role; the master role is the ledger itself.
    pub fn policy_type(self) -> &'static str {
        match self {
            NodeType::Master => "master",
            NodeType::Operator | NodeType::MasterOperator => "operator",
            NodeType::Publisher | NodeType::MasterPublisher => "publisher",
            NodeType::Query => "query",
            NodeType::Generic => "generic",
        }
    }

    /// Whether this node is (also) the master: `LEDGER_CONN` recomputes to its own port.
    pub fn is_master(self) -> bool {
        matches!(self, NodeType::Master | NodeType::MasterOperator | NodeType::MasterPublisher)
    }
}
