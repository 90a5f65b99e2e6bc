//! Logs: human-readable on a terminal, JSON lines with `NETSTRAP_LOG_FORMAT=json`, to stderr
//! so stdout stays for command output. Beside the log, whatever `NETSTRAP_LOG` filters out,
//! rumqttd's report of messages skipped for a lagging subscriber is always read
//! (`logging::broker_drops`).

pub mod broker_drops;

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
        .with(crate::logging::broker_drops::layer())
        .try_init();
}

/// At most one log line per `every` for a recurring condition (an upstream that refuses every
/// connection while the node restarts must not write a line per connection): `allow` says
/// whether to log now, and how many occurrences were not logged since the last line.
pub struct Throttle {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: std::time::Duration) -> Throttle {
        Throttle { every, state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(suppressed)` when this occurrence is to be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn throttle_logs_the_first_and_counts_the_rest() {
        let t = Throttle::new(std::time::Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t0 = Throttle::new(std::time::Duration::ZERO);
        assert_eq!(t0.allow(), Some(0));
        assert_eq!(t0.allow(), Some(0));
    }
}
