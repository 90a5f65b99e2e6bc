//! Load generator for netstrap's benchmark suite (`bash bench/run`). Every subcommand prints
//! one line of JSON on stdout (except `echo`, which serves until killed, and `ports`).
//!
//! ```text
//! loadgen ports N                                  N free loopback TCP ports, one a line
//! loadgen startup --probe http|mqtt --addr H:P [--path /readyz] [--runs N] [--timeout S] -- CMD ARGS...
//!                                                  exec CMD, time until it answers (HTTP 200 / CONNACK)
//! loadgen mqtt --addr H:P --pattern fanin|fanout --qos 0|1 --clients N
//!              (--messages M | --duration S) [--payload B] [--idle-timeout S]
//!                                                  MQTT throughput, every message accounted for
//! loadgen conns --addr H:P --count N [--mqtt] [--hold S]
//!                                                  open N idle connections, print READY, hold them
//! loadgen echo --listen H:P                        TCP echo server (upstream for RTT and conns)
//! loadgen rtt --addr H:P [--count N] [--size B]    request/response round trips on one connection
//! loadgen probe --addr H:P [--path P] [--count N] [--interval-ms I]
//!                                                  kubelet-style probes: a new connection per GET
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Res<T> = Result<T, String>;

struct Args {
    named: HashMap<String, String>,
    flags: Vec<String>,
    positional: Vec<String>,
    rest: Vec<String>,
}

impl Args {
    fn parse(raw: &[String]) -> Args {
        let mut named = HashMap::new();
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        let mut rest = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let a = &raw[i];
            if a == "--" {
                rest = raw[i + 1..].to_vec();
                break;
            }
            if let Some(key) = a.strip_prefix("--") {
                if i + 1 < raw.len() && !raw[i + 1].starts_with("--") {
                    named.insert(key.to_string(), raw[i + 1].clone());
                    i += 2;
                    continue;
                }
                flags.push(key.to_string());
            } else {
                positional.push(a.clone());
            }
            i += 1;
        }
        Args { named, flags, positional, rest }
    }

    fn get(&self, key: &str) -> Res<String> {
        self.named.get(key).cloned().ok_or_else(|| format!("--{key} is required"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Res<T> {
        match self.named.get(key) {
            Some(v) => v.parse().map_err(|_| format!("--{key}: {v:?} is not a number")),
            None => default.ok_or_else(|| format!("--{key} is required")),
        }
    }

    fn addr(&self) -> Res<SocketAddr> {
        let a = self.get("addr")?;
        a.parse().map_err(|_| format!("--addr: {a:?} is not host:port (an IP address)"))
    }

    fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = raw.first().cloned() else {
        eprintln!("usage: loadgen ports|startup|mqtt|conns|echo|rtt|probe ... (see the source's docs)");
        return ExitCode::from(2);
    };
    let args = Args::parse(&raw[1..]);
    let result = match cmd.as_str() {
        "ports" => ports(&args),
        "startup" => startup(&args),
        "rtt" => rtt(&args),
        "probe" => probe(&args),
        "mqtt" | "conns" | "echo" => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("loadgen: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                match cmd.as_str() {
                    "mqtt" => mqtt(&args).await,
                    "conns" => conns(&args).await,
                    _ => echo(&args).await,
                }
            })
        }
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- statistics -------------------------------------------------------------------------------

/// Percentile `p` (0..=100) of sorted values, nearest rank.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    format!(
        "\"n\":{},\"min\":{:.3},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"max\":{:.3},\"mean\":{:.3}",
        v.len(),
        v.first().copied().unwrap_or(f64::NAN),
        pct(&v, 50.0),
        pct(&v, 90.0),
        pct(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
        mean
    )
}

// ---- ports ------------------------------------------------------------------------------------

fn ports(args: &Args) -> Res<()> {
    let n: usize = args.positional.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    // Hold all of them at once so the N ports differ, then release them.
    let listeners: Vec<StdListener> = (0..n)
        .map(|_| StdListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}")))
        .collect::<Res<_>>()?;
    for l in &listeners {
        println!("{}", l.local_addr().map_err(|e| e.to_string())?.port());
    }
    Ok(())
}

// ---- readiness checks (blocking) ---------------------------------------------------------------

/// One HTTP/1.1 GET on a new connection; the status code.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let mut s = StdStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut buf[got..])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a status line",
            ));
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {line:?}")))
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 600 s: rumqttd refuses 0) with this client id.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x02, 0x58];
    var.extend_from_slice(&(id.len() as u16).to_be_bytes());
    var.extend_from_slice(id);
    let mut p = vec![0x10];
    let mut len = var.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        p.push(byte);
        if len == 0 {
            break;
        }
    }
    p.extend_from_slice(&var);
    p
}

/// MQTT CONNECT on a new connection; Ok when the CONNACK accepts it.
fn mqtt_connack(addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let mut s = StdStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(&connect_packet(&format!("bench-startup-{}", std::process::id())))?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    if ack == [0x20, 0x02, 0x00, 0x00] {
        // A clean DISCONNECT so the broker does not publish a will or log an error.
        let _ = s.write_all(&[0xe0, 0x00]);
        Ok(())
    } else {
        Err(std::io::Error::other(format!("CONNACK {ack:02x?}")))
    }
}

// ---- startup ----------------------------------------------------------------------------------

fn startup(args: &Args) -> Res<()> {
    let addr = args.addr()?;
    let kind = args.get("probe")?;
    let path = args.named.get("path").cloned().unwrap_or_else(|| "/".into());
    let runs: usize = args.num("runs", Some(5))?;
    let limit = Duration::from_secs_f64(args.num("timeout", Some(20.0))?);
    let Some((prog, prog_args)) = args.rest.split_first() else {
        return Err("give the command after --".into());
    };
    let check = |t: Duration| -> bool {
        match kind.as_str() {
            "mqtt" => mqtt_connack(addr, t).is_ok(),
            _ => matches!(http_get(addr, &path, t), Ok(200)),
        }
    };
    let mut times = Vec::new();
    for run in 0..runs {
        // The previous instance must be gone: nothing may answer before we start.
        let free_by = Instant::now() + Duration::from_secs(10);
        while StdStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            if Instant::now() > free_by {
                return Err(format!("{addr} still accepts connections before run {run}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        let mut child = Command::new(prog)
            .args(prog_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot exec {prog}: {e}"))?;
        let mut ready = None;
        while started.elapsed() < limit {
            if check(Duration::from_millis(500)) {
                ready = Some(started.elapsed());
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{prog} exited with {status} before it was ready"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        // SIGTERM (nginx's master then stops its workers), SIGKILL after 10 s.
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let stop_by = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > stop_by => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        match ready {
            Some(d) => times.push(d.as_secs_f64() * 1000.0),
            None => return Err(format!("{prog} did not answer on {addr} within {limit:?} (run {run})")),
        }
    }
    let list: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
    println!("{{\"unit\":\"ms\",{},\"runs\":[{}]}}", summary(times), list.join(","));
    Ok(())
}

// ---- rtt / probe (blocking) -------------------------------------------------------------------

fn rtt(args: &Args) -> Res<()> {
    let addr = args.addr()?;
    let count: usize = args.num("count", Some(10_000))?;
    let size: usize = args.num("size", Some(64))?;
    let warmup: usize = args.num("warmup", Some(200))?;
    let mut s = StdStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let out = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut times = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let t = Instant::now();
        s.write_all(&out).map_err(|e| format!("write: {e}"))?;
        s.read_exact(&mut back).map_err(|e| format!("read (round trip {i}): {e}"))?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!("{{\"unit\":\"us\",{}}}", summary(times));
    Ok(())
}

fn probe(args: &Args) -> Res<()> {
    let addr = args.addr()?;
    let path = args.named.get("path").cloned().unwrap_or_else(|| "/readyz".into());
    let count: usize = args.num("count", Some(1000))?;
    let interval = Duration::from_secs_f64(args.num::<f64>("interval-ms", Some(10.0))? / 1000.0);
    let mut times = Vec::with_capacity(count);
    let (mut errors, mut not_ok) = (0u64, 0u64);
    let mut next = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        match http_get(addr, &path, Duration::from_secs(5)) {
            Ok(200) => {}
            Ok(_) => not_ok += 1,
            Err(_) => errors += 1,
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!("{{\"unit\":\"ms\",{},\"not_200\":{not_ok},\"errors\":{errors}}}", summary(times));
    Ok(())
}

// ---- echo / conns (async) ---------------------------------------------------------------------

async fn echo(args: &Args) -> Res<()> {
    let listen = args.get("listen")?;
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("bind {listen}: {e}"))?;
    loop {
        let (mut sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors and the like: back off, keep serving the others.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if sock.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn conns(args: &Args) -> Res<()> {
    let addr = args.addr()?;
    let count: usize = args.num("count", None)?;
    let hold = Duration::from_secs_f64(args.num("hold", Some(30.0))?);
    let concurrency: usize = args.num("concurrency", Some(64))?;
    let mqtt = args.flag("mqtt");
    let pid = std::process::id();
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = sem.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(async move {
            let r = open_one(addr, mqtt, &format!("bench-idle-{pid}-{i}")).await;
            drop(permit);
            r
        }));
    }
    let mut held = Vec::with_capacity(count);
    let mut errors: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => *errors.entry(e).or_default() += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    // Anything the server closed while we opened the rest does not count as held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0usize;
    for s in &held {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Ok(0) => *errors.entry("closed by the server".into()).or_default() += 1,
            _ => open += 1,
        }
    }
    let errs: Vec<String> = errors.iter().map(|(e, n)| format!("{:?}:{n}", e.replace('"', "'"))).collect();
    println!(
        "{{\"requested\":{count},\"open\":{open},\"open_secs\":{:.2},\"errors\":{{{}}}}}",
        started.elapsed().as_secs_f64(),
        errs.join(",")
    );
    println!("READY");
    tokio::time::sleep(hold).await;
    drop(held);
    Ok(())
}

async fn open_one(addr: SocketAddr, mqtt: bool, id: &str) -> Result<tokio::net::TcpStream, String> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let fut = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            if mqtt {
                s.write_all(&connect_packet(id)).await.map_err(|e| format!("write: {e}"))?;
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).await.map_err(|e| format!("CONNACK: {e}"))?;
                if ack != [0x20, 0x02, 0x00, 0x00] {
                    return Err(format!("CONNACK {ack:02x?}"));
                }
            }
            Ok(s)
        };
        match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
    }
    Err(last)
}

// ---- mqtt throughput --------------------------------------------------------------------------

/// Which (publisher, sequence) pairs one subscriber has seen.
struct Seen {
    bits: Vec<Vec<u64>>,
    unique: u64,
    duplicates: u64,
}

impl Seen {
    fn record(&mut self, publisher: usize, seq: usize) {
        if publisher >= self.bits.len() {
            self.bits.resize_with(publisher + 1, Vec::new);
        }
        let words = &mut self.bits[publisher];
        if seq / 64 >= words.len() {
            words.resize(seq / 64 + 1024, 0);
        }
        let (w, b) = (seq / 64, 1u64 << (seq % 64));
        if words[w] & b != 0 {
            self.duplicates += 1;
        } else {
            words[w] |= b;
            self.unique += 1;
        }
    }
}

struct Shared {
    received: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    /// Microseconds since the start of the run when the last message arrived.
    last_us: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

fn options(id: String, addr: SocketAddr, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(inflight);
    o
}

async fn mqtt(args: &Args) -> Res<()> {
    let addr = args.addr()?;
    let pattern = args.get("pattern")?;
    let qos = match args.num::<u8>("qos", Some(0))? {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => return Err(format!("--qos {q}: 0 or 1")),
    };
    let clients: usize = args.num("clients", Some(10))?;
    let messages: Option<u64> =
        args.named.get("messages").map(|v| v.parse().map_err(|_| "--messages".to_string())).transpose()?;
    let duration: Option<f64> =
        args.named.get("duration").map(|v| v.parse().map_err(|_| "--duration".to_string())).transpose()?;
    if messages.is_none() == duration.is_none() {
        return Err("give exactly one of --messages (per publisher) and --duration".into());
    }
    let payload: usize = args.num::<usize>("payload", Some(64))?.max(8);
    let idle = Duration::from_secs_f64(args.num("idle-timeout", Some(5.0))?);
    let inflight: u16 = args.num("inflight", Some(100))?;
    let (publishers, subscribers) = match pattern.as_str() {
        "fanin" => (clients, 1),
        "fanout" => (1, clients),
        p => return Err(format!("--pattern {p:?}: fanin or fanout")),
    };
    let topic = format!("bench/{pattern}/{}", std::process::id());
    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        published: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let start_cell: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());
    let pid = std::process::id();

    // Subscribers first, each subscribed (SUBACK) before anything is published.
    let mut sub_tasks = Vec::new();
    for i in 0..subscribers {
        let (client, mut ev) =
            AsyncClient::new(options(format!("bench-sub-{pid}-{i}"), addr, inflight), 1000);
        client.subscribe(topic.clone(), qos).await.map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("subscriber {i}: {e}")),
                Err(_) => return Err(format!("subscriber {i}: no SUBACK within {:?}", t0.elapsed())),
            }
        }
        let shared = shared.clone();
        let start_cell = start_cell.clone();
        sub_tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut seen = Seen { bits: Vec::new(), unique: 0, duplicates: 0 };
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.payload.len() < 8 {
                            shared.foreign.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let publisher =
                            u32::from_le_bytes(p.payload[0..4].try_into().unwrap_or_default()) as usize;
                        let seq = u32::from_le_bytes(p.payload[4..8].try_into().unwrap_or_default()) as usize;
                        let (u, d) = (seen.unique, seen.duplicates);
                        seen.record(publisher, seq);
                        if seen.unique > u {
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        }
                        if seen.duplicates > d {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(s) = start_cell.get() {
                            shared.last_us.fetch_max(s.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        shared.errors.lock().unwrap().push(format!("subscriber: {e}"));
                        return;
                    }
                }
            }
        }));
    }

    // Publishers: connected (CONNACK) before the clock starts.
    let go = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut pub_tasks = Vec::new();
    let mut loops = Vec::new();
    for i in 0..publishers {
        let (client, mut ev) =
            AsyncClient::new(options(format!("bench-pub-{pid}-{i}"), addr, inflight), 1000);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("publisher {i}: {e}")),
                Err(_) => return Err(format!("publisher {i}: no CONNACK")),
            }
        }
        let shared2 = shared.clone();
        loops.push(tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                        shared2.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        shared2.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        shared2.errors.lock().unwrap().push(format!("publisher: {e}"));
                        return;
                    }
                }
            }
        }));
        let go = go.clone();
        let topic = topic.clone();
        let stop = stop.clone();
        pub_tasks.push(tokio::spawn(async move {
            go.notified().await;
            let mut seq: u64 = 0;
            let mut body = vec![0u8; payload];
            body[0..4].copy_from_slice(&(i as u32).to_le_bytes());
            loop {
                if let Some(m) = messages
                    && seq >= m
                {
                    break;
                }
                if messages.is_none() && stop.load(Ordering::Relaxed) {
                    break;
                }
                body[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
                if client.publish(topic.clone(), qos, false, body.clone()).await.is_err() {
                    break;
                }
                seq += 1;
            }
            (client, seq)
        }));
    }

    // Every publisher waits on `go`; give them a moment to park on it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let _ = start_cell.set(start);
    go.notify_waiters();
    if let Some(d) = duration {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut intended = 0u64;
    let mut clients_alive = Vec::new();
    for t in pub_tasks {
        let (c, n) = t.await.map_err(|e| e.to_string())?;
        intended += n;
        clients_alive.push(c);
    }
    let expected = intended * subscribers as u64;
    // Wait until everything arrived or nothing moved for `idle`.
    let mut last_count = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let got = shared.received.load(Ordering::Relaxed);
        if got >= expected {
            break;
        }
        if got != last_count {
            last_count = got;
            last_change = Instant::now();
        } else if last_change.elapsed() >= idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = shared.received.load(Ordering::Relaxed);
    let secs = shared.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    let rate = if secs > 0.0 { received as f64 / secs } else { 0.0 };
    let errors = shared.errors.lock().unwrap().clone();
    for t in sub_tasks.into_iter().chain(loops) {
        t.abort();
    }
    drop(clients_alive);
    println!(
        "{{\"pattern\":\"{pattern}\",\"qos\":{},\"publishers\":{publishers},\"subscribers\":{subscribers},\"payload\":{payload},\
\"published\":{intended},\"written\":{},\"acked\":{},\"expected\":{expected},\"received\":{received},\"lost\":{},\
\"duplicates\":{},\"foreign\":{},\"secs\":{secs:.3},\"msgs_per_s\":{rate:.0},\"errors\":{}}}",
        qos as u8,
        shared.published.load(Ordering::Relaxed),
        shared.acked.load(Ordering::Relaxed),
        expected.saturating_sub(received),
        shared.duplicates.load(Ordering::Relaxed),
        shared.foreign.load(Ordering::Relaxed),
        errors.len()
    );
    Ok(())
}
