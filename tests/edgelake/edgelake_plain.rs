//! The baseline without netstrap: real, unmodified EdgeLake nodes (master, operator, query; the
//! Python source snapshot in `../shared/edgelake`, see `support/edgelake.rs`) on the cluster in
//! a box (`support/netns.rs`), configured the way a Kubernetes user of plain EdgeLake has to:
//! the compose env of each node type, a persistent home per node (its ledger copy and data
//! survive restarts, as on a PVC) and `LEDGER_CONN` set to the master Service's ClusterIP.
//!
//! It records what operators fight today when the operator pod restarts (a new pod IP each
//! time) and asserts it, so a change in EdgeLake's behaviour shows up here. Skips (`SKIPPED:
//! <why>`) without root or without the snapshot and its venv; under `CI=true` it fails instead.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::edgelake::{self as el, NodeHome, Snapshot};
use support::netns::{Cluster, Pod, Port, Proc, poll};

const NS: &str = "edge";
const MASTER_TCP: u16 = 32048;
const MASTER_REST: u16 = 32049;
const OPERATOR_TCP: u16 = 32148;
const OPERATOR_REST: u16 = 32149;
const QUERY_TCP: u16 = 32348;
const QUERY_REST: u16 = 32349;
const LOCAL: &str = "127.0.0.1";
/// Start-up to the end of main.al: ~12 s for a first operator (two `wait 5` in the scripts).
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);
const REST_LIMIT: Duration = Duration::from_secs(30);

fn service(c: &mut Cluster, name: &str, tcp: u16, rest: u16) -> std::net::Ipv4Addr {
    c.add_service(NS, name, "ClusterIP", vec![Port::tcp("tcp", tcp, tcp), Port::tcp("rest", rest, rest)])
}

/// Start the node in `pod` and wait until it serves REST and has run main.al to its end.
fn start(c: &Cluster, pod: &Pod, env: &[(String, String)], rest: u16) -> Proc {
    let mut p = el::start_direct(c, pod, env);
    el::wait_rest(c, &pod.netns, LOCAL, rest, &mut p, REST_LIMIT);
    p
}

/// What the operator looks like to the rest of the network after a (re)start.
struct Row {
    start: String,
    pod_ip: String,
    /// Operator policies in the master's ledger: `ip:port` each.
    policies: Vec<String>,
    /// Whether something answers TCP at each policy's `ip:port` (from the query pod).
    reachable: Vec<bool>,
    operator_running: bool,
    service_answers: bool,
    script: &'static str,
}

fn observe(c: &Cluster, master: &Pod, query: &Pod, operator: &Pod, log: &str, label: &str) -> Row {
    let policies = el::master_ledger(c, &master.netns, LOCAL, MASTER_REST, "operator").unwrap();
    let addresses: Vec<(String, u16)> = policies
        .iter()
        .map(|p| (el::text(p, "ip"), el::field(p, "port").and_then(Value::as_u64).unwrap_or(0) as u16))
        .collect();
    let reachable = addresses.iter().map(|(ip, port)| el::tcp_open(c, &query.netns, ip, *port)).collect();
    let processes = el::processes(c, &operator.netns, LOCAL, OPERATOR_REST);
    let service = format!("edgelake-operator.{NS}.svc.cluster.local");
    let script = if log.contains("Non unique policy values") && log.contains("Exit all scripts") {
        "Non unique policy values -> Exit all scripts"
    } else if log.contains("Exit all scripts") {
        "Exit all scripts (other)"
    } else {
        "completed"
    };
    Row {
        start: label.to_string(),
        pod_ip: operator.ip.to_string(),
        policies: addresses.iter().map(|(ip, port)| format!("{ip}:{port}")).collect(),
        reachable,
        operator_running: el::is_running(&processes, "Operator"),
        service_answers: el::status(c, &query.netns, &service, OPERATOR_REST).is_ok(),
        script,
    }
}

fn table(rows: &[Row]) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = String::from(
        "| operator start | pod IP | operator policies on the master (ip:port) | reachable there | \
         `Operator` process | REST via its Service | main.al |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let reach: Vec<&str> = r.reachable.iter().map(|&b| yes(b)).collect();
        out += &format!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} |\n",
            r.start,
            r.pod_ip,
            r.policies.len(),
            r.policies.join(", "),
            reach.join(", "),
            if r.operator_running { "running" } else { "not running" },
            yes(r.service_answers),
            r.script,
        );
    }
    out
}

#[test]
fn plain_edgelake_operator_does_not_survive_pod_restarts() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(snap) = Snapshot::find() else { return };
    let Some(mut c) = el::cluster(2) else { return };
    let began = Instant::now();
    let master_ip = service(&mut c, "edgelake-master", MASTER_TCP, MASTER_REST);
    service(&mut c, "edgelake-operator", OPERATOR_TCP, OPERATOR_REST);
    service(&mut c, "edgelake-query", QUERY_TCP, QUERY_REST);

    // What a user of plain EdgeLake sets on Kubernetes: the master's Service as an address
    // (a name containing `master` is read as a blockchain query, see below). NODE_NAME and
    // everything else as the compose files have it.
    let ledger_conn = [("LEDGER_CONN", format!("{master_ip}:{MASTER_TCP}"))];
    let env = |c: &Cluster, node_type: &str, overrides: &[(&str, String)]| {
        let home = NodeHome::new(&snap, &c.dir.path().join(format!("home-{node_type}")));
        el::node_env(&snap, &home, el::compose_env(&snap, node_type), overrides)
    };
    let master_env = env(&c, "master", &[]);
    let operator_env = env(&c, "operator", &ledger_conn);
    let query_env = env(&c, "query", &ledger_conn);

    let master = c.create_pod("edgelake-master", NS, 0);
    let mut master_proc = start(&c, &master, &master_env, MASTER_REST);
    el::wait_detached(&mut master_proc, SCRIPT_LIMIT);
    let mut operator = c.create_pod("edgelake-operator", NS, 1);
    let query = c.create_pod("edgelake-query", NS, 0);
    let mut operator_proc = start(&c, &operator, &operator_env, OPERATOR_REST);
    let mut query_proc = start(&c, &query, &query_env, QUERY_REST);
    el::wait_detached(&mut query_proc, SCRIPT_LIMIT);
    let log = el::wait_detached(&mut operator_proc, SCRIPT_LIMIT);
    // The operator's push to the master is fire-and-forget: wait until the master has it.
    poll("the operator policy in the master's ledger", Duration::from_secs(15), || match el::master_ledger(
        &c,
        &master.netns,
        LOCAL,
        MASTER_REST,
        "operator",
    )?
    .len()
    {
        0 => Err("none yet".to_string()),
        _ => Ok(()),
    });
    let first = observe(&c, &master, &query, &operator, &log, "first start");
    let first_policy = el::master_ledger(&c, &master.netns, LOCAL, MASTER_REST, "operator").unwrap();
    eprintln!("{:?}: first start done", began.elapsed());

    // The Service name does not work as a destination: EdgeLake reads `(edgelake-master:32048)`
    // as a blockchain query for master policies (err 155), the ClusterIP works.
    let via = |dest: &str| {
        let reply = el::rest(
            &c,
            &query.netns,
            LOCAL,
            QUERY_REST,
            "GET",
            "get status",
            &[("destination", dest)],
            None,
        );
        reply.unwrap_or_else(|e| panic!("{e}"))
    };
    let by_name = via(&format!("edgelake-master:{MASTER_TCP}"));
    let by_ip = via(&format!("{master_ip}:{MASTER_TCP}"));
    eprintln!(
        "destination edgelake-master:{MASTER_TCP} -> {by_name:?}\ndestination {master_ip}:{MASTER_TCP} -> {by_ip:?}"
    );
    assert!(
        by_name.2.contains("\"err_code\": 155") && by_name.2.contains("Failed to determine destination node")
    );
    assert!(by_ip.2.contains("edgelake-master@") && by_ip.2.contains("running"), "{by_ip:?}");

    // The baseline works on a first start.
    let mut rows = vec![first];
    let (first, t) = (&rows[0], table(&rows));
    assert_eq!(first.policies, [format!("{}:{OPERATOR_TCP}", operator.ip)], "{t}");
    assert!(first.reachable[0] && first.operator_running && first.service_answers, "{t}");
    assert_eq!(first.script, "completed", "{t}");

    for i in 1..=3 {
        // Pod deleted (SIGTERM), recreated with a new IP; same env, same home (its PVC).
        let _ = operator_proc.stop();
        operator = c.restart_pod(&operator, i % 2);
        operator_proc = start(&c, &operator, &operator_env, OPERATOR_REST);
        let log = el::wait_detached(&mut operator_proc, SCRIPT_LIMIT);
        let row = observe(&c, &master, &query, &operator, &log, &format!("restart {i}"));
        eprintln!("{:?}: restart {i} done", began.elapsed());
        rows.push(row);
    }
    let observed = table(&rows);
    eprintln!("plain EdgeLake, operator pod restarted 3 times:\n{observed}");

    // After every restart: main.al looks its policy up by local_ip = <new pod IP>, finds none,
    // declares a new one, and its own ledger copy refuses it (operator names are unique): the
    // master keeps the first pod's policy, the operator process never runs again, and the
    // address the network has for it is dead — while the pod's REST (what probes see) answers.
    let stale = rows[0].policies.clone();
    for r in &rows[1..] {
        assert_eq!(r.policies, stale, "{observed}");
        assert_ne!(r.policies[0], format!("{}:{OPERATOR_TCP}", r.pod_ip), "{observed}");
        assert_eq!(r.reachable, [false], "{observed}");
        assert!(!r.operator_running, "{observed}");
        assert!(r.service_answers, "{observed}");
        assert_eq!(r.script, "Non unique policy values -> Exit all scripts", "{observed}");
    }
    let last = el::master_ledger(&c, &master.netns, LOCAL, MASTER_REST, "operator").unwrap();
    assert_eq!(
        el::text(&last[0], "id"),
        el::text(&first_policy[0], "id"),
        "the master kept the first policy"
    );
    eprintln!("wall time {:?}", began.elapsed());
}
