//! Open Horizon with a real, unmodified EdgeLake master (the Python source in
//! `../shared/edgelake`, its own main.al, the compose env of a master) behind netstrap, laid out
//! as k8s/base lays out a pod (`NETSTRAP_DECLARE=node`, the node started by
//! `k8s/base/edgelake-start.sh`), with `HZN_DEVICE_ID` and `HZN_ORGANIZATION` in both
//! containers' environment as the Open Horizon agent sets them. The node's own scripts declare
//! its policy: it must carry the name EdgeLake's deploy_edgelake.sh would give it
//! (`<NODE_NAME>_<device id>`, added once), the `hzn_*` fields, and be the policy netstrap
//! reports as current (readiness); and netstrap's own rendering of the same inputs
//! (`netstrap policy`) must have the same name and `hzn_*` values in the same key order.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::edgelake::{self as el, NodeHome, Snapshot};
use support::netns::{Port, poll};

const NS: &str = "edge";
const APP: &str = "edgelake-master";
const TCP: u16 = 32048;
const REST: u16 = 32049;
const DEVICE: &str = "rpi-42";
const ORG: &str = "acme";

#[test]
fn a_master_behind_netstrap_declares_the_open_horizon_name_and_fields() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(snap) = Snapshot::find() else { return };
    let Some(mut c) = el::cluster(1) else { return };
    c.add_service(
        NS,
        APP,
        "ClusterIP",
        vec![Port::tcp("tcp", TCP, TCP + 1000), Port::tcp("rest", REST, REST + 1000)],
    );
    let pod = c.create_pod(APP, NS, 0);
    let home = NodeHome::new(&snap, &c.dir.path().join("home"));
    let state = c.dir.path().join("state");
    let overrides = [
        ("NODE_NAME", APP.to_string()),
        ("ANYLOG_SERVER_PORT", TCP.to_string()),
        ("ANYLOG_REST_PORT", REST.to_string()),
        ("BLOCKCHAIN_SYNC", "3 second".into()),
        ("HZN_DEVICE_ID", DEVICE.into()),
        ("HZN_ORGANIZATION", ORG.into()),
    ];
    let node_env = el::node_env(&snap, &home, el::compose_env(&snap, "master"), &overrides);
    let mut netstrap_env: Vec<(&str, String)> = node_env
        .iter()
        .filter(|(k, v)| !v.is_empty() && k != "PATH" && !k.starts_with("NETSTRAP_"))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    netstrap_env.extend([
        ("NETSTRAP_DECLARE", "node".to_string()),
        ("NETSTRAP_SERVICE", APP.into()),
        ("NETSTRAP_STATE_DIR", state.display().to_string()),
        ("NETSTRAP_TCP_PORT", (TCP + 1000).to_string()),
        ("NETSTRAP_REST_PORT", (REST + 1000).to_string()),
        ("NETSTRAP_SHUTDOWN_DELAY", "0".into()),
        ("NETSTRAP_WATCH_INTERVAL", "5".into()),
    ]);
    let mut netstrap = c.spawn(&pod, &netstrap_env, &[env!("CARGO_BIN_EXE_netstrap"), "run"]);
    let mut node = el::start_with_launcher(&c, &pod, &node_env, &state);
    poll("netstrap to be ready (the node's policy declared and current)", Duration::from_secs(120), || {
        if let Some(code) = netstrap.exited() {
            panic!("netstrap exited with {code}:\n{}", el::tail(&netstrap.log(), 40));
        }
        if let Some(code) = node.exited() {
            panic!("the node exited with {code}:\n{}", el::tail(&node.log(), 60));
        }
        match c.http_get(&pod.netns, "127.0.0.1", REST + 1000, "/readyz?verbose") {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => Err(format!("{code} {body}")),
            Err(e) => Err(e),
        }
    });

    let env = std::fs::read_to_string(state.join("netstrap.env")).unwrap();
    let name = format!("{APP}_{DEVICE}");
    assert!(env.contains(&format!("NODE_NAME={name}\n")), "{env}");
    // The master's ledger table (through netstrap's REST proxy), once main.al has declared.
    let declared =
        poll("the node's policy in its ledger", Duration::from_secs(60), || {
            match el::master_ledger(&c, &pod.netns, "127.0.0.1", REST + 1000, "master") {
                Ok(list) if !list.is_empty() => Ok(list),
                Ok(_) => Err(format!("none yet; node log:\n{}", el::tail(&node.log(), 30))),
                Err(e) => Err(e),
            }
        });
    assert_eq!(declared.len(), 1, "one master policy: {declared:#?}");
    let p = &declared[0];
    assert_eq!(el::text(p, "name"), name, "the device id is added once: {p}");
    assert_eq!(el::text(p, "hzn_device_id"), DEVICE, "{p}");
    assert_eq!(el::text(p, "hzn_node_id"), DEVICE, "{p}");
    assert_eq!(el::text(p, "hzn_org"), ORG, "{p}");

    // netstrap's own rendering of the same inputs (what it declares with NETSTRAP_DECLARE=netstrap).
    let out = c.exec(
        &pod,
        &[
            ("NODE_TYPE", "master".into()),
            ("NODE_NAME", APP.into()),
            ("HZN_DEVICE_ID", DEVICE.into()),
            ("HZN_ORGANIZATION", ORG.into()),
            ("NETSTRAP_SERVICE", APP.into()),
        ],
        &[env!("CARGO_BIN_EXE_netstrap"), "policy", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = &ours["node"]["master"];
    let theirs = p["master"].as_object().unwrap();
    assert_eq!(ours["name"], theirs["name"]);
    for k in ["hzn_device_id", "hzn_node_id", "hzn_org"] {
        assert_eq!(&ours[k], &theirs[k], "{k}");
    }
    let order = |m: &serde_json::Map<String, Value>| -> Vec<String> {
        m.keys()
            .filter(|k| ours.get(k.as_str()).is_some() && theirs.contains_key(k.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(order(ours.as_object().unwrap()), order(theirs), "key order (policy ids hash it)");
    let _ = (node.stop(), netstrap.stop());
}
