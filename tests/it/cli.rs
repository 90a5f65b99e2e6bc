//! The `netstrap` binary as an operator runs it: exit codes, table, JSON, error messages.

use std::process::{Command, Output};

fn netstrap(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(args)
        .env_clear()
        .env("NETSTRAP_ENVIRONMENT", "host")
        .envs(env.iter().copied())
        .output()
        .expect("netstrap runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn discover_prints_the_filled_in_connection_table() {
    let o = netstrap(
        &["discover"],
        &[
            ("NODE_TYPE", "operator"),
            ("CLUSTER_NAME", "cluster1"),
            ("ANYLOG_BROKER_PORT", "32150"),
            ("EXTERNAL_IP", "203.0.113.7"),
            ("DNS", "op1.example.net"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "| TCP            | 203.0.113.7:32148",
        "| REST           | 203.0.113.7:32149",
        "| Message broker | 203.0.113.7:32150",
        "op1.example.net:32148",
        "0.0.0.0:32148",
        "run message broker",
        "env EXTERNAL_IP",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn discover_json_is_the_same_table_as_json() {
    let o = netstrap(
        &["discover", "--json"],
        &[("NODE_TYPE", "query"), ("LOCAL_IP", "10.1.2.3"), ("REST_BIND", "true")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    let rows = v["table"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["plane"], "rest");
    assert_eq!(rows[1]["bind_ip"]["value"], "10.1.2.3");
    assert_eq!(rows[1]["port"]["value"], 32349);
    assert_eq!(v["discovery"]["local_ip"]["why"]["source"], "env LOCAL_IP");
}

#[test]
fn bad_configuration_exits_2_naming_every_problem() {
    let o = netstrap(&["discover"], &[("ANYLOG_REST_PORT", "70000"), ("TCP_BIND", "maybe")]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("ANYLOG_REST_PORT=\"70000\"") && err.contains("TCP_BIND=\"maybe\""), "{err}");
}

#[test]
fn a_missing_service_name_in_kubernetes_fails_with_what_to_set() {
    let o = netstrap(&["discover"], &[("NETSTRAP_ENVIRONMENT", "kubernetes"), ("POD_IP", "10.244.1.7")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("set NETSTRAP_SERVICE"), "{}", stderr(&o));
}

#[test]
fn config_file_and_set_flags_layer_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netstrap.toml");
    std::fs::write(&file, "NODE_TYPE = \"master\"\nCOMPANY_NAME = \"File Co\"\nANYLOG_REST_PORT = 1111\n")
        .unwrap();
    let o = netstrap(
        &["--config", file.to_str().unwrap(), "--set", "ANYLOG_REST_PORT=2222", "discover", "--json"],
        &[("ANYLOG_SERVER_PORT", "3333")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["table"]["rows"][0]["port"]["value"], 3333, "env over file");
    assert_eq!(v["table"]["rows"][1]["port"]["value"], 2222, "flag over env");
    let o = netstrap(&["--config", "/nonexistent/netstrap.toml", "discover"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/netstrap.toml"), "{}", stderr(&o));
}

#[test]
fn a_ledger_conn_name_edgelake_would_misread_and_that_does_not_resolve_is_a_warning() {
    // A nameserver that answers nothing: the name cannot resolve.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ns = dead.local_addr().unwrap().to_string();
    let o = netstrap(
        &["discover"],
        &[
            ("NODE_TYPE", "operator"),
            ("NETSTRAP_CLUSTER_ID", "c0ffee"),
            ("DNS", "op1.example.net"),
            ("LEDGER_CONN", "edgelake-master:32048"),
            ("NETSTRAP_NAMESERVER", &ns),
            ("NETSTRAP_SOURCE_TIMEOUT_MS", "300"),
        ],
    );
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("LEDGER_CONN=edgelake-master:32048"), "{all}");
    assert!(all.contains("as a blockchain query"), "{all}");
}

#[test]
fn values_edgelake_could_never_store_are_refused_at_start_naming_the_variable() {
    for (key, value, why) in [
        ("NODE_NAME", "edge\nnode", "control character"),
        ("COMPANY_NAME", "A>B", "'>'"),
        ("CLUSTER_NAME", "c\"1", "'\"'"),
        ("CITY", "Kö\u{7}ln", "control character"),
        // Proven on EdgeLake 1.4.2604 (issue 16): a look-up of a value starting with '!' is
        // err 240; a master's SQL insert of a company with a "'" fails, so it is never stored.
        ("NODE_NAME", "!edge", "starts with '!'"),
        ("COMPANY_NAME", "O'Brien", "never stored"),
    ] {
        for command in ["run", "policy", "discover"] {
            let o =
                netstrap(&[command], &[("LOCAL_IP", "127.0.0.1"), ("ANYLOG_REST_PORT", "1"), (key, value)]);
            assert_eq!(o.status.code(), Some(2), "{command} with {key}={value:?}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(
                err.contains(&format!("{key}=")) && err.contains(why),
                "{command} with {key}={value:?}: {err}"
            );
        }
    }
    // What EdgeLake stores is accepted: non-ASCII, quotes where nothing looks them up.
    let o = netstrap(
        &["policy"],
        &[
            ("NODE_NAME", "O'Neil \\ Zürich-東京-1!"),
            ("COMPANY_NAME", "Société Générale"),
            ("CITY", "\"Köln\""),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_missing_resolv_conf_is_named_as_missing() {
    let o = netstrap(
        &["discover", "--json"],
        &[
            ("LOCAL_IP", "127.0.0.1"),
            ("DNS", "node1.example"),
            ("NETSTRAP_RESOLV_CONF", "/nonexistent/resolv.conf"),
        ],
    );
    let out = stdout(&o);
    assert!(out.contains("/nonexistent/resolv.conf does not exist"), "{out}");
    assert!(!out.contains("lists none"), "{out}");
}

/// On a plain host without HOSTNAME in the environment, the policy's hostname and the default
/// node name are the machine's name, not an address that changes with the network.
#[test]
fn on_a_host_the_machines_name_is_the_identity_not_its_address() {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let o = netstrap(&["policy", "--json"], &[("LOCAL_IP", "192.0.2.2")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let policy = &v["node"]["generic"];
    assert_eq!(policy["hostname"], machine.as_str(), "{v}");
    assert_eq!(policy["name"], format!("{machine} generic"), "{v}");
    assert!(!stdout(&o).contains("\"192.0.2.2 generic\""), "{v}");
}

/// `discover` and `policy` agree on an operator without its cluster: both exit 1 saying what
/// to set (its policy cannot be rendered; `run` would wait for it, never ready).
#[test]
fn discover_and_policy_agree_that_an_operator_needs_its_cluster() {
    for cmd in ["discover", "policy"] {
        let o = netstrap(&[cmd], &[("NODE_TYPE", "operator"), ("DNS", "op1.example.net")]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("set NETSTRAP_CLUSTER_ID, or CLUSTER_NAME"), "{cmd}: {}", stderr(&o));
        let o = netstrap(
            &[cmd],
            &[("NODE_TYPE", "operator"), ("DNS", "op1.example.net"), ("CLUSTER_NAME", "c1")],
        );
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
    }
}

/// A bad NETSTRAP_LEDGER is reported once: the variable, the value, what is wrong, what is
/// accepted — each said once.
#[test]
fn an_invalid_ledger_is_said_once() {
    let o = netstrap(&["discover"], &[("NETSTRAP_LEDGER", "bogus")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("bogus").count(), 1, "{err}");
    assert_eq!(err.matches("file:///path/blockchain.json").count(), 1, "{err}");
}
