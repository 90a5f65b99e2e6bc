//! Logs: human-readable on a terminal, JSON lines with `NETSTRAP_LOG_FORMAT=json`, to stderr
//! so stdout stays for command output. Beside the log, whatever `NETSTRAP_LOG` filters out,
//! rumqttd's report of messages skipped for a lagging subscriber is always read
//! (`planes::broker_drops`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Settings;

pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a human at a terminal; plain text in files and `kubectl logs`.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if settings.log_json { fmt.json().boxed() } else { fmt.boxed() };
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(crate::planes::broker_drops::layer())
        .try_init();
}
