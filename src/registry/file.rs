//! `file:///path/blockchain.json`: EdgeLake's local ledger format — one JSON policy per line,
//! written the way Python's `json.dumps` writes it (separators `", "` and `": "`, non-ASCII
//! escaped), each policy carrying `id`, `date` and `"ledger": "local"`; a deleted policy
//! may leave a `{"deleted": {"id": ...}}` tombstone line (EdgeLake does until a sync).
//!
//! Several netstrap processes may share one file: every change runs under an exclusive
//! lock on `<path>.lock` (the ledger itself is replaced, so it cannot carry the lock), and
//! the new ledger is written to a temporary file, synced and renamed over the old one — a
//! crash leaves the old ledger or the new one, never a torn line. Lines netstrap cannot
//! parse are kept as they are.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::RegistryError;
use super::declare::{Declared, identity, same_content};
use crate::policy::id::policy_id;

/// A ledger file and its lock.
#[derive(Clone, Debug)]
pub struct FileLedger {
    path: PathBuf,
}

/// One line of the ledger.
enum Line {
    Policy(Value),
    Tombstone(String),
    Other(String),
}

impl FileLedger {
    pub fn new(path: impl Into<PathBuf>) -> FileLedger {
        FileLedger { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, what: &str, e: io::Error) -> RegistryError {
        RegistryError::Unavailable(format!("{what} {}: {e}", self.path.display()))
    }

    /// Run `f` with the ledger's lines under the exclusive lock; write back what it returns.
    fn with_lock<T>(
        &self,
        f: impl FnOnce(&mut Vec<Line>) -> Result<(T, bool), RegistryError>,
    ) -> Result<T, RegistryError> {
        let lock_path = self.path.with_extension("json.lock");
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io_error("cannot create the directory of", e))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io_error("cannot open the lock file of", e))?;
        lock.lock().map_err(|e| self.io_error("cannot lock", e))?;
        let mut lines = self.read_lines()?;
        let (out, changed) = f(&mut lines)?;
        if changed {
            let mut text = String::new();
            for l in &lines {
                match l {
                    Line::Policy(v) => text.push_str(&python_json(v)),
                    Line::Tombstone(id) => text.push_str(&python_json(
                        &serde_json::json!({"deleted": {"id": id, "ledger": "local"}}),
                    )),
                    Line::Other(s) => text.push_str(s),
                }
                text.push('\n');
            }
            crate::state::write_atomic(&self.path, text.as_bytes())
                .map_err(|e| self.io_error("cannot write", e))?;
        }
        drop(lock);
        Ok(out)
    }

    fn read_lines(&self) -> Result<Vec<Line>, RegistryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.io_error("cannot read", e)),
        };
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(v) => match v.get("deleted").and_then(|d| d.get("id")).and_then(Value::as_str) {
                    Some(id) => Line::Tombstone(id.to_string()),
                    None => Line::Policy(v),
                },
                Err(_) => Line::Other(l.to_string()),
            })
            .collect())
    }

    /// Live policies (not tombstoned) of `policy_type` whose company and name match
    /// case-insensitively, as EdgeLake matches.
    pub fn find(&self, policy_type: &str, company: &str, name: &str) -> Result<Vec<Value>, RegistryError> {
        let lines = self.read_lines()?;
        Ok(live(&lines).into_iter().filter(|v| matches(v, policy_type, company, name)).cloned().collect())
    }

    /// Every live policy of the given types.
    pub fn all(&self, types: &[&str]) -> Result<Vec<Value>, RegistryError> {
        let lines = self.read_lines()?;
        Ok(live(&lines)
            .into_iter()
            .filter(|v| {
                v.as_object().and_then(|o| o.keys().next()).is_some_and(|k| types.contains(&k.as_str()))
            })
            .cloned()
            .collect())
    }

    /// Declare `policy` under the lock, so concurrent declarers (several netstrap processes
    /// sharing the file) cannot both insert: identical → nothing; different or duplicated →
    /// replaced in one rewrite; absent → inserted.
    pub fn declare(&self, policy: &Value) -> Result<Declared, RegistryError> {
        let (ty, company, name) = identity(policy)?;
        let stamped = stamp(policy)?;
        self.with_lock(|lines| {
            let stored: Vec<Value> =
                live(lines).into_iter().filter(|v| matches(v, &ty, &company, &name)).cloned().collect();
            let ids: Vec<String> = stored.iter().filter_map(|v| id_of(v).map(String::from)).collect();
            if let [one] = stored.as_slice()
                && same_content(one, policy)
            {
                return Ok((Declared::Unchanged { id: ids[0].clone() }, false));
            }
            lines.retain(|l| match l {
                Line::Policy(v) => !id_of(v).is_some_and(|id| ids.iter().any(|x| x == id)),
                Line::Tombstone(id) => !ids.contains(id),
                Line::Other(_) => true,
            });
            let id = id_of(&stamped).unwrap_or_default().to_string();
            lines.push(Line::Policy(stamped.clone()));
            let done =
                if ids.is_empty() { Declared::Inserted { id } } else { Declared::Replaced { id, old: ids } };
            Ok((done, true))
        })
    }

    /// Remove `old_ids` and add `policy` (if given) in one atomic rewrite: readers never see
    /// zero or two versions. Returns the stored policy.
    pub fn replace(
        &self,
        old_ids: &[String],
        policy: Option<&Value>,
    ) -> Result<Option<Value>, RegistryError> {
        let stored = policy.map(stamp).transpose()?;
        self.with_lock(|lines| {
            let before = lines.len();
            lines.retain(|l| match l {
                Line::Policy(v) => !old_ids.iter().any(|id| id_of(v) == Some(id.as_str())),
                Line::Tombstone(id) => !old_ids.contains(id),
                Line::Other(_) => true,
            });
            let mut changed = lines.len() != before;
            if let Some(p) = &stored {
                let id = id_of(p).unwrap_or_default().to_string();
                if live(lines).iter().any(|v| id_of(v) == Some(id.as_str())) {
                    return Err(RegistryError::Refused(format!(
                        "a policy with id {id} is already in the ledger"
                    )));
                }
                lines.push(Line::Policy(p.clone()));
                changed = true;
            }
            Ok((stored.clone(), changed))
        })
    }
}

fn id_of(v: &Value) -> Option<&str> {
    v.as_object()?.values().next()?.get("id")?.as_str()
}

fn live(lines: &[Line]) -> Vec<&Value> {
    let dead: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Tombstone(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Policy(v) if !id_of(v).is_some_and(|id| dead.contains(&id)) => Some(v),
            _ => None,
        })
        .collect()
}

fn matches(v: &Value, policy_type: &str, company: &str, name: &str) -> bool {
    let Some(inner) = v.get(policy_type) else { return false };
    let eq = |k: &str, want: &str| {
        inner.get(k).and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case(want))
    };
    eq("company", company) && eq("name", name)
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
