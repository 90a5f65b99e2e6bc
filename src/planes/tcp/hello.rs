//! The peer protocol's client side: `hello` proves which node answers an address (the nonce
//! ties the answer to this request; the identity's instance id tells replicas apart).

use std::time::Duration;

use serde::Deserialize as _;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::native::{Line, MAX_NONCE, read_line_bounded};
use crate::planes::Identity;

/// Why `hello` did not prove who answers an address; each says what was found instead.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("hello nonce is longer than {MAX_NONCE} characters; use a shorter one")]
    NonceTooLong,
    #[error(
        "{addr}: no hello answer within {timeout:?} — is a netstrap tcp plane in native mode listening there?"
    )]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr}: cannot connect: {cause}")]
    Connect { addr: String, cause: std::io::Error },
    #[error("{addr}: cannot send hello: {cause}")]
    Send { addr: String, cause: std::io::Error },
    #[error("{addr}: connection failed before the hello answer: {cause}")]
    Receive { addr: String, cause: std::io::Error },
    #[error(
        "{addr}: closed the connection without answering hello — not a netstrap tcp plane in native mode \
         (in relay mode the node itself answers)"
    )]
    Closed { addr: String },
    #[error("{addr}: answer longer than {MAX_ANSWER} bytes — not a netstrap peer")]
    TooLong { addr: String },
    #[error("{addr}: not a netstrap peer answer ({why})")]
    NotAPeer { addr: String, why: String },
    #[error("{addr}: hello refused: {reason}")]
    Refused { addr: String, reason: String },
    #[error("{addr}: answered hello with another nonce — not an answer to this request")]
    OtherNonce { addr: String },
}

/// Longest answer accepted: an identity is small, a bigger answer is not a netstrap peer.
const MAX_ANSWER: usize = 1024 * 1024;

/// Send `{"op":"hello","nonce":..}` to `addr` (`host:port`; DNS names are resolved and every
/// address tried) and return the identity that answered with our nonce. The whole exchange
/// (resolve, connect, answer) is bounded by `timeout`; the error says what was found instead.
pub async fn hello(addr: &str, nonce: &str, timeout: Duration) -> Result<Identity, HelloError> {
    if nonce.chars().count() > MAX_NONCE {
        return Err(HelloError::NonceTooLong);
    }
    match tokio::time::timeout(timeout, exchange(addr, nonce)).await {
        Ok(result) => result,
        Err(_) => Err(HelloError::Timeout { addr: addr.to_string(), timeout }),
    }
}

async fn exchange(addr: &str, nonce: &str) -> Result<Identity, HelloError> {
    let at = || addr.to_string();
    let stream = TcpStream::connect(addr).await.map_err(|cause| HelloError::Connect { addr: at(), cause })?;
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut request = json!({"op": "hello", "nonce": nonce}).to_string();
    request.push('\n');
    writer.write_all(request.as_bytes()).await.map_err(|cause| HelloError::Send { addr: at(), cause })?;
    let mut line = Vec::new();
    let found = read_line_bounded(&mut BufReader::new(reader), &mut line, MAX_ANSWER)
        .await
        .map_err(|cause| HelloError::Receive { addr: at(), cause })?;
    match found {
        Line::Complete | Line::Partial => parse_answer(addr, &line, nonce),
        Line::Eof => Err(HelloError::Closed { addr: at() }),
        Line::TooLong => Err(HelloError::TooLong { addr: at() }),
    }
}

fn parse_answer(addr: &str, line: &[u8], nonce: &str) -> Result<Identity, HelloError> {
    let not_peer = |why: &str| HelloError::NotAPeer { addr: addr.to_string(), why: why.to_string() };
    let answer: Value = serde_json::from_slice(line).map_err(|e| not_peer(&format!("not JSON: {e}")))?;
    match answer.get("ok") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let error = answer.get("error").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(HelloError::Refused { addr: addr.to_string(), reason: error.to_string() });
        }
        _ => return Err(not_peer("no `ok` field")),
    }
    match answer.get("nonce").and_then(Value::as_str) {
        Some(echo) if echo == nonce => {}
        Some(_) => {
            return Err(HelloError::OtherNonce { addr: addr.to_string() });
        }
        None => return Err(not_peer("no nonce")),
    }
    let identity = answer.get("identity").ok_or_else(|| not_peer("no identity"))?;
    Identity::deserialize(identity).map_err(|e| not_peer(&format!("identity: {e}")))
}
