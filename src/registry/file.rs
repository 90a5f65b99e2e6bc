//! `file:///path/blockchain.json`: EdgeLake's local ledger format — one JSON policy per line,
//! written the way Python's `json.dumps` writes it (separators `", "` and `": "`, non-ASCII
//! escaped), each policy carrying `id`, `date` and `"ledger": "local"`.
//!
//! The ledger is written the way EdgeLake writes it: lines are only ever **appended** — a new
//! policy as its own line, a deleted one as EdgeLake's tombstone
//! `{"deleted": { "id" : "<id>", "ledger" : "local" }}` — each append one `write` on a file
//! opened `O_APPEND`, then fsynced. No line another writer appended is ever lost (EdgeLake
//! appends to the same file without any lock), and no line of another node is ever rewritten:
//! its bytes stay exactly as they were.
//!
//! Reading: the last line about an id decides — a policy line makes it live, a tombstone
//! removes it (a policy declared again after its tombstone is live again). A line without a
//! string `id` is not a policy (EdgeLake skips those too); lines that are not JSON are kept and
//! skipped. A last line without its newline is taken as still being written and read on the
//! next pass; netstrap's own append starts on a new line if it finds one.
//!
//! Several netstrap processes may share one file: declaring runs under an exclusive lock on
//! `<path>.lock` (look up, then append), so two of them cannot both insert; netstrap's reads
//! take the lock shared, so they never see half of a replace.
//!
//! Cost: the ledger is read once, into an index of the live policies (id, type, company, name
//! and where the line is), then only what was appended since ([`Index::refresh`]); a policy's
//! JSON is read back from its line when it is asked for. A rewritten or replaced file (another
//! inode, a shorter file, other bytes where the last read ended) is read again from the start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::RegistryError;
use super::declare::{Declared, identity, same_content};
use crate::policy::id::policy_id;

/// A line longer than this is not a policy EdgeLake wrote (policies are a few KiB): it is
/// skipped without being held in memory.
const MAX_LINE: usize = 1024 * 1024;

/// Bytes before the read position remembered to notice a file rewritten in place.
const TAIL: usize = 64;

/// A ledger file, its lock, and what has been read of it (shared by clones).
#[derive(Clone, Debug)]
pub struct FileLedger {
    path: PathBuf,
    index: Arc<Mutex<Index>>,
}

/// The live policies of the ledger as far as it was read.
#[derive(Debug, Default)]
struct Index {
    /// The file read: device and inode.
    file: Option<(u64, u64)>,
    /// Bytes read, up to the end of the last complete line.
    read_to: u64,
    /// The last (up to [`TAIL`]) bytes before `read_to`.
    tail: Vec<u8>,
    /// Live policies by id.
    live: HashMap<Box<str>, Entry>,
    /// The last [`FileLedger::nodes`] answer and `read_to` when it was made: a watch pass over
    /// an unchanged ledger reads no policy again.
    nodes: Option<(u64, Arc<[crate::registry::Node]>)>,
}

/// Where a live policy's line is, and what identifies it.
#[derive(Debug)]
struct Entry {
    offset: u64,
    len: u32,
    policy_type: Box<str>,
    company: Box<str>,
    name: Box<str>,
}

impl Entry {
    fn matches(&self, policy_type: &str, company: &str, name: &str) -> bool {
        &*self.policy_type == policy_type
            && self.company.eq_ignore_ascii_case(company)
            && self.name.eq_ignore_ascii_case(name)
    }
}

/// What one line says.
enum LineEvent {
    Policy { id: String, policy_type: String, company: String, name: String },
    Deleted { id: String },
    Nothing,
}

/// `{"<type>": {"id": .., "company": .., "name": .., ...}}`, read without building a tree:
/// the type (the first key) and the three strings that identify a policy.
struct Head {
    policy_type: String,
    id: Option<String>,
    company: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    company: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
}

/// A JSON string's value; `None` for any other JSON value.
fn text(raw: Option<&RawValue>) -> Option<String> {
    raw.filter(|r| r.get().starts_with('"')).and_then(|r| serde_json::from_str(r.get()).ok())
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Head, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a policy {\"<type>\": {...}}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let Some(policy_type) = map.next_key::<String>()? else {
                    return Err(serde::de::Error::custom("an empty object"));
                };
                let inner: Inner<'de> = map.next_value()?;
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Head {
                    policy_type,
                    id: text(inner.id),
                    company: text(inner.company),
                    name: text(inner.name),
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl LineEvent {
    fn of(line: &[u8]) -> LineEvent {
        let Ok(head) = serde_json::from_slice::<Head>(line) else { return LineEvent::Nothing };
        let Some(id) = head.id else { return LineEvent::Nothing };
        if head.policy_type == "deleted" {
            return LineEvent::Deleted { id };
        }
        LineEvent::Policy {
            id,
            policy_type: head.policy_type,
            company: head.company.unwrap_or_default(),
            name: head.name.unwrap_or_default(),
        }
    }
}

impl Index {
    /// Bring the index up to what `file` holds now: only what was appended since the last
    /// read, or everything when the file is another one or was rewritten.
    fn refresh(&mut self, file: &File) -> io::Result<()> {
        let meta = file.metadata()?;
        let id = (meta.dev(), meta.ino());
        if self.file != Some(id) || meta.len() < self.read_to || !self.tail_intact(file)? {
            *self = Index { file: Some(id), ..Index::default() };
        }
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        reader.seek(SeekFrom::Start(self.read_to))?;
        let mut line = Vec::new();
        loop {
            let start = self.read_to;
            let (len, complete) = read_line(&mut reader, &mut line)?;
            if !complete {
                return Ok(()); // nothing more, or a line still being written
            }
            self.read_to += len as u64;
            if len <= MAX_LINE {
                self.apply(start, &line);
                self.tail.extend_from_slice(&line[line.len().saturating_sub(TAIL)..]);
            } else {
                self.tail.clear(); // what was kept of the line is not its end
            }
            let cut = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..cut);
        }
    }

    fn apply(&mut self, offset: u64, line: &[u8]) {
        self.nodes = None;
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        match LineEvent::of(body) {
            LineEvent::Policy { id, policy_type, company, name } => {
                let entry = Entry {
                    offset,
                    len: body.len() as u32,
                    policy_type: policy_type.into(),
                    company: company.into(),
                    name: name.into(),
                };
                self.live.insert(id.into(), entry);
            }
            LineEvent::Deleted { id } => {
                self.live.remove(id.as_str());
            }
            LineEvent::Nothing => {}
        }
    }

    /// Whether the bytes before `read_to` are still the ones read.
    fn tail_intact(&self, file: &File) -> io::Result<bool> {
        if self.tail.is_empty() {
            return Ok(true);
        }
        let mut buf = vec![0; self.tail.len()];
        match file.read_exact_at(&mut buf, self.read_to - self.tail.len() as u64) {
            Ok(()) => Ok(buf == self.tail),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Live policies matching a predicate, in the order of their lines.
    fn entries(&self, keep: impl Fn(&Entry) -> bool) -> Vec<(&str, &Entry)> {
        let mut found: Vec<(&str, &Entry)> =
            self.live.iter().filter(|(_, e)| keep(e)).map(|(id, e)| (&**id, e)).collect();
        found.sort_by_key(|(_, e)| e.offset);
        found
    }
}

/// Read one line into `line` (at most [`MAX_LINE`] + 1 bytes of it kept): its length in the
/// file, and whether it ended with a newline.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    line.clear();
    let mut len = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((len, false));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        reader.consume(take);
        len += take;
        if done {
            return Ok((len, true));
        }
    }
}

impl FileLedger {
    pub fn new(path: impl Into<PathBuf>) -> FileLedger {
        FileLedger { path: path.into(), index: Arc::default() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, what: &str, e: io::Error) -> RegistryError {
        RegistryError::Unavailable(format!("{what} {}: {e}", self.path.display()))
    }

    /// Run `f` on the index brought up to date, under the lock (exclusive to write), with the
    /// ledger open for appending (`None` when it does not exist and `write` is false).
    fn locked<T>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Index, Option<&File>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let (true, Some(dir)) = (write, dir) {
            std::fs::create_dir_all(dir).map_err(|e| self.io_error("cannot create the directory of", e))?;
        }
        let lock_path = self.path.with_extension("json.lock");
        let lock = match OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path) {
            Ok(l) => Some(l),
            // A reader of a ledger in a directory it cannot write reads without the lock.
            Err(e)
                if !write
                    && matches!(
                        e.kind(),
                        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                    ) =>
            {
                None
            }
            Err(e) if !write && e.kind() == io::ErrorKind::NotFound => return f(&mut Index::default(), None),
            Err(e) => return Err(self.io_error("cannot open the lock file of", e)),
        };
        if let Some(lock) = &lock {
            let locked = if write { lock.lock() } else { lock.lock_shared() };
            locked.map_err(|e| self.io_error("cannot lock", e))?;
        }
        let mut open = OpenOptions::new();
        open.read(true);
        if write {
            open.append(true).create(true).mode(0o644);
        }
        let file = match open.open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return f(&mut Index::default(), None),
            Err(e) => return Err(self.io_error("cannot open", e)),
        };
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = index.refresh(&file) {
            *index = Index::default();
            return Err(self.io_error("cannot read", e));
        }
        f(&mut index, Some(&file))
    }

    /// The policy on a live entry's line.
    fn read(&self, file: &File, entry: &Entry) -> Result<Value, RegistryError> {
        let mut buf = vec![0; entry.len as usize];
        file.read_exact_at(&mut buf, entry.offset).map_err(|e| self.io_error("cannot read", e))?;
        serde_json::from_slice(&buf).map_err(|e| {
            RegistryError::Unavailable(format!(
                "{} changed while it was read (byte {}: {e}); retrying",
                self.path.display(),
                entry.offset
            ))
        })
    }

    fn read_all(&self, file: Option<&File>, entries: &[(&str, &Entry)]) -> Result<Vec<Value>, RegistryError> {
        let Some(file) = file else { return Ok(Vec::new()) };
        entries.iter().map(|(_, e)| self.read(file, e)).collect()
    }

    /// Live policies of `policy_type` whose company and name match case-insensitively, as
    /// EdgeLake matches.
    pub fn find(&self, policy_type: &str, company: &str, name: &str) -> Result<Vec<Value>, RegistryError> {
        self.locked(false, |index, file| {
            self.read_all(file, &index.entries(|e| e.matches(policy_type, company, name)))
        })
    }

    /// Every live node of the given types, read one policy at a time into what the peer check
    /// needs.
    pub fn nodes(&self, types: &[&str]) -> Result<Arc<[crate::registry::Node]>, RegistryError> {
        self.locked(false, |index, file| {
            let Some(file) = file else { return Ok(Arc::from([])) };
            if let Some((at, nodes)) = &index.nodes
                && *at == index.read_to
            {
                return Ok(nodes.clone());
            }
            let entries = index.entries(|e| types.contains(&&*e.policy_type));
            let mut nodes = Vec::with_capacity(entries.len());
            for (_, e) in entries {
                nodes.extend(crate::registry::Node::from_policy(&self.read(file, e)?));
            }
            let nodes: Arc<[crate::registry::Node]> = nodes.into();
            index.nodes = Some((index.read_to, nodes.clone()));
            Ok(nodes)
        })
    }

    /// Declare `policy` under the lock, so concurrent declarers (several netstrap processes
    /// sharing the file) cannot both insert: identical → nothing; different or duplicated →
    /// tombstones for the stored versions and the new line, in one append.
    pub fn declare(&self, policy: &Value) -> Result<Declared, RegistryError> {
        let (ty, company, name) = identity(policy)?;
        let stamped = stamp(policy)?;
        self.locked(true, |index, file| {
            let found = index.entries(|e| e.matches(&ty, &company, &name));
            if let [(id, entry)] = found.as_slice()
                && let Some(file) = file
                && same_content(&self.read(file, entry)?, policy)
            {
                return Ok(Declared::Unchanged { id: id.to_string() });
            }
            let old: Vec<String> = found.iter().map(|(id, _)| id.to_string()).collect();
            let id = id_of(&stamped).unwrap_or_default().to_string();
            self.append(file, &old, Some(&stamped))?;
            Ok(if old.is_empty() { Declared::Inserted { id } } else { Declared::Replaced { id, old } })
        })
    }

    /// Tombstone `old_ids` (those live) and add `policy` (if given) in one append. Returns the
    /// stored policy.
    pub fn replace(
        &self,
        old_ids: &[String],
        policy: Option<&Value>,
    ) -> Result<Option<Value>, RegistryError> {
        let stored = policy.map(stamp).transpose()?;
        self.locked(true, |index, file| {
            let dead: Vec<String> =
                old_ids.iter().filter(|id| index.live.contains_key(id.as_str())).cloned().collect();
            if let Some(id) = stored.as_ref().and_then(id_of)
                && index.live.contains_key(id)
                && !old_ids.iter().any(|o| o == id)
            {
                return Err(RegistryError::Refused(format!(
                    "a policy with id {id} is already in the ledger"
                )));
            }
            self.append(file, &dead, stored.as_ref())?;
            Ok(stored.clone())
        })
    }

    /// Append tombstones for `dead` and then `policy`, as one write, and make it durable.
    fn append(
        &self,
        file: Option<&File>,
        dead: &[String],
        policy: Option<&Value>,
    ) -> Result<(), RegistryError> {
        let Some(mut file) = file else {
            return Err(self.io_error("cannot open", io::Error::from(io::ErrorKind::NotFound)));
        };
        let mut text = String::new();
        // A line another writer left without its newline is not glued to ours.
        let len = file.metadata().map_err(|e| self.io_error("cannot read", e))?.len();
        let mut last = [0u8];
        if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
            text.push('\n');
        }
        for id in dead {
            text.push_str(&tombstone(id));
            text.push('\n');
        }
        if let Some(p) = policy {
            text.push_str(&python_json(p));
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        file.write_all(text.as_bytes()).map_err(|e| self.io_error("cannot append to", e))?;
        file.sync_data().map_err(|e| self.io_error("cannot sync", e))
    }
}

/// EdgeLake's tombstone line for a deleted policy, byte for byte as it writes it
/// (`blockchain.delete_policy`).
pub fn tombstone(id: &str) -> String {
    format!(r#"{{"deleted": {{ "id" : "{id}", "ledger" : "local" }}}}"#)
}

fn id_of(v: &Value) -> Option<&str> {
    v.as_object()?.values().next()?.get("id")?.as_str()
}

/// Add what EdgeLake adds on insert: `id`, then `date`, then `ledger`.
fn stamp(policy: &Value) -> Result<Value, RegistryError> {
    let id = policy_id(policy).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let Some((ty, inner)) = policy.as_object().and_then(|o| o.iter().next()) else {
        return Err(RegistryError::Invalid("a policy is {\"<type>\": {...}}".into()));
    };
    let mut out: Map<String, Value> = inner.as_object().cloned().unwrap_or_default();
    out.shift_remove("id");
    out.shift_remove("date");
    out.shift_remove("ledger");
    out.insert("id".into(), Value::String(id));
    out.insert("date".into(), Value::String(now_iso()));
    out.insert("ledger".into(), Value::String("local".into()));
    Ok(serde_json::json!({ ty.as_str(): Value::Object(out) }))
}

/// UTC now as EdgeLake writes it: `2026-11-24T08:10:11.123456Z`.
pub fn now_iso() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// JSON as Python's `json.dumps` writes it by default: `", "` and `": "` separators and
/// non-ASCII characters escaped as `\uXXXX`.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_py(v, &mut out);
    out
}

fn write_py(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, out);
                out.push_str(": ");
                write_py(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_str(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
