//! Advertising into an EdgeLake node over its REST protocol (`NETSTRAP_LEDGER=anylog://`),
//! against a fake EdgeLake that refuses what the real one refuses: one identity across
//! restarts, replace on change, and a registry that is down.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::fake_edgelake::FakeEdgeLake;
// `free_port` (support/ports.rs): the restart storm restarts a process on the same ports and reads its log.
use support::process::{free_port, start, wait_until};

/// A runtime for the fake while the test drives `netstrap run` processes synchronously.
fn fake() -> (tokio::runtime::Runtime, FakeEdgeLake) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let fake = rt.block_on(FakeEdgeLake::start());
    (rt, fake)
}

fn env(fake: &FakeEdgeLake, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("NODE_TYPE", "query".to_string()),
        ("COMPANY_NAME", "Acme Co".to_string()),
        ("DNS", "query1.edge.example".to_string()),
        ("NETSTRAP_LEDGER", format!("anylog://{}", fake.rest_addr())),
    ];
    for (k, v) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.retain(|(key, _)| *key != k);
        env.push((k, v.to_string()));
    }
    env
}

/// The stored policies of one type.
fn of_type(fake: &FakeEdgeLake, ty: &str) -> Vec<Value> {
    fake.policies().into_iter().filter_map(|p| p.get(ty).cloned()).collect()
}

fn served_id(n: &support::process::Netstrap) -> String {
    let (_, body) = n.get("/v1/policy").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap_or_else(|| panic!("no id in /v1/policy: {body}")).to_string()
}

#[test]
fn restart_storm_against_an_edgelake_registry_leaves_one_policy_with_one_id() {
    let (_rt, fake) = fake();
    let dir = tempfile::tempdir().unwrap();
    let (tcp, rest) = (free_port().to_string(), free_port().to_string());
    let mut ids = Vec::new();
    for i in 0..20 {
        let pod_ip = format!("10.244.3.{}", 10 + i);
        let n = start(
            &dir.path().join("state"),
            &env(
                &fake,
                &[
                    ("POD_IP", &pod_ip),
                    ("LOCAL_IP", &pod_ip),
                    ("ANYLOG_SERVER_PORT", &tcp),
                    ("ANYLOG_REST_PORT", &rest),
                ],
            ),
        );
        n.wait_ready();
        ids.push(served_id(&n));
        let (code, log) = n.stop();
        assert_eq!(code, 0, "{log}");
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity across 20 restarts: {ids:?}");
    let nodes = of_type(&fake, "query");
    assert_eq!(nodes.len(), 1, "exactly one node policy: {nodes:?}");
    assert_eq!(nodes[0]["id"], ids[0].as_str(), "the id EdgeLake computed is the one netstrap serves");
    assert_eq!(nodes[0]["local_ip"], "query1.edge.example");
    assert_eq!(of_type(&fake, "config").len(), 1, "one shared config policy");

    let requests = fake.requests();
    let inserts: Vec<_> = requests
        .iter()
        .filter(|r| r.header("command").is_some_and(|c| c.starts_with("blockchain insert")))
        .collect();
    assert_eq!(inserts.len(), 2, "the node policy and the config policy, each inserted once");
    for r in &requests {
        assert!(
            !r.body.contains("10.244.") && !r.header("command").unwrap_or("").contains("10.244."),
            "{r:?}"
        );
    }
}

#[test]
fn a_changed_external_ip_replaces_the_policy_in_edgelake() {
    let (_rt, fake) = fake();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let n = start(&state, &env(&fake, &[("EXTERNAL_IP", "203.0.113.1")]));
    n.wait_ready();
    let old = served_id(&n);
    n.stop();
    let n = start(&state, &env(&fake, &[("EXTERNAL_IP", "203.0.113.2")]));
    n.wait_ready();
    let new = served_id(&n);
    n.stop();
    assert_ne!(old, new);
    let nodes = of_type(&fake, "query");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["ip"], "203.0.113.2");
    assert_eq!(nodes[0]["id"], new.as_str());
    let deletes: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.header("command").filter(|c| c.starts_with("blockchain delete")).map(String::from))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].contains(&format!("id={old}")), "the old id is deleted: {deletes:?}");
}

#[test]
fn registry_down_at_start_keeps_the_node_live_not_ready_and_declares_once_it_is_back() {
    let (rt, fake) = fake();
    rt.block_on(fake.set_down(true));
    let dir = tempfile::tempdir().unwrap();
    let n = start(&dir.path().join("state"), &env(&fake, &[]));
    wait_until("live", || n.get("/livez").is_some_and(|(c, _)| c == 200));
    wait_until("the registry named as the reason", || {
        n.get("/readyz?verbose").is_some_and(|(c, body)| c == 503 && body.contains("unreachable"))
    });
    let (_, why) = n.get("/readyz?verbose").unwrap();
    assert!(why.contains(&fake.rest_addr()), "readiness names the registry: {why}");
    // The node's planes serve while the registry is away.
    assert_eq!(n.get("/v1/identity").unwrap().0, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert!(of_type(&fake, "query").is_empty());

    rt.block_on(fake.set_down(false));
    n.wait_ready();
    let nodes = of_type(&fake, "query");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["id"], served_id(&n).as_str());
    // Later passes of the watch loop find it identical: still one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(of_type(&fake, "query").len(), 1);
    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("cannot declare the config policy: registry unavailable"),
        "the outage was logged: {log}"
    );
}

#[test]
fn registry_down_mid_run_changes_nothing_for_a_declared_node() {
    let (rt, fake) = fake();
    let dir = tempfile::tempdir().unwrap();
    let n = start(&dir.path().join("state"), &env(&fake, &[("NETSTRAP_WATCH_INTERVAL", "1")]));
    n.wait_ready();
    let id = served_id(&n);
    rt.block_on(fake.set_down(true));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(n.get("/readyz").unwrap().0, 200, "a declared node stays ready while the registry is away");
    rt.block_on(fake.set_down(false));
    std::thread::sleep(Duration::from_secs(1));
    let nodes = of_type(&fake, "query");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["id"], id.as_str());
}

#[test]
fn netstrap_peers_reads_an_edgelake_registry() {
    let (_rt, fake) = fake();
    let dir = tempfile::tempdir().unwrap();
    let n = start(&dir.path().join("state"), &env(&fake, &[("DNS", "127.0.0.1")]));
    n.wait_ready();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["peers", "--json"])
        .env_clear()
        .env("NETSTRAP_LEDGER", format!("anylog://{}", fake.rest_addr()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&text).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert!(text.contains(&format!("127.0.0.1:{}", n.rest)), "the REST endpoint is dialed: {text}");
}
