//! `netstrap run`: binds what the table says, reports ready, advertises into the state dir,
//! shuts down in order on SIGTERM, and refuses to start when a port is taken. What is about the
//! process (signals, exit codes, its log, the state lock against `kill -9`) runs the binary;
//! the rest runs in-process (`support::harness`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;
// The process tests choose their ports before the process starts: netstrap takes no listeners
// from its parent, so these are the one place a port is chosen free and bound later
// (`free_port` keeps them below the ephemeral range, where outgoing connections cannot take them).
use support::harness;
use support::ports::free_port;

struct Node {
    child: Child,
    rest: u16,
    dir: tempfile::TempDir,
}

fn start(extra: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, rest, broker) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .arg("run")
        .env_clear()
        .env("NETSTRAP_ENVIRONMENT", "host")
        .env("LOCAL_IP", "127.0.0.1")
        .env("DNS", "node1.example.net")
        .env("ANYLOG_SERVER_PORT", tcp.to_string())
        .env("ANYLOG_REST_PORT", rest.to_string())
        .env("ANYLOG_BROKER_PORT", broker.to_string())
        .env("NETSTRAP_BROKER_ANONYMOUS", "true")
        .env("NETSTRAP_STATE_DIR", dir.path().join("state"))
        .env("NETSTRAP_LOG_FORMAT", "json")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Node { child, rest, dir }
}

impl Node {
    /// Wait for `/readyz` 200; a netstrap that exited first fails the test with its log (a
    /// port another test took between `free_port` and the bind, say) instead of a time-out.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if get(self.rest, "/readyz").is_some_and(|(c, _)| c == 200) {
                return;
            }
            if self.child.try_wait().unwrap().is_some() {
                let (code, log) = wait_exit(&mut self.child);
                panic!("netstrap exited with {code} before it was ready:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let (_, log) = wait_exit(&mut self.child);
        panic!("netstrap not ready within 30 s:\n{log}");
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    netstrap::probe::probe(
        format!("127.0.0.1:{port}").parse().unwrap(),
        if path == "/livez" { netstrap::probe::ProbeKind::Live } else { netstrap::probe::ProbeKind::Ready },
        Duration::from_secs(1),
    )
    .ok()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().unwrap();
}

fn wait_exit(child: &mut Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        assert!(Instant::now() < deadline, "netstrap did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runs_ready_writes_files_and_drains_on_sigterm() {
    let mut n = start(&[("NETSTRAP_SHUTDOWN_DELAY", "1")]);
    n.wait_ready();
    let (_, body) = get(n.rest, "/readyz").unwrap();
    for check in ["listeners", "discovery", "broker"] {
        assert!(body.contains(&format!("[+]{check} ok")), "{body}");
    }
    // The probe command agrees.
    let probe = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["probe", "ready"])
        .env_clear()
        .env("ANYLOG_REST_PORT", n.rest.to_string())
        .status()
        .unwrap();
    assert!(probe.success());

    let state = n.dir.path().join("state");
    wait_until("files written", || state.join("netstrap.env").exists());
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("node_policy.json")).unwrap()).unwrap();
    assert_eq!(policy["generic"]["local_ip"], "node1.example.net");
    let env = std::fs::read_to_string(state.join("netstrap.env")).unwrap();
    assert!(env.contains("DNS=node1.example.net"), "{env}");

    signal(&n.child, "TERM");
    // During the propagation delay: not ready, still alive.
    wait_until("readiness 503", || get(n.rest, "/readyz").is_some_and(|(c, _)| c == 503));
    assert_eq!(get(n.rest, "/livez").map(|(c, _)| c), Some(200));
    let (code, log) = wait_exit(&mut n.child);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("drained"), "{log}");
}

#[test]
fn a_taken_port_stops_the_start_naming_plane_address_and_cause() {
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("state");
    let dir = state.display().to_string();
    let refused = harness::Node::try_start(&[("ANYLOG_REST_PORT", &port), ("NETSTRAP_STATE_DIR", &dir)]);
    let e = refused.err().expect("a taken port stops the start");
    assert_ne!(e.exit_code(), std::process::ExitCode::SUCCESS);
    let log = e.to_string();
    assert!(log.contains(&format!("rest listener: cannot bind 0.0.0.0:{port}")), "{log}");
    assert!(log.contains("in use"), "{log}");
    assert!(!state.exists(), "nothing advertised or written");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut n = start(&[("NETSTRAP_SHUTDOWN_DELAY", "60")]);
    n.wait_ready();
    signal(&n.child, "TERM");
    wait_until("draining", || get(n.rest, "/readyz").is_some_and(|(c, _)| c == 503));
    let started = Instant::now();
    signal(&n.child, "INT");
    let (code, _) = wait_exit(&mut n.child);
    assert_ne!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(5), "did not wait out the 60 s delay");
}

#[test]
fn stray_signals_are_logged_and_ignored_and_sigquit_drains() {
    let mut n = start(&[("NETSTRAP_SHUTDOWN_DELAY", "1")]);
    n.wait_ready();
    // Each of these ended the process (exit 129…142) with no drain and nothing logged.
    for sig in ["HUP", "USR1", "USR2", "ALRM", "HUP"] {
        signal(&n.child, sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(n.child.try_wait().unwrap().is_none(), "SIG{sig} ended netstrap");
        assert_eq!(get(n.rest, "/readyz").map(|(c, _)| c), Some(200), "not ready after SIG{sig}");
    }
    signal(&n.child, "QUIT");
    wait_until("readiness 503", || get(n.rest, "/readyz").is_some_and(|(c, _)| c == 503));
    let (code, log) = wait_exit(&mut n.child);
    assert_eq!(code, 0, "{log}");
    for line in ["SIGHUP ignored: nothing to reload", "SIGUSR1 ignored", "SIGUSR2 ignored", "SIGALRM ignored"]
    {
        assert!(log.contains(line), "{line:?} not logged:\n{log}");
    }
    assert_eq!(log.matches("SIGHUP ignored").count(), 1, "the second SIGHUP within 10 s is not logged again");
    assert!(log.contains("SIGQUIT: shutting down") && log.contains("drained"), "{log}");
}

#[test]
fn a_second_instance_on_the_same_state_dir_refuses_naming_the_first() {
    let mut first = start(&[]);
    first.wait_ready();
    let state = first.dir.path().join("state");
    let shared = state.display().to_string();
    let mut second = start(&[("NETSTRAP_STATE_DIR", shared.as_str())]);
    let (code, log) = wait_exit(&mut second.child);
    assert_eq!(code, 2, "{log}");
    let pid = first.child.id();
    assert!(
        log.contains(&format!("NETSTRAP_STATE_DIR {shared} is in use by another netstrap (pid {pid})")),
        "{log}"
    );
    assert_eq!(get(first.rest, "/readyz").map(|(c, _)| c), Some(200), "the first one carries on");
    // A holder killed with -9 leaves no stale lock behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut third = start(&[("NETSTRAP_STATE_DIR", shared.as_str())]);
    wait_until("the next instance ready", || get(third.rest, "/readyz").is_some_and(|(c, _)| c == 200));
    let holder = std::fs::read_to_string(state.join("netstrap.lock")).unwrap();
    assert_eq!(holder.trim(), third.child.id().to_string());
    signal(&third.child, "TERM");
    wait_exit(&mut third.child);
}

#[test]
fn probe_fails_when_nothing_answers() {
    let port = free_port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["probe", "live", "--timeout", "1"])
        .env_clear()
        .env("ANYLOG_REST_PORT", &port)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn bind_true_with_an_address_not_on_this_host_is_refused_clearly() {
    let refused = harness::Node::try_start(&[("TCP_BIND", "true"), ("LOCAL_IP", "192.0.2.123")]);
    let e = refused.err().expect("an address not on this host stops the start");
    assert_ne!(e.exit_code(), std::process::ExitCode::SUCCESS);
    let log = e.to_string();
    assert!(log.contains("tcp listener: cannot bind 192.0.2.123:"), "{log}");
    assert!(log.contains("TCP_BIND=true with LOCAL_IP"), "{log}");
}

/// A node REST API that answers after `delay`, and a TCP upstream that sends `len` bytes slowly.
fn slow_upstreams(delay: Duration, len: usize) -> (u16, u16) {
    use std::io::{Read, Write};
    let rest = TcpListener::bind("127.0.0.1:0").unwrap();
    let rest_port = rest.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in rest.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                std::thread::sleep(delay);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow");
            });
        }
    });
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let chunk = vec![7u8; len / 10];
                for _ in 0..10 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(delay / 10);
                }
            });
        }
    });
    (rest_port, tcp_port)
}

#[test]
fn in_flight_request_and_relay_transfer_complete_after_sigterm() {
    use std::io::{Read, Write};
    let (rest_up, tcp_up) = slow_upstreams(Duration::from_millis(1500), 100_000);
    let rest_upstream = format!("127.0.0.1:{rest_up}");
    let tcp_upstream = format!("127.0.0.1:{tcp_up}");
    let mut n = start(&[
        ("NETSTRAP_REST_UPSTREAM", &rest_upstream),
        ("NETSTRAP_TCP_UPSTREAM", &tcp_upstream),
        ("NETSTRAP_SHUTDOWN_DELAY", "0"),
        ("NETSTRAP_SHUTDOWN_GRACE", "10"),
    ]);
    n.wait_ready();
    let tcp_port: u16 = {
        let state = n.dir.path().join("state/network.json");
        wait_until("network.json", || state.exists());
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        v["table"]["rows"][0]["port"]["value"].as_u64().unwrap() as u16
    };
    let rest = n.rest;
    let request = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", rest)).unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    let transfer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    signal(&n.child, "TERM");
    let reply = request.join().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("slow"), "{reply}");
    assert_eq!(transfer.join().unwrap(), 100_000, "the relay transfer completed");
    let (code, log) = wait_exit(&mut n.child);
    assert_eq!(code, 0, "{log}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "exited within the grace period");
}

#[test]
fn readyz_answers_while_the_broker_is_flooded() {
    let n = harness::Node::start(&[("DNS", "node1.example.net")]);
    n.ready();
    let state = n.state.join("network.json");
    wait_until("network.json", || state.exists());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let broker = v["table"]["rows"][2]["port"]["value"].as_u64().unwrap() as u16;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut opts = rumqttc::MqttOptions::new(format!("flood-{i}"), "127.0.0.1", broker);
                opts.set_keep_alive(Duration::from_secs(5));
                let (client, mut conn) = rumqttc::Client::new(opts, 1000);
                std::thread::spawn(move || for _ in conn.iter() {});
                let payload = vec![0u8; 1024];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if client.publish("flood", rumqttc::QoS::AtMostOnce, false, payload.clone()).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let (code, _) = get(n.rest, "/readyz").expect("readyz answers under load");
        worst = worst.max(t.elapsed());
        assert_eq!(code, 200);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    assert!(worst < Duration::from_millis(900), "kubelet's 1 s probe timeout: worst {worst:?}");
    assert_eq!(n.stop(), std::process::ExitCode::SUCCESS);
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn in_process_shutdown_drains_as_sigterm_does() {
    let n = harness::Node::start(&[("NETSTRAP_SHUTDOWN_DELAY", "1")]);
    n.ready();
    let rest = n.rest;
    let stopping = std::thread::spawn(move || n.stop());
    // During the propagation delay: not ready, still alive.
    wait_until("readiness 503", || get(rest, "/readyz").is_some_and(|(c, _)| c == 503));
    assert_eq!(get(rest, "/livez").map(|(c, _)| c), Some(200));
    assert_eq!(stopping.join().unwrap(), std::process::ExitCode::SUCCESS);
    assert!(std::net::TcpStream::connect(("127.0.0.1", rest)).is_err(), "the rest listener is closed");
}

#[test]
fn a_listener_handed_in_on_another_port_than_the_table_says_is_refused_naming_the_variable() {
    use netstrap::config::{Layers, Origin, Settings};
    use netstrap::lifecycle::{Daemon, Prebound};
    use netstrap::table::Plane;
    let state = tempfile::tempdir().unwrap();
    let bound = || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    };
    // The other planes get theirs where the table says, so that nothing else is bound.
    let ((tcp, tcp_port), (broker, broker_port), (rest, handed)) = (bound(), bound(), bound());
    // Never bound by netstrap: the start stops at the rest plane's listener.
    let elsewhere = (handed ^ 1).to_string();
    let (tcp_port, broker_port) = (tcp_port.to_string(), broker_port.to_string());
    let env = [
        ("NETSTRAP_ENVIRONMENT", "host"),
        ("LOCAL_IP", "127.0.0.1"),
        ("ANYLOG_SERVER_PORT", tcp_port.as_str()),
        ("ANYLOG_BROKER_PORT", broker_port.as_str()),
        ("ANYLOG_REST_PORT", elsewhere.as_str()),
        ("NETSTRAP_BROKER_ANONYMOUS", "true"),
        ("NETSTRAP_STATE_DIR", state.path().to_str().unwrap()),
    ];
    let settings = Settings::parse(&Layers::new().push(Origin::Env, env)).unwrap();
    let planes = vec![(Plane::Tcp, tcp), (Plane::Broker, broker), (Plane::Rest, rest)];
    let prebound = Prebound { planes, admin: None };
    let e = Daemon::start(settings, prebound).err().expect("a listener on another port is refused");
    let said = e.to_string();
    assert!(
        said.contains(&format!("bound to 127.0.0.1:{handed}"))
            && said.contains(&format!("ANYLOG_REST_PORT to {handed}")),
        "{said}"
    );
}
