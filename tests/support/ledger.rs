//! Reading a `file://` ledger the way its format means it, independently of netstrap's own
//! reader: lines are only appended; per policy id the last line decides — a policy line makes
//! it live, a tombstone `{"deleted": {"id": ...}}` removes it.

use std::path::Path;

use serde_json::Value;

/// Every line of the ledger, each parsed (a torn line fails the test); none if there is no file.
pub fn lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn ledger line {l:?}: {e}")))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The id of a policy line `{"<type>": {"id": ...}}` (tombstones included).
pub fn id(v: &Value) -> Option<&str> {
    v.as_object()?.values().next()?.get("id")?.as_str()
}

/// The policies the ledger holds now, in the order of their last line.
pub fn live(path: &Path) -> Vec<Value> {
    live_of(lines(path))
}

/// As [`live`], for a ledger with lines that are not JSON (skipped, as EdgeLake skips them).
pub fn live_skipping_garbage(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    live_of(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn live_of(all: Vec<Value>) -> Vec<Value> {
    let last: std::collections::HashMap<&str, usize> =
        all.iter().enumerate().filter_map(|(i, v)| Some((id(v)?, i))).collect();
    let keep: Vec<bool> = all
        .iter()
        .enumerate()
        .map(|(i, v)| id(v).is_some_and(|id| last[id] == i) && v.get("deleted").is_none())
        .collect();
    all.into_iter().zip(keep).filter(|(_, k)| *k).map(|(v, _)| v).collect()
}
