//! Scale (issue 16): 1 000 netstrap instances declaring into and watching one EdgeLake-shaped
//! registry. Each instance is netstrap's real advertise stage (`Advertiser::run`: discovery,
//! render, files, declare, the watch loop, the peer check) as an in-process task; the registry
//! is the fake EdgeLake node of `support::fake_edgelake`, a real HTTP server on a real socket.
//! Time is tokio's paused clock, so half an hour of the cluster's life runs in a minute.
//!
//! The whole simulation runs in a private network namespace: the instances advertise
//! addresses (10.77.x.y) that have no route there, so the peer check's thousands of dials per
//! second fail at once instead of reaching anything on the host.
//!
//! Figures are printed as `FIGURE ...` lines (docs/reliability.md records them); the bounds
//! asserted are the ones the docs state.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use netstrap::advertise::Advertiser;
use netstrap::config::{Layers, Origin, Settings};
use netstrap::health::Health;
use netstrap::registry::Registry;
use netstrap::table::ConnectionTable;
use serde_json::Value;
use support::fake_edgelake::{FakeEdgeLake, Kind, Tallied};
use tokio::time::Instant;

/// Instances simulated (`SCALE_INSTANCES` overrides, for trying other sizes by hand).
fn instances() -> usize {
    std::env::var("SCALE_INSTANCES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// Instances are started over this long (a rollout of 1 000 pods is not one instant).
const START_SPREAD: Duration = Duration::from_secs(30);
/// Steady state is measured from here (every instance ready, its policy declared)...
const STEADY_FROM: Duration = Duration::from_secs(60);
/// ...to here: two watch passes of every instance.
const STEADY_TO: Duration = Duration::from_secs(120);
/// How long the registry stays down on each restart: long enough that the instances' back-off
/// reaches 16–60 s between attempts (the cap is 60 s).
const DOWN_FOR: Duration = Duration::from_secs(75);
/// Instances whose `/v1/peers` is asked for every 10 s (a dashboard watching a few nodes):
/// only those run the peer check, which reads every node from the registry.
const WATCHED: usize = 10;

// Bounds (docs/reliability.md, "Scale: 1 000 instances on one registry"), per 1 000 nodes.
/// Requests per second on the registry in steady state, every kind.
const MAX_STEADY_RPS: f64 = 120.0;
/// Node lists (`blockchain get <type>`) per second in steady state.
const MAX_STEADY_LISTS: f64 = 10.0;
/// Bytes per second the registry sends in steady state.
const MAX_STEADY_BYTES: f64 = 1024.0 * 1024.0;
/// After the registry is back: every node confirmed (ledger kept) or declared again (ledger
/// lost) within this long — the 60 s back-off cap, plus the requests.
const MAX_RECOVERY: Duration = Duration::from_secs(75);
/// Requests in any one second while the nodes come back.
const MAX_RECOVERY_PEAK: usize = 600;

/// One simulated instance: what the test reads of it.
struct Instance {
    name: String,
    health: Health,
    snapshot: tokio::sync::watch::Receiver<Arc<netstrap::planes::NodeSnapshot>>,
}

fn env(i: usize, registry: &str, state: &std::path::Path) -> Vec<(String, String)> {
    let ty = match i % 20 {
        0..=15 => "operator",
        16..=18 => "query",
        _ => "publisher",
    };
    let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
    let mut env = vec![
        ("NETSTRAP_ENVIRONMENT", "host".to_string()),
        ("NODE_TYPE", ty.to_string()),
        ("NODE_NAME", format!("{ty}-{i:04}")),
        ("COMPANY_NAME", "Scale Co".to_string()),
        ("LOCAL_IP", ip.clone()),
        ("EXTERNAL_IP", ip.clone()),
        ("DNS", ip),
        ("LEDGER_CONN", "127.0.0.1:32048".to_string()),
        ("NETSTRAP_LEDGER", format!("anylog://{registry}")),
        ("NETSTRAP_STATE_DIR", state.join(format!("n{i}")).display().to_string()),
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "1000".to_string()),
        // Self-verification dials the node's own endpoints, never the registry: off, to spend
        // the simulation's CPU on what is measured.
        ("NETSTRAP_VERIFY", "off".to_string()),
    ];
    if ty == "operator" {
        env.push(("CLUSTER_NAME", format!("cluster-{}", i % 10)));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Start instance `i`: netstrap's advertise stage, as `netstrap run` starts it.
async fn start(
    i: usize,
    registry: &str,
    state: &std::path::Path,
    shutdown: &netstrap::planes::Shutdown,
) -> Instance {
    let layers = Layers::new().push(Origin::Env, env(i, registry, state));
    let settings = Settings::parse(&layers).unwrap_or_else(|e| panic!("instance {i}: {e}"));
    let discovery = netstrap::discover::discover(&settings).await;
    assert!(discovery.problems.is_empty(), "instance {i}: {:?}", discovery.problems);
    let table = ConnectionTable::plan(&settings, &discovery);
    let snapshot = netstrap::lifecycle::snapshot(&settings, &discovery, &table);
    let name = snapshot.identity.name.clone();
    let registry =
        Registry::open(&settings.ledger, &table.ledger_conn.value, netstrap::registry::REQUEST_TIMEOUT);
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot));
    let health = Health::new();
    let advertiser = Advertiser {
        settings: Arc::new(settings),
        registry,
        health: health.clone(),
        snapshot: tx,
        metrics: Arc::new(netstrap::metrics::Metrics::new()),
        node: None,
    };
    advertiser.register_checks(&discovery);
    tokio::spawn(advertiser.run(discovery, table, shutdown.clone()));
    Instance { name, health, snapshot: rx }
}

/// `(type, company, name)` of a stored policy, lower-cased as EdgeLake matches them.
fn identity(p: &Value) -> Option<(String, String, String)> {
    let (ty, inner) = p.as_object()?.iter().next()?;
    let text = |k: &str| inner.get(k).and_then(Value::as_str).unwrap_or("").to_lowercase();
    Some((ty.clone(), text("company"), text("name")))
}

/// Identities stored more than once.
fn duplicates(policies: &[Value]) -> Vec<(String, String, String)> {
    let mut seen = HashMap::new();
    for id in policies.iter().filter_map(identity) {
        *seen.entry(id).or_insert(0) += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(id, _)| id).collect()
}

/// Names of the node policies stored.
fn node_names(policies: &[Value]) -> HashSet<String> {
    policies
        .iter()
        .filter_map(identity)
        .filter(|(ty, _, _)| netstrap::registry::NODE_TYPES.contains(&ty.as_str()))
        .map(|(_, _, name)| name)
        .collect()
}

/// Requests per kind, reply bytes, and the busiest second, over `[from, to)`.
struct Rates {
    secs: f64,
    by_kind: BTreeMap<String, usize>,
    total: usize,
    bytes: usize,
    peak: usize,
}

impl Rates {
    fn over(tally: &[Tallied], from: Instant, to: Instant) -> Rates {
        let mut by_kind = BTreeMap::new();
        let mut per_second: HashMap<u64, usize> = HashMap::new();
        let (mut total, mut bytes) = (0, 0);
        for t in tally.iter().filter(|t| t.at >= from && t.at < to) {
            *by_kind.entry(format!("{:?}", t.kind)).or_insert(0) += 1;
            *per_second.entry((t.at - from).as_secs()).or_insert(0) += 1;
            total += 1;
            bytes += t.reply_bytes;
        }
        let peak = per_second.values().copied().max().unwrap_or(0);
        Rates { secs: (to - from).as_secs_f64(), by_kind, total, bytes, peak }
    }

    fn rate(&self, kind: Kind) -> f64 {
        *self.by_kind.get(&format!("{kind:?}")).unwrap_or(&0) as f64 / self.secs
    }

    fn text(&self) -> String {
        let kinds: Vec<String> =
            self.by_kind.iter().map(|(k, n)| format!("{k} {:.2}/s", *n as f64 / self.secs)).collect();
        format!(
            "{:.1} req/s ({}), {:.0} KiB/s sent, busiest second {} req",
            self.total as f64 / self.secs,
            kinds.join(", "),
            self.bytes as f64 / self.secs / 1024.0,
            self.peak
        )
    }
}

/// Wait (in simulated time, looking every second) until `done`; how long it took, or `None`
/// after `limit`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn not_ready(nodes: &[Instance]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| !n.health.readiness(&[]).ready)
        .map(|n| format!("{}: {}", n.name, n.health.readiness(&[]).render().replace('\n', " ")))
        .collect()
}

async fn simulate() {
    let n = instances();
    // The instances' state dirs in memory where there is a tmpfs: 1 000 instances' first files
    // are 6 000 fsyncs, which measure the disk, not the registry.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let fake = FakeEdgeLake::start().await;
    fake.quiet();
    let registry = fake.rest_addr();
    let shutdown = netstrap::planes::Shutdown::new();
    let t0 = Instant::now();
    let wall = std::time::Instant::now();

    // Rollout: instance i starts at i × START_SPREAD / n.
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(t0 + START_SPREAD.mul_f64(i as f64 / n as f64)).await;
        nodes.push(start(i, &registry, dir.path(), &shutdown).await);
    }
    // A dashboard asks a few instances for `/v1/peers`, as `GET /v1/peers` does.
    let watched: Vec<_> = nodes.iter().step_by(n / WATCHED.min(n)).map(|i| i.snapshot.clone()).collect();
    let dashboard = tokio::spawn(async move {
        loop {
            for w in &watched {
                w.borrow().peers_asked.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    let all_ready = until(Duration::from_secs(300), || not_ready(&nodes).is_empty()).await;
    let ready_at = t0.elapsed();
    assert!(
        all_ready.is_some(),
        "not every instance ready 300 s after the rollout: {:?}",
        not_ready(&nodes).iter().take(3).collect::<Vec<_>>()
    );
    let names: HashSet<String> = nodes.iter().map(|n| n.name.to_lowercase()).collect();
    assert_eq!(node_names(&fake.policies()), names, "every node declared");
    eprintln!(
        "FIGURE rollout of {n} instances over {START_SPREAD:?}: all ready at {:.0} s",
        ready_at.as_secs_f64()
    );
    let startup = Rates::over(&fake.tally(), t0, t0 + ready_at);
    eprintln!("FIGURE start-up (0 s → all ready): {}", startup.text());

    // Steady state.
    tokio::time::sleep_until(t0 + STEADY_TO).await;
    let steady = Rates::over(&fake.tally(), t0 + STEADY_FROM, t0 + STEADY_TO);
    eprintln!("FIGURE steady state ({n} instances, {:.0} s): {}", steady.secs, steady.text());
    eprintln!("FIGURE wall time so far {:.1} s", wall.elapsed().as_secs_f64());

    // A master restart that keeps its ledger (EdgeLake's master keeps it in a database).
    fake.set_down(true).await;
    // Readiness looked at every 5 s while the registry is down.
    let mut down = Vec::new();
    let down_until = Instant::now() + DOWN_FOR;
    while Instant::now() < down_until {
        tokio::time::sleep(Duration::from_secs(5)).await;
        down.extend(not_ready(&nodes).into_iter().take(3));
    }
    fake.set_down(false).await;
    let back = Instant::now();
    // Every instance looks its policy up again (and finds it).
    let (mut seen, mut read) = (HashSet::new(), fake.tally_len());
    let kept = until(MAX_RECOVERY * 2, || {
        let new = fake.tally_from(read);
        read += new.len();
        seen.extend(
            new.into_iter()
                .filter(|t| t.at >= back && t.kind == Kind::Lookup && t.ok)
                .filter_map(|t| t.name.map(|s| s.to_lowercase())),
        );
        names.is_subset(&seen)
    })
    .await;
    let kept_rates = Rates::over(&fake.tally(), back, back + kept.unwrap_or(MAX_RECOVERY * 2));
    let kept_policies = fake.policies();
    eprintln!(
        "FIGURE registry down {DOWN_FOR:?}, ledger kept: every node confirmed {:?} after it came back; {}",
        kept.map(|d| d.as_secs()),
        kept_rates.text()
    );

    // A master restart that lost its ledger.
    fake.set_down(true).await;
    fake.lose_ledger();
    tokio::time::sleep(DOWN_FOR).await;
    fake.set_down(false).await;
    let back = Instant::now();
    let lost = until(MAX_RECOVERY * 2, || node_names(&fake.policies()) == names).await;
    let lost_rates = Rates::over(&fake.tally(), back, back + lost.unwrap_or(MAX_RECOVERY * 2));
    eprintln!(
        "FIGURE registry down {DOWN_FOR:?}, ledger lost: every node declared again {:?} after it came back; {}",
        lost.map(|d| d.as_secs()),
        lost_rates.text()
    );
    // Another watch pass: nothing declared twice.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = fake.policies();
    let ready_after = not_ready(&nodes);
    shutdown.cancel();
    dashboard.abort();
    let checked: Vec<bool> = nodes.iter().map(|i| i.snapshot.borrow().peers.is_some()).collect();
    let listed = nodes
        .iter()
        .filter(|i| i.snapshot.borrow().peers.as_ref().is_some_and(|p| p.get().contains(&nodes[0].name)))
        .count();
    eprintln!(
        "FIGURE simulated {:.0} s in {:.1} s of wall time",
        t0.elapsed().as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );

    // Bounds.
    let per_1000 = 1000.0 / n as f64;
    assert!(
        steady.total as f64 / steady.secs * per_1000 <= MAX_STEADY_RPS,
        "steady state: {}",
        steady.text()
    );
    assert!(steady.rate(Kind::List) <= MAX_STEADY_LISTS, "node lists in steady state: {}", steady.text());
    // A watched instance checks peers every pass or every `nodes × 1 s` (×0.5–1.5), whichever
    // is longer: 5 node lists per check. Every pass, it would be 5 × 10 × 15 = 750.
    let lists = Rates::over(&fake.tally(), t0, Instant::now()).by_kind.get("List").copied().unwrap_or(0);
    let most = WATCHED.min(n) as f64 * 5.0 * (2.0 + t0.elapsed().as_secs_f64() / (0.5 * n as f64).max(30.0));
    eprintln!("FIGURE node lists over the whole run: {lists} (bound {most:.0})");
    assert!(lists as f64 <= most, "{lists} node lists, more than {most:.0}");
    assert!(
        steady.bytes as f64 / steady.secs * per_1000 <= MAX_STEADY_BYTES,
        "bytes in steady state: {}",
        steady.text()
    );
    assert_eq!(
        steady.rate(Kind::Insert) + steady.rate(Kind::Delete),
        0.0,
        "nothing re-declared: {}",
        steady.text()
    );
    assert!(
        down.is_empty(),
        "declared nodes stay ready while the registry is down: {:?}",
        &down[..down.len().min(3)]
    );
    assert!(
        kept.is_some_and(|d| d <= MAX_RECOVERY),
        "ledger kept: every node confirmed within {MAX_RECOVERY:?}: {kept:?}"
    );
    assert_eq!(
        kept_rates.rate(Kind::Insert) + kept_rates.rate(Kind::Delete),
        0.0,
        "ledger kept: {}",
        kept_rates.text()
    );
    assert!(duplicates(&kept_policies).is_empty(), "ledger kept: {:?}", duplicates(&kept_policies));
    assert!(
        lost.is_some_and(|d| d <= MAX_RECOVERY),
        "ledger lost: every node declared again within {MAX_RECOVERY:?}: {lost:?}"
    );
    assert!(kept_rates.peak <= MAX_RECOVERY_PEAK && lost_rates.peak <= MAX_RECOVERY_PEAK, "thundering herd");
    assert!(duplicates(&after).is_empty(), "ledger lost, no duplicate: {:?}", duplicates(&after));
    assert_eq!(node_names(&after), names);
    assert!(ready_after.is_empty(), "{:?}", &ready_after[..ready_after.len().min(3)]);
    assert_eq!(
        checked.iter().filter(|c| **c).count(),
        WATCHED.min(n),
        "only the watched instances check peers"
    );
    assert!(listed >= 1, "a watched instance's /v1/peers lists the nodes");
}

/// Unshare the calling thread's network namespace and bring its loopback up: the fake registry
/// listens on 127.0.0.1 there, and nothing else is reachable.
fn private_network() {
    // SAFETY: only the network namespace is unshared (not the file table, the case that makes
    // `unshare` unsafe): descriptors stay valid on every thread.
    let rc = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) };
    assert!(rc.is_ok(), "cannot create a network namespace (the simulation needs root): {rc:?}");
    let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
    assert!(up.as_ref().is_ok_and(|s| s.success()), "ip link set lo up: {up:?}");
}

#[test]
fn a_thousand_instances_on_one_registry_stay_within_their_request_budget_and_come_back_after_a_restart() {
    let _serial = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    // Its own thread: the namespace is per thread, and so is the paused clock's runtime.
    std::thread::spawn(|| {
        private_network();
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(simulate());
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// The registry-down test reads process-wide counters: not while the simulation runs.
static COUNTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn failed_config_declares() -> u64 {
    use netstrap::metrics::control::{DECLARES, DeclareOutcome};
    DECLARES.get_or_create(&DeclareOutcome { policy: "config", outcome: "failed" }).get()
}

/// One instance, its registry down for 150 s (simulated): not ready meanwhile, retrying with a
/// back-off that reaches its 60 s cap; declared once within the cap after the registry is back.
/// (Was a 150 s wall-clock test of the `netstrap` process.)
async fn registry_down_then_back() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEdgeLake::start().await;
    fake.set_down(true).await;
    let shutdown = netstrap::planes::Shutdown::new();
    let failed_before = failed_config_declares();
    // Instance 16 is a query node: it declares a config policy, then its node policy.
    let node = start(16, &fake.rest_addr(), dir.path(), &shutdown).await;
    let down_for = Duration::from_secs(150);
    let until_up = Instant::now() + down_for;
    while Instant::now() < until_up {
        let r = node.health.readiness(&[]);
        assert!(!r.ready, "not ready while the registry is down: {}", r.render());
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let attempts = failed_config_declares() - failed_before;
    fake.set_down(false).await;
    let declared = until(Duration::from_secs(90), || node.health.readiness(&[]).ready).await;
    let declared =
        declared.unwrap_or_else(|| panic!("not ready 90 s after: {}", node.health.readiness(&[]).render()));
    eprintln!(
        "FIGURE registry down {} s (simulated): {attempts} attempts, declared {:.0} s after it came back",
        down_for.as_secs(),
        declared.as_secs_f64()
    );
    // 1, 2, 4, … 32 s then 60 s (each jittered to ×0.5–1): 7 to 13 attempts in 150 s.
    assert!((5..=16).contains(&attempts), "retries back off: {attempts} attempts in {down_for:?}");
    assert!(declared <= Duration::from_secs(62), "declared within the 60 s back-off cap: {declared:?}");
    let queries: Vec<_> = fake.policies().into_iter().filter(|p| p.get("query").is_some()).collect();
    assert_eq!(queries.len(), 1, "one node policy: {queries:?}");
    shutdown.cancel();
}

#[test]
fn registry_down_for_minutes_then_back_declares_once_within_the_backoff_cap() {
    let _serial = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        private_network();
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(registry_down_then_back());
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
