//! The peer protocol's line handler on arbitrary lines: one JSON answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::planes::NodeSnapshot;
use netstrap::planes::tcp::handle_line;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let answer = handle_line(&line, &NodeSnapshot::default());
    assert!(serde_json::from_str::<serde_json::Value>(&answer).is_ok(), "answer is JSON");
    assert!(!answer.contains('\n'), "one line");
});
