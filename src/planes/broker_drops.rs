//! Messages the embedded broker skipped for a subscriber that fell too far behind.
//!
//! rumqttd keeps, per subscribed topic filter, a bounded log of recent messages
//! (`NETSTRAP_BROKER_BACKLOG`). Publishers are never slowed down by subscribers: when a
//! subscriber's read position falls off the start of that log, rumqttd moves it to the oldest
//! message still kept, and the messages in between are never delivered to that subscriber —
//! QoS 1 included, although every publish was acknowledged. rumqttd reports this only as a
//! `warn!` event of its router ("Read cursor start jumped from (segment, offset) to (segment,
//! offset) on <filter>") and an alert on a link netstrap cannot reach from outside the crate.
//!
//! So netstrap reads that event with a tracing layer of its own, whatever the log filter says,
//! and turns it into what an operator needs: the counter `netstrap_broker_dropped_messages_total`
//! and a warning naming the filter, how many messages were skipped and what to change — at most
//! one warning per filter every [`WARN_EVERY`], with the count since the last one.
//! `tests/broker_backlog.rs` pins the event's shape: a rumqttd upgrade that changes it fails
//! there, not silently in production.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};

/// The target rumqttd's router logs the cursor jump under.
const TARGET: &str = "rumqttd::router::routing";
/// A filter's drops are reported at most this often (a stuck subscriber drops continuously).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Messages skipped for lagging subscribers since start (one per subscriber and message).
pub static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The layer, with the filter it needs: rumqttd's router at warn, nothing else.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    DropLayer { pending: Mutex::new(HashMap::new()) }
        .with_filter(Targets::new().with_target(TARGET, Level::WARN))
}

struct DropLayer {
    /// Per filter: when it was last reported and the messages skipped since.
    pending: Mutex<HashMap<String, (Option<Instant>, u64)>>,
}

impl<S: Subscriber> Layer<S> for DropLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut jump = Jump::default();
        event.record(&mut jump);
        let Some((filter, lost)) = jump.parse() else { return };
        DROPPED.inc_by(lost);
        let Ok(mut pending) = self.pending.lock() else { return };
        let entry = pending.entry(filter.clone()).or_insert((None, 0));
        entry.1 += lost;
        let now = Instant::now();
        if entry.0.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            return;
        }
        let skipped = std::mem::take(&mut entry.1);
        entry.0 = Some(now);
        drop(pending);
        tracing::warn!(
            filter,
            skipped,
            "broker: a subscriber fell further behind than NETSTRAP_BROKER_BACKLOG allows; \
             {skipped} messages on {filter} were skipped for it (a slow or stuck subscriber: \
             raise NETSTRAP_BROKER_BACKLOG, or relay to a broker that queues on disk)"
        );
    }
}

/// The fields of rumqttd's cursor-jump event.
#[derive(Default)]
struct Jump {
    message: String,
    request_cursor: String,
    start_cursor: String,
}

impl Visit for Jump {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "error" {
            self.message = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "error" => &mut self.message,
            "request_cursor" => &mut self.request_cursor,
            "start_cursor" => &mut self.start_cursor,
            _ => return,
        };
        slot.clear();
        let _ = write!(slot, "{value:?}");
    }
}

impl Jump {
    /// `(filter, messages skipped)`, when this is a cursor jump.
    fn parse(&self) -> Option<(String, u64)> {
        let (_, filter) = self.message.strip_prefix("Read cursor start jumped")?.rsplit_once(" on ")?;
        let from = offset(&self.request_cursor)?;
        let to = offset(&self.start_cursor)?;
        Some((filter.trim_matches('"').to_string(), to.saturating_sub(from)))
    }
}

/// The absolute offset of a rumqttd cursor, printed as `(segment, offset)`.
fn offset(cursor: &str) -> Option<u64> {
    let (_, offset) = cursor.trim().strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    offset.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rumqttds_cursor_jump() {
        let jump = Jump {
            message: "Read cursor start jumped from (0, 120) to (3, 4096) on data/+".into(),
            request_cursor: "(0, 120)".into(),
            start_cursor: "(3, 4096)".into(),
        };
        assert_eq!(jump.parse(), Some(("data/+".to_string(), 3976)));
    }

    #[test]
    fn ignores_other_router_warnings() {
        let other = Jump { message: "Connection was scheduled multiple times".into(), ..Default::default() };
        assert_eq!(other.parse(), None);
        let garbled = Jump {
            message: "Read cursor start jumped from x to y on t".into(),
            request_cursor: "x".into(),
            start_cursor: "y".into(),
        };
        assert_eq!(garbled.parse(), None);
    }
}
