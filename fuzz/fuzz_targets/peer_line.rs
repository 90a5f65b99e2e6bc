//! The peer protocol's line handler on arbitrary lines: one JSON answer, never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use netstrap::config::{Layers, Origin, Settings};
use netstrap::planes::tcp::handle_line;
use netstrap::planes::{Identity, NodeSnapshot};
use netstrap::table::ConnectionTable;

/// A host node's snapshot with explicit addresses: discovery reads no machine, no network.
static SNAPSHOT: LazyLock<NodeSnapshot> = LazyLock::new(|| {
    let env = [
        ("NETSTRAP_ENVIRONMENT", "host"),
        ("LOCAL_IP", "10.0.0.5"),
        ("EXTERNAL_IP", "1.2.3.4"),
        ("NETSTRAP_EXTERNAL_SOURCES", "explicit"),
        ("DNS", "op-1.example"),
    ];
    let settings = Settings::parse(&Layers::new().push(Origin::Env, env)).expect("settings");
    let facts = netstrap::discover::MachineFacts::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let discovery = rt.block_on(netstrap::discover::discover_with(&settings, &facts));
    let table = ConnectionTable::plan(&settings, &discovery);
    NodeSnapshot::new(Identity::default(), table, discovery)
});

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let answer = handle_line(&line, &SNAPSHOT);
    assert!(serde_json::from_str::<serde_json::Value>(&answer).is_ok(), "answer is JSON");
    assert!(!answer.contains('\n'), "one line");
});
