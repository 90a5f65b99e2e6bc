//! The embedded broker's backlog (`NETSTRAP_BROKER_BACKLOG`): a subscriber that falls behind
//! within it loses nothing; one that falls further behind skips the oldest messages, and every
//! skipped message is counted in `netstrap_broker_dropped_messages_total` and reported in the log.
//! Real processes: `netstrap run` with the embedded broker, rumqttc clients.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use support::process::{Netstrap, free_port, run_fails, start};

const TOPIC: &str = "data/readings";
const FILTER: &str = "data/#";

async fn start_broker(dir: &std::path::Path, extra: Vec<(&'static str, String)>) -> (Netstrap, u16) {
    let broker = free_port();
    let state = dir.to_path_buf();
    let n = tokio::task::spawn_blocking(move || {
        let mut env = vec![("ANYLOG_BROKER_PORT", broker.to_string())];
        env.extend(extra);
        let n = start(&state, &env);
        n.wait_ready();
        n
    })
    .await
    .unwrap();
    (n, broker)
}

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    AsyncClient::new(opts, 1000)
}

/// Poll until `done` says so for an event, failing after 30 s.
async fn poll_until(eventloop: &mut EventLoop, what: &str, mut done: impl FnMut(&Packet) -> bool) {
    let wait = async {
        loop {
            if let Event::Incoming(p) = eventloop.poll().await.expect(what)
                && done(&p)
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("{what}: timed out"));
}

/// A subscriber to `FILTER`, SUBACKed, whose event loop is then left alone (it stops reading).
async fn subscriber(port: u16, qos: QoS) -> (AsyncClient, EventLoop) {
    let (sub, mut events) = client("slow-subscriber", port);
    sub.subscribe(FILTER, qos).await.unwrap();
    poll_until(&mut events, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    (sub, events)
}

/// `count` QoS 1 messages of `size` bytes from publisher `id`, each PUBACKed; payload starts
/// with (publisher, sequence).
async fn publish(port: u16, id: u32, count: u32, size: usize) {
    let (publisher, mut events) = client(&format!("publisher-{id}"), port);
    let send = tokio::spawn(async move {
        for seq in 0..count {
            let mut payload = vec![b'x'; size];
            payload[..4].copy_from_slice(&id.to_be_bytes());
            payload[4..8].copy_from_slice(&seq.to_be_bytes());
            publisher.publish(TOPIC, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        publisher
    });
    let mut acked = 0;
    poll_until(&mut events, "PUBACKs", |p| {
        acked += u32::from(matches!(p, Packet::PubAck(_)));
        acked == count
    })
    .await;
    let _publisher = send.await.unwrap();
}

/// Read the subscriber until nothing arrives for 2 s: the distinct (publisher, sequence) seen,
/// and how many deliveries in all.
async fn drain(events: &mut EventLoop) -> (BTreeSet<(u32, u32)>, usize) {
    let mut seen = BTreeSet::new();
    let mut deliveries = 0;
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(2), events.poll()).await {
        if let Event::Incoming(Packet::Publish(p)) = event.expect("subscriber connection") {
            let id = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
            let seq = u32::from_be_bytes(p.payload[4..8].try_into().unwrap());
            seen.insert((id, seq));
            deliveries += 1;
        }
    }
    (seen, deliveries)
}

fn dropped(n: &Netstrap) -> u64 {
    let (_, body) = n.get("/metrics").expect("/metrics answers");
    body.lines()
        .find_map(|l| l.strip_prefix("netstrap_broker_dropped_messages_total "))
        .unwrap_or_else(|| panic!("no dropped-messages counter in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_within_the_backlog_gets_every_message() {
    let dir = tempfile::tempdir().unwrap();
    // 20 000 messages of 64 bytes take ~5 MiB as the backlog counts them (topic, payload and
    // ~200 bytes of bookkeeping each): within a 16 MiB backlog, beyond the 1 MiB default.
    let (n, port) = start_broker(dir.path(), vec![("NETSTRAP_BROKER_BACKLOG", "16MiB".into())]).await;
    let (_sub, mut events) = subscriber(port, QoS::AtLeastOnce).await;

    // Fan-in while the subscriber reads nothing: 10 publishers × 2000 (1.3 MB on the wire).
    let publishers: Vec<_> = (0..10).map(|id| tokio::spawn(publish(port, id, 2000, 64))).collect();
    for p in publishers {
        p.await.unwrap();
    }
    let (seen, _) = drain(&mut events).await;
    assert_eq!(seen.len(), 20_000, "every PUBACKed message reaches the subscriber that caught up");
    assert_eq!(dropped(&n), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_further_behind_skips_the_oldest_and_every_skipped_message_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = start_broker(dir.path(), vec![("NETSTRAP_BROKER_BACKLOG", "64KiB".into())]).await;
    let (_sub, mut events) = subscriber(port, QoS::AtMostOnce).await;

    // 4000 × 2 KiB = 8 MiB while the subscriber reads nothing: far more than 64 KiB of backlog
    // plus what the sockets on the way hold.
    const COUNT: u32 = 4000;
    publish(port, 0, COUNT, 2048).await;
    let (seen, deliveries) = drain(&mut events).await;
    let skipped = dropped(&n);
    eprintln!(
        "FIGURE stuck subscriber, 64 KiB backlog: {} of {COUNT} delivered, {skipped} counted as skipped",
        seen.len()
    );

    assert!(seen.len() < COUNT as usize, "the stuck subscriber cannot have got all {COUNT}");
    assert_eq!(deliveries, seen.len(), "no message delivered twice");
    assert!(seen.contains(&(0, COUNT - 1)), "the newest message is kept and delivered");
    assert_eq!(
        seen.len() as u64 + skipped,
        u64::from(COUNT),
        "delivered ({}) + counted as skipped ({skipped}) = published",
        seen.len()
    );

    let (code, log) = n.stop();
    assert_eq!(code, 0);
    let warning = log
        .lines()
        .find(|l| l.contains("NETSTRAP_BROKER_BACKLOG"))
        .unwrap_or_else(|| panic!("no warning about the skipped messages in the log:\n{log}"));
    assert!(warning.contains(FILTER) && warning.contains("WARN"), "{warning}");
    let noise = log.lines().filter(|l| l.contains("jumping to head")).count();
    assert_eq!(noise, 0, "rumqttd's own line per skipped read stays out of the default log:\n{log}");
}

#[test]
fn a_backlog_that_is_not_a_size_in_range_is_refused_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["16 megs", "1KiB", "8GiB", "-1"] {
        let err = run_fails(
            dir.path(),
            &[
                ("ANYLOG_BROKER_PORT", free_port().to_string()),
                ("NETSTRAP_BROKER_BACKLOG", value.to_string()),
            ],
        );
        assert!(
            err.contains("NETSTRAP_BROKER_BACKLOG") && err.contains("KiB, MiB or GiB, from 64KiB to 4GiB"),
            "{value}: {err}"
        );
    }
}
