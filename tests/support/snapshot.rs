//! A node snapshot for plane tests: the discovery and connection table of a host node with
//! explicit addresses (`LOCAL_IP=10.0.0.5`, `EXTERNAL_IP=1.2.3.4`, `DNS=op-1.example`), read
//! from no machine and no network.

use netstrap::config::{Layers, Origin, Settings};
use netstrap::planes::{Identity, NodeSnapshot};
use netstrap::table::ConnectionTable;

pub async fn snapshot(identity: Identity) -> NodeSnapshot {
    let env = [
        ("NETSTRAP_ENVIRONMENT", "host"),
        ("LOCAL_IP", "10.0.0.5"),
        ("EXTERNAL_IP", "1.2.3.4"),
        ("NETSTRAP_EXTERNAL_SOURCES", "explicit"),
        ("DNS", "op-1.example"),
        ("NODE_TYPE", "operator"),
    ];
    let settings = Settings::parse(&Layers::new().push(Origin::Env, env)).unwrap();
    let facts = netstrap::discover::MachineFacts::default();
    let discovery = netstrap::discover::discover_with(&settings, &facts).await;
    let table = ConnectionTable::plan(&settings, &discovery);
    NodeSnapshot::new(identity, table, discovery)
}
