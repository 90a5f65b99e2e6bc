//! A `file://` ledger with any bytes in it, as another writer may leave it: reading it never
//! panics, and declaring into it only appends (the bytes that were there stay a prefix of the
//! file) and leaves exactly one live policy of the identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::registry::file::FileLedger;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("netstrap-fuzz-ledger-{}.json", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let ledger = FileLedger::new(&path);
    let _ = ledger.find("operator", "Acme Co", "op-1");
    let _ = ledger.nodes(netstrap::registry::NODE_TYPES);
    let policy = json!({"operator": {"name": "op-1", "company": "Acme Co", "ip": "203.0.113.1", "port": 32148}});
    ledger.declare(&policy).unwrap();
    let after = std::fs::read(&path).unwrap();
    assert!(after.starts_with(data), "the ledger's bytes were rewritten");
    assert_eq!(ledger.find("operator", "Acme Co", "op-1").unwrap().len(), 1);
    // A second handle, reading the file from the start, agrees.
    assert_eq!(FileLedger::new(&path).find("operator", "ACME CO", "OP-1").unwrap().len(), 1);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("json.lock"));
});
