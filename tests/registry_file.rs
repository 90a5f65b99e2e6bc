//! The `file://` registry: EdgeLake's JSON-lines ledger, idempotent declare, several writers.

use netstrap::policy::id::policy_id;
use netstrap::registry::Registry;
use netstrap::registry::declare::{Declared, declare};
use netstrap::registry::file::python_json;
use serde_json::{Value, json};

fn parse(setting: Option<&str>) -> Result<Registry, String> {
    Registry::parse(setting, "127.0.0.1:32048", netstrap::registry::REQUEST_TIMEOUT)
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

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line parses"))
        .collect()
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
    let e = parse(Some("etcd://x")).unwrap_err();
    assert!(e.contains("anylog://host:port") && e.contains("file:///"), "{e}");
    assert!(matches!(parse(None), Ok(Registry::None)));
    assert!(matches!(parse(Some("anylog://edgelake-master:32049")), Ok(Registry::Anylog(_))));
    for bad in ["anylog://edgelake-master", "anylog://:32049", "anylog://host:0", "anylog://host:32049/x"] {
        let e = parse(Some(bad)).unwrap_err();
        assert!(e.contains("anylog://host:rest_port"), "{bad}: {e}");
    }
}
