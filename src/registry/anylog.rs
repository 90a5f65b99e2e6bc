//! The EdgeLake/AnyLog REST client (`anylog://host:rest_port`): read, insert and delete
//! policies on a node's REST server, speaking the protocol as EdgeLake 1.4 actually does it
//! (as `tests/support/edgelake.rs` records live nodes answering), not as a polite HTTP server would:
//!
//! - Every request carries `command: <AnyLog command>` and `User-Agent: AnyLog/1.23`; without
//!   that User-Agent EdgeLake ignores the command.
//! - Success is `200` with `Content-Length: 0` (or a JSON body for `blockchain get`). Failure is
//!   `400` with the error JSON in the *reason phrase* of the status line, a
//!   `Transfer-Encoding: chunked` header and a body that is not chunk-framed. So the status code
//!   decides, the error comes from [`hyper::ext::ReasonPhrase`], and the body of a non-2xx reply
//!   is never read when a reason phrase is there (reading it fails by construction).
//! - Every reply is `Connection: close`: one TCP connection per request, no pool.
//! - Values in `where` clauses are always double-quoted (single quotes silently match
//!   nothing); a value holding `"` cannot be expressed and is refused before sending.
//! - Headers are decoded as ISO-8859-1 (Python's `http.server`), so a `command` header with
//!   UTF-8 in it (`company="Société"`) reaches the node as `SociÃ©tÃ©` and matches nothing,
//!   and a character beyond U+00FF cannot be carried at all. A read whose command is not
//!   ASCII is therefore sent as EdgeLake's other form, a `POST` without `command` header and
//!   the body `{"command": "..."}` in JSON with `\u` escapes: the node parses the JSON and runs
//!   the command as a GET, with the text the policy body stored (`\u00e9` → `é`), whatever
//!   the script (checked against EdgeLake 1.4.2604: Latin, CJK, emoji, NBSP, combining marks).
//! - Insert sends the policy as a body `<var={json}>` under a variable name unique to the
//!   request (`!netstrap_p_<random hex>`): EdgeLake's variables are global to the node, and
//!   concurrent inserts through one name store each other's policy.
//! - A `>` anywhere in the policy (a key or a string value) ends EdgeLake's `<...>` body early
//!   (400 err 11). netstrap *refuses* such a policy with [`AnylogError::InvalidPolicy`] naming
//!   the field, rather than sending it inline in the `command` header, whose tokenizer has
//!   rules of its own for quotes and ` and `.
//! - Delete answers 400 err 3 without a running synchronizer *although the delete happened*:
//!   that is [`DeleteOutcome::Unconfirmed`], and the caller reads back.
//!
//! A `200` on insert only says the node took the policy (the push to the master is
//! fire-and-forget); read back to know it is stored.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::file::python_json;
use crate::discover::http::error_chain;

/// The User-Agent EdgeLake requires before it reads the `command` header.
pub const USER_AGENT: &str = "AnyLog/1.23";

/// Largest reply read to a look-up of one identity (`blockchain get <type> where company=…
/// and name=…`, a cluster by name): hundreds of duplicates of a policy fit.
const MAX_LOOKUP: usize = 4 * 1024 * 1024;
/// Largest reply read to a list of every node of a type: ~25 000 policies of the usual
/// ~600 bytes. Read into one buffer and parsed one policy at a time into what the peer check
/// needs ([`crate::registry::Node`]), so the list costs about its own size, not a JSON tree of it
/// (a 30 MiB reply took 1.1 GiB that way).
const MAX_LIST: usize = 16 * 1024 * 1024;

/// Why a call to an EdgeLake node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnylogError {
    /// No TCP connection (refused, no route, name not resolved) or it broke before a reply.
    #[error(
        "EdgeLake REST server {addr} unreachable: {cause} — is the node running and is its REST \
         server listening there (ANYLOG_REST_PORT, REST_BIND)?"
    )]
    Unreachable { addr: String, cause: String },
    /// No complete reply within the configured timeout.
    #[error(
        "EdgeLake REST server {addr}: no reply within {after:?} ({during}) — the node may be \
         overloaded or waiting on an unreachable master (LEDGER_CONN); raise the timeout or check it"
    )]
    Timeout { addr: String, after: Duration, during: &'static str },
    /// The node answered and refused the command.
    #[error("{}", refused_message(.command, *.status, *.err_code, .err_text))]
    Refused { command: String, status: u16, err_code: Option<i64>, err_text: String },
    /// The node answered something this client cannot read.
    #[error("EdgeLake REST server sent an unexpected reply: {0}")]
    BadReply(String),
    /// The request cannot be expressed in EdgeLake's command language; nothing was sent.
    #[error("{0}")]
    InvalidPolicy(String),
    /// Several clusters carry the name asked for; the company has to pick one.
    #[error(
        "several cluster policies are named {name:?} (companies: {}); configure the cluster's \
         company or its id",
        .companies.join(", ")
    )]
    AmbiguousCluster { name: String, companies: Vec<String> },
}

fn refused_message(command: &str, status: u16, err_code: Option<i64>, err_text: &str) -> String {
    let code = err_code.map(|c| format!(" err {c}")).unwrap_or_default();
    let hint = match err_code {
        Some(2) => " — command structure error: a value with spaces needs double quotes",
        Some(3) => " — the node has no running synchronizer; read back to see what happened",
        Some(11) => " — missing brackets: the policy body must be <var={json}> without '>' inside",
        Some(70) => " — a policy with this id is already stored",
        Some(87) => {
            " — wrong policy structure: an operator policy needs \"cluster\": the id of an existing \
             cluster policy (configure the cluster id, or create the cluster first)"
        }
        Some(113) => " — no policy with this id on the node",
        Some(149) => {
            " — another operator policy already uses this ip and port; delete it first or advertise \
             another port"
        }
        Some(156) => " — wrong HTTP method for this command",
        Some(180) => {
            " — another operator policy already uses this name (operator names are unique across \
             companies); delete the old policy first or choose another NODE_NAME"
        }
        Some(208) => " — the master (LEDGER_CONN) is unreachable",
        _ => "",
    };
    format!("EdgeLake refused `{command}` (HTTP {status}{code}): {err_text}{hint}")
}

/// What a delete request established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The node answered 200.
    Deleted,
    /// The node answered 400 err 3, which it does after deleting when no synchronizer runs:
    /// the delete may have happened. Read back to know.
    Unconfirmed,
}

/// A client for one EdgeLake node's REST server.
#[derive(Clone, Debug)]
pub struct AnylogClient {
    rest_addr: String,
    master: String,
    timeout: Duration,
}

/// One reply: status, reason phrase (when not the canonical one) and body (2xx only).
struct Reply {
    status: StatusCode,
    reason: Option<String>,
    body: Bytes,
}

impl AnylogClient {
    /// `rest_addr`: the node's REST `host:port` (a DNS name is resolved on every request);
    /// `master`: `LEDGER_CONN`, the master's TCP `host:port`, sent as `master=`; `timeout`
    /// bounds each request from connect to the last byte read.
    pub fn new(rest_addr: &str, master: &str, timeout: Duration) -> AnylogClient {
        AnylogClient { rest_addr: rest_addr.trim().to_string(), master: master.trim().to_string(), timeout }
    }

    /// The REST `host:port` this client talks to.
    pub fn rest_addr(&self) -> &str {
        &self.rest_addr
    }

    /// Policies of `policy_type` with this company and name (matched case-insensitively by
    /// the node); empty when there are none.
    pub async fn get(&self, policy_type: &str, company: &str, name: &str) -> Result<Vec<Value>, AnylogError> {
        check_word("policy type", policy_type)?;
        let command = format!(
            "blockchain get {policy_type} where company={} and name={}",
            quoted("company", company)?,
            quoted("name", name)?
        );
        self.get_command(&command).await
    }

    /// Every node of `policy_type`, read and parsed within [`MAX_LIST`].
    pub async fn get_nodes(&self, policy_type: &str) -> Result<Vec<crate::registry::Node>, AnylogError> {
        check_word("policy type", policy_type)?;
        let command = format!("blockchain get {policy_type}");
        let reply = self.read(&command, MAX_LIST).await?;
        if !reply.status.is_success() {
            return Err(refused(&command, &reply));
        }
        let mut nodes = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(&reply.body);
        serde::de::DeserializeSeed::deserialize(NodeList(&mut nodes), &mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                AnylogError::BadReply(format!(
                    "`{command}` answered {} with {} ({e}), expected a JSON array of policies",
                    reply.status,
                    crate::discover::http::excerpt(&reply.body)
                ))
            })?;
        Ok(nodes)
    }

    /// The id of the cluster policy named `name` (in `company` when given), `None` when there
    /// is none.
    pub async fn get_cluster_id(
        &self,
        company: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, AnylogError> {
        let mut command = format!("blockchain get cluster where name={}", quoted("name", name)?);
        if let Some(company) = company {
            command.push_str(&format!(" and company={}", quoted("company", company)?));
        }
        let found = self.get_command(&command).await?;
        let mut ids: Vec<(String, String)> = Vec::new();
        for p in &found {
            let inner = p.get("cluster").ok_or_else(|| {
                AnylogError::BadReply(format!("`{command}` returned a policy that is not a cluster: {p}"))
            })?;
            let id = inner.get("id").and_then(Value::as_str).ok_or_else(|| {
                AnylogError::BadReply(format!("`{command}` returned a cluster policy without an id: {p}"))
            })?;
            let company = inner.get("company").and_then(Value::as_str).unwrap_or("").to_string();
            if !ids.iter().any(|(i, _)| i == id) {
                ids.push((id.to_string(), company));
            }
        }
        match ids.len() {
            0 => Ok(None),
            1 => Ok(ids.pop().map(|(id, _)| id)),
            _ => Err(AnylogError::AmbiguousCluster {
                name: name.to_string(),
                companies: ids.into_iter().map(|(_, c)| c).collect(),
            }),
        }
    }

    /// Insert `policy` (`{"<type>": {...}}`) on the node (`local=true`, pushed to `master`).
    pub async fn insert(&self, policy: &Value) -> Result<(), AnylogError> {
        let kind = policy
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
            .filter(|(_, inner)| inner.is_object())
            .map(|(k, _)| k.clone())
            .ok_or_else(|| {
                AnylogError::InvalidPolicy(
                    "not a policy: expected {\"<type>\": {\"name\": ..., ...}}, one key with an object"
                        .into(),
                )
            })?;
        if kind.contains('>') {
            return Err(AnylogError::InvalidPolicy(format!(
                "policy type {kind:?} contains '>', which EdgeLake's insert body cannot carry"
            )));
        }
        check_no_close_bracket(&kind, &policy[&kind])?;
        check_word("master (LEDGER_CONN)", &self.master)?;
        let var = format!("netstrap_p_{:016x}", rand::random::<u64>());
        let command =
            format!("blockchain insert where policy=!{var} and local=true and master={}", self.master);
        // Python-style JSON escapes non-ASCII, so the body is ASCII whatever EdgeLake decodes it as.
        let body = format!("<{var}={}>", python_json(policy));
        let reply = self.send(Method::POST, Some(&command), Bytes::from(body), MAX_LOOKUP).await?;
        if reply.status.is_success() {
            return Ok(());
        }
        Err(refused(&command, &reply))
    }

    /// Delete the policy with this id on the node (`local=true`, pushed to `master`).
    pub async fn delete(&self, id: &str) -> Result<DeleteOutcome, AnylogError> {
        check_word("policy id", id)?;
        check_word("master (LEDGER_CONN)", &self.master)?;
        let command =
            format!("blockchain delete policy where id={id} and local=true and master={}", self.master);
        let reply = self.send(Method::POST, Some(&command), Bytes::new(), MAX_LOOKUP).await?;
        if reply.status.is_success() {
            return Ok(DeleteOutcome::Deleted);
        }
        match refused(&command, &reply) {
            AnylogError::Refused { err_code: Some(3), .. } => Ok(DeleteOutcome::Unconfirmed),
            e => Err(e),
        }
    }

    /// Any read-only command whose reply is one JSON value (`get processes where
    /// format=json`, `get connections where format=json`).
    pub async fn get_json(&self, command: &str) -> Result<Value, AnylogError> {
        let reply = self.read(command, MAX_LOOKUP).await?;
        if !reply.status.is_success() {
            return Err(refused(command, &reply));
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| AnylogError::BadReply(format!("`{command}` did not return JSON: {e}")))
    }

    async fn get_command(&self, command: &str) -> Result<Vec<Value>, AnylogError> {
        let reply = self.read(command, MAX_LOOKUP).await?;
        get_reply(command, reply)
    }

    /// A read-only command: in the `command` header when it is ASCII, else in a JSON body,
    /// which carries any text to the node unchanged (see the module doc).
    async fn read(&self, command: &str, max: usize) -> Result<Reply, AnylogError> {
        if command.is_ascii() {
            return self.send(Method::GET, Some(command), Bytes::new(), max).await;
        }
        let body = python_json(&serde_json::json!({ "command": command }));
        self.send(Method::POST, None, Bytes::from(body), max).await
    }

    /// One request on a fresh connection, bounded by the timeout from connect to last byte.
    /// `command` goes in the `command` header; without one, the body carries it.
    async fn send(
        &self,
        method: Method,
        command: Option<&str>,
        body: Bytes,
        max: usize,
    ) -> Result<Reply, AnylogError> {
        let mut req = Request::builder()
            .method(method)
            .uri("/")
            .header(hyper::header::HOST, &self.rest_addr)
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header(hyper::header::CONNECTION, "close");
        if let Some(command) = command {
            if !command.is_ascii() || command.chars().any(char::is_control) {
                // The node would read other text than this (headers are ISO-8859-1 to it).
                return Err(AnylogError::InvalidPolicy(format!(
                    "`{command}` cannot be sent in EdgeLake's command header: only ASCII without \
                     control characters arrives as written"
                )));
            }
            let value = HeaderValue::from_str(command).map_err(|e| {
                AnylogError::InvalidPolicy(format!("`{command}` cannot be sent as an HTTP header: {e}"))
            })?;
            req = req.header(HeaderName::from_static("command"), value);
        }
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "text/plain");
        }
        let command = command.unwrap_or("(command in the body)");
        let req = req
            .body(Full::new(body))
            .map_err(|e| AnylogError::InvalidPolicy(format!("`{command}`: cannot build the request: {e}")))?;

        let deadline = tokio::time::Instant::now() + self.timeout;
        let timeout =
            |during| AnylogError::Timeout { addr: self.rest_addr.clone(), after: self.timeout, during };
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(self.rest_addr.as_str()))
            .await
            .map_err(|_| timeout("connecting"))?
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::time::timeout_at(deadline, self.exchange(stream, req, max))
            .await
            .map_err(|_| timeout("waiting for the reply"))?
    }

    async fn exchange(
        &self,
        stream: TcpStream,
        req: Request<Full<Bytes>>,
        max: usize,
    ) -> Result<Reply, AnylogError> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(error_chain(&e)))?;
        // The connection task ends with an error after a refusal (the body is not chunk-framed);
        // that is EdgeLake's normal behaviour, so it is not reported.
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| {
                if e.is_incomplete_message() || e.is_canceled() {
                    self.unreachable(format!("the connection closed before a reply ({})", error_chain(&e)))
                } else {
                    AnylogError::BadReply(error_chain(&e))
                }
            })?;
            let (parts, body) = resp.into_parts();
            let reason = parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
            let body = if parts.status.is_success() {
                read_within(body, max)
                    .await
                    .map_err(|e| AnylogError::BadReply(format!("reading a {} reply: {e}", parts.status)))?
            } else if reason.is_none() {
                // Not EdgeLake's error form (a proxy, say): the body may say why. It may also be
                // unreadable; an error reply must never fail for that.
                match Limited::new(body, 4096).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Bytes::new(),
                }
            } else {
                Bytes::new()
            };
            Ok(Reply { status: parts.status, reason, body })
        }
        .await;
        conn.abort();
        result
    }

    fn unreachable(&self, cause: String) -> AnylogError {
        AnylogError::Unreachable { addr: self.rest_addr.clone(), cause }
    }
}

/// Why a reply body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{}", error_chain(.0))]
    Read(hyper::Error),
    #[error(
        "the reply is larger than {} MiB, more than netstrap reads of a registry reply; a ledger \
         that big is mostly stale policies (see `netstrap peers`)",
        .max / (1024 * 1024)
    )]
    TooLarge { max: usize },
}

/// Read a reply body into one buffer of at most `max` bytes (a larger one is refused, naming
/// the limit, before more is read).
async fn read_within(mut body: hyper::body::Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge { max });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// The command up to its `where`, for messages.
fn verb(command: &str) -> &str {
    command.split(" where ").next().unwrap_or(command)
}

/// A JSON array of policies, turned into [`crate::registry::Node`]s one element at a time.
struct NodeList<'a>(&'a mut Vec<crate::registry::Node>);

impl<'de> serde::de::DeserializeSeed<'de> for NodeList<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NodeList<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of policies")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(policy) = seq.next_element::<Value>()? {
            self.0.extend(crate::registry::Node::from_policy(&policy));
        }
        Ok(())
    }
}

/// What a `blockchain get` reply says: the policies, or why not. `reason` is the status
/// line's reason phrase when it is not the canonical one (EdgeLake puts its error JSON there).
pub fn parse_get_reply(
    command: &str,
    status: u16,
    reason: Option<&str>,
    body: &[u8],
) -> Result<Vec<Value>, AnylogError> {
    let status = StatusCode::from_u16(status)
        .map_err(|_| AnylogError::BadReply(format!("`{command}`: status {status} is not an HTTP status")))?;
    let reply = Reply { status, reason: reason.map(String::from), body: Bytes::copy_from_slice(body) };
    get_reply(command, reply)
}

fn get_reply(command: &str, reply: Reply) -> Result<Vec<Value>, AnylogError> {
    if !reply.status.is_success() {
        return Err(refused(command, &reply));
    }
    match serde_json::from_slice::<Value>(&reply.body) {
        Ok(Value::Array(policies)) => Ok(policies),
        _ => Err(AnylogError::BadReply(format!(
            "`{command}` answered {} with {}, expected a JSON array of policies",
            reply.status,
            crate::discover::http::excerpt(&reply.body)
        ))),
    }
}

/// The error of a non-2xx reply: EdgeLake's reason-phrase JSON when there is one.
fn refused(command: &str, reply: &Reply) -> AnylogError {
    let verb = verb(command).to_string();
    let status = reply.status.as_u16();
    let parsed = reply.reason.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok());
    let (err_code, err_text) = match (&parsed, &reply.reason) {
        (Some(v), _) => (
            v.get("err_code").and_then(Value::as_i64),
            v.get("err_text").and_then(Value::as_str).map(String::from).unwrap_or_else(|| v.to_string()),
        ),
        (None, Some(reason)) => (None, reason.clone()),
        (None, None) => {
            let text = String::from_utf8_lossy(&reply.body).trim().to_string();
            let text = if text.is_empty() {
                reply.status.canonical_reason().unwrap_or("no reason given").to_string()
            } else {
                text.chars().take(200).collect()
            };
            (None, text)
        }
    };
    AnylogError::Refused { command: verb, status, err_code, err_text }
}

/// `"value"`, refusing what double quotes cannot carry. EdgeLake reads `\\` in a value as
/// one backslash (a single one matches nothing), and a value starting with `!` as a variable
/// (err 240), whatever the quotes (both seen on EdgeLake 1.4.2604).
fn quoted(field: &str, value: &str) -> Result<String, AnylogError> {
    if value.contains('"') || value.starts_with('!') || value.chars().any(char::is_control) {
        return Err(AnylogError::InvalidPolicy(format!(
            "{field} {value:?}: EdgeLake commands cannot match a value containing a double quote or a \
             control character, or starting with '!'; rename it"
        )));
    }
    Ok(format!("\"{}\"", value.replace('\\', "\\\\")))
}

/// A bare word in a command: no spaces, quotes or control characters.
fn check_word(what: &str, value: &str) -> Result<(), AnylogError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'".contains(c)) {
        return Err(AnylogError::InvalidPolicy(format!(
            "{what} {value:?} cannot be used in an EdgeLake command: it must be non-empty, without \
             spaces or quotes"
        )));
    }
    Ok(())
}

/// Refuse a `>` in any key or string value: it would end the `<var={json}>` body early.
fn check_no_close_bracket(path: &str, v: &Value) -> Result<(), AnylogError> {
    let bad = |field: &str| {
        AnylogError::InvalidPolicy(format!(
            "policy field {field} contains '>', which EdgeLake's insert body <var={{json}}> cannot \
             carry (the node answers err 11); remove the '>' from it"
        ))
    };
    match v {
        Value::String(s) if s.contains('>') => Err(bad(path)),
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            let p = format!("{path}.{k}");
            if k.contains('>') { Err(bad(&p)) } else { check_no_close_bracket(&p, v) }
        }),
        Value::Array(a) => {
            a.iter().enumerate().try_for_each(|(i, v)| check_no_close_bracket(&format!("{path}[{i}]"), v))
        }
        _ => Ok(()),
    }
}
