//! The embedded broker's backlog (`NETSTRAP_BROKER_BACKLOG`) and slow subscribers. A subscriber
//! that falls behind within the backlog loses nothing. One that falls further behind holds its
//! publishers up (rumqttd patch 13: no PUBACK, their sockets not read) and still gets every
//! message, QoS 0 and 1; one that holds them up for `NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT` is
//! disconnected and counted, and the others go on. With the timeout at 0 nobody waits: the
//! subscriber skips the oldest messages, and every skipped message is counted in
//! `netstrap_broker_dropped_messages_total` and reported in the log.
//! Real processes: `netstrap run` with the embedded broker, rumqttc clients.

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
// `free_port` (support/ports.rs): the broker's memory is measured on its own process (`rss_kib`).
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
    drain_for(events, Duration::from_secs(2)).await
}

fn dropped(n: &Netstrap) -> u64 {
    metric(n, "netstrap_broker_dropped_messages_total")
}

/// A counter of netstrap's `/metrics`.
fn metric(n: &Netstrap, name: &str) -> u64 {
    let (_, body) = n.get("/metrics").expect("/metrics answers");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// A publisher whose event loop runs until the test ends: `count` messages of `size` bytes at
/// `qos`, payload starting with (publisher, sequence); `done` counts PUBACKs (QoS 1) or
/// publishes written (QoS 0).
fn spawn_publisher(port: u16, id: u32, qos: QoS, count: u32, size: usize, done: Arc<AtomicU64>) {
    let (publisher, mut events) = client(&format!("publisher-{id}"), port);
    let sender = publisher.clone();
    tokio::spawn(async move {
        for seq in 0..count {
            let mut payload = vec![b'x'; size];
            payload[..4].copy_from_slice(&id.to_be_bytes());
            payload[4..8].copy_from_slice(&seq.to_be_bytes());
            sender.publish(TOPIC, qos, false, payload).await.unwrap();
        }
    });
    tokio::spawn(async move {
        let _publisher = publisher;
        loop {
            let counted = match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => qos == QoS::AtLeastOnce,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => qos == QoS::AtMostOnce,
                Ok(_) => false,
                // The connection ends with the test (the counts tell whether it ended early).
                Err(_) => return,
            };
            done.fetch_add(u64::from(counted), Ordering::Relaxed);
        }
    });
}

/// Polls `/livez` every 20 ms and samples netstrap's RSS until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, usize, u64)>>,
}

impl Watch {
    fn start(n: &Netstrap) -> Watch {
        let (rest, pid) = (n.rest, n.child.id());
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut polls, mut failures, mut peak) = (0, 0, 0);
            while !s.load(Ordering::Relaxed) {
                if support::process::http_get(rest, "/livez").map(|(c, _)| c) != Some(200) {
                    failures += 1;
                }
                polls += 1;
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            (polls, failures, peak)
        });
        Watch { stop, thread: Some(thread) }
    }

    /// Stop; assert `/livez` answered 200 every time; the peak RSS, KiB.
    fn check(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (polls, failures, peak) = self.thread.take().unwrap().join().unwrap();
        assert!(polls > 0 && failures == 0, "/livez failed {failures} of {polls} polls");
        peak
    }
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Wait until `/metrics`' count of PUBLISH packets the broker read stops moving for 1 s (at
/// most 10 s); that count.
async fn taken_when_settled(n: &Netstrap) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = metric(n, "netstrap_broker_messages_total");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = metric(n, "netstrap_broker_messages_total");
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Fan-in far bigger than the backlog while the one subscriber reads nothing, then it reads.
async fn slow_subscriber_of_a_fan_in(qos: QoS) {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = start_broker(dir.path(), vec![("NETSTRAP_BROKER_BACKLOG", "64KiB".into())]).await;
    let watch = Watch::start(&n);
    let (_sub, mut events) = subscriber(port, qos).await;

    // 4 × 2000 × 2 KiB = 16 MiB: 250 times the backlog, more than the sockets on the way hold.
    const PUBLISHERS: u32 = 4;
    const COUNT: u32 = 2000;
    const TOTAL: u64 = (PUBLISHERS * COUNT) as u64;
    let done = Arc::new(AtomicU64::new(0));
    for id in 0..PUBLISHERS {
        spawn_publisher(port, id, qos, COUNT, 2048, done.clone());
    }
    let taken = taken_when_settled(&n).await;
    eprintln!(
        "FIGURE fan-in {qos:?}, subscriber reading nothing, 64 KiB backlog: the broker took {taken} of {TOTAL} \
         publishes, publishers saw {} done",
        done.load(Ordering::Relaxed)
    );
    assert!(
        taken < TOTAL / 2,
        "publishers held back while the subscriber reads nothing: broker took {taken} of {TOTAL}"
    );
    if qos == QoS::AtLeastOnce {
        let acked = done.load(Ordering::Relaxed);
        assert!(
            acked < TOTAL / 2,
            "no PUBACK for what the subscriber has not got room for: {acked} of {TOTAL}"
        );
    }

    let (seen, deliveries) = drain(&mut events).await;
    assert_eq!(seen.len() as u64, TOTAL, "the slow subscriber gets every message");
    assert_eq!(deliveries as u64, TOTAL, "and each once");
    assert_eq!(dropped(&n), 0);
    assert_eq!(done.load(Ordering::Relaxed), TOTAL, "every publish done");
    let peak = watch.check();
    eprintln!("FIGURE fan-in {qos:?}: peak RSS {peak} KiB");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_of_a_fan_in_gets_every_qos0_message_and_slows_its_publishers() {
    slow_subscriber_of_a_fan_in(QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_of_a_fan_in_gets_every_qos1_message_and_slows_its_publishers() {
    slow_subscriber_of_a_fan_in(QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_is_disconnected_after_the_timeout_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = start_broker(
        dir.path(),
        vec![
            ("NETSTRAP_BROKER_BACKLOG", "64KiB".into()),
            ("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT", "2".into()),
        ],
    )
    .await;
    let watch = Watch::start(&n);
    let (_stuck, mut stuck_events) = subscriber(port, QoS::AtLeastOnce).await;

    // A subscriber that reads, and a client that reads what it publishes itself (its own
    // subscription never holds up its own publishes: no deadlock).
    let mut readers = Vec::new();
    for name in ["reader", "echo"] {
        let (c, mut ev) = client(name, port);
        c.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
        poll_until(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
        if name == "echo" {
            let sender = c.clone();
            tokio::spawn(async move {
                for seq in 0..1000u32 {
                    let mut payload = vec![b'e'; 2048];
                    payload[..4].copy_from_slice(&9u32.to_be_bytes());
                    payload[4..8].copy_from_slice(&seq.to_be_bytes());
                    sender.publish(TOPIC, QoS::AtLeastOnce, false, payload).await.unwrap();
                }
            });
        }
        readers.push(tokio::spawn(async move {
            let _c = c;
            drain_for(&mut ev, Duration::from_secs(5)).await
        }));
    }
    let start = Instant::now();
    let publishers: Vec<_> = (0..3).map(|id| tokio::spawn(publish(port, id, 1000, 2048))).collect();
    for p in publishers {
        p.await.unwrap();
    }
    eprintln!(
        "FIGURE 3 × 1000 QoS 1 publishes PUBACKed in {:?} with a stuck subscriber (timeout 2 s)",
        start.elapsed()
    );

    let (seen, deliveries) = readers.remove(0).await.unwrap();
    assert_eq!(seen.len(), 4000, "a subscriber that reads gets every message");
    assert_eq!(deliveries, 4000, "each once");
    // The client reading what it publishes got its publishes through (no deadlock); while its
    // writes were held up its client read nothing, and its own lag does not hold up its own
    // publishes: what it skipped is counted.
    let (echo, _) = readers.remove(0).await.unwrap();
    let skipped = dropped(&n);
    eprintln!(
        "FIGURE the client reading its own publishes: {} of 4000 delivered, {skipped} counted as skipped",
        echo.len()
    );
    assert_eq!(echo.len() as u64 + skipped, 4000, "delivered to the echo client + counted as skipped");
    // The stuck one was disconnected: what its socket holds, then the end.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if stuck_events.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the subscriber that read nothing is still connected");
    assert_eq!(metric(&n, "netstrap_broker_slow_subscribers_disconnected_total"), 1);
    let peak = watch.check();
    eprintln!("FIGURE stuck subscriber: peak RSS {peak} KiB");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");

    let (code, log) = n.stop();
    assert_eq!(code, 0);
    let line = log
        .lines()
        .find(|l| l.contains("disconnected subscriber slow-subscriber"))
        .unwrap_or_else(|| panic!("no warning about the disconnected subscriber:\n{log}"));
    assert!(line.contains("WARN") && line.contains("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT"), "{line}");
}

/// Read a subscriber until nothing arrives for `quiet`: the distinct (publisher, sequence)
/// seen, and how many deliveries in all.
async fn drain_for(events: &mut EventLoop, quiet: Duration) -> (BTreeSet<(u32, u32)>, usize) {
    let mut seen = BTreeSet::new();
    let mut deliveries = 0;
    while let Ok(event) = tokio::time::timeout(quiet, events.poll()).await {
        if let Event::Incoming(Packet::Publish(p)) = event.expect("subscriber connection") {
            let id = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
            let seq = u32::from_be_bytes(p.payload[4..8].try_into().unwrap());
            seen.insert((id, seq));
            deliveries += 1;
        }
    }
    (seen, deliveries)
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
async fn without_waiting_a_subscriber_further_behind_skips_the_oldest_and_every_skipped_message_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = start_broker(
        dir.path(),
        vec![
            ("NETSTRAP_BROKER_BACKLOG", "64KiB".into()),
            ("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT", "0".into()),
        ],
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filters_backlog_is_given_back_when_its_last_subscriber_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (n, port) = start_broker(dir.path(), vec![("NETSTRAP_BROKER_BACKLOG", "16MiB".into())]).await;
    let pid = n.child.id();
    let (publisher, mut pub_events) = client("publisher", port);
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });

    // Six rounds, each on a filter of its own: a subscriber comes, 16 MiB of messages fill its
    // filter's backlog, the subscriber reads them all and leaves.
    let mut rss = Vec::new();
    for round in 0..6u32 {
        let filter = format!("load/{round}");
        let (sub, mut events) = client(&format!("reader-{round}"), port);
        sub.subscribe(&filter, QoS::AtMostOnce).await.unwrap();
        poll_until(&mut events, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
        for seq in 0..4000u32 {
            let mut payload = vec![b'x'; 4096];
            payload[4..8].copy_from_slice(&seq.to_be_bytes());
            publisher.publish(filter.as_str(), QoS::AtMostOnce, false, payload).await.unwrap();
        }
        let (seen, _) = drain(&mut events).await;
        assert_eq!(seen.len(), 4000, "round {round}: the subscriber gets every message");
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(pid));
    }
    eprintln!("FIGURE RSS after each round (KiB): {rss:?}");
    // Kept, the four backlogs would add ~90 MiB (measured before: 80 → 175 MiB); malloc's
    // arenas make the figure noisy, so the bound is less than two of them.
    let growth = rss[5].saturating_sub(rss[1]);
    assert!(
        growth < 40 * 1024,
        "RSS grew {growth} KiB over four rounds of 16 MiB backlogs whose subscribers left: {rss:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_still_gets_what_was_published_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let (_n, port) = start_broker(dir.path(), vec![]).await;
    let persistent = || {
        let mut opts = MqttOptions::new("persistent-reader", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_clean_session(false);
        AsyncClient::new(opts, 100)
    };
    let (sub, mut events) = persistent();
    sub.subscribe("away/+", QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut events, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} }).await;

    // Its filter has no live subscriber now, but the saved session still reads it.
    publish_to(port, "away/1", 10).await;
    let (_sub, mut events) = persistent();
    let mut got = 0;
    poll_until(&mut events, "the messages published while away", |p| {
        got += usize::from(matches!(p, Packet::Publish(_)));
        got == 10
    })
    .await;
}

/// `count` QoS 1 messages to `topic`, each PUBACKed.
async fn publish_to(port: u16, topic: &str, count: usize) {
    let (publisher, mut events) = client("away-publisher", port);
    for i in 0..count {
        publisher.publish(topic, QoS::AtLeastOnce, false, vec![i as u8; 8]).await.unwrap();
    }
    let mut acked = 0;
    poll_until(&mut events, "PUBACKs", |p| {
        acked += usize::from(matches!(p, Packet::PubAck(_)));
        acked == count
    })
    .await;
}

#[test]
fn a_slow_subscriber_timeout_that_is_not_whole_seconds_in_range_is_refused_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["30s", "-1", "3601", "1.5"] {
        let err = run_fails(
            dir.path(),
            &[
                ("ANYLOG_BROKER_PORT", free_port().to_string()),
                ("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT", value.to_string()),
            ],
        );
        assert!(
            err.contains("NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT")
                && err.contains("whole seconds from 0 (off) to 3600"),
            "{value}: {err}"
        );
    }
}
