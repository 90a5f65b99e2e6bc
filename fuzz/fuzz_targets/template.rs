//! The `!var` template language on arbitrary text: errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::policy::template::{expand, render_policy_text};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars = [("ip", "10.0.0.1"), ("port", "32048"), ("flag", "false"), ("bang", "!ip"), ("name", "A b")];
    let env = [("HOME", "/root"), ("REF", "!port")];
    let _ = expand(&text, &vars, &env);
    let _ = render_policy_text(&text, &vars, &env);
});
