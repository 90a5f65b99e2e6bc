//! The `file://` registry: EdgeLake's JSON-lines ledger, idempotent declare, several writers.

use netstrap::policy::id::policy_id;
use netstrap::registry::Registry;
use netstrap::registry::declare::{Declared, declare};
use netstrap::registry::file::python_json;
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::ledger;

/// The registry `NETSTRAP_LEDGER=<setting>` opens, or the configuration error an operator sees.
fn parse(setting: Option<&str>) -> Result<Registry, String> {
    use netstrap::config::{Layers, Origin, Settings};
    let pairs = setting.map(|s| ("NETSTRAP_LEDGER", s.to_string()));
    let settings = Settings::parse(&Layers::new().push(Origin::Env, pairs)).map_err(|e| e.to_string())?;
    Ok(Registry::open(&settings.ledger, "127.0.0.1:32048", netstrap::registry::REQUEST_TIMEOUT))
}

fn operator(ip: &str) -> Value {
    json!({"operator": {
        "name": "op-1", "company": "Acme Co", "hostname": "op", "ip": ip,
        "local_ip": "op.edge.svc.cluster.local", "port": 32148, "rest_port": 32149,
        "cluster": "7a3f", "loc": "0.0, 0.0", "country": "Unknown", "state": "Unknown", "city": "Unknown"
    }})
}

fn ledger() -> (tempfile::TempDir, Registry, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blockchain.json");
    let reg = parse(Some(&format!("file://{}", path.display()))).unwrap();
    (dir, reg, path)
}

/// The policies the ledger holds (per id, its last line decides).
fn lines(path: &std::path::Path) -> Vec<Value> {
    ledger::live(path)
}

#[tokio::test]
async fn declare_inserts_once_then_does_nothing_then_replaces_a_change() {
    let (_d, reg, path) = ledger();
    let first = declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    let Declared::Inserted { id } = &first else { panic!("{first:?}") };
    assert_eq!(id, &policy_id(&operator("op.edge.svc.cluster.local")).unwrap(), "EdgeLake's id");

    for _ in 0..5 {
        let again = declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
        assert_eq!(again, Declared::Unchanged { id: id.clone() });
    }
    assert_eq!(lines(&path).len(), 1);

    let changed = declare(&reg, &operator("203.0.113.9")).await.unwrap();
    let Declared::Replaced { id: new_id, old } = &changed else { panic!("{changed:?}") };
    assert_eq!(old, &vec![id.clone()]);
    let stored = lines(&path);
    assert_eq!(stored.len(), 1, "replaced, not added");
    assert_eq!(stored[0]["operator"]["id"], new_id.as_str());
    assert_eq!(stored[0]["operator"]["ip"], "203.0.113.9");
}

#[tokio::test]
async fn ledger_lines_are_edgelake_format() {
    let (_d, reg, path) = ledger();
    let mut p = operator("op.edge.svc.cluster.local");
    p["operator"]["city"] = json!("Zürich");
    declare(&reg, &p).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().next().unwrap();
    assert!(line.starts_with(r#"{"operator": {"name": "op-1", "company": "Acme Co", "#), "{line}");
    assert!(line.contains(r#""city": "Z\u00fcrich""#), "non-ASCII escaped as Python does: {line}");
    let v: Value = serde_json::from_str(line).unwrap();
    let inner = &v["operator"];
    let keys: Vec<&str> = inner.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(&keys[keys.len() - 3..], ["id", "date", "ledger"], "EdgeLake appends id, date, ledger");
    assert_eq!(inner["ledger"], "local");
    let date = inner["date"].as_str().unwrap();
    assert!(date.len() == 27 && date.ends_with('Z') && date.as_bytes()[19] == b'.', "{date}");
    assert_eq!(
        python_json(&json!({"a": [1, "b"], "c": {"d": null}})),
        r#"{"a": [1, "b"], "c": {"d": null}}"#
    );
}

#[tokio::test]
async fn foreign_lines_and_tombstones_are_respected() {
    let (_d, reg, path) = ledger();
    let other = json!({"master": {"name": "m", "company": "Acme Co", "id": "m1", "ledger": "global"}});
    let dead = json!({"operator": {"name": "op-1", "company": "Acme Co", "id": "dead1", "ledger": "local"}});
    std::fs::write(
        &path,
        format!(
            "{}\nnot json at all\n{}\n{}\n",
            python_json(&other),
            python_json(&dead),
            python_json(&json!({"deleted": {"id": "dead1", "ledger": "local"}}))
        ),
    )
    .unwrap();
    let d = declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    assert!(matches!(d, Declared::Inserted { .. }), "a tombstoned policy does not count: {d:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("not json at all"), "lines netstrap cannot read are kept");
    assert!(text.contains("\"m1\""), "other policies are kept");
}

#[test]
fn several_processes_declaring_at_once_leave_one_policy() {
    let (_d, _reg, path) = ledger();
    let url = format!("file://{}", path.display());
    // Threads with their own runtimes and file handles: the lock is per open file.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let reg = parse(Some(&url)).unwrap();
                let ip = if i % 2 == 0 { "203.0.113.1" } else { "203.0.113.2" };
                rt.block_on(declare(&reg, &operator(ip))).unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stored = lines(&path);
    assert_eq!(stored.len(), 1, "exactly one policy for the identity: {stored:?}");
}

#[test]
fn bad_ledger_settings_say_what_is_accepted() {
    let e = parse(Some("file://relative/path.json")).unwrap_err();
    assert!(e.contains("absolute path"), "{e}");
    // What is accepted is said by the configuration error around it (once: tests/it/cli.rs).
    let e = parse(Some("etcd://x")).unwrap_err();
    assert!(e.contains("anylog://host:port") && e.contains("file:///"), "{e}");
    // Said once: the variable and value, what is wrong, what is accepted.
    assert_eq!(e.matches("etcd://x").count(), 1, "{e}");
    assert_eq!(e.matches("NETSTRAP_LEDGER").count(), 1, "{e}");
    assert!(matches!(parse(None), Ok(Registry::None)));
    assert!(matches!(parse(Some("anylog://edgelake-master:32049")), Ok(Registry::Anylog(_))));
    for bad in ["anylog://edgelake-master", "anylog://:32049", "anylog://host:0", "anylog://host:32049/x"] {
        let e = parse(Some(bad)).unwrap_err();
        assert!(e.contains("anylog://host:rest_port"), "{bad}: {e}");
    }
}

/// Lines as EdgeLake (Python) and other tools write them, which a JSON round trip would change:
/// big integers, exponents, trailing zeros, duplicate keys, EdgeLake's own tombstone spacing,
/// and a line that is not JSON.
const FOREIGN: &[&str] = &[
    r#"{"master": {"name": "m", "company": "Acme Co", "big": 123456789012345678901234567890, "e": 1e2, "f": 1.10, "id": "m1", "ledger": "global"}}"#,
    r#"{"query": {"name": "q", "name": "dup", "company": "Other", "id": "q1", "ledger": "local"}}"#,
    r#"{"deleted": { "id" : "gone1", "ledger" : "local" }}"#,
    "not json at all",
];

#[tokio::test]
async fn other_writers_lines_keep_their_bytes_and_deletes_are_edgelakes_tombstones() {
    let (_d, reg, path) = ledger();
    let before = FOREIGN.join("\n") + "\n";
    std::fs::write(&path, &before).unwrap();
    let mut ids = Vec::new();
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.1", "203.0.113.3"] {
        ids.push(declare(&reg, &operator(ip)).await.unwrap().id().unwrap().to_string());
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&before), "other writers' bytes unchanged:\n{text}");
    // Everything after them is netstrap's: its policies and EdgeLake's tombstone, byte for byte.
    for line in text[before.len()..].lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v.get("deleted").is_some() {
            let id = v["deleted"]["id"].as_str().unwrap();
            assert_eq!(line, format!(r#"{{"deleted": {{ "id" : "{id}", "ledger" : "local" }}}}"#));
            assert!(ids.iter().any(|i| i == id), "only netstrap's own policies are deleted: {line}");
        } else {
            assert_eq!(v["operator"]["name"], "op-1", "{line}");
        }
    }
    let live = ledger::live_skipping_garbage(&path);
    let ops: Vec<&Value> = live.iter().filter(|v| v.get("operator").is_some()).collect();
    assert_eq!(ops.len(), 1, "{live:?}");
    assert_eq!(ops[0]["operator"]["id"], ids[3].as_str());
    assert_eq!(ops[0]["operator"]["ip"], "203.0.113.3");
    // A version declared again after its tombstone is live again (the last line decides).
    assert_eq!(ids[0], ids[2]);
    assert!(live.iter().any(|v| v["master"]["id"] == "m1") && live.iter().any(|v| v["query"]["id"] == "q1"));
}

#[test]
fn a_writer_appending_while_netstrap_processes_declare_loses_no_line() {
    let (_d, _reg, path) = ledger();
    let url = format!("file://{}", path.display());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // EdgeLake's append: open for appending, write the line, flush, fsync, close — no lock.
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut written = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 200 {
                let line = format!(
                    r#"{{"master": {{"name": "m{i}", "company": "Other", "n": 1.10, "id": "w{i}", "ledger": "local"}}}}"#
                );
                let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap();
                f.write_all(format!("{line}\n").as_bytes()).unwrap();
                f.sync_data().unwrap();
                written.push(line);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            written
        })
    };
    // Eight netstrap processes, each with its own file handles, replacing the policy back and
    // forth while the writer appends.
    let declarers: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let reg = parse(Some(&url)).unwrap();
                for round in 0..12 {
                    let ip = if (i + round) % 2 == 0 { "203.0.113.1" } else { "203.0.113.2" };
                    rt.block_on(declare(&reg, &operator(ip))).unwrap();
                }
            })
        })
        .collect();
    for d in declarers {
        d.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mine: Vec<&str> = text.lines().filter(|l| l.contains(r#""company": "Other""#)).collect();
    let lost = written.len() - written.iter().filter(|w| mine.contains(&w.as_str())).count();
    println!("FIGURE appended lines {} lost {lost}", written.len());
    assert_eq!(
        mine,
        written.iter().map(String::as_str).collect::<Vec<_>>(),
        "every line, in order, as written"
    );
    let ops: Vec<Value> = lines(&path).into_iter().filter(|v| v.get("operator").is_some()).collect();
    assert_eq!(ops.len(), 1, "one policy for the identity: {ops:?}");
}

/// This process's bytes read through `read` calls so far (`rchar` of /proc/self/io).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok()).unwrap()
}

#[tokio::test]
async fn a_large_ledger_is_read_once_then_only_what_was_appended() {
    use std::io::Write;
    let (_d, reg, path) = ledger();
    // The issue's ledger: 89 500 policies and 17 900 tombstones (~40 MB).
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..89_500u32 {
        let p = json!({"operator": {
            "name": format!("op-{i}"), "company": "Big Co", "hostname": format!("host-{i}"),
            "ip": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), "local_ip": "op.edge.svc.cluster.local",
            "port": 32148, "rest_port": 32149, "cluster": "7a3f5c0e9b1d2f4a6c8e0a2b4d6f8a1c",
            "loc": "40.7128, -74.0060", "country": "United States", "state": "New York", "city": "New York",
            "id": format!("{i:032x}"), "date": "2026-11-24T08:10:11.123456Z", "ledger": "global"}});
        writeln!(f, "{}", python_json(&p)).unwrap();
        if i % 5 == 0 {
            writeln!(f, r#"{{"deleted": {{ "id" : "{i:032x}", "ledger" : "local" }}}}"#).unwrap();
        }
    }
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();
    let t = std::time::Instant::now();
    let d = declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    assert!(matches!(d, Declared::Inserted { .. }), "{d:?}");
    println!("FIGURE ledger of {} MB: first declare {:.2} s", size / 1_000_000, t.elapsed().as_secs_f64());

    // A watch pass over an unchanged ledger reads none of it again.
    let read = bytes_read();
    let again = declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    assert!(matches!(again, Declared::Unchanged { .. }), "{again:?}");
    let nodes = reg.nodes().await.unwrap();
    assert_eq!(nodes.len(), 89_500 - 17_900 + 1, "live nodes");
    let t = std::time::Instant::now();
    let nodes_again = reg.nodes().await.unwrap();
    assert_eq!(nodes, nodes_again);
    let second_pass = t.elapsed();
    let first_nodes_read = bytes_read() - read;
    let read = bytes_read();
    declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    reg.nodes().await.unwrap();
    let pass = bytes_read() - read;
    println!(
        "FIGURE unchanged ledger: a pass (declare + node list) read {pass} bytes, node list from cache {:.3} s; \
         the first node list read {} MB",
        second_pass.as_secs_f64(),
        first_nodes_read / 1_000_000
    );
    assert!(pass < 64 * 1024, "a pass over an unchanged {size}-byte ledger read {pass} bytes");

    // What another writer appends is seen, and only it is read.
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    writeln!(f, r#"{{"deleted": {{ "id" : "{:032x}", "ledger" : "local" }}}}"#, 1u32).unwrap();
    drop(f);
    let read = bytes_read();
    declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    let pass = bytes_read() - read;
    assert!(pass < 64 * 1024, "after one appended line a look-up read {pass} bytes");
    assert_eq!(reg.nodes().await.unwrap().len(), nodes.len() - 1, "the appended tombstone counts");

    // A ledger rewritten in place (EdgeLake's sync with its master) is read again whole.
    let ours = lines(&path).into_iter().find(|v| v["operator"]["name"] == "op-1").unwrap();
    std::fs::write(&path, format!("{}\n", python_json(&ours))).unwrap();
    assert_eq!(reg.nodes().await.unwrap().len(), 1, "the rewritten ledger");
    let d = declare(&reg, &operator("op.edge.svc.cluster.local")).await.unwrap();
    assert!(matches!(d, Declared::Unchanged { .. }), "{d:?}");
}
