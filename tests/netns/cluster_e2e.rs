//! Cluster in a box (issue 5): netstrap in network-namespace pods, on two nodes, behind
//! Services programmed as kube-proxy programs them, with a cluster DNS and a Kubernetes API
//! (see `support/netns.rs`). Each test is one scenario an operator would check in a real
//! cluster; each skips with `SKIPPED: <why>` where namespaces cannot be made (not root).
//!
//! The registry is a `file://` ledger on a volume every pod mounts (as a ReadWriteMany
//! volume would be), except in the rolling-restart scenario, where it is an EdgeLake node's
//! REST server (`anylog://`) in a pod of its own.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::fake_edgelake::FakeEdgeLake;
use support::netns::{Cluster, Pod, Port, Proc, TOKEN, poll};

const NETSTRAP: &str = env!("CARGO_BIN_EXE_netstrap");
const NS: &str = "edge";
const TCP: u16 = 32548;
const REST: u16 = 32549;
const BROKER: u16 = 32550;
const FQDN: &str = "anylog.edge.svc.cluster.local";

fn ports() -> Vec<Port> {
    vec![Port::tcp("tcp", TCP, TCP), Port::tcp("rest", REST, REST), Port::tcp("broker", BROKER, BROKER)]
}

/// `netstrap run` as the sidecar of `pod`, advertising Service `svc`.
fn netstrap(c: &Cluster, pod: &Pod, svc: &str, extra: &[(&str, String)]) -> Proc {
    let mut env = netstrap_env(c, pod, svc);
    env.extend(extra.iter().cloned());
    c.spawn(pod, &env, &[NETSTRAP, "run"])
}

fn netstrap_env(c: &Cluster, pod: &Pod, svc: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NETSTRAP_SERVICE", svc.to_string()),
        ("NODE_TYPE", "generic".into()),
        ("ANYLOG_BROKER_PORT", BROKER.to_string()),
        // The pods' brokers listen on their pod address without credentials.
        ("NETSTRAP_BROKER_ANONYMOUS", "true".into()),
        ("NETSTRAP_STATE_DIR", c.dir.path().join(format!("state-{}", pod.name)).display().to_string()),
        // The harness reprograms every node synchronously: no kube-proxy lag to wait out.
        ("NETSTRAP_SHUTDOWN_DELAY", "0".into()),
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "1000".into()),
    ]
}

fn ledger_env(c: &Cluster) -> (&'static str, String) {
    ("NETSTRAP_LEDGER", format!("file://{}", c.dir.path().join("blockchain.json").display()))
}

/// The node policies in the shared ledger.
fn node_policies(c: &Cluster) -> Vec<Value> {
    support::ledger::live(&c.dir.path().join("blockchain.json"))
        .into_iter()
        .filter(|v| v.get("generic").is_some())
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `/readyz?verbose` of the netstrap in `pod`, asked from inside the pod.
fn readyz(c: &Cluster, pod: &Pod) -> Result<(u16, String), String> {
    c.http_get(&pod.netns, "127.0.0.1", REST, "/readyz?verbose")
}

fn wait_ready(c: &Cluster, pod: &Pod, p: &mut Proc) {
    poll(&format!("netstrap in {} to be ready", pod.name), Duration::from_secs(30), || {
        if let Some(code) = p.exited() {
            panic!("netstrap in {} exited with {code}:\n{}", pod.name, p.log());
        }
        match readyz(c, pod) {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => Err(format!("{code}\n{body}")),
            Err(e) => Err(e),
        }
    });
}

/// The instance id answering `GET http://host:port/v1/identity` from `netns`.
fn instance_at(c: &Cluster, netns: &str, host: &str, port: u16) -> Result<String, String> {
    let (code, body) = c.http_get(netns, host, port, "/v1/identity?nonce=e2e-42")?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
    if v["nonce"] != "e2e-42" {
        return Err(format!("nonce not echoed: {body}"));
    }
    v["identity"]["instance_id"].as_str().map(String::from).ok_or(body)
}

/// The instance id answering the native TCP plane's `hello` at `host:port` from `netns`.
fn hello_at(c: &Cluster, netns: &str, host: &str, port: u16) -> Result<String, String> {
    let reply = c.tcp_line(netns, host, port, r#"{"op":"hello","nonce":"e2e-43"}"#)?;
    let v: Value = serde_json::from_str(&reply).map_err(|e| format!("{e}: {reply}"))?;
    if v["nonce"] != "e2e-43" {
        return Err(format!("nonce not echoed: {reply}"));
    }
    v["identity"]["instance_id"].as_str().map(String::from).ok_or(reply)
}

fn policy(c: &Cluster, pod: &Pod) -> Value {
    let (code, body) = c.http_get(&pod.netns, "127.0.0.1", REST, "/v1/policy").unwrap();
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// Call `publish` until the message reaches `sub` (started already, it exits after one
/// message): retrying covers the time the subscriber needs to subscribe.
fn deliver(sub: &mut Proc, publish: impl Fn() -> std::process::Output, payload: &str) {
    poll("the MQTT message to reach the subscriber", Duration::from_secs(20), || {
        if let Some(code) = sub.exited() {
            assert_eq!(code, 0, "mosquitto_sub: {}", sub.log());
            return Ok(());
        }
        let out = publish();
        Err(format!("publish: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr)))
    });
    assert!(sub.log().contains(payload), "subscriber got {:?}", sub.log());
}

#[test]
fn pod_discovers_its_pod_ip_node_ip_and_service_fqdn() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(2) else { return };
    let cluster_ip = c.add_service(NS, "anylog", "ClusterIP", ports());
    let a = c.create_pod("anylog", NS, 1);
    let env = netstrap_env(&c, &a, "anylog");
    let out = c.exec(&a, &env, &[NETSTRAP, "discover", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let d = &v["discovery"];
    assert_eq!(d["environment"]["value"], "kubernetes");
    assert_eq!(d["local_ip"]["value"], a.ip.to_string(), "the pod IP");
    assert_eq!(d["host_ip"]["value"], c.nodes[1].ip.to_string(), "the node IP");
    assert_eq!(d["stable_name"]["value"], FQDN);
    assert_eq!(
        d["resolution"]["addresses"],
        serde_json::json!([cluster_ip.to_string()]),
        "through the cluster DNS"
    );
    // The Service as the API server (reached from the pod through the `kubernetes` Service) has it.
    assert_eq!(d["service"]["service_type"], "ClusterIP", "{d}");
    assert_eq!(d["service"]["cluster_ip"], cluster_ip.to_string(), "{d}");
    let asked = c.kube.requests();
    assert!(
        asked.iter().any(|r| r.path == "/api/v1/namespaces/edge/services/anylog"
            && r.authorization.as_deref() == Some(&format!("Bearer {}", TOKEN))),
        "{asked:?}"
    );
    for row in v["table"]["rows"].as_array().unwrap() {
        assert_eq!(row["cluster_host"]["value"], FQDN, "{row}");
        assert_eq!(row["bind_ip"]["value"], "0.0.0.0", "{row}");
    }
    // The policy peers will read names the Service, never the pod.
    let out = c.exec(&a, &netstrap_env(&c, &a, "anylog"), &[NETSTRAP, "policy", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let node = &json(&String::from_utf8_lossy(&out.stdout))["node"]["generic"];
    assert_eq!((node["ip"].as_str(), node["local_ip"].as_str()), (Some(FQDN), Some(FQDN)), "{node}");
    assert_eq!(node["hostname"], "anylog", "the Service name, not the pod name {}: {node}", a.name);
    assert!(!node.to_string().contains(&a.ip.to_string()), "{node}");

    // Without the downward API's POD_IP, the pod IP is still found: the default route's source.
    let mut env = env;
    env.extend([("POD_IP", String::new()), ("POD_IPS", String::new())]);
    let out = c.exec(&a, &env, &[NETSTRAP, "discover", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["discovery"]["local_ip"]["value"], a.ip.to_string(), "{}", v["discovery"]["local_ip"]);
}

#[test]
fn peer_on_another_node_reaches_tcp_rest_and_broker_by_service_name() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(2) else { return };
    c.add_service(NS, "anylog", "ClusterIP", ports());
    let a = c.create_pod("anylog", NS, 0);
    let b = c.create_pod("peer", NS, 1);
    let mut pa = netstrap(&c, &a, "anylog", &[ledger_env(&c)]);
    wait_ready(&c, &a, &mut pa);
    let me = instance_at(&c, &a.netns, "127.0.0.1", REST).unwrap();

    assert_eq!(hello_at(&c, &b.netns, "anylog", TCP), Ok(me.clone()), "tcp by the short name (search list)");
    assert_eq!(instance_at(&c, &b.netns, FQDN, REST), Ok(me.clone()), "rest by the FQDN");

    let mut sub = c.spawn(
        &a,
        &[],
        &["mosquitto_sub", "-h", "127.0.0.1", "-p", "32550", "-t", "edge/readings", "-C", "1", "-W", "30"],
    );
    let publish = || {
        let args = ["mosquitto_pub", "-h", "anylog", "-p", "32550", "-t", "edge/readings", "-m", "temp=21.5"];
        c.exec(&b, &[], &args)
    };
    deliver(&mut sub, publish, "temp=21.5");

    // EdgeLake's `test network` from the peer: every endpoint in A's policy answers.
    let out = c.exec(&b, &[ledger_env(&c)], &[NETSTRAP, "peers", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text} {}", String::from_utf8_lossy(&out.stderr));
    for port in [TCP, REST, BROKER] {
        assert!(text.contains(&format!("{FQDN}:{port}")), "{text}");
    }
}

#[test]
fn ten_restarts_with_new_ips_keep_one_policy_and_the_name_reaches_the_new_pod() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(2) else { return };
    c.add_service(NS, "anylog", "ClusterIP", ports());
    let peer = c.create_pod("peer", NS, 1);
    let mut a = c.create_pod("anylog", NS, 0);
    let (mut ips, mut ids) = (Vec::new(), Vec::new());
    for round in 0..10 {
        assert!(!ips.contains(&a.ip), "restart {round} reused an IP: {} in {ips:?}", a.ip);
        ips.push(a.ip);
        let mut p = netstrap(&c, &a, "anylog", &[ledger_env(&c)]);
        wait_ready(&c, &a, &mut p);
        let me = instance_at(&c, &a.netns, "127.0.0.1", REST).unwrap();
        ids.push(policy(&c, &a)["id"].as_str().unwrap().to_string());
        assert_eq!(hello_at(&c, &peer.netns, FQDN, TCP), Ok(me.clone()), "restart {round}: tcp by name");
        assert_eq!(instance_at(&c, &peer.netns, "anylog", REST), Ok(me), "restart {round}: rest by name");
        let (code, log) = p.stop();
        assert_eq!(code, 0, "{log}");
        // Alternate nodes, as a rescheduled pod would.
        a = c.restart_pod(&a, (round + 1) % 2);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity across 10 restarts: {ids:?}");
    let policies = node_policies(&c);
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(policies[0]["generic"]["id"], ids[0].as_str());
    let ledger = std::fs::read_to_string(c.dir.path().join("blockchain.json")).unwrap();
    for ip in ips {
        assert!(!ledger.contains(&ip.to_string()), "pod IP {ip} in the ledger: {ledger}");
    }
}

#[test]
fn nodeport_advertises_the_node_port_and_the_external_client_reaches_it_on_every_node() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(2) else { return };
    let np = vec![
        Port::tcp("tcp", TCP, TCP).node_port(30548),
        Port::tcp("rest", REST, REST).node_port(30549),
        Port::tcp("broker", BROKER, BROKER).node_port(30550),
    ];
    c.add_service(NS, "anylog", "NodePort", np);
    let a = c.create_pod("anylog", NS, 0);
    let mut pa = netstrap(&c, &a, "anylog", &[ledger_env(&c)]);
    wait_ready(&c, &a, &mut pa);
    let me = instance_at(&c, &a.netns, "127.0.0.1", REST).unwrap();

    let p = &policy(&c, &a)["policy"]["generic"];
    let node_ip = c.nodes[0].ip.to_string();
    assert_eq!(p["ip"], node_ip.as_str(), "the node address (Node object InternalIP): {p}");
    assert_eq!(p["local_ip"], FQDN, "{p}");
    assert_eq!(
        (p["port"].as_u64(), p["rest_port"].as_u64(), p["broker_port"].as_u64()),
        (Some(30548), Some(30549), Some(30550)),
        "{p}"
    );

    let ext = c.external();
    for node in &c.nodes {
        let host = node.ip.to_string();
        assert_eq!(instance_at(&c, &ext, &host, 30549), Ok(me.clone()), "rest via {host}:30549");
        assert_eq!(hello_at(&c, &ext, &host, 30548), Ok(me.clone()), "tcp via {host}:30548");
    }
    // MQTT from outside: subscribe through node-1, publish through node-0.
    let (n0, n1) = (c.nodes[0].ip.to_string(), c.nodes[1].ip.to_string());
    let sub_args = ["mosquitto_sub", "-h", &n1, "-p", "30550", "-t", "edge/out", "-C", "1", "-W", "30"];
    let mut sub = c.spawn_in(&ext, &sub_args);
    let publish = || {
        c.exec_in(&ext, &["mosquitto_pub", "-h", &n0, "-p", "30550", "-t", "edge/out", "-m", "from-lan"], "")
    };
    deliver(&mut sub, publish, "from-lan");
}

#[test]
fn self_verification_passes_through_the_service_and_fails_clearly_when_it_points_elsewhere() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(2) else { return };
    c.add_service(NS, "anylog", "ClusterIP", ports());
    let a = c.create_pod("anylog", NS, 0);
    let gate = [("NETSTRAP_VERIFY", "gate".to_string()), ("NETSTRAP_WATCH_INTERVAL", "1".to_string())];
    let mut pa = netstrap(&c, &a, "anylog", &gate);
    // Ready only once A has dialled its own Service name and been answered by itself (hairpin).
    wait_ready(&c, &a, &mut pa);
    let (_, verbose) = readyz(&c, &a).unwrap();
    assert!(verbose.contains("[+]verify ok"), "{verbose}");
    let rest_check = format!("{FQDN}:{REST}");
    assert!(
        verbose.contains(&format!("verify rest {rest_check} ok: answered as this instance")),
        "{verbose}"
    );

    // Another replica, and the Service now selects only it.
    let b = c.create_pod("anylog-canary", NS, 1);
    let mut pb = netstrap(&c, &b, "anylog", &[]);
    poll("the other replica to serve", Duration::from_secs(30), || {
        assert!(pb.exited().is_none(), "{}", pb.log());
        instance_at(&c, &b.netns, "127.0.0.1", REST)
    });
    let other = instance_at(&c, &b.netns, "127.0.0.1", REST).unwrap();
    c.set_selector(NS, "anylog", "anylog-canary");
    let why =
        poll("A's readiness to fail its verification", Duration::from_secs(15), || match readyz(&c, &a) {
            Ok((503, body)) if body.contains("[-]verify") => Ok(body),
            other => Err(format!("{other:?}")),
        });
    let line = why.lines().find(|l| l.starts_with("[-]verify")).unwrap();
    assert!(
        line.contains(&rest_check) && line.contains("another instance") && line.contains(&other),
        "{why}"
    );
    assert!(pa.log().contains("not verified"), "the log says it too:\n{}", pa.log());

    // Pointed back: ready again without a restart.
    c.set_selector(NS, "anylog", "anylog");
    wait_ready(&c, &a, &mut pa);
}

#[test]
fn cluster_dns_down_at_start_is_live_not_ready_with_the_reason_then_ready_without_restart() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(1) else { return };
    c.add_service(NS, "anylog", "ClusterIP", ports());
    c.stop_dns();
    let a = c.create_pod("anylog", NS, 0);
    let mut pa = netstrap(&c, &a, "anylog", &[("NETSTRAP_WATCH_INTERVAL", "1".into())]);
    let body = poll("readiness to report the DNS check", Duration::from_secs(30), || {
        assert!(pa.exited().is_none(), "netstrap exited:\n{}", pa.log());
        match readyz(&c, &a) {
            // Once the broker answers and the first files are written (both within moments of
            // start), only DNS may hold readiness back.
            Ok((503, body))
                if body.contains("[-]dns")
                    && body.contains("[+]broker ok")
                    && !body.contains("[-]files pending: writing") =>
            {
                Ok(body)
            }
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(c.http_get(&a.netns, "127.0.0.1", REST, "/livez").map(|r| r.0), Ok(200), "live");
    let failing: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
    assert_eq!(failing.len(), 1, "only DNS holds readiness back: {body}");
    assert!(failing[0].starts_with("[-]dns pending: ") && failing[0].contains(FQDN), "{body}");
    let before = instance_at(&c, &a.netns, "127.0.0.1", REST).unwrap();

    c.start_dns();
    wait_ready(&c, &a, &mut pa);
    assert_eq!(instance_at(&c, &a.netns, "127.0.0.1", REST), Ok(before), "the same process");

    // DNS down mid-run: a blip must not pull the pod out of its Service. It stays ready and
    // says so in the log.
    c.stop_dns();
    poll("the mid-run DNS failure to be noticed", Duration::from_secs(30), || {
        if pa.log().contains("the stable name stopped resolving") { Ok(()) } else { Err("not yet".into()) }
    });
    assert_eq!(readyz(&c, &a).map(|r| r.0), Ok(200), "still ready: {}", pa.log());
    c.start_dns();
}

#[test]
fn rolling_restart_with_the_registry_in_another_pod_keeps_every_policy_once() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(mut c) = Cluster::new(2) else { return };
    // The registry: an EdgeLake node's REST server (the fake, which speaks EdgeLake's
    // protocol) in its own pod behind its own Service, reached by name.
    c.add_service(NS, "edgelake-master", "ClusterIP", vec![Port::tcp("rest", 32049, 32049)]);
    let registry_pod = c.create_pod("edgelake-master", NS, 0);
    let fake = c.block_on(FakeEdgeLake::start());
    c.serve_from_pod(&registry_pod, 32049, fake.addr());
    let ledger = ("NETSTRAP_LEDGER", "anylog://edgelake-master:32049".to_string());

    let apps = ["edge-a", "edge-b", "edge-c"];
    let mut running = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        c.add_service(NS, app, "ClusterIP", ports());
        let pod = c.create_pod(app, NS, i % 2);
        let p = netstrap(&c, &pod, app, std::slice::from_ref(&ledger));
        running.push((pod, p));
    }
    for (pod, p) in &mut running {
        wait_ready(&c, pod, p);
    }
    let ids = || {
        let mut v: Vec<(String, String)> = fake
            .policies()
            .iter()
            .filter_map(|p| p.get("generic"))
            .map(|p| (p["name"].as_str().unwrap().into(), p["id"].as_str().unwrap().into()))
            .collect();
        v.sort();
        v
    };
    let before = ids();
    assert_eq!(before.len(), 3, "{before:?}");

    // maxSurge 1, maxUnavailable 0: the new pod is ready before the old one terminates.
    for (old, p_old) in std::mem::take(&mut running) {
        let new = c.create_pod(&old.app, NS, (old.node + 1) % 2);
        let mut p_new = netstrap(&c, &new, &old.app, std::slice::from_ref(&ledger));
        wait_ready(&c, &new, &mut p_new);
        assert_eq!(ids(), before, "while {} and {} both run", old.name, new.name);
        let declared = &policy(&c, &new)["declared"];
        assert_eq!(declared["action"], "unchanged", "the new pod found its identity: {declared}");
        let (code, log) = p_old.stop();
        assert_eq!(code, 0, "{log}");
        c.delete_pod(&old);
        running.push((new, p_new));
    }
    assert_eq!(ids(), before, "no duplicate, no lost policy");
    let inserts = fake
        .requests()
        .iter()
        .filter(|r| r.header("command").is_some_and(|c| c.starts_with("blockchain insert")))
        .count();
    assert_eq!(inserts, 4, "three node policies and the shared config policy, each inserted once");
    let client = c.create_pod("client", NS, 1);
    let out = c.exec(&client, std::slice::from_ref(&ledger), &[NETSTRAP, "peers", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "every node reachable by name: {text}");
    for app in apps {
        assert!(text.contains(&format!("{app}.{NS}.svc.cluster.local:{REST}")), "{text}");
    }
}
