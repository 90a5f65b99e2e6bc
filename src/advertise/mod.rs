//! Advertise (README, "Advertising: one identity across restarts"): render the policies, write the node's files and
//! declare the node policy idempotently — retrying an unreachable registry with backoff and
//! jitter while the node keeps serving — then watch for changes of what is advertised.

pub mod files;
pub mod node;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Declarer, Settings, VerifyMode};
use crate::discover::{Discovery, discover};
use crate::health::{Check, Health};
use crate::planes::Shutdown;
use crate::policy::id::policy_id;
use crate::policy::render::Cluster;
use crate::policy::render::{config_policy, node_policy};
use crate::registry::Registry;
use crate::registry::declare::{Declared, declare};
use crate::snapshot::{Declaration, NodeSnapshot};
use crate::table::ConnectionTable;
use crate::verify::EndpointCheck;

use files::NodeFiles;

/// Readiness check: the node policy is declared (only when a registry is configured).
pub const CHECK_POLICY: &str = "policy";
/// Readiness check: the node's files are written in the state dir.
pub const CHECK_FILES: &str = "files";
/// Readiness check: the stable name resolves in the cluster DNS.
pub const CHECK_DNS: &str = "dns";
/// Readiness check: every advertised endpoint answered as this instance (`NETSTRAP_VERIFY=gate`).
pub const CHECK_VERIFY: &str = "verify";

/// How long to wait before retrying a failed registry call: exponential from 1 s to 60 s,
/// with full jitter so restarted replicas do not retry in lockstep.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let cap = 1000u64.saturating_mul(1 << self.attempt.min(6)).min(60_000);
        self.attempt += 1;
        Duration::from_millis(rand::random_range(cap / 2..=cap))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Time between peer checks per node the last one found. The peer check (`/v1/peers`) reads
/// every node from the registry and dials each: done every pass by every instance it cost
/// the registry O(n²) bytes per interval (1 000 nodes: 5 000 node lists, ~400 MB, every 30 s).
/// Now it runs only when `/v1/peers` was asked for since the last one, and no more often than
/// every pass while the registry holds at most `NETSTRAP_WATCH_INTERVAL / 1 s` nodes, else
/// every `nodes × 1 s` (jittered ×0.5–1.5): even with every instance asked continuously, its
/// list reads and dials per second stay constant as the registry grows, and the registry's
/// load grows linearly.
pub const PEER_CHECK_PER_NODE: Duration = Duration::from_secs(1);

/// When the next peer check is due, the registry holding `nodes` (as last read: a failed read
/// is retried no sooner than a successful one, so an overloaded registry is not read more).
fn next_peer_check(now: tokio::time::Instant, nodes: usize, watch: Duration) -> tokio::time::Instant {
    let spread = PEER_CHECK_PER_NODE.saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX));
    if spread <= watch {
        return now;
    }
    now + spread.mul_f64(rand::random_range(0.5..1.5))
}

/// The wait between two watch passes: the interval, jittered ±10 % so that instances started
/// together (a whole cluster after an outage) do not read the registry in lockstep.
fn watch_wait(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.9..1.1))
}

/// The advertise stage of a running netstrap.
pub struct Advertiser {
    pub settings: Arc<Settings>,
    pub registry: Registry,
    pub health: Health,
    pub snapshot: watch::Sender<Arc<NodeSnapshot>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `NETSTRAP_DECLARE=node`: the node's REST server (through which netstrap reads the
    /// registry the node syncs and asks the node how it runs).
    pub node: Option<crate::registry::anylog::AnylogClient>,
}

/// What one advertise step found.
enum Step {
    /// Declared (or nothing to declare); wait for the next watch tick.
    Done,
    /// The registry could not be reached or refused: retry with backoff.
    Retry,
    /// Waiting for the node (to start, to declare itself): look again soon.
    Pending,
}

impl Advertiser {
    /// Register the readiness checks this stage owns, before the planes report ready.
    pub fn register_checks(&self, d: &Discovery) {
        if self.settings.declare.value == Declarer::Node {
            if !matches!(self.registry, Registry::None) && self.settings.node_declares_a_policy() {
                self.health.register(CHECK_POLICY, "waiting for the node to declare its policy");
            }
            if self.node.is_some() {
                self.health.register(node::CHECK_NODE, "waiting for the node to answer on its REST server");
            }
        } else if !matches!(self.registry, Registry::None) {
            self.health.register(CHECK_POLICY, "declaring the node policy");
        }
        self.health.register(CHECK_FILES, "writing the node's files");
        if self.settings.verify == VerifyMode::Gate {
            self.health.register(CHECK_VERIFY, "verifying the advertised endpoints");
        }
        self.dns_check(d);
    }

    /// The stable name must resolve before a Kubernetes pod is ready: peers dial it. Outside
    /// Kubernetes a name that does not resolve from here (split-horizon DNS, a name for
    /// outside peers) is only a warning.
    fn dns_check(&self, d: &Discovery) {
        if d.environment.value != crate::discover::environment::EnvironmentKind::Kubernetes {
            return;
        }
        match &d.resolution {
            None => {}
            Some(r) if r.error.is_none() => self.health.ok(CHECK_DNS),
            Some(r) => self.health.set(
                CHECK_DNS,
                Check::Pending(format!(
                    "{} does not resolve: {}",
                    d.stable_name.value,
                    r.error.clone().unwrap_or_default()
                )),
            ),
        }
    }

    /// Advertise, then re-discover every watch interval until shutdown; an advertised
    /// value that changed is re-rendered, re-declared (replace, not add) and rewritten.
    pub async fn run(self, mut discovery: Discovery, mut table: ConnectionTable, shutdown: Shutdown) {
        let mut declared: Option<(Value, Value)> = None;
        let mut backoff = Backoff::default();
        let mut last_verified: Vec<EndpointCheck> = Vec::new();
        // Once the stable name has resolved, a later DNS failure is a warning, not a readiness
        // failure: a cluster-DNS blip must not pull every pod out of its Service at once.
        let mut dns_resolved = discovery.resolution.as_ref().is_some_and(|r| r.error.is_none());
        // What the node was last given (its policy until it restarts with new values).
        let previous = files::previous_advertised(&self.settings.state_dir);
        let mut peer_check_due = tokio::time::Instant::now();
        let mut registry_nodes = 0;
        loop {
            let step = if self.settings.declare.value == Declarer::Node {
                self.step_node(&discovery, &table, previous.as_ref()).await
            } else {
                self.step(&discovery, &table, &mut declared).await
            };
            if self.settings.verify != VerifyMode::Off {
                last_verified = self.verify(&table, last_verified).await;
            }
            let asked = self.snapshot.borrow().peers_asked.clone();
            if tokio::time::Instant::now() >= peer_check_due
                && asked.swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                registry_nodes = self.check_peers().await.unwrap_or(registry_nodes);
                peer_check_due = next_peer_check(
                    tokio::time::Instant::now(),
                    registry_nodes,
                    self.settings.watch_interval,
                );
            }
            let dns_pending = discovery.resolution.as_ref().is_some_and(|r| r.error.is_some());
            let wait = match step {
                Step::Retry => backoff.next_delay(),
                Step::Pending => Duration::from_secs(2).min(self.settings.watch_interval),
                Step::Done => {
                    backoff.reset();
                    // While the stable name does not resolve, look again soon.
                    if dns_pending {
                        Duration::from_secs(2).min(self.settings.watch_interval)
                    } else {
                        watch_wait(self.settings.watch_interval)
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let fresh = discover(&self.settings).await;
            if !fresh.problems.is_empty() {
                warn!(problems = ?fresh.problems, "re-discovery incomplete; keeping what is advertised");
                continue;
            }
            match fresh.resolution.as_ref() {
                Some(r) if dns_resolved && r.error.is_some() => warn!(
                    name = %fresh.stable_name.value,
                    "the stable name stopped resolving ({}); it resolved before, so the pod stays ready",
                    r.error.clone().unwrap_or_default()
                ),
                _ => {
                    dns_resolved |= fresh.resolution.as_ref().is_some_and(|r| r.error.is_none());
                    self.dns_check(&fresh);
                }
            }
            table = ConnectionTable::plan(&self.settings, &fresh);
            discovery = fresh;
        }
    }

    /// Dial the registry's nodes for `/v1/peers`; how many the registry holds (`None`: it
    /// could not be read).
    async fn check_peers(&self) -> Option<usize> {
        if matches!(self.registry, Registry::None) {
            return None;
        }
        let mut found = None;
        let json = match self.registry.nodes().await {
            Ok(nodes) => {
                found = Some(nodes.len());
                let reports = crate::peers::check(&nodes, self.settings.source_timeout).await;
                serde_json::value::to_raw_value(&reports)
            }
            Err(e) => serde_json::value::to_raw_value(&json!({"error": e.to_string()})),
        };
        let json = json.ok().map(Arc::from);
        self.publish(|next| {
            next.peers = json;
        });
        found
    }

    /// Verify the advertised endpoints; log what changed, publish, gate if asked.
    async fn verify(&self, table: &ConnectionTable, previous: Vec<EndpointCheck>) -> Vec<EndpointCheck> {
        let me = self.snapshot.borrow().identity.clone();
        let native = self.settings.tcp.mode.value == crate::config::TcpMode::Native;
        let rest_tls = self.settings.tls.as_ref().is_some_and(|t| t.rest);
        let s = &self.settings;
        let relays: Vec<(crate::table::Plane, std::net::SocketAddr)> =
            [crate::table::Plane::Tcp, crate::table::Plane::Broker]
                .into_iter()
                .filter_map(|p| s.upstream(p).map(|u| (p, u)))
                .collect();
        let checks = crate::verify::verify(table, &me, native, rest_tls, s.source_timeout, &relays).await;
        for c in &checks {
            let label = crate::metrics::EndpointLabel {
                plane: c.plane.name().to_string(),
                endpoint: c.endpoint.clone(),
            };
            self.metrics.endpoint_verified.get_or_create(&label).set(i64::from(c.ok));
            let result = if c.ok { "verified" } else { "failed" };
            let plane = crate::metrics::PlaneLabel::of(c.plane).plane;
            crate::metrics::control::VERIFICATIONS
                .get_or_create(&crate::metrics::control::VerifyResult { plane, result })
                .inc();
            if !previous.iter().any(|p| p.endpoint == c.endpoint && p.plane == c.plane && p.ok == c.ok) {
                if c.ok {
                    info!(plane = %label.plane, endpoint = %c.endpoint, "verified: {}", c.detail);
                } else {
                    warn!(plane = %label.plane, endpoint = %c.endpoint, "not verified: {}", c.detail);
                }
            }
        }
        if self.settings.verify == VerifyMode::Gate {
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{} {}: {}", c.plane.name(), c.endpoint, c.detail))
                .collect();
            if failed.is_empty() {
                self.health.ok(CHECK_VERIFY);
            } else {
                self.health.set(CHECK_VERIFY, Check::Pending(failed.join("; ")));
            }
        }
        let verification: std::sync::Arc<[_]> = checks.clone().into();
        self.publish(|next| {
            next.verification = verification;
        });
        checks
    }

    /// Change the snapshot the planes serve.
    fn publish(&self, change: impl FnOnce(&mut NodeSnapshot)) {
        self.snapshot.send_modify(|s| {
            let mut next = NodeSnapshot::clone(s);
            change(&mut next);
            *s = Arc::new(next);
        });
    }

    /// Write the node's files; readiness check `files` says whether they are. The fsyncs run
    /// on a blocking thread: this runtime also handles SIGTERM.
    async fn write_files(&self, files: &NodeFiles<'_>) -> bool {
        let (rendered, dir) = (files.render(), self.settings.state_dir.clone());
        let written = tokio::task::spawn_blocking(move || rendered.write(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the writing task failed: {e}"))));
        match written {
            Ok(()) => {
                self.health.ok(CHECK_FILES);
                true
            }
            Err(e) => {
                // Files are replaced whole (atomic rename): earlier ones, if any, are untouched.
                let earlier = if self.settings.state_dir.join("netstrap.env").exists() {
                    "the previous files are intact"
                } else {
                    "none are written yet"
                };
                let why = format!(
                    "cannot write the node's files in {}: {e}; {earlier}",
                    self.settings.state_dir.display()
                );
                warn!("{why}");
                self.health.set(CHECK_FILES, Check::Pending(why));
                false
            }
        }
    }

    /// `NETSTRAP_DECLARE=node`: write the node's files (first: the node waits for them), then
    /// check its policy in the registry, remove stale copies, and ask the node how it runs.
    async fn step_node(
        &self,
        d: &Discovery,
        table: &ConnectionTable,
        previous: Option<&node::Expected>,
    ) -> Step {
        let current = self.snapshot.borrow().policy.clone().unwrap_or(Value::Null);
        let current_id = node::policy_id(&current);
        let files = NodeFiles {
            settings: &self.settings,
            discovery: d,
            table,
            node_policy: &current,
            config_policy: &Value::Null,
            policy_id: current_id.as_deref(),
        };
        if !self.write_files(&files).await {
            return Step::Retry;
        }
        self.publish(|next| {
            next.table = Arc::new(table.clone());
            next.discovery = Arc::new(d.clone());
        });
        let mut settled = true;
        // The previous address protects its policy only while the node still runs with it.
        let mut node_uses_previous = false;
        if let Some(client) = &self.node {
            let st = node::status(client, self.settings.node_type.value, table).await;
            node_uses_previous = previous.is_some_and(|p| st.names_itself(p));
            if st.problems.is_empty() {
                self.health.ok(node::CHECK_NODE);
            } else {
                settled = false;
                self.health.set(node::CHECK_NODE, Check::Pending(st.problems.join("; ")));
            }
            let st = Arc::new(st);
            self.publish(|next| {
                next.node = Some(st);
            });
        }
        // A generic or hidden node declares no policy (EdgeLake's main.al): nothing to check.
        if matches!(self.registry, Registry::None) || !self.settings.node_declares_a_policy() {
            return if settled { Step::Done } else { Step::Pending };
        }
        let Some(expected) = node::Expected::from_table(table) else { return Step::Done };
        let s = &self.settings;
        let name = crate::policy::render::node_name(s, d);
        let found = match self.registry.find(s.node_type.value.policy_type(), &s.company_name, &name).await {
            Ok(p) => node::Found::split(p, &expected),
            Err(e) => {
                self.health.set(CHECK_POLICY, Check::Pending(format!("registry: {e}")));
                return Step::Pending;
            }
        };
        let removable = found.removable(previous.filter(|_| node_uses_previous));
        if !removable.is_empty() {
            for p in
                found.stale.iter().filter(|p| node::policy_id(p).is_some_and(|id| removable.contains(&id)))
            {
                warn!(policy = %p, "removing a stale policy of this node (not its advertised address)");
            }
            if let Err(e) = self.registry.replace(&removable, None).await {
                warn!("cannot remove stale policies {removable:?}: {e}; retrying");
            }
        }
        let declared = Declaration::Node {
            by: "node",
            expected: expected.clone(),
            current: found.current.clone(),
            stale: found.stale.clone(),
        };
        match &found.current {
            Some(_) => self.health.ok(CHECK_POLICY),
            None => {
                settled = false;
                let why = if found.stale.is_empty() {
                    format!(
                        "the node has not declared {name} yet (expected ip {} port {})",
                        expected.host, expected.port
                    )
                } else {
                    format!(
                        "the registry has {} polic{} of {name} with other addresses; waiting for the node to \
                         declare ip {} port {}",
                        found.stale.len(),
                        if found.stale.len() == 1 { "y" } else { "ies" },
                        expected.host,
                        expected.port
                    )
                };
                self.health.set(CHECK_POLICY, Check::Pending(why));
            }
        }
        self.publish(|next| {
            next.identity.policy_id = found.current.as_ref().and_then(node::policy_id);
            next.policy = found.current.clone();
            next.declared = Some(declared);
        });
        if settled && removable.is_empty() { Step::Done } else { Step::Pending }
    }

    /// Render, write the files, declare what changed. `declared` holds the node and config
    /// policies last declared.
    async fn step(
        &self,
        d: &Discovery,
        table: &ConnectionTable,
        declared: &mut Option<(Value, Value)>,
    ) -> Step {
        let cluster = match self.cluster_id().await {
            Ok(c) => c,
            Err(e) => {
                warn!("{e}");
                // A declared operator stays ready while its registry is away (a master restart
                // must not pull every operator out of its Service).
                if declared.is_none() {
                    self.health.set(CHECK_POLICY, Check::Pending(e));
                }
                return Step::Retry;
            }
        };
        let policy = match node_policy(&self.settings, d, table, cluster.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                self.health.fail(CHECK_POLICY, e.to_string());
                warn!("{e}");
                return Step::Done;
            }
        };
        let config = config_policy(&self.settings);
        let id = policy_id(&policy).ok();
        let files = NodeFiles {
            settings: &self.settings,
            discovery: d,
            table,
            node_policy: &policy,
            config_policy: &config,
            policy_id: id.as_deref(),
        };
        // A node started from stale files would advertise stale values: not ready until they
        // are written, retried with the registry's backoff.
        let done = if self.write_files(&files).await { Step::Done } else { Step::Retry };
        self.publish(|next| {
            next.policy = Some(policy.clone());
            next.config_policy = Some(config.clone());
            next.identity.policy_id = id.clone();
            next.table = Arc::new(table.clone());
            next.discovery = Arc::new(d.clone());
        });
        if declared.as_ref().is_some_and(|(n, c)| *n == policy && *c == config) {
            // Declared and unchanged: one look-up says whether the registry still has it. A
            // master restarted without its ledger (or a policy deleted by hand) lost it, and
            // nothing else would ever declare it again.
            match self.still_declared(&policy).await {
                Ok(true) => return done,
                Ok(false) => {
                    warn!(id = ?id, "the node policy is no longer in the registry: declaring it again");
                    *declared = None;
                }
                Err(e) => {
                    // Still ready: what the registry last confirmed stands while it is away.
                    warn!("cannot check the node policy in the registry: {e}; retrying");
                    return Step::Retry;
                }
            }
        }
        // The config policy is shared by every node of a type: identical copies are no-ops.
        if declared.as_ref().map(|(_, c)| c) != Some(&config)
            && let Err(e) = declare(&self.registry, &config).await
        {
            warn!("cannot declare the config policy: {e}; retrying");
            self.health.set(CHECK_POLICY, Check::Pending(format!("registry: {e}")));
            return Step::Retry;
        }
        if let Some((old, _)) = declared.as_ref()
            && *old != policy
        {
            info!(changes = %changes(old, &policy), "an advertised value changed: re-declaring");
        }
        match declare(&self.registry, &policy).await {
            Ok(outcome) => {
                match &outcome {
                    Declared::NotDeclared => info!(id = ?id, "node policy rendered (no registry configured)"),
                    Declared::Unchanged { id } => info!(%id, "node policy already declared"),
                    Declared::Inserted { id } => info!(%id, "node policy declared"),
                    Declared::Replaced { id, old } => info!(%id, ?old, "node policy replaced"),
                }
                if !matches!(self.registry, Registry::None) {
                    self.health.ok(CHECK_POLICY);
                }
                let outcome = outcome.clone();
                self.publish(|next| {
                    next.declared = Some(Declaration::Netstrap(outcome));
                });
                *declared = Some((policy, config));
                done
            }
            Err(e) => {
                warn!("cannot declare the node policy: {e}; retrying");
                self.health.set(CHECK_POLICY, Check::Pending(format!("registry: {e}")));
                Step::Retry
            }
        }
    }

    /// Whether the registry holds exactly `policy` for this identity (one copy, same content).
    async fn still_declared(&self, policy: &Value) -> Result<bool, crate::registry::RegistryError> {
        if matches!(self.registry, Registry::None) {
            return Ok(true);
        }
        let (ty, company, name) = crate::registry::declare::identity(policy)?;
        let stored = self.registry.find(&ty, &company, &name).await?;
        Ok(matches!(stored.as_slice(), [one] if crate::registry::declare::same_content(one, policy)))
    }

    /// The cluster an operator belongs to: `NETSTRAP_CLUSTER_ID`, else the cluster policy
    /// named `CLUSTER_NAME`, declared (idempotently) if the registry does not have it.
    async fn cluster_id(&self) -> Result<Option<String>, String> {
        let cluster = crate::policy::render::cluster(&self.settings).map_err(|e| e.to_string())?;
        match cluster {
            None => Ok(None),
            Some(c @ Cluster::Id(_)) => Ok(Some(c.offline_id())),
            Some(Cluster::Policy(policy)) => match declare(&self.registry, &policy).await {
                Ok(Declared::NotDeclared) => policy_id(&policy).map(Some).map_err(|e| e.to_string()),
                Ok(d) => Ok(d.id().map(String::from)),
                Err(e) => Err(format!("cannot declare or find cluster {}: {e}", policy["cluster"]["name"])),
            },
        }
    }
}

/// `field: old → new` for every field that differs between two policies.
fn changes(old: &Value, new: &Value) -> String {
    let inner = |v: &Value| v.as_object().and_then(|o| o.values().next()).and_then(Value::as_object).cloned();
    let (Some(a), Some(b)) = (inner(old), inner(new)) else { return "policy shape".into() };
    let mut out = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            Some(o) if o == v => {}
            Some(o) => out.push(format!("{k}: {o} → {v}")),
            None => out.push(format!("{k}: added {v}")),
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        out.push(format!("{k}: removed"));
    }
    out.join(", ")
}
