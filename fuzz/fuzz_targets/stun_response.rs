//! STUN responses from an untrusted network: errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::discover::stun::parse_binding_response;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 12 {
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&data[..12]);
        let _ = parse_binding_response(&data[12..], &txid);
    }
});
