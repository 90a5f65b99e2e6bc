//! The container image on a real Docker engine: docker/Dockerfile's `prebuilt` target built
//! here from a static release binary, two netstrap containers sharing a `file://` registry on
//! a user network, a container that comes back with a new IP and keeps its identity, the
//! HEALTHCHECK, and docker/compose.yaml publishing ports that differ from the container's.
//!
//! Without a Docker engine every test prints `SKIPPED: <why>` and passes (fails under `CI=true`). The static binary
//! is built once per run where the README's recipe builds it (target/x86_64-unknown-linux-gnu/
//! release: `cargo test` does not hold target/'s lock while tests run, and tests/packaging/readme.rs
//! runs that recipe, so one release build serves both); each test builds its own image tag
//! from it and removes every container, network, volume and image it made, also when it fails.

use crate::support::prereq;
use crate::support::static_binary;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// EdgeLake's REST port for a generic node (the image's default NODE_TYPE).
const GENERIC_REST: u16 = 32549;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// `docker args...`, stdout trimmed; panics with stderr on failure.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Why these tests cannot run here, if they cannot.
fn no_engine() -> Option<String> {
    match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "no Docker engine answers `docker info`: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no docker client: {e}")),
    }
}

macro_rules! require_engine {
    () => {
        if let Some(why) = no_engine() {
            prereq::missing(&why);
            return;
        }
    };
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("netstrap-test-{prefix}-{}-{nanos}", std::process::id())
}

/// Something Docker holds, removed when dropped (test failures included).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        let _ = Command::new("docker").args(&args).output();
    }
}

/// Build the `prebuilt` target from a context holding only what it copies (the legacy
/// builder sends the whole context; the repository's target/ is gigabytes).
fn build_image(tag: &str) -> Cleanup {
    let ctx = tempfile::tempdir().unwrap();
    let binary_dir = ctx.path().join("target/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&binary_dir).unwrap();
    std::fs::copy(static_binary::static_binary(), binary_dir.join("netstrap")).unwrap();
    let rootfs = Path::new(REPO).join("docker/rootfs");
    for file in ["etc/passwd", "etc/group", "var/lib/netstrap/.keep"] {
        let to = ctx.path().join("docker/rootfs").join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(rootfs.join(file), to).unwrap();
    }
    let dockerfile = Path::new(REPO).join("docker/Dockerfile");
    let out = run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--target", "prebuilt", "--build-arg", "REVISION=test", "-t", tag, "-f"])
        .arg(&dockerfile)
        .arg(ctx.path()));
    let guard = Cleanup(vec!["rmi".into(), "-f".into(), tag.into()]);
    assert!(out.status.success(), "docker build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    guard
}

fn inspect(object: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, object])
}

fn container_ip(name: &str) -> String {
    inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
}

/// Poll `docker inspect` until the HEALTHCHECK says healthy (the engine runs it every second).
fn wait_healthy(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = inspect(name, "{{if .State.Health}}{{.State.Health.Status}}{{end}}");
        if status == "healthy" {
            return;
        }
        if Instant::now() > deadline {
            let logs = docker(&["logs", "--tail", "40", name]);
            panic!(
                "{name} not healthy within 90 s (status {status:?}); health log:\n{}\nlogs:\n{}",
                inspect(name, "{{json .State.Health}}"),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// GET a JSON document from a container's published REST port.
fn get_json(name: &str, path: &str) -> Value {
    let published = docker_ok(&["port", name, &format!("{GENERIC_REST}/tcp")]);
    let addr = published.lines().find(|l| l.starts_with("127.0.0.1:")).expect("published on 127.0.0.1");
    http_json(addr, path)
}

fn http_json(addr: &str, path: &str) -> Value {
    try_http_json(addr, path).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

/// A plain HTTP/1.1 GET of a JSON document (netstrap closes after a `Connection: close` reply).
fn try_http_json(addr: &str, path: &str) -> Result<Value, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {}", head.lines().next().unwrap_or_default()));
    }
    serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))
}

fn start_node(image: &str, name: &str, network: &str, volume: &str) {
    docker_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        network,
        "-v",
        &format!("{volume}:/var/lib/netstrap"),
        "-p",
        &format!("127.0.0.1::{GENERIC_REST}"),
        "-e",
        &format!("NETSTRAP_STATE_DIR=/var/lib/netstrap/{name}"),
        "-e",
        "NETSTRAP_LEDGER=file:///var/lib/netstrap/registry.json",
        // Docker's DNS resolves the container name on a user network: the stable name.
        "-e",
        &format!("DNS={name}"),
        "-e",
        "COMPANY_NAME=netstrap docker test",
        "--health-interval",
        "1s",
        "--health-timeout",
        "3s",
        "--health-retries",
        "3",
        image,
    ]);
}

#[test]
fn the_scratch_image_is_small_static_non_root_and_probes_itself() {
    let _gate = crate::support::gate::enter(module_path!());
    require_engine!();
    let tag = format!("{}:test", unique("image"));
    let _image = build_image(&tag);
    let bytes: u64 = inspect(&tag, "{{.Size}}").parse().unwrap();
    let mb = bytes as f64 / 1e6;
    println!("image size: {mb:.1} MB (goal: <= 12 MB) {}", if mb <= 12.0 { "met" } else { "NOT met" });
    assert_eq!(inspect(&tag, "{{.Config.User}}"), "65532:65532");
    assert_eq!(
        inspect(&tag, "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","/usr/local/bin/netstrap","probe","ready","--timeout","2"]"#
    );
    let labels: Value = serde_json::from_str(&inspect(&tag, "{{json .Config.Labels}}")).unwrap();
    for key in ["title", "description", "licenses", "version", "revision"] {
        let v = labels[format!("org.opencontainers.image.{key}")].as_str().unwrap_or_default();
        assert!(!v.is_empty(), "OCI label org.opencontainers.image.{key} missing: {labels}");
    }
    // A static binary runs in an image that has nothing else — no libc, no shell.
    let version = docker_ok(&["run", "--rm", &tag, "--version"]);
    assert!(version.starts_with("netstrap "), "{version}");
    let shell = docker(&["run", "--rm", "--entrypoint", "/bin/sh", &tag, "-c", "true"]);
    assert!(!shell.status.success(), "the image has a shell");
    // The HEALTHCHECK command fails, saying why, when nothing serves the probe.
    let probe = docker(&["run", "--rm", &tag, "probe", "ready", "--timeout", "1"]);
    assert_eq!(probe.status.code(), Some(1));
    let why = String::from_utf8_lossy(&probe.stderr);
    assert!(why.contains("cannot connect to 127.0.0.1:32549"), "{why}");
}

/// `netstrap peers --json` inside `name`: every node policy in the shared registry, dialled.
fn peers_from(name: &str) -> Vec<Value> {
    let out = docker(&["exec", name, "/usr/local/bin/netstrap", "peers", "--json", "--timeout", "3"]);
    let reports: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("peers --json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "a node in the registry is unreachable from {name}: {reports:#}");
    reports.as_array().cloned().unwrap_or_default()
}

#[test]
fn two_containers_share_a_file_registry_and_keep_their_policy_when_the_ip_changes() {
    let _gate = crate::support::gate::enter(module_path!());
    require_engine!();
    let tag = format!("{}:test", unique("image"));
    let _image = build_image(&tag);
    let network = unique("net");
    docker_ok(&["network", "create", &network]);
    let volume = unique("registry");
    docker_ok(&["volume", "create", &volume]);
    let (a, b, squatter) = (unique("a"), unique("b"), unique("squatter"));
    // Dropped in reverse order: containers first, then the volume and network they use.
    let _network = Cleanup(vec!["network".into(), "rm".into(), network.clone()]);
    let _volume = Cleanup(vec!["volume".into(), "rm".into(), "-f".into(), volume.clone()]);
    let _containers = Cleanup(vec!["rm".into(), "-f".into(), a.clone(), b.clone(), squatter.clone()]);

    start_node(&tag, &a, &network, &volume);
    start_node(&tag, &b, &network, &volume);
    wait_healthy(&a);
    wait_healthy(&b);

    // Each discovers its own container IP, and none of it reaches the policy.
    let mut ids = Vec::new();
    for name in [&a, &b] {
        let ip = container_ip(name);
        let network_doc = get_json(name, "/v1/network");
        assert_eq!(network_doc["discovery"]["local_ip"]["value"], ip.as_str(), "{name}: {network_doc:#}");
        assert_eq!(network_doc["discovery"]["environment"]["value"], "docker");
        let policy = get_json(name, "/v1/policy");
        let inner = &policy["policy"]["generic"];
        assert_eq!(inner["local_ip"], name.as_str(), "{policy:#}");
        assert!(!policy["policy"].to_string().contains(&ip), "container IP {ip} in the policy: {policy:#}");
        ids.push(policy["id"].as_str().expect("policy id").to_string());
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(peers_from(&b).len(), 2, "one policy per node in the shared registry");

    // Stop a; a squatter takes its address, so a comes back on another one.
    let old_ip = container_ip(&a);
    docker_ok(&["stop", "-t", "25", &a]);
    assert_eq!(inspect(&a, "{{.State.ExitCode}}"), "0", "SIGTERM must end netstrap cleanly");
    docker_ok(&["run", "-d", "--name", &squatter, "--network", &network, "-e", "NETSTRAP_LEDGER=none", &tag]);
    println!("a: {old_ip} before the restart; the squatter got {}", container_ip(&squatter));
    docker_ok(&["start", &a]);
    wait_healthy(&a);
    let new_ip = container_ip(&a);
    assert_ne!(new_ip, old_ip, "the restarted container kept its IP: the test proves nothing");
    println!("a: {new_ip} after the restart");

    let network_doc = get_json(&a, "/v1/network");
    assert_eq!(network_doc["discovery"]["local_ip"]["value"], new_ip.as_str());
    let policy = get_json(&a, "/v1/policy");
    assert_eq!(policy["id"].as_str(), Some(ids[0].as_str()), "a new IP changed the policy: {policy:#}");
    // Still one policy per node, and b reaches a at its stable name on the new address.
    let reports = peers_from(&b);
    assert_eq!(reports.len(), 2, "{reports:#?}");
    assert!(reports.iter().any(|r| r["id"].as_str() == Some(ids[0].as_str())), "{reports:#?}");
}

#[test]
fn compose_publishes_other_ports_and_netstrap_advertises_the_published_ones() {
    let _gate = crate::support::gate::enter(module_path!());
    require_engine!();
    if let Err(e) = Command::new("docker-compose").arg("version").output() {
        prereq::missing(&format!("no docker-compose: {e}"));
        return;
    }
    let tag = format!("{}:test", unique("image"));
    let _image = build_image(&tag);
    let project = unique("compose").replace('-', "");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (tcp, rest, broker) = (free(), free(), free());
    let compose = |args: &[&str]| {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["-p", &project, "-f", &format!("{REPO}/docker/compose.yaml")])
            .args(args)
            .env("NETSTRAP_IMAGE", &tag)
            .env("EXTERNAL_IP", "127.0.0.1")
            .env("NODE_DNS", "edge-1.example.test")
            .env("PUBLISH_IP", "127.0.0.1")
            .env("TCP_PUBLISHED_PORT", tcp.to_string())
            .env("REST_PUBLISHED_PORT", rest.to_string())
            .env("BROKER_PUBLISHED_PORT", broker.to_string())
            .env("NETSTRAP_LEDGER", "file:///var/lib/netstrap/blockchain.json");
        cmd
    };
    let down = compose(&["down", "-v", "--remove-orphans"]);
    struct Down(Command);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = self.0.output();
        }
    }
    let _down = Down(down);
    // Only netstrap: EdgeLake's image cannot be pulled here.
    let up = run(&mut compose(&["up", "-d", "--no-build", "netstrap"]));
    assert!(up.status.success(), "compose up: {}", String::from_utf8_lossy(&up.stderr));

    let addr = format!("127.0.0.1:{rest}");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The node declares itself (NETSTRAP_DECLARE=node): what netstrap advertises is the table
    // and the inputs it writes for the node's main.al.
    let network = loop {
        match try_http_json(&addr, "/v1/network") {
            Ok(p) => break p,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            Err(e) => panic!("no answer on the published REST port {addr} within 60 s: {e}"),
        }
    };
    let rows = network["table"]["rows"].as_array().unwrap_or_else(|| panic!("{network:#}"));
    for (plane, port) in [("tcp", tcp), ("rest", rest), ("broker", broker)] {
        let row = rows.iter().find(|r| r["plane"] == plane).unwrap_or_else(|| panic!("{network:#}"));
        assert_eq!(row["external_host"]["value"], "127.0.0.1", "{network:#}");
        assert_eq!(row["external_port"]["value"], port, "{network:#}");
    }
    let ps = run(&mut compose(&["ps", "-q", "netstrap"]));
    let id = String::from_utf8_lossy(&ps.stdout).trim().to_string();
    let copied =
        run(Command::new("docker").args(["cp", &format!("{id}:/var/lib/netstrap/netstrap.env"), "-"]));
    assert!(copied.status.success(), "docker cp: {}", String::from_utf8_lossy(&copied.stderr));
    let env = String::from_utf8_lossy(&copied.stdout).into_owned();
    for want in [
        "EXTERNAL_DNS=127.0.0.1".to_string(),
        "DNS=edge-1.example.test".to_string(),
        format!("ANYLOG_SERVER_PORT={tcp}"),
        format!("ANYLOG_REST_PORT={rest}"),
        format!("ANYLOG_BROKER_PORT={broker}"),
    ] {
        assert!(env.contains(&want), "{want} missing in netstrap.env (a tar stream):\n{env}");
    }
}
