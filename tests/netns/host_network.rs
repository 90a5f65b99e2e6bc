//! Host networking (Docker `network_mode: host`, Kubernetes `hostNetwork: true`;
//! docs/overlay.md, "Host networking"): several netstrap + node pairs share one host's
//! addresses and its loopback. With `NETSTRAP_DECLARE=node` each node binds its own ports
//! (`ANYLOG_*_PORT`) and netstrap's own ports follow them (`NETSTRAP_PORT_OFFSET`), so two pairs
//! on one "host" namespace never collide and a peer on the LAN reaches each node through its
//! own netstrap; a port that is taken anyway is a bind error saying what to change.
//!
//! The nodes are socat listeners on the ports an EdgeLake node binds with `TCP_BIND=false`
//! (all interfaces), each answering with its own name: what is tested is which process holds
//! which port and where netstrap relays, not EdgeLake (tests/edgelake/edgelake_netstrap.rs runs real
//! nodes behind netstrap).

use crate::support;

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::hostns::{HOST_IP, Host};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node's listener: every connection gets `name`.
fn node_listener(host: &Host, port: u16, name: &str) -> Killed {
    let listen = format!("TCP-LISTEN:{port},fork,reuseaddr");
    let child = host
        .command(&[], &["socat", &listen, &format!("SYSTEM:echo {name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

fn pair_env(tcp: u16, rest: u16, name: &str, state: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NETSTRAP_ENVIRONMENT", "docker".into()),
        ("NETSTRAP_DECLARE", "node".into()),
        ("NODE_NAME", name.into()),
        ("HOSTNAME", "edge-host".into()),
        ("DNS", "edge-host.example.com".into()),
        ("ANYLOG_SERVER_PORT", tcp.to_string()),
        ("ANYLOG_REST_PORT", rest.to_string()),
        ("NETSTRAP_STATE_DIR", state.into()),
        ("NETSTRAP_VERIFY", "off".into()),
    ]
}

fn start_netstrap(host: &Host, env: &[(&str, String)], log: &std::path::Path) -> Killed {
    let file = File::create(log).unwrap();
    let child = host
        .command(env, &[env!("CARGO_BIN_EXE_netstrap"), "run"])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Killed(child)
}

/// One line from `HOST_IP:port`, dialled from the peer namespace (outside the host).
fn line_from_peer(host: &Host, port: u16) -> Result<String, String> {
    let target = format!("TCP:{HOST_IP}:{port},connect-timeout=2");
    let out = host.peer_exec(&["socat", "-t", "3", "-", &target], "");
    let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if reply.is_empty() { Err(String::from_utf8_lossy(&out.stderr).into_owned()) } else { Ok(reply) }
}

/// An HTTP GET from the peer namespace: status and body.
fn get_from_peer(host: &Host, port: u16, path: &str) -> Result<(u16, String), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST_IP}\r\nConnection: close\r\n\r\n");
    let target = format!("TCP:{HOST_IP}:{port},connect-timeout=2,shut-none");
    let out = host.peer_exec(&["socat", "-t", "5", "-", &target], &req);
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or(reply.clone())?;
    Ok((code, reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn wait_exit(child: &mut Killed) -> i32 {
    poll("netstrap to exit", || {
        child.0.try_wait().unwrap().map(|s| s.code().unwrap_or(-1)).ok_or_else(|| "running".to_string())
    })
}

#[test]
fn two_pairs_on_one_host_each_reachable_on_its_own_ports() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(host) = Host::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pairs = [("node-a", 32148u16, 32149u16), ("node-b", 32158, 32159)];
    let mut procs = Vec::new();
    for (name, tcp, rest) in pairs {
        procs.push(node_listener(&host, tcp, name));
        procs.push(node_listener(&host, rest, &format!("{name}-rest")));
        let state = dir.path().join(name);
        let mut env = pair_env(tcp, rest, name, &state.display().to_string());
        env.push(("NETSTRAP_PORT_OFFSET", "1000".into()));
        procs.push(start_netstrap(&host, &env, &dir.path().join(format!("{name}.log"))));
    }
    for (name, tcp, rest) in pairs {
        let log = || std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
        // netstrap's own REST port is the node's + 1000, and serves netstrap's API.
        let (code, body) = poll(&format!("{name}'s netstrap on {}", rest + 1000), || {
            get_from_peer(&host, rest + 1000, "/v1/network").map_err(|e| format!("{e}\n{}", log()))
        });
        assert_eq!(code, 200, "{body}");
        let net: serde_json::Value = serde_json::from_str(&body).unwrap();
        let row =
            net["table"]["rows"].as_array().unwrap().iter().find(|r| r["plane"] == "tcp").unwrap().clone();
        assert_eq!(row["port"]["value"], tcp + 1000, "{row:#}");
        assert!(
            row["port"]["why"]["source"].as_str().unwrap().contains("NETSTRAP_PORT_OFFSET=1000"),
            "{row:#}"
        );
        // Advertised: the node's own port, which the node binds on the host.
        assert_eq!(row["external_port"]["value"], tcp, "{row:#}");
        // Through netstrap's relay, the peer reaches this pair's node and no other.
        assert_eq!(line_from_peer(&host, tcp + 1000).unwrap(), name);
        assert_eq!(line_from_peer(&host, tcp).unwrap(), name);
        // The node's files name its own ports.
        let env = std::fs::read_to_string(dir.path().join(name).join("netstrap.env")).unwrap();
        assert!(env.contains(&format!("ANYLOG_SERVER_PORT={tcp}\n")), "{env}");
        assert!(env.contains(&format!("NETSTRAP_TCP_CLUSTER=edge-host.example.com:{tcp}\n")), "{env}");
    }

    // A third netstrap told to use a port the first one holds: a bind error naming it.
    let state = dir.path().join("node-c");
    let mut env = pair_env(32168, 32169, "node-c", &state.display().to_string());
    env.push(("NETSTRAP_TCP_PORT", "33148".into()));
    env.push(("NETSTRAP_REST_PORT", "33169".into()));
    let log = dir.path().join("node-c.log");
    let mut c = start_netstrap(&host, &env, &log);
    let code = wait_exit(&mut c);
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("33148") && out.contains("another process listens on port 33148"), "{out}");
    assert!(out.contains("NETSTRAP_TCP_PORT") && out.contains("host networking"), "{out}");
    // The first pair is untouched.
    assert_eq!(line_from_peer(&host, 33148).unwrap(), "node-a");
    drop(procs);
}

#[test]
fn without_an_offset_a_node_pair_on_host_networking_says_what_to_set() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(host) = Host::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = pair_env(32148, 32149, "node-a", &dir.path().display().to_string());
    let log = dir.path().join("a.log");
    let mut a = start_netstrap(&host, &env, &log);
    let code = wait_exit(&mut a);
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("binds the advertised tcp port 32148 itself") && out.contains("NETSTRAP_TCP_PORT"),
        "{out}"
    );

    // The offset is for a node that binds its own ports; in front of one it is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["discover", "--set", "NETSTRAP_PORT_OFFSET=1000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("NETSTRAP_PORT_OFFSET") && err.contains("NETSTRAP_DECLARE=node"), "{err}");
    // An offset that runs past 65535 names the port.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["discover", "--set", "NETSTRAP_DECLARE=node", "--set", "NETSTRAP_PORT_OFFSET=40000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("NETSTRAP_TCP_PORT would be 32548 + 40000 > 65535"), "{err}");
}
