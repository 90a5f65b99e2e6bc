//! Policy JSON and the EdgeLake id algorithm on arbitrary input: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::policy::id::{policy_id, python_repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = python_repr(&v);
        let _ = policy_id(&v);
    }
});
