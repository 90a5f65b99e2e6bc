//! One request to the node's REST API, on a connection of its own, and its reply read the way
//! EdgeLake writes it, which hyper's client cannot read (`tests/support/edgelake.rs` records live nodes' replies):
//!
//! - Every reply is `Connection: close`: nothing to pool, and the close ends a body.
//! - Errors (`400`, the error JSON in the reason phrase), an empty `200` (a GET without a
//!   command) and the replies of the URL form (`/?User-Agent=AnyLog/1.23?command=...`) say
//!   `Transfer-Encoding: chunked` and then write the body *unframed*. hyper fails such a body,
//!   so netstrap used to answer these with an empty body or with no status line at all.
//!
//! Here a chunked reply is read as chunk framing when its first chunk is one (a hex size line,
//! that many bytes, CRLF); otherwise its bytes up to the close are the body. Nothing is
//! buffered beyond one read (16 KiB) and one first chunk ([`FIRST_CHUNK`]). The head is
//! parsed by `httparse`; the reason phrase is kept byte for byte.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

/// Time allowed to open the connection to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply head read from the node.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in a reply head.
const MAX_HEADERS: usize = 128;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;
/// A first chunk up to this size is checked to end in CRLF before the body is read as chunk
/// framing; a larger one is taken on its size line alone.
const FIRST_CHUNK: u64 = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer section.
const MAX_LINE: usize = 4096;

/// Why there is no reply.
#[derive(Debug)]
pub enum SendError {
    /// The client's own request body could not be read (malformed chunks, over the limit).
    ClientBody(String),
    /// The node did not answer, or not with HTTP.
    Node(NodeError),
}

/// What went wrong on the connection to the node; the text is what the client's `502` (or
/// the cut-off body's error) says.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no connection within {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("sending the request: {0}")]
    Send(std::io::Error),
    /// A failed write is reported with the read failure that followed it.
    #[error("{sent} (then: {then})")]
    SentThenRead { sent: Box<NodeError>, then: Box<NodeError> },
    #[error("reading the node's reply: {0}")]
    Read(std::io::Error),
    #[error("the node's reply is not HTTP: {0}")]
    NotHttp(httparse::Error),
    #[error("the node's reply head is larger than {} KiB", MAX_HEAD / 1024)]
    HeadTooLarge,
    #[error("the node closed the connection without a reply")]
    NoReply,
    #[error("the node closed the connection in the middle of its reply head")]
    ClosedInHead,
    #[error("the node's reply has no valid status code")]
    NoStatus,
    #[error("the node's reply has an invalid Content-Length {0:?}")]
    ContentLength(HeaderValue),
    #[error("the node's reply has several Content-Length headers")]
    ContentLengths,
    #[error("the node closed its reply {0} bytes short of its Content-Length")]
    ShortBody(u64),
    #[error("the node's reply has a malformed chunk size")]
    ChunkSize,
    #[error("the node's reply has a chunk without its CRLF")]
    ChunkCrlf,
    #[error("the node's reply has a line longer than {MAX_LINE} bytes where {0} was due")]
    LongLine(&'static str),
    #[error("the node closed its chunked reply before {0}")]
    ClosedInChunks(&'static str),
}

/// The node's reply head.
pub struct Head {
    pub status: StatusCode,
    /// The reason phrase as the node sent it (EdgeLake puts its error JSON there).
    pub reason: Bytes,
    /// Every header as sent, including the framing ones.
    pub headers: HeaderMap,
}

/// Send `head` + `body` to `addr` on a new connection and read the reply head. The body is
/// sent as the client framed it: `Content-Length` when it had one, else chunked.
pub async fn send(
    addr: SocketAddr,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(Head, Reply), SendError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::Node(NodeError::ConnectTimeout))?
        .map_err(|e| SendError::Node(NodeError::Connect(e)))?;
    let _ = stream.set_nodelay(true);
    let mut stream = BufWriter::new(stream);

    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(axum::http::header::HOST) {
        head.extend_from_slice(format!("host: {addr}\r\n").as_bytes());
    }
    let chunked =
        !headers.contains_key(axum::http::header::CONTENT_LENGTH) && !hyper::body::Body::is_end_stream(&body);
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");

    // A node that answers before reading the whole body (or closes) is heard all the same:
    // a failed write is reported only if no reply follows.
    let written = write_request(&mut stream, &head, body, chunked).await;
    if let Err(SendError::ClientBody(why)) = written {
        return Err(SendError::ClientBody(why));
    }
    let mut reply = Reply {
        stream: stream.into_inner(),
        buf: BytesMut::with_capacity(READ_SIZE),
        framing: Framing::Done,
    };
    let head = match reply.read_head(method).await {
        Ok(h) => h,
        Err(e) => {
            return Err(SendError::Node(match written {
                Err(SendError::Node(sent)) => {
                    NodeError::SentThenRead { sent: Box::new(sent), then: Box::new(e) }
                }
                _ => e,
            }));
        }
    };
    Ok((head, reply))
}

async fn write_request(
    stream: &mut BufWriter<TcpStream>,
    head: &[u8],
    mut body: axum::body::Body,
    chunked: bool,
) -> Result<(), SendError> {
    let io = |e: std::io::Error| SendError::Node(NodeError::Send(e));
    stream.write_all(head).await.map_err(io)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SendError::ClientBody(crate::discover::http::error_chain(&e)))?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            stream.write_all(format!("{:x}\r\n", data.len()).as_bytes()).await.map_err(io)?;
            stream.write_all(&data).await.map_err(io)?;
            stream.write_all(b"\r\n").await.map_err(io)?;
        } else {
            stream.write_all(&data).await.map_err(io)?;
        }
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await.map_err(io)?;
    }
    stream.flush().await.map_err(io)
}

/// How the rest of the reply is delimited.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// Until the node closes the connection.
    Close,
    /// `Transfer-Encoding: chunked`, nothing read yet: chunk framing or EdgeLake's unframed body.
    ChunkedOrNot,
    /// Chunk framing: a size line next.
    ChunkSize,
    /// Chunk framing: this many data bytes of the current chunk to come, then CRLF.
    ChunkData(u64),
    /// Chunk framing: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunk framing: the trailer section after the last chunk.
    Trailers,
    Done,
}

/// The reply body, read from the node's connection.
pub struct Reply {
    stream: TcpStream,
    buf: BytesMut,
    framing: Framing,
}

impl Reply {
    /// Read more from the node; `Ok(0)` at its close.
    async fn fill(&mut self) -> Result<usize, NodeError> {
        self.buf.reserve(READ_SIZE);
        self.stream.read_buf(&mut self.buf).await.map_err(NodeError::Read)
    }

    async fn read_head(&mut self, method: &Method) -> Result<Head, NodeError> {
        loop {
            let parsed = {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Response::new(&mut slots);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = r.code.and_then(|c| StatusCode::from_u16(c).ok());
                        let mut headers = HeaderMap::new();
                        for h in r.headers.iter() {
                            if let (Ok(n), Ok(v)) =
                                (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
                            {
                                headers.append(n, v);
                            }
                        }
                        Some((len, status, headers))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => return Err(NodeError::NotHttp(e)),
                }
            };
            let Some((len, status, headers)) = parsed else {
                if self.buf.len() > MAX_HEAD {
                    return Err(NodeError::HeadTooLarge);
                }
                if self.fill().await? == 0 {
                    return Err(if self.buf.is_empty() {
                        NodeError::NoReply
                    } else {
                        NodeError::ClosedInHead
                    });
                }
                continue;
            };
            let status = status.ok_or(NodeError::NoStatus)?;
            // The reason phrase byte for byte (httparse hides one with non-ASCII bytes).
            let line_end = self.buf.iter().position(|&b| b == b'\n').unwrap_or(0);
            let line = self.buf[..line_end].strip_suffix(b"\r").unwrap_or(&self.buf[..line_end]);
            let reason =
                line.splitn(3, |&b| b == b' ').nth(2).map(Bytes::copy_from_slice).unwrap_or_default();
            self.buf.advance(len);
            if status.is_informational() {
                // `100 Continue` and the like: the reply is still to come.
                continue;
            }
            self.framing = framing(method, status, &headers)?;
            return Ok(Head { status, reason, headers });
        }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, NodeError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => self.framing = Framing::Done,
                Framing::Length(left) => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(NodeError::ShortBody(left));
                    }
                    let n = (self.buf.len() as u64).min(left) as usize;
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                Framing::Close => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        self.framing = Framing::Done;
                        continue;
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Framing::ChunkedOrNot => self.framing = self.first_chunk().await?,
                Framing::ChunkSize => match chunk_size(&self.buf) {
                    Some(Ok((len, 0))) => {
                        self.buf.advance(len);
                        self.framing = Framing::Trailers;
                    }
                    Some(Ok((len, size))) => {
                        self.buf.advance(len);
                        self.framing = Framing::ChunkData(size);
                    }
                    Some(Err(())) => return Err(NodeError::ChunkSize),
                    None => self.more("a chunk size").await?,
                },
                Framing::ChunkData(0) => self.framing = Framing::ChunkEnd,
                Framing::ChunkData(left) => {
                    if self.buf.is_empty() {
                        self.more("a chunk").await?;
                    }
                    let n = (self.buf.len() as u64).min(left) as usize;
                    self.framing = Framing::ChunkData(left - n as u64);
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                Framing::ChunkEnd => {
                    if self.buf.len() < 2 {
                        self.more("a chunk's CRLF").await?;
                        continue;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(NodeError::ChunkCrlf);
                    }
                    self.buf.advance(2);
                    self.framing = Framing::ChunkSize;
                }
                Framing::Trailers => match self.buf.windows(2).position(|w| w == b"\r\n") {
                    // Trailers are not passed on; the empty line ends the body.
                    Some(0) => self.framing = Framing::Done,
                    Some(i) => self.buf.advance(i + 2),
                    None => self.more("the end of the chunked body").await?,
                },
            }
        }
    }

    /// Read more inside chunk framing, where the node's close or an endless line is an error.
    async fn more(&mut self, what: &'static str) -> Result<(), NodeError> {
        if self.buf.len() > MAX_LINE {
            return Err(NodeError::LongLine(what));
        }
        if self.fill().await? == 0 {
            return Err(NodeError::ClosedInChunks(what));
        }
        Ok(())
    }

    /// Decide how a body that claims `Transfer-Encoding: chunked` is framed: chunk framing
    /// when it starts with a chunk (checked through its CRLF up to [`FIRST_CHUNK`]), else
    /// EdgeLake's unframed body, read to the close.
    async fn first_chunk(&mut self) -> Result<Framing, NodeError> {
        loop {
            let complete = match chunk_size(&self.buf) {
                Some(Err(())) => return Ok(Framing::Close),
                Some(Ok((len, size))) if size > FIRST_CHUNK => {
                    return Ok(chunk_data(len, size, &mut self.buf));
                }
                Some(Ok((len, size))) => {
                    let end = len + size as usize;
                    if self.buf.len() >= end + 2 {
                        if &self.buf[end..end + 2] != b"\r\n" {
                            return Ok(Framing::Close);
                        }
                        return Ok(chunk_data(len, size, &mut self.buf));
                    }
                    false
                }
                None if self.buf.len() > MAX_LINE => return Ok(Framing::Close),
                None => false,
            };
            if !complete && self.fill().await? == 0 {
                // Closed before a whole first chunk: what came is the body.
                return Ok(Framing::Close);
            }
        }
    }
}

/// After a first chunk's size line of `len` bytes: its data next, or the trailers.
fn chunk_data(len: usize, size: u64, buf: &mut BytesMut) -> Framing {
    buf.advance(len);
    if size == 0 { Framing::Trailers } else { Framing::ChunkData(size) }
}

/// A chunk-size line at the start of `buf`: `(line length, size)`; `None` when incomplete.
/// Unlike `httparse::parse_chunk_size` alone, a line must start with a hex digit (an empty
/// line is not a last chunk).
fn chunk_size(buf: &[u8]) -> Option<Result<(usize, u64), ()>> {
    match buf.first() {
        None => return None,
        Some(b) if !b.is_ascii_hexdigit() => return Some(Err(())),
        Some(_) => {}
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete(found)) => Some(Ok(found)),
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Err(())),
    }
}

/// How the body after this head is delimited (RFC 9112 §6.3).
fn framing(method: &Method, status: StatusCode, headers: &HeaderMap) -> Result<Framing, NodeError> {
    if method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    let chunked = headers
        .get_all(axum::http::header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
    if chunked {
        return Ok(Framing::ChunkedOrNot);
    }
    if headers.contains_key(axum::http::header::TRANSFER_ENCODING) {
        return Ok(Framing::Close);
    }
    let mut lengths = headers.get_all(axum::http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(Framing::Close),
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Framing::Length)
            .ok_or_else(|| NodeError::ContentLength(v.clone())),
        (Some(_), Some(_)) => Err(NodeError::ContentLengths),
    }
}
