//! Messages the embedded broker skipped for a subscriber that fell too far behind, and
//! subscribers it disconnected for holding publishers up.
//!
//! rumqttd keeps, per subscribed topic filter, a bounded log of recent messages
//! (`NETSTRAP_BROKER_BACKLOG`). With rumqttd patch 13 (`NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT`,
//! on by default) a publisher waits when its message would push out of that log one a subscriber
//! has not read yet; a subscriber that holds publishers up for the timeout is disconnected, which
//! rumqttd reports as a `warn!` event ("Slow subscriber disconnected", fields `slow_subscriber`,
//! `filter`, `waited_ms`): netstrap counts it in
//! `netstrap_broker_slow_subscribers_disconnected_total` and logs it (throttled).
//!
//! Without the patch's wait (timeout 0), and still where nobody waits (a client's own
//! subscription never holds up its own publishes), when a subscriber's read position falls off
//! the start of that log, rumqttd moves it to the oldest
//! message still kept, and the messages in between are never delivered to that subscriber —
//! QoS 1 included, although every publish was acknowledged. rumqttd reports this only as a
//! `warn!` event of its router ("Read cursor start jumped from (segment, offset) to (segment,
//! offset) on <filter>") and an alert on a link netstrap cannot reach from outside the crate.
//!
//! So netstrap reads that event with a tracing layer of its own, whatever the log filter says,
//! and turns it into what an operator needs: the counter `netstrap_broker_dropped_messages_total`
//! and a warning naming the filter, how many messages were skipped and what to change — at most
//! one warning per filter every [`WARN_EVERY`], with the count since the last one.
//! `tests/it/broker_backlog.rs` pins the event's shape: a rumqttd upgrade that changes it fails
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

/// Subscribers disconnected for holding publishers up (rumqttd patch 13) since start.
pub static SLOW_DISCONNECTED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// One line per 10 s about disconnected slow subscribers, with the number not logged.
static SLOW_LOG: crate::logging::Throttle = crate::logging::Throttle::new(WARN_EVERY);

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
        if let Some(client) = &jump.slow_subscriber {
            SLOW_DISCONNECTED.inc();
            if let Some(suppressed) = SLOW_LOG.allow() {
                let (filter, waited_ms) = (&jump.filter, &jump.waited_ms);
                tracing::warn!(
                    client,
                    filter,
                    waited_ms,
                    suppressed,
                    "broker: disconnected subscriber {client}: it did not read on for {waited_ms} ms while \
                     publishers to {filter} waited for it (NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT)"
                );
            }
            return;
        }
        let Some((filter, lost)) = jump.parse() else { return };
        // A read position at the very end of the dropped segment skips nothing.
        if lost == 0 {
            return;
        }
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
    /// The fields of rumqttd's "Slow subscriber disconnected" event (patch 13).
    slow_subscriber: Option<String>,
    filter: String,
    waited_ms: u64,
}

impl Visit for Jump {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "error" => self.message = value.to_string(),
            "slow_subscriber" => self.slow_subscriber = Some(value.to_string()),
            "filter" => self.filter = value.to_string(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "waited_ms" {
            self.waited_ms = value;
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
            ..Default::default()
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
            ..Default::default()
        };
        assert_eq!(garbled.parse(), None);
    }
}
