//! `/metrics` as a Prometheus operator meets it, scraped from a running `netstrap run`:
//! Prometheus' own `promtool check metrics` accepts the default answer (text format 0.0.4),
//! a scraper that asks for OpenMetrics gets OpenMetrics that a strict OpenMetrics parser
//! accepts, the build, process, registry, declare and verification metrics move as netstrap
//! works, and `NETSTRAP_ADMIN_ADDR` moves `/metrics` and `/v1/*` off the public rest port.
//!
//! Tools: `promtool` (Debian's `prometheus` package) and the OpenMetrics parser of the Python
//! `prometheus-client` in `$NETSTRAP_TOOLS_VENV` (both installed by .ci/run). Without them a
//! test prints `SKIPPED: <why>`, except under `CI=true`, where it fails.

use crate::support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::prereq;
// The admin test's process takes its admin port chosen before it starts (netstrap takes no
// listeners from its parent): the one use of `free_port` here.
use support::harness;
use support::process::{Netstrap, free_port, run_fails, start, wait_until};

/// A GET with extra request headers: status, the response head (lowercased) and the body.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_string())
}

fn content_type(head: &str) -> &str {
    head.lines().find_map(|l| l.strip_prefix("content-type:")).map(str::trim).unwrap_or("")
}

/// The value of the sample `series` (name with its labels, as written) in a text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `promtool`, from PATH.
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("promtool")).find(|p| p.is_file())
}

/// The tools venv's Python (with prometheus-client), as tests/packaging/packaging.rs finds it.
fn venv_python() -> Option<PathBuf> {
    std::env::var_os("NETSTRAP_TOOLS_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/netstrap-ci/venv")))
        .map(|v| v.join("bin/python"))
        .filter(|p| p.is_file())
}

/// Run `cmd` with `input` on stdin: exit code and stdout + stderr.
fn run_with_stdin(cmd: &mut Command, input: &str) -> (i32, String) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A query node that declares itself in a file ledger (`dir/blockchain.json`), re-checked every
/// second.
fn node_env(ledger: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("NODE_TYPE", "query".to_string()),
        ("COMPANY_NAME", "Acme Co".to_string()),
        ("NETSTRAP_LEDGER", format!("file://{}", ledger.display())),
        ("NETSTRAP_WATCH_INTERVAL", "1".to_string()),
        ("NETSTRAP_SHUTDOWN_DELAY", "0".to_string()),
    ]
}

/// That node as a process: for what is the process's (its metrics, its log).
fn node(dir: &Path, extra: &[(&'static str, String)]) -> (Netstrap, PathBuf) {
    let ledger = dir.join("blockchain.json");
    let mut env = node_env(&ledger);
    env.extend(extra.iter().cloned());
    let n = start(&dir.join("state"), &env);
    n.wait_ready();
    (n, ledger)
}

/// That node in-process, for what it serves (not for the control counters: those are the
/// process's, shared by every in-process daemon).
fn node_in_process(dir: &Path) -> (harness::Node, PathBuf) {
    let ledger = dir.join("blockchain.json");
    let env = node_env(&ledger);
    let n = harness::Node::start(&env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    n.ready();
    (n, ledger)
}

#[test]
fn promtool_accepts_the_default_scrape_with_build_and_process_metrics() {
    let Some(promtool) = promtool() else {
        return prereq::missing("promtool not found (Debian package prometheus; bash .ci/run installs it)");
    };
    let dir = tempfile::tempdir().unwrap();
    let (n, _) = node(dir.path(), &[]);
    wait_until("the node policy declared", || {
        n.get("/metrics").is_some_and(|(_, m)| m.contains("netstrap_declares_total{policy=\"node\""))
    });
    let (code, head, metrics) = get(n.rest, "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(content_type(&head), "text/plain; version=0.0.4; charset=utf-8", "{head}");
    assert!(!metrics.contains("# EOF") && !metrics.contains("# UNIT"), "{metrics}");
    assert!(metrics.contains("# TYPE netstrap_connections_total counter\n"), "{metrics}");

    let (status, out) = run_with_stdin(Command::new(&promtool).args(["check", "metrics"]), &metrics);
    assert_eq!(status, 0, "promtool check metrics:\n{out}\n--- scrape ---\n{metrics}");
    // `Accept: */*` and a text/plain preference are the same answer.
    assert_eq!(
        content_type(&get(n.rest, "/metrics", &[("Accept", "*/*")]).1),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let both = "application/openmetrics-text;q=0.1,text/plain;version=0.0.4;q=0.9";
    assert_eq!(
        content_type(&get(n.rest, "/metrics", &[("Accept", both)]).1),
        "text/plain; version=0.0.4; charset=utf-8"
    );

    let build = metrics.lines().find(|l| l.starts_with("netstrap_build_info{")).expect("netstrap_build_info");
    let version = format!("netstrap_build_info{{version=\"{}\",commit=\"", env!("CARGO_PKG_VERSION"));
    assert!(build.starts_with(&version) && build.ends_with("\"} 1"), "{build}");
    if cfg!(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")) {
        assert!(build.contains(",target=\"x86_64-unknown-linux-gnu\"}"), "{build}");
    }

    // The process metrics are this process's, read at the scrape.
    let status = std::fs::read_to_string(format!("/proc/{}/status", n.child.id())).unwrap();
    let vm_rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let rss = sample(&metrics, "process_resident_memory_bytes").expect("process_resident_memory_bytes");
    assert!(
        rss > 1e6 && (rss / 1024.0 / vm_rss_kib - 1.0).abs() < 0.5,
        "rss {rss} vs VmRSS {vm_rss_kib} KiB"
    );
    assert!(sample(&metrics, "process_virtual_memory_bytes").unwrap() >= rss);
    // Descriptors come and go (self-verification's connections, file writes, this test's own
    // GETs): compare a fresh scrape with /proc read right after it, a few times if they moved.
    let fd_count = || std::fs::read_dir(format!("/proc/{}/fd", n.child.id())).unwrap().count() as f64;
    let mut seen = Vec::new();
    let agree = (0..10).any(|_| {
        let open = sample(&get(n.rest, "/metrics", &[]).2, "process_open_fds").unwrap();
        let fds = fd_count();
        seen.push((open, fds));
        open >= 5.0 && (open - fds).abs() <= 5.0
    });
    assert!(agree, "process_open_fds vs /proc, scrape by scrape: {seen:?}");
    let open = seen.last().unwrap().0;
    assert!(sample(&metrics, "process_max_fds").unwrap() >= open);
    assert!(sample(&metrics, "process_cpu_seconds_total").unwrap() >= 0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = sample(&metrics, "process_start_time_seconds").unwrap();
    assert!(started <= now + 1.0 && started > now - 120.0, "started {started}, now {now}");
}

#[test]
fn openmetrics_only_when_asked_and_a_strict_parser_accepts_it() {
    let Some(python) = venv_python() else {
        return prereq::missing(
            "no Python with prometheus-client in $NETSTRAP_TOOLS_VENV (bash .ci/run installs it)",
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let (n, _) = node_in_process(dir.path());
    // What Prometheus 3 sends when it scrapes.
    let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                      application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                      text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    for accept in ["application/openmetrics-text; version=1.0.0", prometheus] {
        let (code, head, body) = get(n.rest, "/metrics", &[("Accept", accept)]);
        assert_eq!(code, 200);
        assert_eq!(content_type(&head), "application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert!(head.contains("vary: accept"), "{head}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        let parse = "import sys\n\
                     from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                     fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}\n\
                     print(fams['netstrap_build_info'].type, fams['netstrap_connections'].type, \
                     fams['process_cpu_seconds'].type, len(fams))\n";
        let (status, out) = run_with_stdin(Command::new(&python).args(["-c", parse]), &body);
        assert_eq!(status, 0, "the OpenMetrics parser refused it:\n{out}\n--- scrape ---\n{body}");
        assert!(out.starts_with("gauge counter counter "), "{out}");
    }
}

#[test]
fn declares_registry_calls_verifications_and_latencies_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A process of its own: the registry call, declare and verification counters are the
    // process's (`metrics::control`), which in-process daemons of other tests would add to.
    let (n, ledger) = node(dir.path(), &[]);
    let scrape = || n.get("/metrics").unwrap().1;
    let inserted = "netstrap_declares_total{policy=\"node\",outcome=\"inserted\"}";
    let calls = "netstrap_registry_calls_total{operation=\"declare\",outcome=\"ok\"}";
    let timed = "netstrap_registry_call_duration_seconds_count{operation=\"declare\"}";
    wait_until("the first declare counted", || sample(&scrape(), inserted) == Some(1.0));
    let before = scrape();
    assert_eq!(sample(&before, "netstrap_declares_total{policy=\"config\",outcome=\"inserted\"}"), Some(1.0));
    let (calls_before, timed_before) = (sample(&before, calls).unwrap(), sample(&before, timed).unwrap());
    assert!(calls_before >= 2.0, "config and node policy: {before}");
    assert_eq!(timed_before, calls_before, "every call timed: {before}");
    wait_until("the rest endpoint verified", || {
        sample(&scrape(), "netstrap_verifications_total{plane=\"rest\",result=\"verified\"}")
            .is_some_and(|v| v >= 1.0)
    });

    // Someone deletes the policy by hand: the next watch pass finds it gone and declares again.
    let (_, policy) = n.get("/v1/policy").unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&policy).unwrap()["id"].as_str().unwrap().to_string();
    let mut f = std::fs::OpenOptions::new().append(true).open(&ledger).unwrap();
    writeln!(f, "{}", serde_json::json!({"deleted": {"id": id}})).unwrap();
    drop(f);
    wait_until("the re-declare counted", || sample(&scrape(), inserted) == Some(2.0));
    let after = scrape();
    assert!(sample(&after, calls).unwrap() > calls_before, "{after}");
    assert!(sample(&after, timed).unwrap() > timed_before, "{after}");
    assert!(
        sample(&after, "netstrap_registry_calls_total{operation=\"find\",outcome=\"ok\"}").unwrap() >= 1.0
    );
    let le_10 =
        sample(&after, "netstrap_registry_call_duration_seconds_bucket{le=\"10.0\",operation=\"declare\"}");
    assert_eq!(le_10, sample(&after, timed), "a file ledger answers within 10 s: {after}");

    // REST plane latencies: netstrap's own endpoints are observed under route="api".
    let api = "netstrap_http_request_duration_seconds_count{route=\"api\"}";
    let count = sample(&after, api).unwrap_or(0.0);
    for _ in 0..5 {
        assert_eq!(n.get("/v1/network").unwrap().0, 200);
    }
    let later = scrape();
    assert!(sample(&later, api).unwrap() >= count + 5.0, "{later}");
    assert!(sample(&later, "netstrap_http_request_duration_seconds_sum{route=\"api\"}").unwrap() > 0.0);
}

#[test]
fn the_admin_listener_takes_metrics_and_v1_off_the_rest_port() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let (n, _) = node(dir.path(), &[("NETSTRAP_ADMIN_ADDR", format!("127.0.0.1:{admin}"))]);
    // The public rest port: the probes, EdgeLake's health and /v1/identity stay; the rest moved.
    for path in ["/metrics", "/v1/network", "/v1/policy", "/v1/policy/config", "/v1/peers", "/v1/anything"] {
        let (code, _, body) = get(n.rest, path, &[]);
        assert_eq!((code, body.as_str()), (404, "not found\n"), "{path} on the rest port");
    }
    for path in ["/livez", "/readyz", "/health", "/api/status", "/v1/identity?nonce=x"] {
        assert_eq!(get(n.rest, path, &[]).0, 200, "{path} on the rest port");
    }
    // The admin listener.
    let (code, head, metrics) = get(admin, "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(content_type(&head), "text/plain; version=0.0.4; charset=utf-8");
    assert!(metrics.contains("netstrap_build_info{"), "{metrics}");
    for path in ["/v1/network", "/v1/policy", "/v1/identity?nonce=x", "/livez"] {
        assert_eq!(get(admin, path, &[]).0, 200, "{path} on the admin listener");
    }
    assert_eq!(get(admin, "/anything/else", &[]).0, 404, "nothing is proxied from the admin listener");
    // Self-verification still reaches /v1/identity through the advertised (public) endpoint.
    wait_until("the rest endpoint verified", || {
        let (_, _, m) = get(admin, "/metrics", &[]);
        sample(&m, "netstrap_verifications_total{plane=\"rest\",result=\"verified\"}")
            .is_some_and(|v| v >= 1.0)
    });
    let (code, log) = n.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("admin listener"), "{log}");
}

#[test]
fn a_bad_admin_address_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("blockchain.json");
    let with = |admin: &str| {
        vec![
            ("NETSTRAP_ADMIN_ADDR", admin.to_string()),
            ("NETSTRAP_LEDGER", format!("file://{}", ledger.display())),
        ]
    };
    let state = dir.path().join("state");
    for (value, says) in
        [("localhost", "not an ip:port address"), ("127.0.0.1:0", "port 0"), ("9090", "ip:port")]
    {
        let log = run_fails(&state, &with(value));
        assert!(log.contains("NETSTRAP_ADMIN_ADDR") && log.contains(says), "{value}: {log}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let log = run_fails(&state, &with(&format!("127.0.0.1:{port}")));
    assert!(
        log.contains(&format!("admin listener (NETSTRAP_ADMIN_ADDR=127.0.0.1:{port}): cannot bind"))
            && log.contains("choose another port"),
        "{log}"
    );
    let log = run_fails(&state, &with("192.0.2.1:9090"));
    assert!(
        log.contains("NETSTRAP_ADMIN_ADDR=192.0.2.1:9090") && log.contains("not an address of this host"),
        "{log}"
    );
    assert!(!ledger.exists(), "nothing declared when start-up failed");
}
