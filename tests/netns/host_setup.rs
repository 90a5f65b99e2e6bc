//! The host recipe (README, "Run on a host"; packaging/systemd/): netstrap under systemd with
//! `Type=notify`, and an EdgeLake node started after it with netstrap's `netstrap.env`.
//!
//! - The shipped units pass `systemd-analyze verify` with no warning.
//! - netstrap tells `$NOTIFY_SOCKET` (a real unix datagram socket the test binds, as systemd
//!   does) `READY=1` only once `/readyz` is 200, and `STOPPING=1` on SIGTERM.
//! - In a network namespace (a host on the cluster-in-a-box LAN, `support/netns.rs`): netstrap
//!   with the unit's `Environment=` settings, then a real, unmodified EdgeLake node (the Python
//!   snapshot running its own main.al with a compose env, `support/edgelake.rs`) started as the
//!   example node unit starts it — its env file, then netstrap.env on top, then main.al and the
//!   netstrap.al whose path netstrap wrote. The node listens on loopback only; a peer on the LAN
//!   reaches it through netstrap's public ports and not around them.

use crate::support;

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::edgelake::{self as el, NodeHome, Snapshot};
use support::netns::poll;
// `free_port` (support/ports.rs): netstrap runs as systemd runs it, a process telling $NOTIFY_SOCKET.
use support::process::{free_port, start, wait_until};

const UNIT: &str = include_str!("../../packaging/systemd/netstrap.service");
const NODE_UNIT: &str = include_str!("../../packaging/systemd/edgelake-node.service");
const NETSTRAP: &str = env!("CARGO_BIN_EXE_netstrap");

/// The values of `key=` lines in a unit, in order (comments are not lines of the unit).
fn directives<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

/// The unit's `Environment=` assignments.
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    directives(unit, "Environment")
        .into_iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An `EnvironmentFile=` as systemd reads it: `KEY=VALUE` lines, `#` comments, a value in
/// double quotes unquoted with `\"` and `\\` unescaped.
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => v.to_string(),
            };
            (k.to_string(), v)
        })
        .collect()
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value));
}

/// A fake `$NOTIFY_SOCKET`: a unix datagram socket, bound where systemd would bind its own.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket { sock, path }
    }

    /// The next message within `limit`, or `None`.
    fn recv(&self, limit: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
    }
}

fn sigterm(pid: u32) {
    assert!(Command::new("kill").args(["-s", "TERM", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    let _gate = crate::support::gate::enter(module_path!());
    let have = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have {
        return support::prereq::missing("systemd-analyze is not installed (.ci/run installs systemd)");
    }
    // verify checks that every ExecStart= program exists: point them at real ones.
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/local/bin/netstrap", NETSTRAP);
    let node = NODE_UNIT.replace("/usr/local/bin/edgelake_agent", "/bin/true");
    assert!(unit != UNIT && node != NODE_UNIT, "the units name their programs");
    std::fs::write(dir.path().join("netstrap.service"), unit).unwrap();
    std::fs::write(dir.path().join("edgelake-node.service"), node).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./netstrap.service", "./edgelake-node.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{said}");
    // An unknown key or a bad value is only a warning (exit 0): none is allowed either.
    let about_ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("netstrap.service") || l.contains("edgelake-node.service"))
        .collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify warns:\n{said}");
    // The readiness protocol and the order the recipe depends on.
    assert_eq!(directives(UNIT, "Type"), ["notify"]);
    assert_eq!(directives(NODE_UNIT, "After"), ["netstrap.service"]);
    assert_eq!(directives(NODE_UNIT, "EnvironmentFile").last(), Some(&"/var/lib/netstrap/netstrap.env"));
    let state = unit_environment(UNIT).into_iter().find(|(k, _)| k == "NETSTRAP_STATE_DIR").map(|(_, v)| v);
    assert_eq!(state.as_deref(), Some("/var/lib/netstrap"), "the node unit reads netstrap's state dir");
}

#[test]
fn systemd_hears_ready_once_readyz_is_200_and_stopping_on_sigterm() {
    let _gate = crate::support::gate::enter(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    // Not ready until the node's REST answers: nothing listens there yet.
    let node_port = free_port();
    let mut n = start(
        &dir.path().join("state"),
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("NETSTRAP_REST_UPSTREAM", format!("127.0.0.1:{node_port}")),
            ("NETSTRAP_READY_UPSTREAM", "true".to_string()),
        ],
    );
    wait_until("/readyz to answer", || n.get("/readyz").is_some());
    let (code, body) = n.get("/readyz?verbose").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("upstream"), "{body}");
    assert_eq!(notify.recv(Duration::from_secs(3)), None, "READY=1 while /readyz is 503");

    let _node = TcpListener::bind(("127.0.0.1", node_port)).unwrap();
    let started = Instant::now();
    let ready = notify.recv(Duration::from_secs(30));
    assert_eq!(ready.as_deref(), Some("READY=1"), "after {:?}", started.elapsed());
    assert_eq!(n.get("/readyz").map(|(c, _)| c), Some(200), "READY=1 means /readyz is 200");
    assert_eq!(notify.recv(Duration::from_millis(500)), None, "READY=1 is sent once");

    sigterm(n.child.id());
    assert_eq!(notify.recv(Duration::from_secs(10)).as_deref(), Some("STOPPING=1"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = n.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "netstrap did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn without_notify_socket_netstrap_runs_as_before() {
    let _gate = crate::support::gate::enter(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let n = start(&dir.path().join("state"), &[]);
    n.wait_ready();
    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("systemd"), "nothing said to or about systemd:\n{log}");
}

/// One listening socket in `ss -Hltnp` output: its address, port and process name.
fn listeners(ss: &str) -> Vec<(String, u16, String)> {
    ss.lines()
        .filter_map(|l| {
            let local = l.split_whitespace().nth(3)?;
            let (addr, port) = local.rsplit_once(':')?;
            let process = l.split("((\"").nth(1)?.split('"').next()?.to_string();
            Some((addr.to_string(), port.parse().ok()?, process))
        })
        .collect()
}

#[test]
fn host_recipe_keeps_a_real_edgelake_node_behind_netstrap() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(snap) = Snapshot::find() else { return };
    let Some(mut cluster) = el::cluster(1) else { return };
    let host_ip = Ipv4Addr::new(192, 168, 50, 200);
    let host = cluster.add_host("host", host_ip);
    let peer = cluster.external();
    let public = host_ip.to_string();
    let dir = cluster.dir.path().to_path_buf();
    let state = dir.join("var-lib-netstrap");
    let ledger = dir.join("ledger.json");
    let notify = NotifySocket::bind(&dir);

    // netstrap: the unit's Environment=, then /etc/netstrap/netstrap.conf (EnvironmentFile=,
    // which wins): a generic node with a broker, relayed as the unit's commented lines say.
    let mut env = unit_environment(UNIT);
    for (k, v) in [
        ("NODE_TYPE", "generic".to_string()),
        ("COMPANY_NAME", "Host Co".to_string()),
        ("EXTERNAL_IP", public.clone()),
        ("ANYLOG_BROKER_PORT", "32550".to_string()),
        ("NETSTRAP_BROKER_MODE", "relay".to_string()),
        ("NETSTRAP_BROKER_UPSTREAM", "127.0.0.1:33150".to_string()),
        ("NETSTRAP_STATE_DIR", state.display().to_string()),
        ("NETSTRAP_LEDGER", format!("file://{}", ledger.display())),
        ("NOTIFY_SOCKET", notify.path.display().to_string()),
    ] {
        set(&mut env, k, v);
    }
    let exec = directives(UNIT, "ExecStart")[0].replace("/usr/local/bin/netstrap", NETSTRAP);
    let mut args: Vec<String> = vec!["env".into()];
    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    args.extend(exec.split_whitespace().map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let netstrap = cluster.spawn_in(&host, &args);
    let ready = notify.recv(Duration::from_secs(60));
    assert_eq!(ready.as_deref(), Some("READY=1"), "netstrap's log:\n{}", netstrap.log());

    // The node unit: its own env (a compose deployment's), then netstrap.env on top.
    let home = NodeHome::new(&snap, &dir.join("node-home"));
    let mut node_env = el::node_env(&snap, &home, el::compose_env(&snap, "generic"), &[]);
    let written = read_env_file(&state.join("netstrap.env"));
    for (k, v) in &written {
        set(&mut node_env, k, v.clone());
    }
    let get = |k: &str| written.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    for (k, want) in
        [("TCP_BIND", "true"), ("REST_BIND", "true"), ("BROKER_BIND", "true"), ("NIC_TYPE", "lo")]
    {
        assert_eq!(get(k), Some(want), "{k} in netstrap.env");
    }
    assert_eq!(get("ANYLOG_SERVER_PORT"), Some("33148"));
    // netstrap.al names where it really is.
    let al = std::fs::read_to_string(state.join("netstrap.al")).unwrap();
    let al_path = al
        .lines()
        .find_map(|l| l.split_once("Apply with: process ").map(|(_, p)| p.trim().to_string()))
        .unwrap_or_else(|| panic!("no process line:\n{al}"));
    assert_eq!(Path::new(&al_path), state.join("netstrap.al"));
    assert!(!al.contains("run tcp server"), "main.al binds the listeners, not netstrap.al:\n{al}");

    // ExecStart of the node unit, with this snapshot's EdgeLake and this state dir.
    let home_dir = home.dir.display().to_string();
    let python = node_env.iter().find(|(k, _)| k == "EDGELAKE_COMMAND").map(|(_, v)| v.clone()).unwrap();
    let exec = directives(NODE_UNIT, "ExecStart")[0]
        .replace("/usr/local/bin/edgelake_agent", &python)
        .replace("${EDGELAKE_PATH}", &home_dir)
        .replace("/var/lib/netstrap", &state.display().to_string());
    let mut args: Vec<String> = vec!["env".into()];
    args.extend(node_env.iter().map(|(k, v)| format!("{k}={v}")));
    args.extend(exec.split_whitespace().map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = cluster.spawn_in(&host, &args);

    // A peer on the LAN reaches the node through netstrap's public REST port.
    let status = poll("the node to answer through netstrap", Duration::from_secs(90), || {
        el::get(&cluster, &peer, &public, 32549, "get status")
            .map_err(|e| format!("{e}\nnode:\n{}", el::tail(&node.log(), 30)))
    });
    assert!(status.contains("running"), "{status}");
    let connections: Value =
        poll("the node's connections with the reply address", Duration::from_secs(60), || {
            let text = el::get(&cluster, &peer, &public, 32549, "get connections where format=json")?;
            let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
            if v.get("reply").is_some() { Ok(v) } else { Err(format!("no reply address yet: {v}")) }
        });
    // (Its "bind" there says 0.0.0.0 for REST and the broker whatever they bind: `ss` below
    // is what counts.)
    assert_eq!(connections["reply"], format!("{public}:32548"), "peers reply to netstrap: {connections}");

    // Who listens where, on the host.
    let ss = cluster.exec_in(&host, &["ss", "-Hltnp"], "");
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    let all = listeners(&ss);
    let node_side: Vec<_> = all.iter().filter(|(_, _, p)| !p.contains("netstrap")).collect();
    let mut node_ports: Vec<u16> = node_side.iter().map(|(_, port, _)| *port).collect();
    node_ports.sort_unstable();
    node_ports.dedup();
    assert_eq!(node_ports, [33148, 33149, 33150], "the node's listeners:\n{ss}");
    assert!(
        node_side.iter().all(|(addr, _, _)| addr == "127.0.0.1"),
        "the node listens on loopback only:\n{ss}\nnode:\n{}",
        el::tail(&node.log(), 40)
    );
    for port in [32548, 32549, 32550] {
        assert!(
            all.iter().any(|(_, p, proc)| *p == port && proc.contains("netstrap")),
            "netstrap on {port}:\n{ss}"
        );
    }
    // From the LAN: the node's own ports are closed, netstrap's open.
    for port in [33148, 33149, 33150] {
        assert!(
            !el::tcp_open(&cluster, &peer, &public, port),
            "the node is reachable around netstrap on {port}"
        );
    }
    for port in [32548, 32549, 32550] {
        assert!(el::tcp_open(&cluster, &peer, &public, port), "netstrap's {port} is closed");
    }
    // netstrap declared the node at the public address; the node itself (hidden) declared none.
    let lines: Vec<Value> = std::fs::read_to_string(&ledger)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|p| p.get("generic").is_some())
        .collect();
    assert_eq!(lines.len(), 1, "one node policy: {lines:?}");
    assert_eq!(el::text(&lines[0], "ip"), public);
    assert_eq!(el::field(&lines[0], "port"), Some(&Value::from(32548)));

    drop(node);
    let (code, log) = netstrap.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(notify.recv(Duration::from_secs(5)).as_deref(), Some("STOPPING=1"));
}
