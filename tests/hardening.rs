//! Hardening, against a running `netstrap run`: bad input over the wire, memory under
//! slowloris and floods, a state dir that is read-only or full, and secrets that never show.
//! Figures the tests measure are printed (`FIGURE ...`) for docs/reliability.md.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
// `free_port` (support/ports.rs): memory, descriptors and rates are measured on netstrap's own process.
use support::process::{Netstrap, free_port, start, wait_until};

fn rss_kib(n: &Netstrap) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", n.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Send `request` raw and read the reply head's status code (0 when the server closed first).
fn status_of(port: u16, request: &[u8]) -> u16 {
    let mut s = connect(port);
    // The server may answer and close before the whole request is written.
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A node REST API stand-in that counts the requests it got.
fn counting_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Read the request head first: closing with unread bytes would reset the connection.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, count)
}

#[test]
fn oversized_headers_get_431_oversized_bodies_413_and_slow_headers_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, count) = counting_upstream();
    let n = start(dir.path(), &[("NETSTRAP_REST_UPSTREAM", format!("127.0.0.1:{upstream}"))]);
    n.wait_ready();

    let big_header = format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(256 * 1024));
    assert_eq!(status_of(n.rest, big_header.as_bytes()), 431);

    let big_body = "POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n";
    assert_eq!(status_of(n.rest, big_body.as_bytes()), 413);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0, "refused before reaching the node");

    // Slow headers: one byte, then nothing. The header timeout (10 s) closes the connection.
    let mut slow = connect(n.rest);
    slow.write_all(b"G").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let r = slow.read(&mut buf);
    let waited = started.elapsed();
    assert!(matches!(r, Ok(_) | Err(_)) && waited < Duration::from_secs(15), "cut after {waited:?}: {r:?}");
    assert!(waited >= Duration::from_secs(8), "not before the header timeout: {waited:?}");
    eprintln!("FIGURE slow-header connection cut after {:.1} s", waited.as_secs_f64());

    // Garbage is a 400, and the process serves on.
    assert_eq!(status_of(n.rest, b"\x00\x01\x02 nonsense\r\n\r\n"), 400);
    assert_eq!(n.get("/livez").unwrap().0, 200);
    assert_eq!(status_of(n.rest, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200);
}

#[test]
fn memory_stays_bounded_under_slowloris_overlong_lines_and_garbage_while_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), &[]);
    n.wait_ready();
    let before = rss_kib(&n);

    // 400 slowloris connections on the REST port, each a partial request head.
    let mut slowloris: Vec<TcpStream> = (0..400)
        .map(|i| {
            let mut s = connect(n.rest);
            s.write_all(format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-{i}: ").as_bytes()).unwrap();
            s
        })
        .collect();
    // 400 connections on the peer port, each sending 256 KiB without a newline (the line
    // limit is 64 KiB), and 100 sending random bytes.
    let chunk = vec![b'x'; 256 * 1024];
    let floods: Vec<std::thread::JoinHandle<()>> = (0..4)
        .map(|_| {
            let (port, chunk) = (n.tcp, chunk.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let mut s = connect(port);
                    let _ = s.write_all(&chunk);
                }
            })
        })
        .collect();
    let mut garbage: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = connect(n.tcp);
            let bytes: Vec<u8> =
                (0..4096u32).map(|k| (k.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8).collect();
            let _ = s.write_all(&bytes);
            s
        })
        .collect();

    // Probes keep answering within kubelet's 1 s timeout meanwhile.
    let mut worst = Duration::ZERO;
    for _ in 0..40 {
        let t = Instant::now();
        let (code, _) = n.get("/livez").expect("livez answers");
        assert_eq!(code, 200);
        worst = worst.max(t.elapsed());
        for s in slowloris.iter_mut().take(50) {
            let _ = s.write_all(b"a");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for f in floods {
        f.join().unwrap();
    }
    let during = rss_kib(&n);
    eprintln!(
        "FIGURE RSS before {} KiB, under 400 slowloris + 400 overlong-line + 100 garbage connections {} KiB; \
         worst /livez {:.1} ms",
        before,
        during,
        worst.as_secs_f64() * 1000.0
    );
    assert!(worst < Duration::from_secs(1), "a probe took {worst:?}");
    assert!(during < before + 64 * 1024, "RSS grew from {before} KiB to {during} KiB");
    // Garbage on the peer port: answered with error lines or closed, never a crash.
    for s in garbage.iter_mut() {
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = s.read(&mut [0u8; 512]);
    }
    assert!(n.child.id() > 0 && n.get("/readyz").unwrap().0 == 200, "alive and ready");
    drop(slowloris);
    drop(garbage);
}

fn mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// A small tmpfs at `dir`, unmounted when dropped; `None` (after saying why) where mounting
/// is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        match mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()]) {
            Ok(()) => Some(Tmpfs(dir.to_path_buf())),
            Err(e) => {
                support::prereq::missing(&format!("cannot mount a tmpfs ({e}); run as root"));
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn files_parse(state: &Path) -> Value {
    for f in ["node_policy.json", "config_policy.json", "network.json"] {
        let text = std::fs::read_to_string(state.join(f)).unwrap();
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    serde_json::from_str(&std::fs::read_to_string(state.join("node_policy.json")).unwrap()).unwrap()
}

fn node_env(ip: &str) -> Vec<(&'static str, String)> {
    vec![("DNS", "node1.example".into()), ("EXTERNAL_IP", ip.into()), ("NODE_TYPE", "query".into())]
}

#[test]
fn a_read_only_state_dir_is_a_clear_not_ready_and_the_previous_files_stay_intact() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_fs) = Tmpfs::new(&state, "1m") else { return };
    let n = start(&state, &node_env("203.0.113.1"));
    n.wait_ready();
    n.stop();
    mount(&["-o", "remount,ro", state.to_str().unwrap()]).unwrap();

    // A changed external IP needs new files; the disk refuses them.
    let n = start(&state, &node_env("203.0.113.2"));
    wait_until("not ready, naming the files", || {
        n.get("/readyz?verbose").is_some_and(|(c, b)| c == 503 && b.contains("Read-only file system"))
    });
    let (_, why) = n.get("/readyz?verbose").unwrap();
    assert!(why.contains(&format!("cannot write the node's files in {}", state.display())), "{why}");
    assert_eq!(n.get("/livez").unwrap().0, 200, "live: only the files are stuck");
    assert_eq!(files_parse(&state)["query"]["ip"], "203.0.113.1", "the previous files, intact");

    // The disk comes back: written and ready without a restart.
    mount(&["-o", "remount,rw", state.to_str().unwrap()]).unwrap();
    n.wait_ready();
    assert_eq!(files_parse(&state)["query"]["ip"], "203.0.113.2");
}

#[test]
fn a_full_disk_leaves_the_previous_files_intact_and_no_temporary_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_fs) = Tmpfs::new(&state, "256k") else { return };
    let n = start(&state, &node_env("203.0.113.1"));
    n.wait_ready();
    n.stop();
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(state.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();
    drop(filler); // tmpfs frees an unlinked file's blocks only once it is closed

    let n = start(&state, &node_env("203.0.113.2"));
    wait_until("not ready, naming the full disk", || {
        n.get("/readyz?verbose").is_some_and(|(c, b)| c == 503 && b.contains("No space left on device"))
    });
    assert_eq!(files_parse(&state)["query"]["ip"], "203.0.113.1", "the previous files, intact");
    let leftovers: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_file(state.join("filler")).unwrap();
    n.wait_ready();
    assert_eq!(files_parse(&state)["query"]["ip"], "203.0.113.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log_the_endpoints_or_the_files() {
    use support::fake_kube::{self, FakeKube};
    const TOKEN: &str = "sa-token-5ecret-d0-not-print";
    const PASSWORD: &str = "mqtt-pa55word-d0-not-print";
    let kube = FakeKube::start_https(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = fake_kube::write_sa_dir(&dir.path().join("sa"), TOKEN, "edge");
    let (tcp, rest, broker) = (free_port(), free_port(), free_port());
    kube.set_service(fake_kube::service(
        "edge",
        "op",
        "ClusterIP",
        "10.96.7.7",
        vec![
            fake_kube::service_port("tcp", 32148, Some(&tcp.to_string()), None),
            fake_kube::service_port("rest", 32149, Some(&rest.to_string()), None),
        ],
    ));
    let env: Vec<(&str, String)> = vec![
        ("NETSTRAP_ENVIRONMENT", "kubernetes".into()),
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT", kube.addr().port().to_string()),
        ("NETSTRAP_SA_DIR", sa.display().to_string()),
        ("NETSTRAP_SERVICE", "op".into()),
        ("NETSTRAP_CLUSTER_DOMAIN", "cluster.local".into()),
        ("POD_IP", "127.0.0.1".into()),
        ("ANYLOG_SERVER_PORT", tcp.to_string()),
        ("ANYLOG_REST_PORT", rest.to_string()),
        ("ANYLOG_BROKER_PORT", broker.to_string()),
        ("NETSTRAP_BROKER_USERNAME", "edge".into()),
        ("NETSTRAP_BROKER_PASSWORD", PASSWORD.into()),
        ("NETSTRAP_LOG", "trace".into()),
        ("NETSTRAP_SHUTDOWN_DELAY", "0".into()),
        // A TLS handshake in a debug build on a loaded CI machine can take seconds; the harness's
        // 1 s would let discovery give up on the API server before it ever sends the token.
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "30000".into()),
    ];
    let state = dir.path().join("state");
    let state2 = state.clone();
    let (served, log) = tokio::task::spawn_blocking(move || {
        let mut n = start(&state2, &env);
        wait_until("the node to serve", || {
            if let Ok(Some(status)) = n.child.try_wait() {
                let mut log = String::new();
                let _ = n.child.stderr.take().unwrap().read_to_string(&mut log);
                panic!("netstrap exited ({status}): {log}");
            }
            n.get("/v1/network").is_some()
        });
        std::thread::sleep(Duration::from_secs(2));
        let mut served = String::new();
        for path in
            ["/v1/network", "/v1/identity", "/v1/policy", "/v1/policy/config", "/readyz?verbose", "/metrics"]
        {
            served.push_str(&n.get(path).map(|(_, b)| b).unwrap_or_default());
        }
        let discover =
            Command::new(env!("CARGO_BIN_EXE_netstrap")).args(["discover", "--json"]).output().unwrap();
        served.push_str(&String::from_utf8_lossy(&discover.stdout));
        let (_, log) = n.stop();
        (served, log)
    })
    .await
    .unwrap();
    assert!(
        kube.requests().iter().any(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "the token was used; netstrap's log:\n{log}"
    );
    assert!(log.len() > 1000, "a trace log was written: {log}");
    let mut files = String::new();
    for entry in std::fs::read_dir(&state).unwrap() {
        files.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    for (what, text) in [("log", &log), ("endpoints", &served), ("files", &files)] {
        assert!(!text.contains(TOKEN), "the service-account token in the {what}");
        assert!(!text.contains(PASSWORD), "the MQTT password in the {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_peer_connections_and_a_thousand_mqtt_clients_leave_probes_fast() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let dir = tempfile::tempdir().unwrap();
    let broker = free_port();
    let state = dir.path().to_path_buf();
    let n = tokio::task::spawn_blocking(move || {
        let n = start(&state, &[("ANYLOG_BROKER_PORT", broker.to_string())]);
        n.wait_ready();
        n
    })
    .await
    .unwrap();
    let idle = rss_kib(&n);

    // 10,000 idle connections on the peer port (its limit is 10,000).
    let tcp = n.tcp;
    let peers = tokio::task::spawn_blocking(move || (0..10_000).map(|_| connect(tcp)).collect::<Vec<_>>())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_peers = rss_kib(&n);

    // 1,000 MQTT clients, each connected (CONNACK seen) and kept alive.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut opts = MqttOptions::new(format!("load-{i}"), "127.0.0.1", broker);
        opts.set_keep_alive(Duration::from_secs(60));
        let (client, mut eventloop) = AsyncClient::new(opts, 4);
        let tx = tx.clone();
        clients.push((
            client,
            tokio::spawn(async move {
                let mut acked = false;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) if !acked => {
                            acked = true;
                            let _ = tx.send(());
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }),
        ));
    }
    for i in 0..1000 {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of 1000 MQTT clients connected"));
    }
    let with_clients = rss_kib(&n);

    // Probes meanwhile, as kubelet sends them.
    let rest = n.rest;
    let mut times = tokio::task::spawn_blocking(move || {
        (0..200)
            .map(|_| {
                let t = Instant::now();
                let (code, _) = support::process::http_get(rest, "/readyz").expect("readyz answers");
                assert_eq!(code, 200);
                t.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    eprintln!(
        "FIGURE 10k peer connections + 1k MQTT clients: /readyz p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         RSS idle {idle} KiB, +10k TCP {with_peers} KiB ({:.1} KiB/conn), +1k MQTT {with_clients} KiB ({:.1} KiB/client)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        (with_peers.saturating_sub(idle)) as f64 / 10_000.0,
        (with_clients.saturating_sub(with_peers)) as f64 / 1000.0,
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?} over kubelet's 1 s probe timeout");
    // The 10,001st peer connection is over the limit: closed, and the process serves on.
    let mut extra = connect(tcp);
    let mut buf = [0u8; 16];
    let r = tokio::task::spawn_blocking(move || extra.read(&mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "over the limit the connection is closed: {r:?}");
    for (_, task) in &clients {
        task.abort();
    }
    drop(peers);
    assert_eq!(n.get("/livez").unwrap().0, 200);
}

#[test]
fn upstream_down_closes_relayed_clients_and_readiness_follows_it_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let node = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node_addr = node.local_addr().unwrap();
    let relay_env = |ready_upstream: &str| {
        vec![
            ("NETSTRAP_TCP_MODE", "relay".to_string()),
            ("NETSTRAP_TCP_UPSTREAM", node_addr.to_string()),
            ("NETSTRAP_READY_UPSTREAM", ready_upstream.to_string()),
        ]
    };
    let asked = start(&dir.path().join("a"), &relay_env("true"));
    let not_asked = start(&dir.path().join("b"), &relay_env("false"));
    asked.wait_ready();
    not_asked.wait_ready();

    drop(node); // the node goes down
    wait_until("readiness to follow the node", || {
        asked.get("/readyz?verbose").is_some_and(|(c, b)| {
            c == 503
                && b.contains(&format!(
                    "[-]upstream pending: the node is not accepting: tcp upstream {node_addr}"
                ))
        })
    });
    assert_eq!(asked.get("/livez").unwrap().0, 200, "live: netstrap itself is fine");
    assert_eq!(not_asked.get("/readyz").unwrap().0, 200, "off by default");
    // A relayed client is closed promptly, not left hanging.
    let mut client = connect(asked.tcp);
    let started = Instant::now();
    let r = client.read(&mut [0u8; 16]);
    assert!(matches!(r, Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(3), "{r:?}");

    // The node is back on the same address: ready again without a restart.
    let _node = std::net::TcpListener::bind(node_addr).unwrap();
    asked.wait_ready();
}

/// Nice value of every thread of `n` by name, from /proc/PID/task/*/stat.
fn thread_nice(n: &Netstrap) -> Vec<(String, i64)> {
    let dir = format!("/proc/{}/task", n.child.id());
    let mut threads: Vec<(String, i64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
            // `pid (comm) state ...`: the comm may hold spaces, the fields after it do not.
            let (head, rest) = stat.rsplit_once(") ").unwrap();
            let comm = head.split_once(" (").unwrap().1.to_string();
            // After the comm: state is field 3, nice field 19.
            let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
            (comm, nice)
        })
        .collect();
    threads.sort();
    threads
}

#[test]
fn the_data_planes_yield_the_cpu_to_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = free_port().to_string();
    let n = start(dir.path(), &[("ANYLOG_BROKER_PORT", broker.clone())]);
    n.wait_ready();
    let threads = thread_nice(&n);
    let nice_of =
        |prefix: &str| threads.iter().filter(|(c, _)| c.starts_with(prefix)).map(|t| t.1).collect::<Vec<_>>();
    // Relative to the nice value netstrap was started with (the test runner's).
    let base = threads.iter().find(|t| t.0 == "netstrap").unwrap().1;
    assert!(!nice_of("netstrap-rest").is_empty(), "{threads:?}");
    assert!(nice_of("netstrap-rest").iter().all(|&v| v == base), "probes at full priority: {threads:?}");
    let want = (base + 10).min(19);
    for data in ["netstrap-tcp", "netstrap-broker", "router-"] {
        let v = nice_of(data);
        assert!(!v.is_empty() && v.iter().all(|&v| v == want), "{data} threads at nice {want}: {threads:?}");
    }
    drop(n);

    let n = start(dir.path(), &[("ANYLOG_BROKER_PORT", broker), ("NETSTRAP_DATA_NICE", "0".into())]);
    n.wait_ready();
    let threads = thread_nice(&n);
    let base = threads.iter().find(|t| t.0 == "netstrap").unwrap().1;
    assert!(
        threads.iter().all(|t| t.1 == base),
        "NETSTRAP_DATA_NICE=0 leaves every thread alone: {threads:?}"
    );
}

/// Sockets dialing or connected to 127.0.0.1:`port` (from /proc/net/tcp: remote port `port`,
/// state SYN_SENT or ESTABLISHED). Other tests in this binary hold thousands of descriptors,
/// so the process's descriptor count would not tell.
fn dials_to(port: u16) -> usize {
    let rem = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&rem) && (f[3] == "01" || f[3] == "02")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_check_dials_a_bounded_number_at_once_and_reports_the_rest_unchecked() {
    use netstrap::peers::{MAX_CHECKED, MAX_DIALS, check};
    // A listener that never accepts, with a backlog of 1: once its queue is full the kernel
    // drops further SYNs, so every dial waits out its timeout, as to a stale policy's address.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    let policies: Vec<Value> = (0..2 * MAX_CHECKED)
        .map(|i| serde_json::json!({"operator": {"name": format!("stale-{i}"), "company": "c", "ip": "127.0.0.1", "port": port}}))
        .collect();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(dials_to(port), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let nodes: Vec<_> = policies.iter().filter_map(netstrap::registry::Node::from_policy).collect();
    let reports = check(&nodes, Duration::from_millis(200)).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // Before: one dial per endpoint of every policy at once (30 000 for 10 000 policies).
    // Slack for the few the listener's queue completed (they stay established, unaccepted).
    assert!(peak <= MAX_DIALS + 8, "{peak} dials at once");
    assert!(peak >= MAX_DIALS / 2, "the sampler saw the dials ({peak})");
    assert_eq!(reports.len(), policies.len(), "every node is reported");
    let (checked, unchecked): (Vec<_>, Vec<_>) =
        reports.iter().partition(|r| !r.tcp.as_ref().unwrap().detail.starts_with("not checked"));
    assert_eq!(checked.len(), MAX_CHECKED);
    // Only the connections that fit the listener's queue complete.
    let reachable = checked.iter().filter(|r| r.all_ok()).count();
    assert!(reachable <= 2, "{reachable} reported reachable behind a full accept queue");
    assert_eq!(unchecked[0].name, format!("stale-{MAX_CHECKED}"), "the first ones are checked, in order");
    drop(listener);
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An EdgeLake-style REST server whose `blockchain get operator` answers `policies` operator
/// policies (~600 bytes each); every other `blockchain get` answers `[]`, every POST 200.
async fn big_registry(policies: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let policies = policies.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let body = if head.contains("command: blockchain get operator\r\n") {
                    let n = policies.load(std::sync::atomic::Ordering::Relaxed);
                    let mut body = String::with_capacity(n * 620 + 2);
                    body.push('[');
                    for i in 0..n {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str(&format!(
                            r#"{{"operator": {{"name": "op-{i:08}", "company": "Big Co", "hostname": "host-{i:08}", "ip": "127.0.0.1", "local_ip": "10.0.{}.{}", "port": 1, "rest_port": 1, "broker_port": 1, "cluster": "0123456789abcdef0123456789abcdef", "loc": "37.7749, -122.4194", "country": "US", "state": "CA", "city": "San Francisco", "id": "{i:032x}", "date": "2026-12-03T00:00:00.000000Z", "ledger": "global", "notes": "padding padding padding padding padding padding padding padding padding padding padding"}}}}"#,
                            i / 256 % 256,
                            i % 256
                        ));
                    }
                    body.push(']');
                    body
                } else if head.starts_with("get") {
                    "[]".to_string()
                } else {
                    String::new()
                };
                let reply =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_registry_reply_is_refused_and_a_long_node_list_costs_about_its_size() {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(50_000));
    let port = big_registry(count.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut env = node_env("203.0.113.9");
    env.extend([
        ("NETSTRAP_LEDGER", format!("anylog://127.0.0.1:{port}")),
        ("LEDGER_CONN", "127.0.0.1:32048".to_string()),
        ("NETSTRAP_WATCH_INTERVAL", "1".to_string()),
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "100".to_string()),
    ]);
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let n = start(&state2, &env);
        let pid = n.child.id();
        // 50 000 policies: ~30 MiB, over the 16 MiB netstrap reads of a node list.
        wait_until("/v1/peers to name the limit", || {
            n.get("/v1/peers").is_some_and(|(_, b)| b.contains("larger than 16 MiB"))
        });
        let refused = peak_rss_kib(pid);
        eprintln!("peak RSS after a 30 MiB reply: {refused} KiB");
        // Before: 1 124 MiB for a 30 MiB reply.
        assert!(refused < 80 * 1024, "peak RSS {refused} KiB after a refused 30 MiB reply");
        // 20 000 policies (~12 MiB) are read, parsed one at a time and checked (the first 1 000).
        count.store(20_000, std::sync::atomic::Ordering::Relaxed);
        wait_until("/v1/peers to list 20 000 nodes", || {
            n.get("/v1/peers").is_some_and(|(_, b)| b.contains("op-00019999"))
        });
        let listed = peak_rss_kib(pid);
        eprintln!("peak RSS with 20 000 nodes: {listed} KiB");
        assert!(listed < 112 * 1024, "peak RSS {listed} KiB for a 12 MiB node list");
        assert!(n.get("/livez").is_some_and(|(c, _)| c == 200));
        n.stop();
    })
    .await
    .unwrap();
}

#[test]
fn a_flood_over_the_connection_limit_is_logged_once_not_once_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(&dir.path().join("state"), &[("NETSTRAP_REST_MAX_CONNECTIONS", "16".to_string())]);
    n.wait_ready();
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(("127.0.0.1", n.rest)).unwrap()).collect();
    // Let netstrap accept them all (connect returns before the accept).
    std::thread::sleep(Duration::from_millis(500));
    // 2 000 connections over the limit, for at most 60 s: a connection the plane does not
    // accept (and so close) waits out its 1 s read timeout. One CI run saw that for most of
    // them (15 min, not reproduced alone: 0.75 s); the time bound keeps such a run from
    // stalling CI, and the figure says how many were closed at once.
    let started = Instant::now();
    let (mut closed, mut unanswered) = (0u32, 0u32);
    while closed + unanswered < 2_000 && started.elapsed() < Duration::from_secs(60) {
        let mut s = TcpStream::connect(("127.0.0.1", n.rest)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        match s.read(&mut [0u8; 1]) {
            Ok(_) => closed += 1,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                unanswered += 1
            }
            Err(_) => closed += 1,
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "FIGURE over-limit flood: {closed} closed at once, {unanswered} unanswered for 1 s, in {elapsed:.1?}"
    );
    drop(idle);
    wait_until("served again", || n.get("/livez").is_some_and(|(c, _)| c == 200));
    let (_, log) = n.stop();
    // Before: one WARN per refused connection (20 000 lines in 1.5 s). Now one per 10 s at most.
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("connection limit reached")).collect();
    // What this test holds netstrap to is the log's rate; how fast refusals are closed is its
    // figure (the CI stall above is an open investigation, docs/reliability.md).
    assert!(closed >= 1, "the plane closed none of the connections over its limit");
    assert!(
        !refusals.is_empty() && refusals.len() as u64 <= 1 + elapsed.as_secs() / 10,
        "{} refusal lines for {closed} refused connections in {elapsed:?}: {refusals:#?}",
        refusals.len()
    );
    assert!(refusals[0].contains("NETSTRAP_REST_MAX_CONNECTIONS"), "{}", refusals[0]);
}
