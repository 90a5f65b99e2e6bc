//! EdgeLake REST replies as the registry client reads them: any status, reason phrase and
//! body give policies (2xx with a JSON array only) or an error that formats — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::registry::anylog::parse_get_reply;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = 100 + u16::from_be_bytes([data[0], data[1]]) % 500;
    let rest = &data[2..];
    // Reason phrase up to the first NUL (absent when there is none), then the body.
    let (reason, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (Some(String::from_utf8_lossy(&rest[..i]).into_owned()), &rest[i + 1..]),
        None => (None, rest),
    };
    match parse_get_reply("blockchain get operator", status, reason.as_deref(), body) {
        Ok(policies) => {
            assert!((200..300).contains(&status), "policies from a {status} reply");
            let _ = policies.len();
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
});
