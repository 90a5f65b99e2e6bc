//! The README is the operator's reference: it must list every variable netstrap reads and
//! keep exactly the two commands a newcomer needs.

use netstrap::config::variables::{EDGELAKE, NETSTRAP};

const README: &str = include_str!("../../README.md");

#[test]
fn readme_documents_every_variable() {
    let _gate = crate::support::gate::enter(module_path!());
    let missing: Vec<&str> = EDGELAKE
        .iter()
        .chain(NETSTRAP)
        .map(|v| v.name)
        .filter(|n| !README.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "README.md lacks: {missing:?}");
}

#[test]
fn readme_has_one_run_and_one_test_command() {
    let _gate = crate::support::gate::enter(module_path!());
    let run = README.lines().filter(|l| l.starts_with("$ ") && l.ends_with("# run")).count();
    let test = README.lines().filter(|l| l.starts_with("$ ") && l.ends_with("# test")).count();
    assert_eq!((run, test), (1, 1));
}

/// The README's variable tables give each default as netstrap has it (`config::variables`,
/// which `--help` and `discover` print too): a default changed in one place only is caught.
#[test]
fn readme_defaults_are_netstraps() {
    let _gate = crate::support::gate::enter(module_path!());
    let row_default = |name: &str| {
        let prefix = format!("| `{name}` | ");
        README.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|rest| rest.split(" | ").next())
    };
    let drifted: Vec<String> = EDGELAKE
        .iter()
        .chain(NETSTRAP)
        .filter(|v| row_default(v.name).map(|d| d.replace('`', "")) != Some(v.default.replace('`', "")))
        .map(|v| format!("{}: netstrap says {:?}, README {:?}", v.name, v.default, row_default(v.name)))
        .collect();
    assert!(drifted.is_empty(), "README defaults differ:\n{}", drifted.join("\n"));
}

// ---- The README's recipes, run as written ----------------------------------------------------
//
// Every block fenced as ```` ```sh recipe=<name> ```` is a recipe: the test below runs it with
// `bash -euo pipefail -c`, from the repository, so a recipe that stops working — or a README
// edit that breaks one — fails here. It needs the Docker engine and docker-compose (under
// CI=true their absence fails the test), uses the README's fixed names (container `edge-1`,
// network `peers`, volume `netstrap`, compose project `docker`, /var/tmp/netstrap-state, host
// ports 32548-32549 and 42148-42150), refuses to start when any of them exists (it never
// removes what it did not make), and runs the README's clean-up blocks also when it fails.

use crate::support::prereq;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const RECIPES: [&str; 6] =
    ["docker-build", "docker-run", "docker-cleanup", "compose-netstrap", "compose-cleanup", "host"];
const HOST_STATE: &str = "/var/tmp/netstrap-state";
const STATIC_BINARY: &str = "target/x86_64-unknown-linux-gnu/release/netstrap";

/// The body of the README block fenced ```` ```sh recipe=<name> ````.
fn recipe(name: &str) -> String {
    let fence = format!("```sh recipe={name}");
    let mut lines = README.lines().skip_while(|l| l.trim_end() != fence);
    assert!(lines.next().is_some(), "README.md has no block fenced {fence:?}");
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n")
}

#[test]
fn readme_recipes_are_there_once() {
    let _gate = crate::support::gate::enter(module_path!());
    for name in RECIPES {
        let fence = format!("```sh recipe={name}");
        assert_eq!(README.lines().filter(|l| l.trim_end() == fence).count(), 1, "{fence}");
        assert!(!recipe(name).trim().is_empty(), "{name} is empty");
    }
}

/// Run a recipe from the repository; the output, whatever the exit.
fn run_recipe(name: &str, env: &[(&str, &str)], unset: &[&str]) -> Output {
    let body = recipe(name);
    println!("+ recipe {name}:\n{body}");
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &body]).current_dir(REPO).stdin(Stdio::null());
    // As a user's shell has it: cargo test's own settings are not the user's.
    for var in ["CARGO_TARGET_DIR", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"].iter().chain(unset) {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap_or_else(|e| panic!("cannot run bash: {e}"))
}

fn run_ok(name: &str, env: &[(&str, &str)], unset: &[&str]) -> String {
    let out = run_recipe(name, env, unset);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "README recipe {name} failed ({}):\n{stdout}\n{stderr}", out.status);
    format!("{stdout}{stderr}")
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap_or_else(|e| panic!("docker: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the recipes create that exists now, by kind and name.
fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |kind: &str, ids: String| {
        if !ids.is_empty() {
            found.push(format!("{kind}: {}", ids.replace('\n', ", ")));
        }
    };
    check("container edge-1", docker(&["ps", "-aq", "--filter", "name=^edge-1$"]));
    check("network peers", docker(&["network", "ls", "-q", "--filter", "name=^peers$"]));
    check("volume netstrap", docker(&["volume", "ls", "-q", "--filter", "name=^netstrap$"]));
    let project = "label=com.docker.compose.project=docker";
    check("compose project docker, containers", docker(&["ps", "-aq", "--filter", project]));
    check("compose project docker, volumes", docker(&["volume", "ls", "-q", "--filter", project]));
    check("compose project docker, networks", docker(&["network", "ls", "-q", "--filter", project]));
    if Path::new(HOST_STATE).exists() {
        found.push(HOST_STATE.to_string());
    }
    found
}

/// The README's clean-up, also when the test fails; the image only if the test made it.
struct CleanUp {
    remove_image: bool,
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        let _ = run_recipe("docker-cleanup", &[], &[]);
        let _ = run_recipe("compose-cleanup", &[], &["EXTERNAL_IP", "NODE_DNS"]);
        let _ = std::fs::remove_dir_all(HOST_STATE);
        if self.remove_image {
            let _ = Command::new("docker").args(["rmi", "netstrap:0.1.0"]).output();
        }
    }
}

fn wait_healthy(container: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status =
            docker(&["inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", container]);
        if status == "healthy" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{container} not healthy in 90 s ({status:?}):\n{}",
            docker(&["inspect", "-f", "{{json .State.Health}}", container])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `GET path` on 127.0.0.1:port: the body.
fn http_get(port: u16, path: &str) -> String {
    http(port, path).1
}

/// `GET path` on 127.0.0.1:port: the status code and the body.
fn http(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!(":{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(reply))
}

#[test]
fn readme_docker_compose_and_host_recipes_work_from_a_clean_state() {
    let _gate = crate::support::gate::enter(module_path!());
    let engine = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !engine.as_ref().is_ok_and(|o| o.status.success()) {
        prereq::missing("no Docker engine answers `docker info`");
        return;
    }
    if Command::new("docker-compose").arg("version").output().is_err() {
        prereq::missing("no docker-compose");
        return;
    }
    let before = leftovers();
    assert!(before.is_empty(), "not a clean state; remove these first:\n{}", before.join("\n"));
    let image_existed = Command::new("docker")
        .args(["image", "inspect", "netstrap:0.1.0"])
        .output()
        .is_ok_and(|o| o.status.success());
    let _cleanup = CleanUp { remove_image: !image_existed };

    // Docker: build, run, healthy, the table names the stable name; clean-up leaves nothing.
    let started = Instant::now();
    run_ok("docker-build", &[], &[]);
    println!("docker-build: {:.0?}", started.elapsed());
    run_ok("docker-run", &[], &[]);
    wait_healthy("edge-1");
    let network = http_get(32549, "/v1/network");
    assert!(network.contains("\"edge-1\""), "the stable name is not advertised: {network}");
    let logs = Command::new("docker").args(["logs", "edge-1"]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert_eq!(logs.matches("Sources that gave nothing").count(), 1, "one start-up summary:\n{logs}");
    assert!(logs.contains("on Docker"), "the summary names the environment:\n{logs}");
    run_ok("docker-cleanup", &[], &[]);
    assert!(leftovers().is_empty(), "docker-cleanup left: {:?}", leftovers());

    // Compose, netstrap alone (NETSTRAP_DECLARE=node: its readiness follows the node): live,
    // advertising the published ports, and not ready, naming the node it waits for — as the
    // README says; `down` without the variables `up` needed.
    run_ok("compose-netstrap", &[], &[]);
    let id = docker(&["ps", "-q", "--filter", "label=com.docker.compose.project=docker"]);
    assert!(!id.is_empty() && !id.contains('\n'), "one compose container: {id:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", 42149)).is_err() || http(42149, "/livez").0 != 200 {
        assert!(Instant::now() < deadline, "compose netstrap not live in 60 s:\n{}", docker(&["logs", &id]));
        std::thread::sleep(Duration::from_millis(500));
    }
    let network = http_get(42149, "/v1/network");
    assert!(network.contains("203.0.113.7") && network.contains("42149"), "{network}");
    let (code, ready) = http(42149, "/readyz?verbose");
    assert_eq!(code, 503, "ready without its node? {ready}");
    assert!(ready.contains("[-]node pending: the node does not answer"), "{ready}");
    assert_eq!(docker(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", &id]), "running 0");
    run_ok("compose-cleanup", &[], &["EXTERNAL_IP", "NODE_DNS"]);
    assert!(leftovers().is_empty(), "compose-cleanup left: {:?}", leftovers());

    // Host: the static binary from docker-build, in the foreground as the README runs it;
    // ready, its files where the summary says, each skipped-source chain said once; SIGTERM
    // (what Ctrl-C's SIGINT does too) ends it in order.
    let body = recipe("host");
    println!("+ recipe host:\n{body}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut host = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &body])
        .current_dir(REPO)
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let binary = Path::new(REPO).join(STATIC_BINARY);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new(&binary).args(["probe", "ready", "--timeout", "2"]).output().unwrap().status.success()
    {
        let log = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(host.try_wait().unwrap().is_none(), "the host recipe exited:\n{log}");
        assert!(Instant::now() < deadline, "the host recipe is not ready in 30 s:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(Path::new(HOST_STATE).join("netstrap.env").is_file(), "no netstrap.env in {HOST_STATE}");
    // No registry in the recipe: no nodes to check, an empty list (not null, not a 503).
    assert_eq!(http_get(32549, "/v1/peers").trim(), "[]");
    // bash may have exec'd netstrap (one simple command) or be waiting for it.
    let pid = host.id().to_string();
    if !Command::new("pkill").args(["-TERM", "-P", &pid]).status().is_ok_and(|s| s.success()) {
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let read = || std::fs::read_to_string(log.path()).unwrap_or_default();
    while host.try_wait().unwrap().is_none() || !read().contains("drained; bye") {
        assert!(Instant::now() < deadline, "the host recipe did not stop on SIGTERM:\n{}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = read();
    println!("host recipe output:\n{log}");
    assert!(log.contains("drained; bye"), "not shut down in order:\n{log}");
    assert_eq!(log.matches("Sources that gave nothing").count(), 1, "one start-up summary:\n{log}");
    assert!(log.contains(&format!("state dir     {HOST_STATE}")), "the summary names the state dir:\n{log}");
    assert!(log.contains("/readyz"), "the summary says where probes answer:\n{log}");
    for source in ["NETSTRAP_STUN_SERVERS not set", "NETSTRAP_CIDR not set"] {
        assert_eq!(log.matches(source).count(), 1, "{source:?} said more than once:\n{log}");
    }
    std::fs::remove_dir_all(HOST_STATE).unwrap();
}
