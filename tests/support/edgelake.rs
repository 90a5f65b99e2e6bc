//! Real EdgeLake nodes in the cluster in a box ([`super::netns`]): the unmodified Python source
//! snapshot in `../shared/edgelake` (see its README.md), run the way EdgeLake's image runs it,
//! in a pod's network namespace, with the env of a docker-compose deployment of its node type.
//!
//! - [`Snapshot::find`] locates the source and the venv with its Python deps (`.ci/run`
//!   installs them); without them a test skips (`SKIPPED: <why>`), or fails under `CI=true`.
//! - [`compose_env`] + [`node_env`] give a node the env a compose deployment gives it, with its
//!   home ([`NodeHome`]: what a PVC holds across pod restarts) and test overrides.
//! - [`start_direct`] runs EdgeLake's own entrypoint; [`start_with_launcher`] runs netstrap's
//!   `k8s/base/edgelake-start.sh`, which waits for netstrap's `netstrap.env` first.
//! - [`rest`] and its wrappers talk to a node's REST server from inside any namespace of the
//!   cluster, the way EdgeLake clients do (headers `command:` and `User-Agent: AnyLog/1.23`).
//!
//! REST reply shapes, as live EdgeLake 1.4.2604 nodes gave them in this harness:
//! - `get status` → `text`: `<node name>@<ip>:<port> running`; `get status where format=json`
//!   → `{"assigned_name": "<name>@<ip>:<port>", "status": "running", "profiling": false}`.
//! - `get processes` → a text table. `get processes where format=json` → one JSON object keyed
//!   by process name, each `{"Status": "Running" | "Not declared", "Details": "..."}` (`Details`
//!   only when there are any): `{"TCP": {..}, "REST": {..}, "MCP": {..}, "Operator": {..},
//!   "Blockchain Sync": {..}, "Scheduler": {..}, ..., "Streamer": {..}, "Query Pool": {..}, ...}`
//!   (every process EdgeLake knows, running or not).
//! - `blockchain get <type>` → a one-line JSON array of `{"<type>": {...}}` (`[]` when none),
//!   read from the node's ledger *file*: on a master that file is rewritten from its ledger
//!   table only every `BLOCKCHAIN_SYNC` (30 s in the compose files), see [`master_ledger`].
//! - `PUT` rows (headers `type: json`, `dbms`, `table`, `mode: streaming`; body a JSON array)
//!   → `200`, `{"AnyLog.status":"Success", "AnyLog.hash": "0" }` (the hash is `0` when
//!   streaming); an empty array → `500`, reason `Error in JSON Structure`, body `Failed to
//!   process JSON data`.
//! - `sql <dbms> format=json and stat=false "select ..."` with `destination: network` →
//!   `{"Query": [<row>, ...]}` (with `stat=true` also `"Statistics": [{"Count": n, "Time":
//!   "00:00:00", "Nodes": n}]`). Without `destination` the query runs on the receiving node's
//!   own databases (an operator's partitioned table then looks empty; a node without the dbms
//!   answers `{"reply" : "Empty data set"}`). A failed query is `200` too, with
//!   `{"method": "get", "node": ..., "err_code": 45, "err_text": "Failed to load table metadata
//!   from blockchain"}` until the query node's ledger copy has the table (~20 s after the first
//!   PUT with the compose settings).
//! - A `destination: <host:port>` is forwarded as `run client (<host:port>)`; a name
//!   containing `master` (`edgelake-master:32048`) answers `200` with err_code 155 "Failed to
//!   determine destination node" (read as a blockchain query), an IP works.
//! - Errors of the command itself: `400` with the error JSON in the reason phrase of the status
//!   line and again in a body that claims `Transfer-Encoding: chunked` but is not chunk-framed;
//!   every reply is `Connection: close`. [`rest`] returns the reason phrase and the raw body.
//!   A GET without a command is `200` with that chunked header and no body at all; the URL
//!   form (`/?User-Agent=AnyLog/1.23?destination=...?command=get%20status`, no User-Agent
//!   header, see [`rest_path`]) is `200` with an unframed body too.
//! - Headers are decoded as ISO-8859-1: a `command` with UTF-8 in it matches nothing stored. A
//!   POST without `command` header and with the body `{"command": "..."}` runs the command as a
//!   GET with the JSON's text (`\u` escapes give any script).
//! - SIGTERM ends a node at once (killed by the signal, no exit code).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::netns::{Cluster, Pod, Proc, poll};

/// Where the snapshot lives unless `NETSTRAP_EDGELAKE_DIR` says otherwise.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/edgelake");
/// netstrap's launcher for the EdgeLake container.
pub const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/base/edgelake-start.sh");
/// The `User-Agent` EdgeLake's REST server wants (else it ignores `command:`).
pub const USER_AGENT: &str = "AnyLog/1.23";
/// The main script EdgeLake's image runs, relative to the node's home.
const MAIN_AL: &str = "deployment-scripts/node-deployment/main.al";
const EDGELAKE_PY: &str = "EdgeLake/edge_lake/edgelake.py";
/// Compose values that point into the image; the test gives the node its own home instead.
const IMAGE_PATHS: [&str; 4] = ["LOCAL_SCRIPTS", "ANYLOG_PATH", "EDGELAKE_PATH", "TEST_DIR"];

/// The EdgeLake source snapshot and the Python that runs it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The snapshot root: `EdgeLake/`, `deployment-scripts/`, `docker-compose/`.
    pub dir: PathBuf,
    /// The venv's `python3`, with EdgeLake's deps.
    pub python: PathBuf,
}

/// `None` after printing `SKIPPED: <why>` — or a panic under `CI=true`, where every test runs.
pub fn skip<T>(why: &str) -> Option<T> {
    super::prereq::missing(why);
    None
}

/// [`Cluster::new`], which fails the test under `CI=true` instead of skipping it.
pub fn cluster(nodes: usize) -> Option<Cluster> {
    let c = Cluster::new(nodes);
    assert!(c.is_some() || !super::prereq::ci(), "CI=true and the cluster in a box cannot run");
    c
}

impl Snapshot {
    /// The snapshot (`NETSTRAP_EDGELAKE_DIR`, default `../shared/edgelake`) and the venv
    /// (`NETSTRAP_EDGELAKE_VENV`, default `~/.cache/netstrap-ci/edgelake-venv`); `None` (after
    /// `SKIPPED: <why>`) when either is missing, a panic instead under `CI=true`.
    pub fn find() -> Option<Snapshot> {
        let dir = std::env::var_os("NETSTRAP_EDGELAKE_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        for file in [EDGELAKE_PY, MAIN_AL] {
            if !dir.join(file).is_file() {
                return skip(&format!(
                    "no EdgeLake source snapshot: {} is missing (set NETSTRAP_EDGELAKE_DIR to the \
                     snapshot, default ../shared/edgelake)",
                    dir.join(file).display()
                ));
            }
        }
        let venv = match std::env::var_os("NETSTRAP_EDGELAKE_VENV") {
            Some(v) => PathBuf::from(v),
            None => {
                let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
                home.join(".cache/netstrap-ci/edgelake-venv")
            }
        };
        let python = venv.join("bin/python3");
        let how = "`.ci/run` creates it (python3 -m venv) and pip-installs EdgeLake's pinned deps; \
                   or set NETSTRAP_EDGELAKE_VENV";
        if !python.exists() {
            return skip(&format!("no EdgeLake venv: {} is missing ({how})", python.display()));
        }
        // The modules a node cannot start without (netifaces and pycomm3 are the ones that fail).
        let check = std::process::Command::new(&python)
            .args(["-c", "import orjson, netifaces, pycomm3, paho.mqtt, psutil, dateutil, pytz, dns"])
            .stdin(std::process::Stdio::null())
            .output();
        match check {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let err = err.lines().last().unwrap_or_default();
                return skip(&format!(
                    "the EdgeLake venv {} lacks a dependency ({err}; {how})",
                    venv.display()
                ));
            }
            Err(e) => return skip(&format!("cannot run {}: {e} ({how})", python.display())),
        }
        Some(Snapshot { dir, python })
    }

    /// Where Python caches the snapshot's bytecode (`PYTHONPYCACHEPREFIX`): beside the venv.
    pub fn pycache(&self) -> PathBuf {
        let venv = self.python.parent().and_then(Path::parent).unwrap_or(Path::new("/tmp"));
        venv.join("pycache")
    }

    /// `python3 edgelake.py`: the command line of a Python-source EdgeLake image.
    pub fn command(&self) -> Vec<String> {
        vec![self.python.display().to_string(), self.dir.join(EDGELAKE_PY).display().to_string()]
    }
}

/// Parse a docker compose env file: blank lines and `#` comments skipped, split at the first
/// `=`, spaces around key and value trimmed, one pair of surrounding quotes stripped.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|&q| v.strip_prefix(q).and_then(|v| v.strip_suffix(q)).filter(|_| v.len() >= 2));
            (k.trim().to_string(), unquoted.unwrap_or(v).to_string())
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// The env docker compose gives a node of `node_type` (`master`, `operator`, `query`,
/// `generic`): `base_configs.env` then `advance_configs.env` of
/// `docker-compose/docker-makefiles/<node_type>-configs`, the later value winning, without the
/// image paths (`LOCAL_SCRIPTS`, `ANYLOG_PATH`, `EDGELAKE_PATH`, `TEST_DIR`; [`node_env`] sets
/// them for the node's home). Empty values (`LOCATION=""`) stay, as compose sets them.
pub fn compose_env(snap: &Snapshot, node_type: &str) -> Vec<(String, String)> {
    let dir = snap.dir.join(format!("docker-compose/docker-makefiles/{node_type}-configs"));
    let mut env = Vec::new();
    for file in ["base_configs.env", "advance_configs.env"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (k, v) in parse_env_file(&text) {
            set(&mut env, &k, v);
        }
    }
    env.retain(|(k, _)| !IMAGE_PATHS.contains(&k.as_str()));
    env
}

/// A node's persistent home (`EDGELAKE_PATH`): EdgeLake keeps `EdgeLake/{blockchain,data,anylog}`
/// there, which survive pod restarts as the compose volumes (or a PVC) do. Its
/// `deployment-scripts` is a link to the snapshot's, so the image layout
/// `${EDGELAKE_PATH}/deployment-scripts/node-deployment/main.al` holds.
#[derive(Clone, Debug)]
pub struct NodeHome {
    pub dir: PathBuf,
}

impl NodeHome {
    /// Create `dir` (if needed) with the `deployment-scripts` link into `snap`.
    pub fn new(snap: &Snapshot, dir: &Path) -> NodeHome {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let link = dir.join("deployment-scripts");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(snap.dir.join("deployment-scripts"), &link)
                .unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        }
        NodeHome { dir: dir.to_path_buf() }
    }

    /// The node's local copy of the ledger.
    pub fn ledger(&self) -> PathBuf {
        self.dir.join("EdgeLake/blockchain/blockchain.json")
    }
}

/// The node's env: `compose` (see [`compose_env`]), its home, the snapshot's Python
/// (`EDGELAKE_COMMAND`, as netstrap's launcher runs an image of the Python source), then
/// `overrides` on top (an empty value removes the variable).
pub fn node_env(
    snap: &Snapshot,
    home: &NodeHome,
    compose: Vec<(String, String)>,
    overrides: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env = compose;
    let h = home.dir.display().to_string();
    set(&mut env, "EDGELAKE_PATH", h.clone());
    set(&mut env, "ANYLOG_PATH", h.clone());
    set(&mut env, "EDGELAKE_HOME", format!("{h}/EdgeLake"));
    set(&mut env, "LOCAL_SCRIPTS", format!("{h}/deployment-scripts"));
    // main.al makes `test_dir` (default `<LOCAL_SCRIPTS>/test`, i.e. inside the snapshot).
    set(&mut env, "TEST_DIR", format!("{h}/test"));
    set(&mut env, "PYTHONPATH", snap.dir.join("EdgeLake").display().to_string());
    set(&mut env, "EDGELAKE_COMMAND", snap.command().join(" "));
    // Bytecode next to the venv, not in the (read-only) snapshot.
    set(&mut env, "PYTHONPYCACHEPREFIX", snap.pycache().display().to_string());
    for (k, v) in overrides {
        if v.is_empty() {
            env.retain(|(key, _)| key != k);
        } else {
            set(&mut env, k, v.clone());
        }
    }
    env
}

fn value<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Run `args` as a container process of `pod` with exactly the pod env plus `env`, stdin from
/// /dev/null. `Cluster::spawn` drops empty values, so those (compose's `LOCATION=""`) are
/// set by `env` in front of the command.
fn spawn_with_env(cluster: &Cluster, pod: &Pod, env: &[(String, String)], args: &[String]) -> Proc {
    let extra: Vec<(&str, String)> =
        env.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut argv: Vec<String> = vec!["env".into()];
    argv.extend(env.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| format!("{k}=")));
    argv.extend(args.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    cluster.spawn(pod, &extra, &argv)
}

/// Start the node in `pod` as EdgeLake's image entrypoint does: `python3 edgelake.py process
/// <home>/deployment-scripts/node-deployment/main.al`, stdin from /dev/null (detached mode: it
/// runs the script, then keeps serving). `env` from [`node_env`].
pub fn start_direct(cluster: &Cluster, pod: &Pod, env: &[(String, String)]) -> Proc {
    let home = value(env, "EDGELAKE_PATH").expect("EDGELAKE_PATH in the env (see node_env)");
    let command = value(env, "EDGELAKE_COMMAND").expect("EDGELAKE_COMMAND in the env (see node_env)");
    let mut args: Vec<String> = command.split_whitespace().map(String::from).collect();
    args.extend(["process".to_string(), format!("{home}/{MAIN_AL}")]);
    spawn_with_env(cluster, pod, env, &args)
}

/// Start the node in `pod` through netstrap's launcher (`sh k8s/base/edgelake-start.sh`), which
/// waits for `<state_dir>/netstrap.env`, sources it and execs `EDGELAKE_COMMAND`.
pub fn start_with_launcher(cluster: &Cluster, pod: &Pod, env: &[(String, String)], state_dir: &Path) -> Proc {
    let mut env = env.to_vec();
    set(&mut env, "NETSTRAP_STATE_DIR", state_dir.display().to_string());
    spawn_with_env(cluster, pod, &env, &["sh".to_string(), LAUNCHER.to_string()])
}

/// A reply: status code, reason phrase (where EdgeLake puts its errors), body.
pub type Reply = (u16, String, String);

/// Decode a chunked body; `None` when it is not chunk-framed (EdgeLake's error replies).
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 || &raw[size..size + 2] != b"\r\n" {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Parse `curl -i --raw` output: status line, headers, body (de-chunked when it is framed).
fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    let mut words = status.splitn(3, ' ');
    let _version = words.next()?;
    let code = words.next()?.parse().ok()?;
    let reason = words.next().unwrap_or_default().to_string();
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked { dechunk(body).unwrap_or_else(|| body.to_vec()) } else { body.to_vec() };
    Some((code, reason, String::from_utf8_lossy(&body).into_owned()))
}

/// One REST request from inside `netns` (names resolve through its resolv.conf) to
/// `host:port`, as EdgeLake clients send it: `command: <command>` (omitted when empty),
/// `User-Agent: AnyLog/1.23`, `headers`, and `body` if any. The reply's status code, reason
/// phrase and body (raw when EdgeLake sends an unframed "chunked" body), or why there is none.
#[allow(clippy::too_many_arguments)]
pub fn rest(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    method: &str,
    command: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Reply, String> {
    rest_path(cluster, netns, host, port, "/", method, command, headers, body)
}

/// [`rest`] to `path`. EdgeLake's URL form puts the headers there (`/?User-Agent=AnyLog/1.23?
/// command=get%20status`); a request of that form has no `User-Agent` header, as the node
/// reads the URL only without one.
#[allow(clippy::too_many_arguments)]
pub fn rest_path(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    path: &str,
    method: &str,
    command: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Reply, String> {
    let url = format!("http://{host}:{port}{path}");
    let mut args: Vec<String> = ["curl", "-sS", "--max-time", "20", "--raw", "-i", "-X", method]
        .into_iter()
        .map(String::from)
        .collect();
    let mut header = |h: String| args.extend(["-H".to_string(), h]);
    if !command.is_empty() {
        header(format!("command: {command}"));
    }
    if path.contains("User-Agent=") {
        // The URL form carries its own: no User-Agent header at all (not even curl's).
        header("User-Agent:".to_string());
    } else {
        header(format!("User-Agent: {USER_AGENT}"));
    }
    // No `Expect: 100-continue` round trip for larger bodies.
    header("Expect:".to_string());
    for (k, v) in headers {
        header(format!("{k}: {v}"));
    }
    if body.is_some() {
        args.extend(["--data-binary".to_string(), "@-".to_string()]);
    }
    args.push(url);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cluster.exec_in(netns, &argv, body.unwrap_or_default());
    parse_reply(&out.stdout).ok_or_else(|| {
        format!(
            "no HTTP reply from {host}:{port} to {method} `{command}`: {} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

fn ok_body(reply: Result<Reply, String>, what: &str) -> Result<String, String> {
    match reply? {
        (200, _, body) => Ok(body),
        (code, reason, body) => Err(format!("{what}: {code} {reason} {}", body.trim())),
    }
}

/// `GET` with `command`: the body of a `200`, else the status, reason and body as the error.
pub fn get(cluster: &Cluster, netns: &str, host: &str, port: u16, command: &str) -> Result<String, String> {
    ok_body(rest(cluster, netns, host, port, "GET", command, &[], None), command)
}

fn json(text: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(text.trim()).map_err(|e| format!("{what}: not JSON ({e}): {text}"))
}

/// `blockchain get <policy_type>` (the node's local copy of the ledger): the policies,
/// `[]` when none. Panics when the node does not answer.
pub fn policies(cluster: &Cluster, netns: &str, host: &str, port: u16, policy_type: &str) -> Vec<Value> {
    try_policies(cluster, netns, host, port, policy_type).unwrap_or_else(|e| panic!("{e}"))
}

/// [`policies`], as a `Result` for [`poll`].
pub fn try_policies(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    policy_type: &str,
) -> Result<Vec<Value>, String> {
    let command = format!("blockchain get {policy_type}");
    let body = get(cluster, netns, host, port, &command)?;
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    match json(&body, &command)? {
        Value::Array(list) => Ok(list),
        other => Err(format!("{command}: not a JSON array: {other}")),
    }
}

/// `get processes where format=json`: `{"<process>": {"Status": "Running" | "Not declared",
/// "Details": ...}, ...}` (process names as EdgeLake shows them: `TCP`, `REST`, `Operator`,
/// `Blockchain Sync`, `Scheduler`, `Streamer`, ...). Panics when the node does not answer.
pub fn processes(cluster: &Cluster, netns: &str, host: &str, port: u16) -> Value {
    let command = "get processes where format=json";
    get(cluster, netns, host, port, command).and_then(|b| json(&b, command)).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `get processes` shows `process` (e.g. `Operator`) as `Running`.
pub fn is_running(processes: &Value, process: &str) -> bool {
    processes.get(process).and_then(|p| p.get("Status")).and_then(Value::as_str) == Some("Running")
}

/// `get status`: `<node name>@<ip>:<port> running`.
pub fn status(cluster: &Cluster, netns: &str, host: &str, port: u16) -> Result<String, String> {
    get(cluster, netns, host, port, "get status")
}

/// `PUT` `rows` into `dbms.table` as EdgeLake's REST data path takes them (headers `type: json`,
/// `dbms`, `table`, `mode: streaming`; body a JSON array): the node's
/// `{"AnyLog.status":"Success", "AnyLog.hash": ...}` on success.
#[allow(clippy::too_many_arguments)]
pub fn put_rows(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    dbms: &str,
    table: &str,
    rows: &[Value],
) -> Result<String, String> {
    let headers = [
        ("type", "json"),
        ("dbms", dbms),
        ("table", table),
        ("mode", "streaming"),
        ("Content-Type", "text/plain"),
    ];
    let body = Value::Array(rows.to_vec()).to_string();
    let reply = rest(cluster, netns, host, port, "PUT", "", &headers, Some(&body));
    ok_body(reply, &format!("PUT {dbms}.{table}"))
}

/// `sql <dbms> format=json and stat=false "<query>"` sent to the network (`destination:
/// network`, as a query node runs it: to every operator holding the table): the rows.
/// EdgeLake answers a failed query with `200` and `{"err_code": N, "err_text": ...}` (e.g. 45
/// "Failed to load table metadata from blockchain" until the query node's ledger has the
/// table): that is an `Err` here.
pub fn sql(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    dbms: &str,
    query: &str,
) -> Result<Vec<Value>, String> {
    sql_with(cluster, netns, host, port, dbms, query, &[("destination", "network")])
}

/// [`sql`] on the node's own databases (no `destination`), e.g. a master's `blockchain` dbms.
pub fn sql_local(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    dbms: &str,
    query: &str,
) -> Result<Vec<Value>, String> {
    sql_with(cluster, netns, host, port, dbms, query, &[])
}

fn sql_with(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    dbms: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Vec<Value>, String> {
    let command = format!("sql {dbms} format=json and stat=false \"{query}\"");
    let reply = rest(cluster, netns, host, port, "GET", &command, headers, None);
    let body = ok_body(reply, &command)?;
    match json(&body, &command)? {
        Value::Object(mut o) => match (o.remove("Query"), o.get("reply")) {
            (Some(Value::Array(rows)), _) => Ok(rows),
            // A query node's own databases answer an empty result so.
            (None, Some(Value::String(r))) if r == "Empty data set" => Ok(Vec::new()),
            _ => Err(format!("{command}: {body}")),
        },
        other => Err(format!("{command}: unexpected reply {other}")),
    }
}

/// The policies of `policy_type` in a master's ledger table (`blockchain.ledger`), which a
/// `blockchain insert ... master=` updates at once; `blockchain get` on the master reads its
/// ledger file, which the master rewrites from this table only every `BLOCKCHAIN_SYNC`.
pub fn master_ledger(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    policy_type: &str,
) -> Result<Vec<Value>, String> {
    let rows = sql_local(cluster, netns, host, port, "blockchain", "select policy_type, policy from ledger")?;
    rows.iter()
        .filter(|r| r.get("policy_type").and_then(Value::as_str) == Some(policy_type))
        .map(|r| {
            let text = r.get("policy").and_then(Value::as_str).ok_or_else(|| format!("no policy in {r}"))?;
            json(text, "a ledger row")
        })
        .collect()
}

/// Wait until the node has run its start-up script (main.al) to the end — done or given up
/// ("Exit all scripts") — and serves in detached mode; panics if the process exits first.
pub fn wait_detached(proc: &mut Proc, limit: Duration) -> String {
    poll("EdgeLake to finish main.al (detached mode)", limit, || {
        let log = proc.log();
        if let Some(code) = proc.exited() {
            panic!("EdgeLake exited with {code} during main.al:\n{}", tail(&log, 60));
        }
        if log.contains("AnyLog Node in Detached Mode") { Ok(log) } else { Err(tail(&log, 5)) }
    })
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `get status` until the node answers; panics with its log tail if it exits first.
pub fn wait_rest(
    cluster: &Cluster,
    netns: &str,
    host: &str,
    port: u16,
    proc: &mut Proc,
    limit: Duration,
) -> String {
    poll(&format!("EdgeLake's REST at {host}:{port}"), limit, || {
        if let Some(code) = proc.exited() {
            panic!("EdgeLake exited with {code} before its REST answered:\n{}", tail(&proc.log(), 60));
        }
        status(cluster, netns, host, port)
    })
}

/// Whether a TCP connection to `addr:port` opens from inside `netns` (2 s connect timeout).
pub fn tcp_open(cluster: &Cluster, netns: &str, addr: &str, port: u16) -> bool {
    let target = format!("TCP:{addr}:{port},connect-timeout=2");
    cluster.exec_in(netns, &["socat", "-u", "OPEN:/dev/null", &target], "").status.success()
}

/// A field of a policy `{"<type>": {...}}`.
pub fn field<'a>(policy: &'a Value, name: &str) -> Option<&'a Value> {
    policy.as_object()?.values().next()?.get(name)
}

/// A string field of a policy (`""` when missing).
pub fn text(policy: &Value, name: &str) -> String {
    match field(policy, name) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}
