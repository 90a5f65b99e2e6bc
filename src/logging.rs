//! Logs: human-readable on a terminal, JSON lines with `NETSTRAP_LOG_FORMAT=json`, to stderr
//! so stdout stays for command output.

use tracing_subscriber::EnvFilter;

use crate::config::Settings;

pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a human at a terminal; plain text in files and `kubectl logs`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) is harmless.
    let _ = if settings.log_json { builder.json().try_init() } else { builder.try_init() };
}
