//! Real, unmodified EdgeLake nodes (the Python source snapshot in `../shared/edgelake`, each
//! running its own `main.al` with the compose env of its type) behind netstrap, laid out as
//! `k8s/base` lays out a pod: netstrap as the sidecar with `NETSTRAP_DECLARE=node` owning the
//! pod ports 33xxx (the Services' targetPorts), the node started by `k8s/base/edgelake-start.sh`
//! once netstrap has written `netstrap.env`, binding the advertised ports itself. Master,
//! operator and query each in their own pod of the cluster in a box (`support/netns.rs`).
//!
//! Proves (issue 14): first start without a manual step; after every pod restart (new IP) one
//! policy per node in the master with the stable name, the Service port and the same id; the
//! operator a running cluster member naming itself with the advertised address; data PUT
//! through netstrap's REST plane returned by the query node's `sql`; the query node reaching the
//! operator through netstrap; the master keeping its identity across its own restarts.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::edgelake::{self as el, NodeHome, Snapshot};
use support::netns::{Cluster, Pod, Port, Proc, poll};

const NETSTRAP: &str = env!("CARGO_BIN_EXE_netstrap");
const NS: &str = "edge";
const LOCAL: &str = "127.0.0.1";
const LIMIT: Duration = Duration::from_secs(90);
/// The admin listener's port: NETSTRAP_ADMIN_ADDR in k8s/base/netstrap.env, which every pod here is given.
const ADMIN_PORT: u16 = 9090;

/// One node type: its Service, its ports (advertised = Service port; netstrap's = +1000).
#[derive(Clone, Copy)]
struct Kind {
    node_type: &'static str,
    app: &'static str,
    tcp: u16,
    rest: u16,
}

const MASTER: Kind = Kind { node_type: "master", app: "edgelake-master", tcp: 32048, rest: 32049 };
const OPERATOR: Kind = Kind { node_type: "operator", app: "edgelake-operator", tcp: 32148, rest: 32149 };
const GENERIC: Kind = Kind { node_type: "generic", app: "edgelake-generic", tcp: 32548, rest: 32549 };
const QUERY: Kind = Kind { node_type: "query", app: "edgelake-query", tcp: 32348, rest: 32349 };

impl Kind {
    fn fqdn(&self) -> String {
        format!("{}.{NS}.svc.cluster.local", self.app)
    }
    fn own(port: u16) -> u16 {
        port + 1000
    }
}

/// A running pod: netstrap and the node.
struct Running {
    pod: Pod,
    netstrap: Proc,
    node: Proc,
}

struct Net {
    snap: Snapshot,
    c: Cluster,
    /// The operator's broker port (the node runs EdgeLake's message broker; netstrap relays).
    broker: Option<u16>,
}

impl Net {
    /// The broker port of `k`: the operator's when this test gives it one; a generic node
    /// has one in its compose files (32550).
    fn broker_of(&self, k: Kind) -> Option<u16> {
        match k.node_type {
            "operator" => self.broker,
            "generic" => Some(32550),
            _ => None,
        }
    }

    fn state(&self, k: Kind) -> PathBuf {
        self.c.dir.path().join(format!("state-{}", k.app))
    }

    /// The node's env: its compose files and what `k8s/base/node.env` adds.
    fn node_env(&self, k: Kind) -> Vec<(String, String)> {
        let home = NodeHome::new(&self.snap, &self.c.dir.path().join(format!("home-{}", k.app)));
        let mut overrides = vec![
            ("NODE_NAME", k.app.to_string()),
            ("ANYLOG_SERVER_PORT", k.tcp.to_string()),
            ("ANYLOG_REST_PORT", k.rest.to_string()),
            // Faster than the compose default of 30 s, so the test does not wait on it.
            ("BLOCKCHAIN_SYNC", "3 second".into()),
            ("WRITE_IMMEDIATE", "true".into()),
            ("THRESHOLD_TIME", "1 second".into()),
        ];
        if let (Some(b), "operator") = (self.broker_of(k), k.node_type) {
            // EdgeLake's broker, and its msg client subscribed to it (basic_msg_client.al).
            overrides.extend([
                ("ANYLOG_BROKER_PORT", b.to_string()),
                ("ENABLE_MQTT", "true".into()),
                ("MQTT_BROKER", "local".into()),
                ("MQTT_PORT", b.to_string()),
            ]);
        }
        if k.node_type != "master" {
            // The Service's name, as k8s/base/node.env has it: netstrap resolves it.
            overrides.push(("LEDGER_CONN", format!("{}:{}", MASTER.app, MASTER.tcp)));
        }
        el::node_env(&self.snap, &home, el::compose_env(&self.snap, k.node_type), &overrides)
    }

    /// netstrap's env as the pod gives it: the node's (both containers read node.env), then
    /// k8s/base/netstrap.env as shipped, then what differs here (the kind's names and ports, a
    /// state dir per pod, no shutdown delay, a shorter watch interval).
    fn netstrap_env(&self, k: Kind) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            self.node_env(k).into_iter().filter(|(key, v)| !v.is_empty() && key != "PATH").collect();
        let shipped =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/base/netstrap.env"))
                .expect("k8s/base/netstrap.env");
        let shipped =
            shipped.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| {
                l.split_once('=').unwrap_or_else(|| panic!("k8s/base/netstrap.env: not KEY=VALUE: {l}"))
            });
        for (key, v) in shipped {
            env.retain(|(have, _)| have != key);
            env.push((key.to_string(), v.to_string()));
        }
        for (key, v) in [
            ("NETSTRAP_DECLARE", "node".to_string()),
            ("NETSTRAP_SERVICE", k.app.to_string()),
            ("NETSTRAP_STATE_DIR", self.state(k).display().to_string()),
            ("NETSTRAP_TCP_PORT", Kind::own(k.tcp).to_string()),
            ("NETSTRAP_REST_PORT", Kind::own(k.rest).to_string()),
            (
                "NETSTRAP_BROKER_PORT",
                self.broker_of(k).map(Kind::own).map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("NETSTRAP_SHUTDOWN_DELAY", "0".into()),
            ("NETSTRAP_WATCH_INTERVAL", "5".into()),
        ] {
            env.retain(|(have, _)| have != key);
            env.push((key.to_string(), v));
        }
        env
    }

    fn start(&self, k: Kind, pod: Pod) -> Running {
        let env = self.netstrap_env(k);
        let extra: Vec<(&str, String)> = env.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
        let netstrap = self.c.spawn(&pod, &extra, &[NETSTRAP, "run"]);
        let node = el::start_with_launcher(&self.c, &pod, &self.node_env(k), &self.state(k));
        Running { pod, netstrap, node }
    }

    /// `/readyz?verbose` of the pod's netstrap until 200.
    fn wait_ready(&self, k: Kind, r: &mut Running) {
        let began = Instant::now();
        poll(&format!("netstrap of {} to be ready", k.app), LIMIT, || {
            if let Some(code) = r.netstrap.exited() {
                panic!("netstrap of {} exited with {code}:\n{}", k.app, el::tail(&r.netstrap.log(), 40));
            }
            if let Some(code) = r.node.exited() {
                panic!("the {} node exited with {code}:\n{}", k.app, el::tail(&r.node.log(), 60));
            }
            match self.c.http_get(&r.pod.netns, LOCAL, Kind::own(k.rest), "/readyz?verbose") {
                Ok((200, _)) => Ok(()),
                Ok((code, body)) => Err(format!("{code} {body}")),
                Err(e) => Err(e),
            }
        });
        eprintln!("{} ready in {:.1} s", k.app, began.elapsed().as_secs_f64());
    }

    fn restart(&mut self, k: Kind, r: Running, node: usize) -> Running {
        let (_, _) = (r.node.stop(), r.netstrap.stop());
        let pod = self.c.restart_pod(&r.pod, node);
        let mut fresh = self.start(k, pod);
        self.wait_ready(k, &mut fresh);
        fresh
    }

    /// Policies of `ty` in the master's ledger (read through the master's netstrap).
    fn ledger(&self, master: &Running, ty: &str) -> Vec<Value> {
        el::master_ledger(&self.c, &master.pod.netns, LOCAL, Kind::own(MASTER.rest), ty).unwrap()
    }
}

impl Net {
    /// PUT one row to the operator at `host:port` from `netns` (through netstrap), then wait
    /// until the query node's `sql` counts `want` rows.
    fn put_and_count(&self, netns: &str, host: &str, port: u16, query: &Running, want: u64, when: &str) {
        let rows = [json!({"timestamp": "2026-12-02 12:00:00", "value": want, "label": when})];
        let reply = el::put_rows(&self.c, netns, host, port, "new_company", "probe", &rows);
        assert!(
            reply.as_deref().is_ok_and(|r| r.contains("Success")),
            "{when}: PUT through netstrap: {reply:?}"
        );
        // One query at a time, a second apart: an unanswered query holds one of the query
        // node's few job slots until it times out. Until the query node has synced the
        // table's policy it answers err 45.
        let deadline = Instant::now() + LIMIT;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let got = el::sql(
                &self.c,
                &query.pod.netns,
                LOCAL,
                Kind::own(QUERY.rest),
                "new_company",
                "select count(*) from probe",
            );
            let n = got
                .as_ref()
                .ok()
                .and_then(|rows| rows.first())
                .and_then(|r| r.as_object())
                .and_then(|o| o.values().next())
                .and_then(Value::as_u64);
            if n == Some(want) {
                return;
            }
            let what = format!("{got:?}");
            if !seen.contains(&what) {
                seen.push(what);
            }
            if Instant::now() > deadline {
                let get = |pod: &Pod, port: u16, cmd: &str| el::get(&self.c, &pod.netns, LOCAL, port, cmd);
                panic!(
                    "{when}: {want} rows from the query node; answers: {seen:#?}\nquery node's tables: {:?}\nits errors: {:?}\nits log: {}",
                    get(&query.pod, Kind::own(QUERY.rest), "blockchain get table"),
                    get(&query.pod, Kind::own(QUERY.rest), "get error log"),
                    el::tail(&query.node.log(), 40),
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Publish one message to the operator's broker through netstrap (its Service name, from
    /// `netns`, with mosquitto_pub), then wait until the query node counts `want` rows of it.
    fn publish_and_count(&self, netns: &str, query: &Running, want: u64, when: &str) {
        let b = self.broker.expect("a broker").to_string();
        let msg = json!({"dbms": "new_company", "table": "mqtt_probe", "timestamp": "2026-12-02 12:00:00", "value": want});
        let out = self.c.exec_in(
            netns,
            &[
                "mosquitto_pub",
                "-d",
                "-h",
                &OPERATOR.fqdn(),
                "-p",
                &b,
                "-t",
                "anylog-demo",
                // QoS 0: EdgeLake's own broker drops the connection on a QoS 1 PUBLISH (seen directly too).
                "-q",
                "0",
                "-m",
                &msg.to_string(),
            ],
            "",
        );
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{when}: mosquitto_pub: {said}");
        poll(&format!("{when}: {want} MQTT rows from the query node"), LIMIT, || {
            let got = el::sql(
                &self.c,
                &query.pod.netns,
                LOCAL,
                Kind::own(QUERY.rest),
                "new_company",
                "select count(*) from mqtt_probe",
            );
            let n = got
                .as_ref()
                .ok()
                .and_then(|r| r.first())
                .and_then(|r| r.as_object())
                .and_then(|o| o.values().next())
                .and_then(Value::as_u64);
            if n == Some(want) {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_secs(1));
                Err(format!("{got:?}"))
            }
        });
    }

    /// The query node's `test network` dials `address` (a policy's `ip:port`) and is answered,
    /// once its ledger has the policy (one BLOCKCHAIN_SYNC).
    fn test_network_reaches(&self, query: &Running, address: &str) {
        poll(&format!("the query node's test network to reach {address}"), Duration::from_secs(30), || {
            let tested = el::get(&self.c, &query.pod.netns, LOCAL, Kind::own(QUERY.rest), "test network")?;
            match tested.lines().find(|l| l.starts_with(address)) {
                Some(line) if line.contains('+') => Ok(()),
                _ => {
                    std::thread::sleep(Duration::from_secs(1));
                    Err(tested)
                }
            }
        });
    }

    /// A ClusterIP Service for `k`: Service ports → netstrap's ports.
    fn cluster_ip(&mut self, k: Kind) -> std::net::Ipv4Addr {
        let mut ports =
            vec![Port::tcp("tcp", k.tcp, Kind::own(k.tcp)), Port::tcp("rest", k.rest, Kind::own(k.rest))];
        if let Some(b) = self.broker_of(k) {
            ports.push(Port::tcp("broker", b, Kind::own(b)));
        }
        self.c.add_service(NS, k.app, "ClusterIP", ports)
    }

    /// Create `k`'s pod on `node` and start it.
    fn up(&mut self, k: Kind, node: usize) -> Running {
        let pod = self.c.create_pod(k.app, NS, node);
        self.start(k, pod)
    }
}

/// Exactly one policy named `k.app`, with the stable name and the Service port: its id.
fn one_policy(policies: &[Value], k: Kind, when: &str) -> String {
    let mine: Vec<&Value> = policies.iter().filter(|p| el::text(p, "name") == k.app).collect();
    assert_eq!(mine.len(), 1, "{when}: one {} policy in the master: {policies:#?}", k.app);
    let p = mine[0];
    assert_eq!(el::text(p, "ip"), k.fqdn(), "{when}: {p}");
    assert_eq!(el::text(p, "local_ip"), k.fqdn(), "{when}: {p}");
    assert_eq!(el::field(p, "port"), Some(&json!(k.tcp)), "{when}: {p}");
    assert_eq!(el::field(p, "rest_port"), Some(&json!(k.rest)), "{when}: {p}");
    el::text(p, "id")
}

/// One cluster of real nodes at a time: seven Python nodes on two cores slow each other past
/// the test's limits.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn edgelake_nodes_behind_netstrap_keep_one_identity_and_serve_data_across_pod_restarts() {
    let _gate = crate::support::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(snap) = Snapshot::find() else { return };
    let Some(c) = el::cluster(2) else { return };
    let began = Instant::now();
    let mut net = Net { snap, c, broker: Some(32150) };
    net.cluster_ip(MASTER);
    let operator_ip = net.cluster_ip(OPERATOR);
    net.cluster_ip(QUERY);

    // First start: every pod at once, no manual step, no ordering by hand.
    let mut master = net.up(MASTER, 0);
    let mut operator = net.up(OPERATOR, 1);
    let mut query = net.up(QUERY, 0);
    net.wait_ready(MASTER, &mut master);
    net.wait_ready(OPERATOR, &mut operator);
    net.wait_ready(QUERY, &mut query);

    let env = std::fs::read_to_string(net.state(OPERATOR).join("netstrap.env")).unwrap();
    assert!(!env.contains(&operator.pod.ip.to_string()), "no pod IP in netstrap.env:\n{env}");
    assert!(!env.contains("LEDGER_CONN=edgelake-master"), "LEDGER_CONN is given as an address:\n{env}");

    let master_id = one_policy(&net.ledger(&master, "master"), MASTER, "first start");
    let operator_id = one_policy(&net.ledger(&master, "operator"), OPERATOR, "first start");
    let query_id = one_policy(&net.ledger(&master, "query"), QUERY, "first start");

    // Data in through the operator's netstrap (its Service name, from the query pod), out
    // through the query node, which asks the operator at the address in its policy.
    let mut sent = 0;
    let mut put_and_query = |net: &Net, query: &Running, when: &str| {
        sent += 1;
        net.put_and_count(&query.pod.netns, &OPERATOR.fqdn(), OPERATOR.rest, query, sent, when);
    };
    put_and_query(&net, &query, "first start");
    net.publish_and_count(&query.pod.netns, &query, 1, "first start");

    for i in 1..=5 {
        let when = format!("operator restart {i}");
        let old_ip = operator.pod.ip;
        operator = net.restart(OPERATOR, operator, i % 2);
        assert_ne!(operator.pod.ip, old_ip, "a restarted pod gets a new IP");
        let id = one_policy(&net.ledger(&master, "operator"), OPERATOR, &when);
        assert_eq!(id, operator_id, "{when}: the same operator policy id");
        let processes = el::processes(&net.c, &operator.pod.netns, LOCAL, Kind::own(OPERATOR.rest));
        assert!(el::is_running(&processes, "Operator"), "{when}: the operator runs: {processes:#}");
        let status = el::status(&net.c, &query.pod.netns, &OPERATOR.fqdn(), OPERATOR.rest).unwrap();
        assert!(
            status.contains(&format!("@{}:{}", OPERATOR.fqdn(), OPERATOR.tcp)),
            "{when}: the operator names itself with the advertised address: {status}"
        );
        put_and_query(&net, &query, &when);
        net.publish_and_count(&query.pod.netns, &query, 1 + i as u64, &when);
    }

    // The query node reaches the operator through netstrap: `test network` and a `run client`
    // to the address in the operator's policy.
    net.test_network_reaches(&query, &format!("{}:{}", OPERATOR.fqdn(), OPERATOR.tcp));
    // `run client` (REST: a `destination` header) to the address the operator's policy name
    // resolves to: EdgeLake reads a destination whose text holds "operator" as a blockchain
    // query, so the FQDN itself cannot be given here (policies are not affected).
    let destination = format!("{operator_ip}:{}", OPERATOR.tcp);
    let answer = poll("a run client to the operator's policy address", Duration::from_secs(20), || {
        match el::rest(
            &net.c,
            &query.pod.netns,
            LOCAL,
            Kind::own(QUERY.rest),
            "GET",
            "get status",
            &[("destination", &destination)],
            None,
        ) {
            Ok((200, _, body)) if body.contains("running") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(answer.contains(OPERATOR.app), "{answer}");

    // The master behind netstrap keeps its identity across its own restarts.
    for i in 1..=5 {
        let when = format!("master restart {i}");
        master = net.restart(MASTER, master, i % 2);
        assert_eq!(one_policy(&net.ledger(&master, "master"), MASTER, &when), master_id, "{when}");
        assert_eq!(one_policy(&net.ledger(&master, "operator"), OPERATOR, &when), operator_id, "{when}");
    }
    for i in 1..=5 {
        let when = format!("query restart {i}");
        query = net.restart(QUERY, query, i % 2);
        assert_eq!(one_policy(&net.ledger(&master, "query"), QUERY, &when), query_id, "{when}");
    }
    put_and_query(&net, &query, "after the master and query restarts");

    // netstrap tells the truth about the node it fronts: with the query node stopped the pod
    // turns unready naming why, /v1/network says it, and refused relays do not flood the log.
    let Running { pod, netstrap, node } = query;
    let _ = node.stop();
    let unready = poll("readiness to fail with the node down", Duration::from_secs(20), || {
        match net.c.http_get(&pod.netns, LOCAL, Kind::own(QUERY.rest), "/readyz?verbose") {
            Ok((503, body)) if body.contains("[-]upstream") && body.contains("[-]node") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(unready.contains(&format!("127.0.0.1:{}", QUERY.tcp)), "{unready}");
    // /v1/* is on the admin listener (NETSTRAP_ADMIN_ADDR in k8s/base/netstrap.env), not the rest port.
    let (_, network) = net.c.http_get(&pod.netns, LOCAL, ADMIN_PORT, "/v1/network").unwrap();
    let on_rest =
        net.c.http_get(&pod.netns, LOCAL, Kind::own(QUERY.rest), "/v1/network").map(|(code, _)| code);
    assert_eq!(on_rest.ok(), Some(404), "the shipped netstrap.env moves /v1/* off the rest port");
    let network: Value = serde_json::from_str(&network).unwrap();
    assert!(!network["node"]["problems"].as_array().unwrap().is_empty(), "{network:#}");
    let warnings = |log: &str| log.lines().filter(|l| l.contains("WARN")).count();
    let before = warnings(&netstrap.log());
    for _ in 0..30 {
        el::tcp_open(&net.c, &pod.netns, LOCAL, Kind::own(QUERY.tcp));
    }
    let after = warnings(&netstrap.log());
    assert!(
        after - before <= 3,
        "30 refused relays logged {} warnings:\n{}",
        after - before,
        el::tail(&netstrap.log(), 10)
    );
    eprintln!("wall time {:.0} s", began.elapsed().as_secs_f64());
}

/// The nodeport overlay: the operator's Service is a NodePort. netstrap advertises the address
/// of the node the pod runs on and the nodePorts (not the Service or container ports); the
/// node binds the nodePort itself and a client outside the cluster reaches it there. Beside it
/// a generic node, for which EdgeLake declares no policy.
#[test]
fn nodeport_operator_behind_netstrap_advertises_the_node_port_and_serves_an_outside_client() {
    let _gate = crate::support::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(snap) = Snapshot::find() else { return };
    let Some(c) = el::cluster(2) else { return };
    let mut net = Net { snap, c, broker: None };
    net.cluster_ip(MASTER);
    net.cluster_ip(QUERY);
    net.cluster_ip(GENERIC);
    let (tcp_np, rest_np) = (30148, 30149);
    let ports = vec![
        Port::tcp("tcp", OPERATOR.tcp, Kind::own(OPERATOR.tcp)).node_port(tcp_np),
        Port::tcp("rest", OPERATOR.rest, Kind::own(OPERATOR.rest)).node_port(rest_np),
    ];
    net.c.add_service(NS, OPERATOR.app, "NodePort", ports);

    let mut master = net.up(MASTER, 0);
    let mut operator = net.up(OPERATOR, 1);
    let mut query = net.up(QUERY, 0);
    // A generic node (with the broker its compose files give it): EdgeLake's main.al declares
    // no policy for it, so netstrap waits for none and it is ready all the same.
    let mut generic = net.up(GENERIC, 1);
    net.wait_ready(MASTER, &mut master);
    net.wait_ready(OPERATOR, &mut operator);
    net.wait_ready(QUERY, &mut query);
    net.wait_ready(GENERIC, &mut generic);
    let status = el::status(&net.c, &query.pod.netns, &GENERIC.fqdn(), GENERIC.rest).unwrap();
    assert!(status.contains(&format!("@{}:{}", GENERIC.fqdn(), GENERIC.tcp)), "{status}");

    let node_ip = net.c.nodes[1].ip.to_string();
    let check = |net: &Net, master: &Running, when: &str| -> String {
        let policies = net.ledger(master, "operator");
        assert_eq!(policies.len(), 1, "{when}: {policies:#?}");
        let p = &policies[0];
        assert_eq!(el::text(p, "ip"), node_ip, "{when}: the node's address: {p}");
        // EdgeLake pairs local_ip with the same port; the Service name does not answer on it.
        assert_eq!(el::text(p, "local_ip"), node_ip, "{when}: {p}");
        assert_eq!(el::field(p, "port"), Some(&json!(tcp_np)), "{when}: the nodePort: {p}");
        assert_eq!(el::field(p, "rest_port"), Some(&json!(rest_np)), "{when}: {p}");
        el::text(p, "id")
    };
    let id = check(&net, &master, "first start");

    // A client outside the cluster, through any node's address and the nodePort.
    let ext = net.c.external();
    for node in &net.c.nodes {
        let status = el::status(&net.c, &ext, &node.ip.to_string(), rest_np).unwrap();
        assert!(
            status.contains(&format!("@{node_ip}:{tcp_np}")),
            "names itself with the advertised address: {status}"
        );
    }
    // Peers in the cluster dial the policy's address too (a private `ip` is dialled as is).
    assert!(
        el::tcp_open(&net.c, &query.pod.netns, &node_ip, tcp_np),
        "the query pod reaches {node_ip}:{tcp_np}"
    );
    net.test_network_reaches(&query, &format!("{node_ip}:{tcp_np}"));
    net.put_and_count(&ext, &node_ip, rest_np, &query, 1, "from outside");

    for i in 1..=2 {
        let when = format!("operator restart {i}");
        operator = net.restart(OPERATOR, operator, 1);
        assert_eq!(check(&net, &master, &when), id, "{when}: the same id");
        let processes = el::processes(&net.c, &operator.pod.netns, LOCAL, Kind::own(OPERATOR.rest));
        assert!(el::is_running(&processes, "Operator"), "{when}: {processes:#}");
        net.put_and_count(&ext, &node_ip, rest_np, &query, 1 + i, &when);
    }
}

/// Issue 16: a client of the node through netstrap's REST plane sees what it sees talking to
/// the node directly — status, reason phrase and body bytes — for the replies EdgeLake frames
/// wrongly: a 400 (its error JSON in the reason phrase, `Transfer-Encoding: chunked` and an
/// unframed body), an empty 200 that claims chunks, and a 200 of the URL form whose body is
/// unframed. Compared from inside the pod: the node's own port against netstrap's.
fn rest_replies_match_the_node(net: &Net, k: Kind, r: &Running) {
    let url_form = format!("/?User-Agent=AnyLog/1.23?destination=127.0.0.1:{}?command=get%20status", k.tcp);
    for (what, path, command) in [
        ("an unknown command (400)", "/", "get xyz"),
        ("a GET without a command (empty 200)", "/", ""),
        ("the URL form (unframed 200)", url_form.as_str(), ""),
        ("get status (framed 200)", "/", "get status"),
    ] {
        let ask = |port: u16| {
            el::rest_path(&net.c, &r.pod.netns, LOCAL, port, path, "GET", command, &[], None)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
        };
        let direct = ask(k.rest);
        let proxied = ask(Kind::own(k.rest));
        assert_eq!(proxied, direct, "{what}: through netstrap (left) as from the node (right)");
        if command == "get xyz" {
            assert_eq!(direct.0, 400, "{direct:?}");
            assert!(direct.1.contains("\"err_code\"") && direct.2.contains("\"err_code\""), "{direct:?}");
        }
        if path != "/" {
            assert!(direct.2.contains("running"), "{what}: {direct:?}");
        }
    }
}

/// Issue 16: netstrap declaring a node whose company and name are not ASCII (Latin-1 and
/// beyond it) into a real EdgeLake master (`anylog://`, through the master's netstrap):
/// one policy, and after a pod restart the same id, found unchanged. Before, the look-up's
/// `command` header reached EdgeLake as ISO-8859-1 mojibake and never matched: netstrap was
/// never ready and inserted its policy again on every attempt.
fn non_ascii_node_declares_once(net: &mut Net, master: &Running) {
    let app = "societe";
    let (company, name) = ("Société Générale", "Zürich-東京-1");
    net.c.add_service(
        NS,
        app,
        "ClusterIP",
        vec![Port::tcp("tcp", 32448, 32448), Port::tcp("rest", 32449, 32449)],
    );
    let env = |net: &Net| -> Vec<(&'static str, String)> {
        vec![
            ("NETSTRAP_SERVICE", app.to_string()),
            ("NODE_TYPE", "query".into()),
            ("COMPANY_NAME", company.into()),
            ("NODE_NAME", name.into()),
            ("ANYLOG_SERVER_PORT", "32448".into()),
            ("ANYLOG_REST_PORT", "32449".into()),
            ("LEDGER_CONN", format!("{}:{}", MASTER.app, MASTER.tcp)),
            ("NETSTRAP_LEDGER", format!("anylog://{}:{}", MASTER.app, MASTER.rest)),
            ("NETSTRAP_STATE_DIR", net.c.dir.path().join("state-societe").display().to_string()),
            ("NETSTRAP_SHUTDOWN_DELAY", "0".into()),
        ]
    };
    let declared = |net: &Net, pod: &Pod, p: &mut Proc, when: &str| -> Value {
        poll(&format!("{when}: netstrap declaring {company}/{name}"), LIMIT, || {
            if let Some(code) = p.exited() {
                panic!("{when}: netstrap exited with {code}:\n{}", el::tail(&p.log(), 40));
            }
            match net.c.http_get(&pod.netns, LOCAL, 32449, "/v1/policy") {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
                    if v["declared"]["action"].is_string() { Ok(v["declared"].clone()) } else { Err(body) }
                }
                other => Err(format!("{other:?}\n{}", el::tail(&p.log(), 5))),
            }
        })
    };
    let mine = |net: &Net| -> Vec<Value> {
        net.ledger(master, "query").into_iter().filter(|p| el::text(p, "company") == company).collect()
    };

    let pod = net.c.create_pod(app, NS, 1);
    let mut p = net.c.spawn(&pod, &env(net), &[NETSTRAP, "run"]);
    let first = declared(net, &pod, &mut p, "first start");
    assert_eq!(first["action"], "inserted", "{first}");
    let policies = mine(net);
    assert_eq!(policies.len(), 1, "one policy: {policies:#?}");
    assert_eq!(el::text(&policies[0], "name"), name, "stored as written: {policies:#?}");
    let id = el::text(&policies[0], "id");

    let _ = p.stop();
    let pod = net.c.restart_pod(&pod, 0);
    let mut p = net.c.spawn(&pod, &env(net), &[NETSTRAP, "run"]);
    let again = declared(net, &pod, &mut p, "after a restart");
    assert_eq!(again["action"], "unchanged", "found as stored: {again}");
    assert_eq!(again["id"], id.as_str(), "{again}");
    let policies = mine(net);
    assert_eq!(policies.len(), 1, "still one policy: {policies:#?}");
    assert_eq!(el::text(&policies[0], "id"), id);
    let _ = p.stop();
}

/// The loadbalancer overlay: netstrap advertises the LoadBalancer's ingress address with the
/// Service ports (`local_ip` stays the Service name: it answers on the same port); the node
/// binds the Service ports; a client outside the cluster reaches it through the ingress.
/// This cluster also proves two fixes of issue 16 (it is the quickest to start):
/// [`rest_replies_match_the_node`] and [`non_ascii_node_declares_once`].
#[test]
fn loadbalancer_operator_behind_netstrap_advertises_the_ingress_and_serves_an_outside_client() {
    let _gate = crate::support::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(snap) = Snapshot::find() else { return };
    let Some(c) = el::cluster(2) else { return };
    let mut net = Net { snap, c, broker: None };
    net.cluster_ip(MASTER);
    net.cluster_ip(QUERY);
    let lb = std::net::Ipv4Addr::new(192, 168, 50, 200);
    let ports = vec![
        Port::tcp("tcp", OPERATOR.tcp, Kind::own(OPERATOR.tcp)),
        Port::tcp("rest", OPERATOR.rest, Kind::own(OPERATOR.rest)),
    ];
    net.c.add_load_balancer(NS, OPERATOR.app, lb, ports);

    let mut master = net.up(MASTER, 0);
    let mut operator = net.up(OPERATOR, 1);
    let mut query = net.up(QUERY, 0);
    net.wait_ready(MASTER, &mut master);
    net.wait_ready(OPERATOR, &mut operator);
    net.wait_ready(QUERY, &mut query);

    let lb = lb.to_string();
    let check = |net: &Net, master: &Running, when: &str| -> String {
        let policies = net.ledger(master, "operator");
        assert_eq!(policies.len(), 1, "{when}: {policies:#?}");
        let p = &policies[0];
        assert_eq!(el::text(p, "ip"), lb, "{when}: the ingress address: {p}");
        assert_eq!(el::text(p, "local_ip"), OPERATOR.fqdn(), "{when}: {p}");
        assert_eq!(el::field(p, "port"), Some(&json!(OPERATOR.tcp)), "{when}: {p}");
        el::text(p, "id")
    };
    let id = check(&net, &master, "first start");
    rest_replies_match_the_node(&net, OPERATOR, &operator);
    non_ascii_node_declares_once(&mut net, &master);
    let ext = net.c.external();
    let status = el::status(&net.c, &ext, &lb, OPERATOR.rest).unwrap();
    assert!(status.contains(&format!("@{lb}:{}", OPERATOR.tcp)), "names itself with the ingress: {status}");
    net.test_network_reaches(&query, &format!("{lb}:{}", OPERATOR.tcp));
    net.put_and_count(&ext, &lb, OPERATOR.rest, &query, 1, "from outside");

    operator = net.restart(OPERATOR, operator, 0);
    assert_eq!(check(&net, &master, "restart"), id, "the same id after a restart");
    let processes = el::processes(&net.c, &operator.pod.netns, LOCAL, Kind::own(OPERATOR.rest));
    assert!(el::is_running(&processes, "Operator"), "{processes:#}");
    net.put_and_count(&ext, &lb, OPERATOR.rest, &query, 2, "after the restart");
}

/// netstrap's `file://` ledger pointed at a real node's own `blockchain.json`, both writing at
/// once: EdgeLake appends (`blockchain insert ... and local=true`, which writes the file without
/// any lock) while netstrap replaces its policy again and again. Nothing EdgeLake wrote is lost
/// or changed — a 30-digit integer, which EdgeLake itself stores as the float
/// `1.2345678901234568e+29` (Python's spelling; a JSON round trip in Rust drops the `+`), keeps
/// EdgeLake's bytes — and the node, reloading the file, reads
/// every line: its own policies and netstrap's latest one. EdgeLake's loader does not apply
/// tombstones (its own deletes reappear on reload too), so the node also lists the versions
/// netstrap replaced; the figure records how many.
#[test]
fn a_file_ledger_shared_with_a_real_node_keeps_its_lines_and_the_node_reads_netstraps() {
    let _gate = crate::support::gate::enter(module_path!());
    use netstrap::registry::{REQUEST_TIMEOUT, Registry, declare::declare};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(snap) = Snapshot::find() else { return };
    let Some(mut c) = el::cluster(1) else { return };
    let pod = c.create_pod(GENERIC.app, NS, 0);
    let home = NodeHome::new(&snap, &c.dir.path().join("home-generic"));
    // No master: the node's ledger is its own file, written only by `blockchain insert`.
    let overrides = [
        ("NODE_NAME", GENERIC.app.to_string()),
        ("ANYLOG_SERVER_PORT", GENERIC.tcp.to_string()),
        ("ANYLOG_REST_PORT", GENERIC.rest.to_string()),
        ("LEDGER_CONN", format!("127.0.0.1:{}", MASTER.tcp)),
    ];
    let env = el::node_env(&snap, &home, el::compose_env(&snap, "generic"), &overrides);
    let mut node = el::start_direct(&c, &pod, &env);
    el::wait_rest(&c, &pod.netns, LOCAL, GENERIC.rest, &mut node, LIMIT);
    let ledger = home.ledger();
    let registry =
        Registry::open(&netstrap::config::Ledger::File(ledger.clone()), "127.0.0.1:32048", REQUEST_TIMEOUT);
    let ours = |ip: &str| {
        json!({"operator": {"name": "op-file", "company": "Acme Co", "hostname": "op-file", "ip": ip,
            "local_ip": "op.edge.svc.cluster.local", "port": 32148, "rest_port": 32149, "cluster": "7a3f"}})
    };
    const SERIAL: &str = "123456789012345678901234567890";
    const STORED: &str = "1.2345678901234568e+29";
    let rounds = 20;
    let last_id = std::thread::scope(|s| {
        let (c, netns) = (&c, &pod.netns);
        let edgelake = s.spawn(move || {
            for i in 0..rounds {
                let body = format!(
                    r#"<p={{"sensor": {{"name": "s{i}", "company": "Other", "serial": {SERIAL}}}}}>"#
                );
                let reply = el::rest(
                    c,
                    netns,
                    LOCAL,
                    GENERIC.rest,
                    "POST",
                    "blockchain insert where policy=!p and local=true",
                    &[],
                    Some(&body),
                );
                assert!(matches!(reply, Ok((200, _, _))), "EdgeLake's insert {i}: {reply:?}");
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut last = String::new();
        for i in 0..rounds {
            let ip = format!("203.0.113.{}", 1 + i % 3);
            last = rt.block_on(declare(&registry, &ours(&ip))).unwrap().id().unwrap().to_string();
            std::thread::sleep(Duration::from_millis(40));
        }
        edgelake.join().unwrap();
        last
    });

    let text = std::fs::read_to_string(&ledger).unwrap();
    for i in 0..rounds {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&format!(r#""name": "s{i}""#))).collect();
        assert_eq!(lines.len(), 1, "EdgeLake's policy s{i} is in its file once:\n{text}");
        assert!(
            lines[0].contains(&format!(r#""serial": {STORED}"#)),
            "its bytes as EdgeLake wrote them: {}",
            lines[0]
        );
    }
    let live = support::ledger::live(&ledger);
    let ops: Vec<&Value> = live.iter().filter(|v| v.get("operator").is_some()).collect();
    assert_eq!(ops.len(), 1, "one live policy of netstrap's node: {ops:?}");
    assert_eq!(support::ledger::id(ops[0]), Some(last_id.as_str()));

    // The node reads the file again, every line of it.
    let reload =
        el::rest(&c, &pod.netns, LOCAL, GENERIC.rest, "POST", "blockchain reload metadata", &[], None);
    assert!(matches!(reload, Ok((200, _, _))), "{reload:?}");
    let sensors = el::policies(&c, &pod.netns, LOCAL, GENERIC.rest, "sensor");
    assert_eq!(sensors.len(), rounds, "the node reads back every policy it wrote: {sensors:?}");
    let raw = el::get(&c, &pod.netns, LOCAL, GENERIC.rest, "blockchain get sensor").unwrap();
    assert_eq!(
        raw.matches(&format!(r#""serial": {STORED}"#)).count(),
        rounds,
        "as EdgeLake stored it: {raw}"
    );
    let operators = el::policies(&c, &pod.netns, LOCAL, GENERIC.rest, "operator");
    assert!(
        operators.iter().any(|p| el::text(p, "id") == last_id),
        "the node reads netstrap's latest policy {last_id}: {operators:?}"
    );
    println!(
        "FIGURE shared file ledger: {rounds} EdgeLake inserts during {rounds} netstrap declares: 0 lost; \
         the node lists {} versions of netstrap's policy after a reload (tombstones not applied by EdgeLake's loader)",
        operators.len()
    );
    node.stop();
}
