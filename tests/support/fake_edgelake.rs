//! A fake EdgeLake 1.4 node's REST server, as impolite as the real one (EDGELAKE.md §REST),
//! so that a client that only works against a well-behaved HTTP server fails against it:
//!
//! - raw TCP and hand-written HTTP/1.1, one request per connection, every reply
//!   `Connection: close`;
//! - headers are decoded as ISO-8859-1, as Python's `http.server` does; a POST without
//!   `command` header whose body is `{"command": "..."}` runs that command as a GET;
//! - the `command` header is read only with an AnyLog, curl or grafana User-Agent; otherwise
//!   a POST is refused (400) and only the probe paths (`/health`, `/healthz`, `/api/status`)
//!   answer a GET;
//! - success: `200`, `Content-Type: text`, `Content-Length: 0` (or `text/json` and a one-line
//!   JSON array for `blockchain get`); failure: `HTTP/1.1 400 {json}` with the error JSON as the
//!   reason phrase, `Transfer-Encoding: chunked` and a body that is *not* chunk-framed;
//! - `where` clauses with EdgeLake's quoting: double quotes for values with spaces, single
//!   quotes kept as part of the value (so they match nothing), an unquoted value with spaces
//!   is err 2; matching is case-insensitive;
//! - insert: `policy=!var` with body `<var={json}>` (a `>` inside → err 11); the variable is
//!   global to the node, as in EdgeLake; id by EdgeLake's algorithm, then `date`, a random
//!   operator `member`, a cluster `status`, `ledger: "local"`; err 87 (operator without an
//!   existing cluster), 70 (duplicate id), 180 (operator name taken), 149 (operator ip+port
//!   taken), 208 (`local` not true: no master here);
//! - delete: the policy goes (tombstone in the ledger file) and the answer is 400 err 3, as
//!   without a synchronizer; an unknown id is err 113.
//!
//! Knobs: [`FakeEdgeLake::set_down`], [`FakeEdgeLake::slow`], the request log (or only a
//! tally of each request's time, kind and reply size: [`FakeEdgeLake::quiet`],
//! [`FakeEdgeLake::tally`]), a [`FakeEdgeLake::policies`] snapshot,
//! [`FakeEdgeLake::lose_ledger`] and an optional `blockchain.json` ledger file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netstrap::policy::id::policy_id;
use netstrap::registry::file::{now_iso, python_json};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NODE: &str = "fake-master@127.0.0.1:32048";

/// One request the fake read.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What a request asked for, as the scale simulation counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `blockchain get <type> where ...`: one identity.
    Lookup,
    /// `blockchain get <type>`: every policy of a type.
    List,
    Insert,
    Delete,
    Other,
}

/// One request in the tally: when it arrived (tokio's clock, so paused time counts), what
/// it asked, the `name=` it looked up (look-ups only), and the reply's size.
#[derive(Clone, Debug)]
pub struct Tallied {
    pub at: tokio::time::Instant,
    pub kind: Kind,
    pub name: Option<String>,
    pub ok: bool,
    pub reply_bytes: usize,
}

/// Most requests the tally keeps (a simulation of 1 000 nodes makes ~10⁵).
const MAX_TALLY: usize = 2_000_000;

#[derive(Default)]
struct State {
    /// Live policies, in insert order.
    policies: Vec<Value>,
    /// EdgeLake's node-global variables, set by `<var=...>` bodies.
    vars: HashMap<String, String>,
    ledger: Option<PathBuf>,
    slow: Duration,
    log: Vec<LoggedRequest>,
    quiet: bool,
    tally: Vec<Tallied>,
}

type Shared = Arc<Mutex<State>>;

/// A running fake node; stops when dropped.
pub struct FakeEdgeLake {
    addr: SocketAddr,
    state: Shared,
    down: watch::Sender<bool>,
    listening: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for FakeEdgeLake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeEdgeLake {
    pub async fn start() -> FakeEdgeLake {
        Self::start_with(None).await
    }

    /// Also append every stored policy and tombstone to `path`, as EdgeLake's `blockchain.json`.
    pub async fn with_ledger(path: &Path) -> FakeEdgeLake {
        Self::start_with(Some(path.to_path_buf())).await
    }

    async fn start_with(ledger: Option<PathBuf>) -> FakeEdgeLake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake EdgeLake");
        let addr = listener.local_addr().expect("local addr");
        let state: Shared = Arc::new(Mutex::new(State { ledger, ..State::default() }));
        let (down, down_rx) = watch::channel(false);
        let (listening_tx, listening) = watch::channel(true);
        let task = tokio::spawn(accept_loop(addr, listener, state.clone(), down_rx, listening_tx));
        FakeEdgeLake { addr, state, down, listening, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`, what a client is given.
    pub fn rest_addr(&self) -> String {
        self.addr.to_string()
    }

    /// Down: the port is closed (connections refused); up: listening again on the same port.
    /// Returns once the change is in effect.
    pub async fn set_down(&self, down: bool) {
        self.down.send_replace(down);
        let mut listening = self.listening.clone();
        listening.wait_for(|l| *l != down).await.expect("the fake EdgeLake's accept loop ended");
    }

    /// Wait this long before answering each request (zero: answer at once).
    pub fn slow(&self, delay: Duration) {
        self.state.lock().unwrap().slow = delay;
    }

    /// Keep only the tally, not every request's headers and body (a long simulation).
    pub fn quiet(&self) {
        self.state.lock().unwrap().quiet = true;
    }

    /// Every request's time, kind and reply size so far (at most 2 000 000).
    pub fn tally(&self) -> Vec<Tallied> {
        self.tally_from(0)
    }

    /// The tally from its `from`th request on ([`FakeEdgeLake::tally_len`] marks a point).
    pub fn tally_from(&self, from: usize) -> Vec<Tallied> {
        let s = self.state.lock().unwrap();
        s.tally.get(from..).unwrap_or_default().to_vec()
    }

    /// Requests tallied so far.
    pub fn tally_len(&self) -> usize {
        self.state.lock().unwrap().tally.len()
    }

    /// Forget every policy and variable: a master restarted without its ledger database.
    pub fn lose_ledger(&self) {
        let mut s = self.state.lock().unwrap();
        s.policies.clear();
        s.vars.clear();
    }

    /// Every request read so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.lock().unwrap().log.clone()
    }

    /// The live policies, as stored (with `id`, `date`, `ledger`, ...).
    pub fn policies(&self) -> Vec<Value> {
        self.state.lock().unwrap().policies.clone()
    }

    /// Store `policy` directly, by the insert rules; `Err((err_code, err_text))` when refused.
    pub fn seed(&self, policy: &Value) -> Result<Value, (i64, String)> {
        store(&mut self.state.lock().unwrap(), policy.clone())
    }
}

async fn accept_loop(
    addr: SocketAddr,
    first: TcpListener,
    state: Shared,
    mut down: watch::Receiver<bool>,
    listening: watch::Sender<bool>,
) {
    let mut listener = Some(first);
    loop {
        if let Some(l) = listener.take() {
            listening.send_replace(true);
            loop {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((stream, _)) = accepted {
                            tokio::spawn(serve(stream, state.clone()));
                        }
                    }
                    changed = down.changed() => {
                        if changed.is_err() { return; }
                        if *down.borrow_and_update() { break; }
                    }
                }
            }
            drop(l);
            listening.send_replace(false);
        } else {
            if down.changed().await.is_err() {
                return;
            }
            if !*down.borrow_and_update() {
                // tokio sets SO_REUSEADDR, so the port is free again at once.
                listener = Some(TcpListener::bind(addr).await.expect("re-bind the fake EdgeLake's port"));
            }
        }
    }
}

struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

async fn serve(mut stream: TcpStream, state: Shared) {
    let Some(req) = read_request(&mut stream).await else {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n").await;
        return;
    };
    let at = tokio::time::Instant::now();
    let slow = {
        let mut s = state.lock().unwrap();
        if !s.quiet {
            s.log.push(LoggedRequest {
                method: req.method.clone(),
                path: req.path.clone(),
                headers: req.headers.clone(),
                body: String::from_utf8_lossy(&req.body).into_owned(),
            });
        }
        s.slow
    };
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let reply = handle(&state, &req).await;
    {
        let (kind, name) = kind_of(req.header("command").unwrap_or(""));
        let mut s = state.lock().unwrap();
        if s.tally.len() < MAX_TALLY {
            let ok = reply.starts_with(b"HTTP/1.1 200");
            s.tally.push(Tallied { at, kind, name, ok, reply_bytes: reply.len() });
        }
    }
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// Head up to `\r\n\r\n`, then `Content-Length` bytes of body (a chunked request body is not
/// decoded: EdgeLake's Python server does not either).
async fn read_request(stream: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    // ISO-8859-1, as Python's http.server decodes a head: UTF-8 in a header arrives mangled.
    let head: String = buf[..head_end].iter().map(|&b| char::from(b)).collect();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req { method, path, headers, body })
}

fn ok_empty() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: text\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
}

fn ok_body(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// EdgeLake's refusal: the JSON in the reason phrase, a chunked header, an unframed body.
fn refuse(method: &str, code: i64, text: &str) -> Vec<u8> {
    let err = python_json(
        &json!({"method": method.to_lowercase(), "node": NODE, "err_code": code, "err_text": text}),
    );
    format!(
        "HTTP/1.1 400 {err}\r\nContent-Type: text\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{err}"
    )
    .into_bytes()
}

async fn handle(state: &Shared, req: &Req) -> Vec<u8> {
    let m = req.method.as_str();
    let ua = req.header("user-agent").unwrap_or("").to_ascii_lowercase();
    let known_agent = ["anylog", "curl", "grafana"].iter().any(|a| ua.starts_with(a));
    if !known_agent {
        return match (m, req.path.as_str()) {
            ("GET", "/health" | "/healthz") => ok_body(
                "application/json",
                r#"{"status": "healthy", "service": "anylog-rest-server", "timestamp": 1764000000.5}"#,
            ),
            ("GET", "/api/status") => ok_body("application/json", r#"{"status": "ok"}"#),
            _ => refuse(m, 156, "Unrecognized User-Agent: command ignored"),
        };
    }
    // Without a `command` header, a POST body `{"command": ...}` is run as a GET (EdgeLake's
    // `process_as_get`); the JSON's `\u` escapes give any text.
    let in_body = || {
        let body: String = req.body.iter().map(|&b| char::from(b)).collect();
        let v: Value = serde_json::from_str(body.trim()).ok()?;
        v.get("command")?.as_str().map(String::from)
    };
    let (command, m) = match (req.header("command"), m) {
        (Some(c), _) => (c.to_string(), m),
        (None, "POST") => match in_body() {
            Some(c) => (c, "GET"),
            None => return refuse(m, 2, "Missing command"),
        },
        _ => return refuse(m, 2, "Missing command"),
    };
    let command = command.as_str();
    let words: Vec<&str> = command.split_whitespace().collect();
    let lower: Vec<String> = words.iter().take(3).map(|w| w.to_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let after = |n: usize| skip_words(command, n);
    let wants = match lower.as_slice() {
        ["get", "status", ..] | ["blockchain", "get", _] => "GET",
        ["blockchain", "insert", ..] | ["blockchain", "delete", "policy"] => "POST",
        _ => return refuse(m, 2, "Command structure error"),
    };
    if m != wants {
        return refuse(m, 156, "Wrong HTTP method");
    }
    match lower.as_slice() {
        ["get", "status", ..] => ok_body("text", &format!("{NODE} running")),
        ["blockchain", "get", ty] => get(state, m, ty, after(3)),
        ["blockchain", "insert", ..] => insert(state, m, after(2), &req.body).await,
        _ => delete(state, m, after(3)),
    }
}

/// A command's [`Kind`], and the `name=` of a look-up.
fn kind_of(command: &str) -> (Kind, Option<String>) {
    let lower: Vec<String> = command.split_whitespace().take(4).map(str::to_lowercase).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["blockchain", "get", _] => (Kind::List, None),
        ["blockchain", "get", _, ..] => {
            let name = parse_where(skip_words(command, 3))
                .ok()
                .and_then(|c| c.into_iter().find(|(k, _)| k == "name").map(|(_, v)| v));
            (Kind::Lookup, name)
        }
        ["blockchain", "insert", ..] => (Kind::Insert, None),
        ["blockchain", "delete", ..] => (Kind::Delete, None),
        _ => (Kind::Other, None),
    }
}

/// `text` without its first `n` words (the rest as sent: quoted spaces kept).
fn skip_words(text: &str, n: usize) -> &str {
    let mut s = text.trim_start();
    for _ in 0..n {
        s = s[s.find(char::is_whitespace).unwrap_or(s.len())..].trim_start();
    }
    s
}

/// `where k=v and k2="v 2"` → pairs (keys lower-cased); `Err` is EdgeLake's err 2.
fn parse_where(text: &str) -> Result<Vec<(String, String)>, ()> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let rest = text.strip_prefix("where ").or_else(|| text.strip_prefix("WHERE ")).ok_or(())?;
    let mut s = rest.trim_start();
    let mut out = Vec::new();
    loop {
        let eq = s.find('=').ok_or(())?;
        let key = s[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(());
        }
        s = s[eq + 1..].trim_start();
        let value = match s.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let end = s[1..].find(q).ok_or(())? + 1;
                let inner = &s[1..end];
                s = &s[end + 1..];
                // Single quotes stay part of the value: EdgeLake then matches nothing.
                // A backslash matches only doubled (`\\`), as on EdgeLake 1.4.2604.
                if q == '"' {
                    inner.replace("\\\\", "\u{0}").replace('\\', "\u{1}").replace('\u{0}', "\\")
                } else {
                    format!("'{inner}'")
                }
            }
            Some(_) => {
                let end = s.find(char::is_whitespace).unwrap_or(s.len());
                let v = s[..end].to_string();
                s = &s[end..];
                v
            }
            None => return Err(()),
        };
        out.push((key.to_lowercase(), value));
        s = s.trim_start();
        if s.is_empty() {
            return Ok(out);
        }
        let (word, tail) = s.split_at(s.find(char::is_whitespace).ok_or(())?);
        if !word.eq_ignore_ascii_case("and") {
            return Err(()); // e.g. the second word of an unquoted value with a space
        }
        s = tail.trim_start();
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a stored value matches `want` (lower-cased) case-insensitively, without allocating
/// for ASCII (a registry of 1 000 nodes is scanned on every look-up).
fn same_text(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) if s.is_ascii() && want.is_ascii() => s.eq_ignore_ascii_case(want),
        other => text_of(other).to_lowercase() == want,
    }
}

fn get(state: &Shared, m: &str, ty: &str, rest: &str) -> Vec<u8> {
    let Ok(conds) = parse_where(rest) else {
        return refuse(m, 2, "Command structure error");
    };
    let conds: Vec<(String, String)> = conds.into_iter().map(|(k, v)| (k, v.to_lowercase())).collect();
    let s = state.lock().unwrap();
    let found: Vec<Value> = s
        .policies
        .iter()
        .filter(|p| {
            let Some((t, inner)) = p.as_object().and_then(|o| o.iter().next()) else { return false };
            (ty == "*" || t.to_lowercase() == ty)
                && conds.iter().all(|(k, want)| inner.get(k).is_some_and(|v| same_text(v, want)))
        })
        .cloned()
        .collect();
    ok_body("text/json", &python_json(&Value::Array(found)))
}

async fn insert(state: &Shared, m: &str, rest: &str, body: &[u8]) -> Vec<u8> {
    let Ok(conds) = parse_where(rest) else {
        return refuse(m, 2, "Command structure error");
    };
    let cond = |k: &str| conds.iter().find(|(c, _)| c == k).map(|(_, v)| v.as_str());
    let Some(var) = cond("policy").and_then(|p| p.strip_prefix('!')) else {
        return refuse(m, 2, "Command structure error: policy=!<variable> expected");
    };
    if cond("local").map(str::to_lowercase).as_deref() != Some("true") || cond("master").is_none() {
        return refuse(m, 208, "Failed to connect to the master node");
    }
    // `<name={json}>`: EdgeLake ends the assignment at the first '>'.
    let body = String::from_utf8_lossy(body);
    let body = body.trim();
    let assignment = body
        .strip_prefix('<')
        .and_then(|b| b.split_once('>'))
        .filter(|(_, after)| after.trim().is_empty())
        .and_then(|(inner, _)| inner.split_once('='));
    let Some((name, value)) = assignment else {
        return refuse(m, 11, "Missing brackets");
    };
    state.lock().unwrap().vars.insert(name.trim().to_string(), value.to_string());
    // The variable is node-global: let other requests run between setting and reading it,
    // as EdgeLake's threads do.
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    let mut s = state.lock().unwrap();
    let parsed = s.vars.get(var).and_then(|v| serde_json::from_str::<Value>(v).ok());
    let Some(policy) = parsed else {
        return refuse(m, 87, "Wrong policy structure");
    };
    match store(&mut s, policy) {
        Ok(_) => ok_empty(),
        Err((code, text)) => refuse(m, code, &text),
    }
}

/// EdgeLake's insert rules; the stored policy on success.
fn store(s: &mut State, policy: Value) -> Result<Value, (i64, String)> {
    let wrong = || (87, "Wrong policy structure".to_string());
    let (ty, inner) = policy
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .and_then(|(t, i)| Some((t.clone(), i.as_object()?.clone())))
        .ok_or_else(wrong)?;
    let id = match inner.get("id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => policy_id(&policy).map_err(|_| wrong())?,
    };
    let live = |t: &str| {
        s.policies.iter().filter_map(move |p| p.get(t)).filter_map(Value::as_object).collect::<Vec<_>>()
    };
    let all_ids: Vec<&str> =
        s.policies.iter().filter_map(|p| p.as_object()?.values().next()?.get("id")?.as_str()).collect();
    if ty == "operator" {
        let cluster = inner.get("cluster").and_then(Value::as_str).ok_or_else(wrong)?;
        if !live("cluster").iter().any(|c| c.get("id").and_then(Value::as_str) == Some(cluster)) {
            return Err(wrong());
        }
    }
    if all_ids.contains(&id.as_str()) {
        return Err((70, "Duplicate object id".into()));
    }
    if ty == "operator" {
        let field = |o: &Map<String, Value>, k: &str| o.get(k).map(text_of).map(|v| v.to_lowercase());
        let others = live("operator");
        if others.iter().any(|o| field(o, "name") == field(&inner, "name")) {
            return Err((180, "Non unique policy values".into()));
        }
        let ip_port = |o: &Map<String, Value>| (field(o, "ip"), field(o, "port"));
        if others.iter().any(|o| ip_port(o) == ip_port(&inner)) {
            return Err((149, "None unique IP:Port in policy".into()));
        }
    }
    let mut stored = inner;
    for k in ["id", "date", "ledger"] {
        stored.shift_remove(k);
    }
    // Added again below, after the fields sent.
    match ty.as_str() {
        "operator" => stored.shift_remove("member"),
        "cluster" => stored.shift_remove("status"),
        _ => None,
    };
    stored.insert("id".into(), json!(id));
    stored.insert("date".into(), json!(now_iso()));
    if ty == "operator" {
        stored.insert("member".into(), json!(rand::random_range(1..=255)));
    }
    if ty == "cluster" {
        stored.insert("status".into(), json!("active"));
    }
    stored.insert("ledger".into(), json!("local"));
    let stored = json!({ ty: stored });
    append(s, &stored);
    s.policies.push(stored.clone());
    Ok(stored)
}

fn delete(state: &Shared, m: &str, rest: &str) -> Vec<u8> {
    let Ok(conds) = parse_where(rest) else {
        return refuse(m, 2, "Command structure error");
    };
    let Some(id) = conds.iter().find(|(k, _)| k == "id").map(|(_, v)| v.clone()) else {
        return refuse(m, 2, "Command structure error: id expected");
    };
    let mut s = state.lock().unwrap();
    let before = s.policies.len();
    s.policies.retain(|p| p.as_object().and_then(|o| o.values().next()?.get("id")?.as_str()) != Some(&id));
    if s.policies.len() == before {
        return refuse(m, 113, "Policy not found");
    }
    append(&s, &json!({"deleted": {"id": id, "ledger": "local"}}));
    // Without a synchronizer EdgeLake reports a failure after deleting.
    refuse(m, 3, "Process failed: synchronizer not running")
}

fn append(s: &State, line: &Value) {
    if let Some(path) = &s.ledger {
        use std::io::Write;
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the fake ledger");
        writeln!(f, "{}", python_json(line)).expect("append to the fake ledger");
    }
}

/// Send `request` (raw bytes) to `addr` and read the whole reply until the server closes.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the fake EdgeLake");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read the reply");
    String::from_utf8_lossy(&out).into_owned()
}
