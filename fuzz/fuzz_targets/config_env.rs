//! Configuration from arbitrary environment and TOML text: errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstrap::config::{Layers, Origin, Settings, parse_toml};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (env, file) = text.split_once('\u{0}').unwrap_or((&text, ""));
    let pairs: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut layers = Layers::new().push(Origin::Env, pairs);
    if let Ok(f) = parse_toml(file) {
        layers = layers.push(Origin::File("fuzz.toml".into()), f);
    }
    let _ = Settings::parse(&layers);
});
