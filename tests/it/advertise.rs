//! Advertising as an operator sees it: one identity across restarts, replace on change,
//! shared ledgers, crash safety, self-verification and `netstrap peers`.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::harness::Node;
// The restart tests start the same node again on the same ports, as a process (netstrap takes no
// listeners from its parent): there, the ports are chosen before it starts (`free_port`).
use support::process::{Netstrap, free_port, start, wait_until};

/// The live node policies in the ledger (the shared config policy is there too).
fn ledger_lines(path: &Path) -> Vec<Value> {
    support::ledger::live(path).into_iter().filter(|l| l.get("config").is_none()).collect()
}

/// Whether a policy with this id is live in the ledger.
fn is_live(path: &Path, id: &str) -> bool {
    support::ledger::live(path).iter().any(|p| support::ledger::id(p) == Some(id))
}

fn node_env(ledger: &Path, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("NODE_TYPE", "query".to_string()),
        ("COMPANY_NAME", "Acme Co".to_string()),
        ("DNS", "query1.edge.example".to_string()),
        ("NETSTRAP_LEDGER", format!("file://{}", ledger.display())),
    ];
    for (k, v) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.retain(|(key, _)| *key != k);
        env.push((k, v.to_string()));
    }
    env
}

fn policy_id(n: &Netstrap) -> String {
    let (_, body) = n.get("/v1/policy").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn restart_storm_with_a_new_pod_ip_each_time_leaves_one_policy_with_one_id() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let mut ids = Vec::new();
    // The same node restarting: same ports, a new pod IP every time.
    let (tcp, rest) = (free_port().to_string(), free_port().to_string());
    for i in 0..20 {
        let pod_ip = format!("10.244.{}.{}", i / 200, 10 + i);
        let env = node_env(
            &ledger,
            &[
                ("POD_IP", &pod_ip),
                ("LOCAL_IP", &pod_ip),
                ("ANYLOG_SERVER_PORT", &tcp),
                ("ANYLOG_REST_PORT", &rest),
            ],
        );
        let n = start(&dir.path().join("state"), &env);
        n.wait_ready();
        ids.push(policy_id(&n));
        let (code, log) = n.stop();
        assert_eq!(code, 0, "{log}");
        let text = std::fs::read_to_string(&ledger).unwrap();
        assert!(!text.contains("10.244."), "the pod IP never reaches the ledger: {text}");
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity across 20 restarts: {ids:?}");
    let lines = ledger_lines(&ledger);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["query"]["id"], ids[0].as_str());
    assert_eq!(lines[0]["query"]["local_ip"], "query1.edge.example");
    let configs: Vec<Value> =
        support::ledger::live(&ledger).into_iter().filter(|l| l.get("config").is_some()).collect();
    assert_eq!(configs.len(), 1, "one shared config policy: {configs:?}");
    assert_eq!(configs[0]["config"]["name"], "query-acme_co-configs");
    assert_eq!(configs[0]["config"]["ip"], "!external_ip", "kept as a quoted literal");
}

#[test]
fn a_changed_external_ip_replaces_the_policy_and_the_old_id_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let state = dir.path().join("state");
    let n = start(&state, &node_env(&ledger, &[("EXTERNAL_IP", "203.0.113.1")]));
    n.wait_ready();
    let old = policy_id(&n);
    n.stop();
    let n = start(&state, &node_env(&ledger, &[("EXTERNAL_IP", "203.0.113.2")]));
    n.wait_ready();
    let new = policy_id(&n);
    n.stop();
    assert_ne!(old, new);
    let lines = ledger_lines(&ledger);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["query"]["ip"], "203.0.113.2");
    assert!(!is_live(&ledger, &old), "old id gone");
    let env = std::fs::read_to_string(state.join("netstrap.env")).unwrap();
    assert!(
        env.contains("EXTERNAL_IP=203.0.113.2") && env.contains(&format!("NETSTRAP_POLICY_ID={new}")),
        "{env}"
    );
}

#[test]
fn two_processes_declaring_into_one_ledger_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let a =
        start(&dir.path().join("a"), &node_env(&ledger, &[("NODE_NAME", "query-a"), ("DNS", "a.example")]));
    let b =
        start(&dir.path().join("b"), &node_env(&ledger, &[("NODE_NAME", "query-b"), ("DNS", "b.example")]));
    a.wait_ready();
    b.wait_ready();
    let lines = ledger_lines(&ledger);
    let mut names: Vec<&str> = lines.iter().map(|l| l["query"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["query-a", "query-b"], "one policy each");
}

#[test]
fn kill_9_at_random_points_never_leaves_a_file_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let state = dir.path().join("state");
    for i in 0..100u64 {
        // Alternate the advertised address so most starts rewrite the ledger and the files.
        let ip = if i % 2 == 0 { "203.0.113.1" } else { "203.0.113.2" };
        let mut n = start(&state, &node_env(&ledger, &[("EXTERNAL_IP", ip)]));
        std::thread::sleep(Duration::from_millis((i * 7919) % 60));
        n.child.kill().unwrap(); // SIGKILL
        n.child.wait().unwrap();
        let lines = ledger_lines(&ledger);
        assert!(lines.len() <= 1, "never a duplicate: {lines:?}");
        for f in ["node_policy.json", "config_policy.json", "network.json"] {
            if let Ok(text) = std::fs::read_to_string(state.join(f)) {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{f} torn after kill {i}: {e}"));
            }
        }
        if let Ok(env) = std::fs::read_to_string(state.join("netstrap.env")) {
            assert!(
                env.ends_with('\n') && env.contains("NETSTRAP_STABLE_NAME="),
                "netstrap.env torn after kill {i}"
            );
        }
    }
}

#[test]
fn self_verification_detects_another_instance_behind_the_advertised_address() {
    let b = Node::start(&[("DNS", "127.0.0.1")]);
    b.ready();
    // A advertises B's REST port as its external port: whoever answers there is not A.
    let b_rest = b.rest.to_string();
    let a = Node::start(&[
        ("DNS", "127.0.0.1"),
        ("EXTERNAL_IP", "127.0.0.1"),
        ("NETSTRAP_REST_EXTERNAL_PORT", &b_rest),
        ("NETSTRAP_VERIFY", "gate"),
    ]);
    wait_until("verification ran", || {
        a.get("/readyz?verbose").is_some_and(|(_, body)| body.contains("verify rest"))
    });
    let (code, body) = a.get("/readyz?verbose").unwrap();
    assert_eq!(code, 503, "gated: {body}");
    assert!(body.contains(&format!("127.0.0.1:{} failed: answered by another instance", b.rest)), "{body}");
    assert!(body.contains(&format!("verify rest 127.0.0.1:{} ok", a.rest)), "its own port verifies: {body}");
    let (_, metrics) = a.get("/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "netstrap_endpoint_verified{{plane=\"rest\",endpoint=\"127.0.0.1:{}\"}} 0",
            b.rest
        )),
        "{metrics}"
    );
    // B verifies itself: report mode, ready.
    assert_eq!(b.get("/readyz").unwrap().0, 200);
}

#[test]
fn peers_reports_which_of_three_nodes_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| {
            let env = node_env(&ledger, &[("NODE_NAME", name), ("DNS", "127.0.0.1")]);
            Node::start(&env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        })
        .collect();
    for n in &nodes {
        n.ready();
    }
    let mut nodes = nodes;
    let stopped = nodes.remove(1);
    stopped.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["peers", "--timeout", "2"])
        .env_clear()
        .env("NETSTRAP_LEDGER", format!("file://{}", ledger.display()))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let line =
        |name: &str| table.lines().find(|l| l.contains(&format!(" {name} "))).unwrap_or_default().to_string();
    assert!(!line("n1").contains("FAILED") && line("n1").matches(" ok").count() == 3, "{table}");
    assert!(line("n2").matches("FAILED").count() == 3, "{table}");
    assert!(!line("n3").contains("FAILED"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_loadbalancer_ip_at_runtime_is_redeclared_replacing_the_old_policy() {
    use support::dns_server::ClusterDns;
    use support::fake_kube::{self, FakeKube};
    let kube = FakeKube::start_https("t0k3n").await;
    let dns = ClusterDns::start(&[("op.edge.svc.cluster.local", "10.96.7.7".parse().unwrap())]).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = fake_kube::write_sa_dir(&dir.path().join("sa"), "t0k3n", "edge");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "search edge.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n",
    )
    .unwrap();
    let (tcp, rest) = (free_port(), free_port());
    let lb = |ip: &str| {
        let svc = fake_kube::service(
            "edge",
            "op",
            "LoadBalancer",
            "10.96.7.7",
            vec![
                fake_kube::service_port("tcp", 32148, Some(&tcp.to_string()), Some(30148)),
                fake_kube::service_port("rest", 32149, Some(&rest.to_string()), Some(30149)),
            ],
        );
        fake_kube::with_ingress(svc, &[(Some(ip), None)])
    };
    kube.set_service(lb("198.51.100.20"));
    let ledger = dir.path().join("blockchain.json");
    let env: Vec<(&str, String)> = vec![
        ("NETSTRAP_ENVIRONMENT", "kubernetes".into()),
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT", kube.addr().port().to_string()),
        ("NETSTRAP_SA_DIR", sa.display().to_string()),
        ("NETSTRAP_RESOLV_CONF", resolv.display().to_string()),
        ("NETSTRAP_NAMESERVER", dns.addr.to_string()),
        ("NETSTRAP_SERVICE", "op".into()),
        ("POD_IP", "127.0.0.1".into()),
        ("NODE_TYPE", "query".into()),
        ("NETSTRAP_LEDGER", format!("file://{}", ledger.display())),
        ("NETSTRAP_WATCH_INTERVAL", "1".into()),
        ("NETSTRAP_SHUTDOWN_DELAY", "0".into()),
        ("ANYLOG_SERVER_PORT", tcp.to_string()),
        ("ANYLOG_REST_PORT", rest.to_string()),
    ];
    let state = dir.path().join("state");
    let n = tokio::task::spawn_blocking(move || {
        let n = start(&state, &env);
        n.wait_ready();
        n
    })
    .await
    .unwrap();
    let first = ledger_lines(&ledger);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["query"]["ip"], "198.51.100.20");
    assert_eq!(first[0]["query"]["port"], 32148, "the LoadBalancer port");
    assert_eq!(first[0]["query"]["local_ip"], "op.edge.svc.cluster.local");
    let old_id = first[0]["query"]["id"].as_str().unwrap().to_string();

    kube.set_service(lb("198.51.100.21"));
    let ledger2 = ledger.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("re-declared", || {
            ledger_lines(&ledger2).first().is_some_and(|l| l["query"]["ip"] == "198.51.100.21")
        })
    })
    .await
    .unwrap();
    let after = ledger_lines(&ledger);
    assert_eq!(after.len(), 1, "replaced, not added: {after:?}");
    assert!(!is_live(&ledger, &old_id), "old id gone");
    let (code, log) = tokio::task::spawn_blocking(move || n.stop()).await.unwrap();
    assert_eq!(code, 0);
    assert!(log.contains("an advertised value changed") && log.contains("198.51.100.21"), "{log}");
}

#[test]
fn files_tell_the_node_to_bind_loopback_behind_the_relays_and_reply_with_the_advertised_address() {
    // A process (`start`), whose broker keeps its default port: the config policy's name
    // records a broker port that differs from it, which the in-process harness's would.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let n = start(
        &state,
        &[
            // In a container (on a host the env binds the node to loopback: tests/netns/host_setup.rs).
            ("NETSTRAP_ENVIRONMENT", "docker".to_string()),
            ("NODE_TYPE", "operator".to_string()),
            ("NETSTRAP_CLUSTER_ID", "c0ffee".to_string()),
            ("DNS", "op.edge.svc.cluster.local".to_string()),
            ("EXTERNAL_IP", "203.0.113.7".to_string()),
            ("NETSTRAP_TCP_UPSTREAM", "127.0.0.1:42148".to_string()),
            ("NETSTRAP_REST_UPSTREAM", "127.0.0.1:42149".to_string()),
        ],
    );
    n.wait_ready();
    wait_until("files", || state.join("netstrap.al").exists());
    let al = std::fs::read_to_string(state.join("netstrap.al")).unwrap();
    let tcp_line = al.lines().find(|l| l.starts_with("run tcp server")).unwrap_or_else(|| panic!("{al}"));
    assert_eq!(
        tcp_line,
        format!(
            "run tcp server where external_ip=203.0.113.7 and external_port={} and internal_ip=127.0.0.1 and \
             internal_port=42148 and bind=true and threads=6",
            n.tcp
        )
    );
    assert!(
        al.contains("run rest server where external_ip=203.0.113.7") && al.contains("internal_port=42149"),
        "{al}"
    );
    assert!(al.contains("timeout=30") && al.contains("ssl=false"), "{al}");
    assert!(al.contains(&format!("set reply ip and port = 203.0.113.7:{}", n.tcp)), "{al}");
    let env = std::fs::read_to_string(state.join("netstrap.env")).unwrap();
    for want in [
        "DNS=op.edge.svc.cluster.local",
        "EXTERNAL_IP=203.0.113.7",
        "ANYLOG_SERVER_PORT=42148",
        // EdgeLake binds *_BIND=true to the pod IP, which the loopback relay cannot reach.
        "TCP_BIND=false",
        "ANYLOG_REST_PORT=42149",
        "NODE_NAME=\"op.edge.svc.cluster.local operator\"",
    ] {
        assert!(env.contains(want), "{want} missing in\n{env}");
    }
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("node_policy.json")).unwrap()).unwrap();
    assert_eq!(policy["operator"]["cluster"], "c0ffee");
    assert_eq!(policy["operator"]["ip"], "203.0.113.7");
    let (_, body) = n.get("/v1/policy/config").unwrap();
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["config"]["name"], "operator-new_company-configs");
}
