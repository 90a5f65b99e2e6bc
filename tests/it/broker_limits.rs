//! The embedded broker against a hostile client, and its protocol answers: a subscribe flood,
//! a publish flood to new (and retained) topics and thousands of idle clients stay within
//! their bound (measured RSS) while `/livez` answers; keep-alive 0 works; MQTT 5 clients are
//! served, and MQTT 3.1 clients and wrong credentials get a CONNACK that says why; an embedded broker beyond
//! loopback without credentials is refused at start. Real processes: `netstrap run`,
//! mosquitto's clients, raw MQTT 3.1.1 over TCP.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// `free_port` (support/ports.rs): the broker's memory is measured on its own process (`rss_kib`).
use support::process::{Netstrap, free_port, run_fails, start};

fn broker(dir: &std::path::Path, extra: &[(&'static str, &str)]) -> (Netstrap, u16) {
    let port = free_port();
    let mut env = vec![("ANYLOG_BROKER_PORT", port.to_string())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let n = start(dir, &env);
    n.wait_ready();
    (n, port)
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls `/livez` every 20 ms until stopped; counts the answers that were not 200.
struct Liveness {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Liveness {
    fn watch(rest: u16) -> Liveness {
        let (stop, failures, polls) = Default::default();
        let (s, f, p): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&polls));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if support::process::http_get(rest, "/livez").map(|(c, _)| c) != Some(200) {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                p.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Liveness { stop, failures, polls, thread: Some(thread) }
    }

    /// Stop; assert every poll answered 200.
    fn check(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let (f, p) = (self.failures.load(Ordering::Relaxed), self.polls.load(Ordering::Relaxed));
        assert!(p > 0 && f == 0, "/livez failed {f} of {p} polls");
    }
}

// ---- a minimal MQTT 3.1.1 client over a blocking socket ----

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    netstrap::planes::broker_guard::encode_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn field(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn connect_packet(client_id: &str, keep_alive: u16, creds: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    field(&mut body, b"MQTT");
    body.push(4);
    body.push(if creds.is_some() { 0xc2 } else { 0x02 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    field(&mut body, client_id.as_bytes());
    if let Some((u, p)) = creds {
        field(&mut body, u.as_bytes());
        field(&mut body, p.as_bytes());
    }
    packet(0x10, &body)
}

fn subscribe_packet(pkid: u16, filters: &[String]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        field(&mut body, f.as_bytes());
        body.push(0);
    }
    packet(0x82, &body)
}

fn publish_packet(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    let mut body = Vec::new();
    field(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(if retain { 0x31 } else { 0x30 }, &body)
}

/// Read one packet: its first byte and body.
fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        len |= usize::from(b[0] & 0x7f) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok((first[0], body))
}

/// Connect and return the socket with the CONNACK's return code.
fn mqtt_connect(port: u16, client_id: &str, keep_alive: u16, creds: Option<(&str, &str)>) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&connect_packet(client_id, keep_alive, creds)).unwrap();
    let (first, body) = read_packet(&mut s).unwrap_or_else(|e| panic!("no CONNACK for {client_id}: {e}"));
    assert_eq!(first, 0x20, "CONNACK expected, got {first:#x}");
    (s, body[1])
}

/// Send SUBSCRIBE packets with `per_packet` new filters each until `filters` were asked for;
/// returns (filters granted, filters refused) from the SUBACKs.
fn subscribe_flood(s: &mut TcpStream, prefix: &str, filters: usize, per_packet: usize) -> (usize, usize) {
    let mut sent = 0;
    let (mut granted, mut refused) = (0, 0);
    let mut pkid = 1u16;
    while sent < filters {
        let batch: Vec<String> = (sent..sent + per_packet).map(|i| format!("{prefix}/{i}/+/x")).collect();
        s.write_all(&subscribe_packet(pkid, &batch)).unwrap();
        sent += per_packet;
        pkid = pkid.wrapping_add(1).max(1);
        let (first, body) = read_packet(s).unwrap();
        assert_eq!(first, 0x90, "SUBACK expected");
        for code in &body[2..] {
            if *code == 0x80 { refused += 1 } else { granted += 1 }
        }
    }
    (granted, refused)
}

#[test]
fn a_subscribe_flood_gets_suback_failures_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = broker(dir.path(), &[]);
    let pid = n.child.id();
    let before = rss_kib(pid);
    let live = Liveness::watch(n.rest);

    // One client asks for 20 000 filters, 100 per SUBSCRIBE; then 40 more connections ask for
    // 2 000 each, 10 per SUBSCRIBE. Before the front door, 61 000 filters took 408 MiB.
    let (mut a, code) = mqtt_connect(port, "flood-a", 60, None);
    assert_eq!(code, 0);
    let (granted, refused) = subscribe_flood(&mut a, "a", 20_000, 100);
    assert_eq!((granted, refused), (0, 20_000), "100 filters per packet is over the per-client 32");
    let mut total_granted = 0;
    let mut clients = Vec::new();
    for c in 0..40 {
        let (mut s, code) = mqtt_connect(port, &format!("flood-{c}"), 60, None);
        assert_eq!(code, 0);
        let (g, r) = subscribe_flood(&mut s, &format!("c{c}"), 2_000, 10);
        assert!(g <= 32, "client {c} got {g} filters (at most 32 per connection)");
        assert_eq!(g + r, 2_000);
        total_granted += g;
        clients.push(s);
    }
    // A SUBSCRIBE is granted or refused whole: 3 packets of 10 per connection fit in 32, and 6
    // in all fit in 64.
    assert_eq!(total_granted, 60, "the broker takes on at most 64 distinct filters in all, then refuses");

    // Still a broker: a subscriber to a filter it already has gets messages.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "c0/0/+/x", "-C", "1", "-W", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pub_ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "c0/0/y/x", "-m", "still here"])
        .status()
        .unwrap();
    assert!(pub_ok.success());
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still here");

    let after = rss_kib(pid);
    live.check();
    let grown = after.saturating_sub(before);
    eprintln!("RSS {before} KiB -> {after} KiB after 100 000 filters asked for, 60 granted");
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB (bound: 64 filters of ~7 KiB plus 41 clients)");

    let metrics = n.get("/metrics").unwrap().1;
    let refused: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("netstrap_broker_refused_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(refused >= 200 + 40 * 190 / 10, "refusals counted: {refused}\n{metrics}");
    let (_, log) = n.stop();
    let warnings = log.lines().filter(|l| l.contains("broker: refused")).count();
    assert!((1..=5).contains(&warnings), "refusals are logged at most once per 10 s: {warnings} lines");
}

#[test]
fn publish_floods_to_new_and_retained_topics_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = broker(dir.path(), &[]);
    let pid = n.child.id();
    // A wildcard subscriber, so that every topic matches a filter (rumqttd cached each one).
    let (mut sub, _) = mqtt_connect(port, "wildcard", 60, None);
    sub.write_all(&subscribe_packet(1, &["flood/#".into()])).unwrap();
    assert_eq!(read_packet(&mut sub).unwrap().0, 0x90);
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while sub.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let before = rss_kib(pid);
    let live = Liveness::watch(n.rest);

    let (mut p, _) = mqtt_connect(port, "publisher", 60, None);
    let payload = [b'x'; 200];
    // Rounds of 60 000 distinct topics, each message retained (~550 bytes of topic and payload
    // each): unbounded, every round would add ~60 MiB (retained messages, the topic cache).
    let mut round = |r: usize| {
        let mut batch = Vec::new();
        for i in 0..60_000 {
            batch.extend(publish_packet(&format!("flood/{r}/{i}/{}", "t".repeat(150)), &payload, true));
            if batch.len() > 256 * 1024 {
                p.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        p.write_all(&batch).unwrap();
        // PINGREQ/PINGRESP: the broker has read everything before.
        p.write_all(&[0xc0, 0]).unwrap();
        assert_eq!(read_packet(&mut p).unwrap().0, 0xd0);
        std::thread::sleep(Duration::from_millis(500));
        rss_kib(pid)
    };
    let first = round(0);
    let second = round(1);
    let third = round(2);
    live.check();
    eprintln!(
        "RSS {before} KiB -> {first} -> {second} -> {third} KiB after rounds of 60 000 retained messages on new topics"
    );
    // The first round fills what is bounded: retained messages (16 MiB as counted), the
    // wildcard filter's log (the 4 MiB backlog), the topic cache (4 096 topics), buffers.
    assert!(first - before < 64 * 1024, "first round: RSS grew {} KiB", first - before);
    // Later rounds find everything full: flat.
    assert!(third.saturating_sub(first) < 8 * 1024, "RSS kept growing: {first} -> {second} -> {third} KiB");
    drop(p);
    let (_, _) = n.stop();
    drain.join().unwrap();
}

#[test]
fn idle_clients_cost_little_and_give_it_back() {
    netstrap::lifecycle::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = broker(dir.path(), &[]);
    let pid = n.child.id();
    let before = rss_kib(pid);
    let live = Liveness::watch(n.rest);
    // The manifests' default limit is 10 000 clients (one descriptor each in netstrap, and one
    // each here: the hard limit on this machine is 20 000).
    const CLIENTS: usize = 10_000;
    // Connect them, measure, close them and wait for the trim (src/memory.rs, every 5 s) to
    // give back what it can: (connected, after close).
    // `settled`: a tighter bound to wait for (the trim runs every 5 s; measured before it, a
    // round can look like a leak).
    let round = |r: usize, settled: Option<u64>| {
        let clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|i| {
                let (s, code) = mqtt_connect(port, &format!("idle-{r}-{i}"), 600, None);
                assert_eq!(code, 0);
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let connected = rss_kib(pid);
        drop(clients);
        support::process::wait_until("the broker to count 0 clients", || {
            n.get("/metrics").is_some_and(|(_, m)| m.lines().any(|l| l == "netstrap_broker_clients 0"))
        });
        // At most 60 % of what they took stays (tokio's and rumqttd's slabs keep their
        // high-water mark; glibc's arenas keep what is fragmented); before the trim, all of it
        // stayed.
        let bound = settled.unwrap_or(u64::MAX).min(before + (connected - before) * 3 / 5);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut closed = rss_kib(pid);
        while closed > bound && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            closed = rss_kib(pid);
        }
        eprintln!(
            "round {r}: RSS {before} KiB -> {connected} KiB with {CLIENTS} idle clients, {closed} KiB after close"
        );
        assert!(closed <= bound, "after close RSS is {closed} KiB (before {before}, connected {connected})");
        (connected, closed)
    };
    let (connected, closed) = round(0, None);
    let per_client = (connected - before) as f64 / CLIENTS as f64;
    eprintln!("{per_client:.2} KiB per idle client");
    // Measured 7.3 KiB in this debug build and in release (docs/broker.md); it was 64 KiB.
    assert!(per_client <= 8.0, "{per_client:.2} KiB per idle client");
    // Again with other client ids: nothing accumulates per client that came and went. glibc's
    // arenas still settle for a few rounds, more so when other tests load the machine
    // (measured after close, five rounds of 3 000 alone: 48.1, 53.7, 55.8, 59.6, 60.3 MiB; in
    // CI 48.5 then 57.6), so the bound is a quarter of what the clients took: what a leak of
    // 4.5 KiB per client would pass, not the 64 KiB of before.
    let (connected_again, closed_again) = round(1, Some(closed + (connected - before) / 4));
    assert!(connected_again > before);
    assert!(
        closed_again <= closed + (connected - before) / 4,
        "RSS after a second round of clients: {closed_again} KiB (after the first: {closed})"
    );
    live.check();
}

#[test]
fn keep_alive_zero_connects_and_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = broker(dir.path(), &[]);
    let (mut s, code) = mqtt_connect(port, "no-keepalive", 0, None);
    assert_eq!(code, 0, "CONNACK accepted for keep-alive 0");
    // Idle for longer than rumqttd would allow any non-zero keep-alive of 1 s (1.5 s).
    std::thread::sleep(Duration::from_secs(3));
    s.write_all(&[0xc0, 0]).unwrap();
    assert_eq!(read_packet(&mut s).unwrap().0, 0xd0, "PINGRESP after 3 s idle");
    // And a non-zero keep-alive is still enforced.
    let (mut t, _) = mqtt_connect(port, "keepalive-1", 1, None);
    std::thread::sleep(Duration::from_secs(3));
    let _ = t.write_all(&[0xc0, 0]);
    assert!(read_packet(&mut t).is_err(), "a client silent past 1.5 x its keep-alive is closed");
    drop(n);
}

/// mosquitto_sub against the broker: its exit code and stderr.
fn mosquitto_sub(port: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "t", "-C", "1", "-W", "5"])
        .args(args)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn mqtt5_clients_are_served_and_31_clients_and_wrong_credentials_get_a_connack_that_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) =
        broker(dir.path(), &[("NETSTRAP_BROKER_USERNAME", "edge"), ("NETSTRAP_BROKER_PASSWORD", "s3cret")]);
    // MQTT 5 goes to rumqttd's v5 server on the same router: a v5 subscriber gets what a
    // 3.1.1 publisher sends.
    let port_s = port.to_string();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port_s, "-V", "mqttv5", "-u", "edge", "-P", "s3cret"])
        .args(["-t", "v5/#", "-C", "1", "-W", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port_s, "-u", "edge", "-P", "s3cret", "-q", "1"])
        .args(["-t", "v5/from-311", "-m", "across versions"])
        .status()
        .unwrap();
    assert!(published.success());
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "across versions", "MQTT 5 subscriber");
    let (code, err) = mosquitto_sub(port, &["-V", "mqttv5", "-u", "edge", "-P", "wrong"]);
    assert!(err.contains("Bad User Name or Password"), "MQTT 5, wrong password: exit {code}: {err}");
    let (code, err) = mosquitto_sub(port, &["-V", "mqttv31", "-u", "edge", "-P", "s3cret"]);
    assert!(err.contains("unacceptable protocol version"), "MQTT 3.1: exit {code}: {err}");
    let (code, err) = mosquitto_sub(port, &[]);
    assert!(err.contains("not authorised"), "anonymous: exit {code}: {err}");
    let (code, err) = mosquitto_sub(port, &["-u", "edge", "-P", "wrong"]);
    assert!(err.contains("bad user name or password"), "wrong password: exit {code}: {err}");
    // The right ones work, with the timeout (-W) as the only way out.
    let (code, err) = mosquitto_sub(port, &["-u", "edge", "-P", "s3cret", "-W", "1"]);
    assert_eq!(code, 27, "mosquitto_sub timed out waiting for a message (exit 27): {err}");

    let (_, log) = n.stop();
    // The readiness probe and these clients: none of it is an ERROR.
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "client events logged as errors:\n{}", errors.join("\n"));
    assert!(log.contains("CONNECT for protocol level 3"), "refusal logged:\n{log}");
}

/// PINGREQ → PINGRESP: the connection is still served.
fn pings(s: &mut TcpStream) -> bool {
    s.write_all(&[0xc0, 0x00]).is_ok() && read_packet(s).is_ok_and(|(first, _)| first == 0xd0)
}

#[test]
fn only_a_client_that_logs_in_can_take_over_a_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let creds = ("edge", "s3cret");
    let (n, port) =
        broker(dir.path(), &[("NETSTRAP_BROKER_USERNAME", creds.0), ("NETSTRAP_BROKER_PASSWORD", creds.1)]);
    let (mut first, code) = mqtt_connect(port, "sensor-1", 60, Some(creds));
    assert_eq!(code, 0);
    // A wrong password or none, with the same client id: refused, and the session stays.
    let (_, code) = mqtt_connect(port, "sensor-1", 60, Some(("edge", "wrong")));
    assert_eq!(code, 4, "bad user name or password");
    let (_, code) = mqtt_connect(port, "sensor-1", 60, None);
    assert_eq!(code, 5, "not authorized");
    assert!(pings(&mut first), "the logged-in client was disconnected by a client that did not log in");
    // The same user logging in again takes the client id over (MQTT-3.1.4-2).
    let (mut second, code) = mqtt_connect(port, "sensor-1", 60, Some(creds));
    assert_eq!(code, 0);
    let mut rest = Vec::new();
    let closed = first.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the older connection is closed, not left to time out: {closed:?}");
    assert!(pings(&mut second));
    n.stop();
}

#[test]
fn an_anonymous_broker_beyond_loopback_is_refused_at_start_unless_the_operator_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let t0 = Instant::now();
    let err = run_fails(
        dir.path(),
        &[("ANYLOG_BROKER_PORT", port.to_string()), ("NETSTRAP_BROKER_ANONYMOUS", "false".into())],
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    for want in
        ["without credentials", "NETSTRAP_BROKER_USERNAME", "NETSTRAP_BROKER_ANONYMOUS=true", "0.0.0.0"]
    {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    // On loopback only, no credentials are needed.
    let (n, _) = broker(dir.path(), &[("NETSTRAP_BROKER_ANONYMOUS", "false"), ("BROKER_BIND", "true")]);
    drop(n);
    // Said explicitly: it starts, with a warning.
    let (n, port) = broker(dir.path(), &[("NETSTRAP_BROKER_ANONYMOUS", "true")]);
    let (code, _) = mosquitto_sub(port, &["-W", "1"]);
    assert_eq!(code, 27, "anonymous client accepted");
    let (_, log) = n.stop();
    assert!(log.contains("accepts clients without credentials"), "{log}");
}
