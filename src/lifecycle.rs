//! `netstrap run`: discover, plan, bind every listener, serve, and shut down gracefully.
//!
//! Order (README, "What `netstrap run` serves"): configuration is parsed before anything
//! else; discovery and the connection table come before any bind; all listeners are bound
//! before "started" is logged and before anything is advertised. Each plane runs on its own
//! runtime sized by `*_THREADS`, so a saturated relay or broker cannot starve the rest
//! plane that answers kubelet's probes.
//!
//! Shutdown on SIGTERM/SIGINT: `/readyz` turns 503 at once; after `NETSTRAP_SHUTDOWN_DELAY`
//! (time for endpoint removal to reach every proxy) the listeners close; in-flight work gets
//! `NETSTRAP_SHUTDOWN_GRACE` to finish; exit 0. A second signal exits at once. SIGQUIT shuts
//! down the same way. SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM are logged and ignored from the
//! start (their default action would kill the process with no drain): there is nothing to
//! reload, configuration is read once at start.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{Instrument, error, info, warn};

use crate::addr::host_port;
use crate::advertise::Advertiser;
use crate::config::{BrokerMode, Settings, TcpMode};
use crate::discover::environment::EnvironmentKind;
use crate::discover::{Discovery, discover};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::planes::{Identity, NodeSnapshot, Shutdown, broker, rest, tcp};
use crate::registry::Registry;
use crate::table::{ConnectionTable, Plane};

/// Readiness checks registered by `run`.
pub const CHECK_LISTENERS: &str = "listeners";
pub const CHECK_DISCOVERY: &str = "discovery";
pub const CHECK_BROKER: &str = "broker";

/// A plane's server finished: which one, and how.
type Done = (Plane, Result<(), PlaneStopped>);

/// Why a plane stopped serving before shutdown: the node is then not serving what it advertises.
#[derive(Debug, thiserror::Error)]
enum PlaneStopped {
    /// Its bound listener could not be handed to the plane's runtime.
    #[error("{0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

/// The runtime a plane serves on. The tcp and broker planes' threads (and rumqttd's router,
/// which a broker thread spawns and so inherits it) run `data_nice` levels nicer than the rest: when netstrap's data
/// planes saturate the CPU, the rest plane's threads — kubelet's probes — still get a core
/// within a slice instead of queueing behind them (`/readyz` p99 under full load 7.7 → ~4.5 ms
/// on 2 cores, docs/benchmarks.md). Raising one's own nice value needs no privilege; a
/// failure (a seccomp profile that forbids it) is logged once and changes nothing else.
fn plane_runtime(plane: Plane, threads: u16, data_nice: u8) -> std::io::Result<tokio::runtime::Runtime> {
    let name = format!("netstrap-{}", plane.name());
    let nice = if plane == Plane::Rest { 0 } else { i32::from(data_nice) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(threads.max(1)))
        .thread_name(name)
        .on_thread_start(move || {
            if nice != 0 {
                set_thread_nice(nice);
            }
        })
        .enable_all()
        .build()
}

/// Lower the calling thread's priority by `nice` levels (Linux: per thread, by its TID).
fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let tid = rustix::thread::gettid();
        let base = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(tid), (base + nice).min(19)) {
            WARNED.call_once(|| {
                warn!("cannot lower the data planes' priority (NETSTRAP_DATA_NICE={nice}): {e}")
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn instance_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The snapshot the planes serve, from the discovery and the table.
pub fn snapshot(settings: &Settings, d: &Discovery, table: &ConnectionTable) -> NodeSnapshot {
    let endpoints = table
        .rows
        .iter()
        .flat_map(|r| {
            let p = r.plane.name();
            [
                format!("{p} {}", host_port(&r.cluster_host.value, r.cluster_port.value)),
                format!("{p} {}", host_port(&r.external_host.value, r.external_port.value)),
            ]
        })
        .collect::<Vec<_>>();
    let mut endpoints_dedup = endpoints;
    endpoints_dedup.dedup();
    let identity = Identity {
        name: crate::policy::render::node_name(settings, d),
        node_type: settings.node_type.value.name().to_string(),
        instance_id: instance_id(),
        policy_id: None,
        endpoints: endpoints_dedup,
    };
    let mut snapshot = NodeSnapshot::new(identity, table.clone(), d.clone());
    // Without a registry there are no nodes to check: `/v1/peers` answers an empty list.
    if settings.ledger == crate::config::Ledger::None {
        snapshot.peers = serde_json::value::RawValue::from_string("[]".into()).ok().map(Arc::from);
    }
    snapshot
}

/// `NETSTRAP_DECLARE=node`: the node binds the ports it advertises (its scripts listen on what
/// they declare), so netstrap relays each plane to `127.0.0.1:<advertised port>` and its own
/// listener must use another port.
fn node_upstreams(settings: &mut Settings, table: &ConnectionTable) -> Result<(), String> {
    for row in &table.rows {
        let advertised = row.external_port.value;
        let (own_var, up_var) = (row.plane.own_port_var(), row.plane.upstream_var());
        if row.port.value == advertised {
            return Err(format!(
                "NETSTRAP_DECLARE=node: the node binds the advertised {} port {advertised} itself, which is also \
                 netstrap's listening port ({}); give netstrap another port (set {own_var}, e.g. {}) and point the \
                 Service's targetPort or the published port at it",
                row.plane.name(),
                row.port.why.summary(),
                advertised.wrapping_add(1000)
            ));
        }
        let slot = match row.plane {
            Plane::Tcp => &mut settings.tcp.upstream,
            Plane::Rest => &mut settings.rest.upstream,
            Plane::Broker if settings.broker.mode.value == BrokerMode::Relay => &mut settings.broker.upstream,
            Plane::Broker => continue,
        };
        match slot {
            None => *slot = Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), advertised)),
            Some(up) if up.port() != advertised => {
                return Err(format!(
                    "NETSTRAP_DECLARE=node: {up_var}={up}, but the node listens on the advertised port {advertised} \
                     ({}); unset {up_var} (netstrap then relays to 127.0.0.1:{advertised})",
                    row.external_port.why.summary()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The embedded broker takes clients without credentials only on loopback, unless the operator
/// said so (`NETSTRAP_BROKER_ANONYMOUS=true`, warned about): on any other address anyone who
/// can reach it could read every message with a `#` subscription.
fn anonymous_broker_allowed(settings: &Settings, table: &ConnectionTable) -> Result<(), String> {
    let Some(row) = table.row(Plane::Broker) else { return Ok(()) };
    if settings.broker.mode.value != BrokerMode::Embedded
        || settings.broker.credentials.is_some()
        || row.bind_ip.value.is_loopback()
    {
        return Ok(());
    }
    let listen = SocketAddr::new(row.bind_ip.value, row.port.value);
    if settings.broker.anonymous.value {
        warn!(
            "broker: the embedded broker on {listen} accepts clients without credentials \
             ({}): anyone who reaches it can publish and read every topic",
            settings.broker.anonymous.why.source
        );
        return Ok(());
    }
    Err(format!(
        "the embedded broker would listen on {listen} without credentials: set \
         NETSTRAP_BROKER_USERNAME and NETSTRAP_BROKER_PASSWORD, or NETSTRAP_BROKER_ANONYMOUS=true \
         to accept anyone (or bind it to loopback)"
    ))
}

/// Raise the soft limit on open files to the hard one (systemd and some container runtimes
/// start services at 1024 while allowing far more): each broker or relay client holds two
/// descriptors. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("cannot raise the open-file limit to {:?}: {e}", limit.maximum);
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Why `netstrap run` did not start, phrased for the operator. [`StartError::exit_code`] is the
/// one place that maps these to exit codes (README, "Commands").
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Certificate(crate::tls::TlsError),
    #[error("cannot determine {}", .0.join("; cannot determine "))]
    Discovery(Vec<String>),
    /// A combination the table makes impossible (`NETSTRAP_DECLARE=node` ports).
    #[error("{0}")]
    Plan(String),
    /// A setting netstrap refuses to run with (an anonymous broker beyond loopback).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Bind(#[from] crate::bind::BindError),
    #[error("{0}")]
    AdminBind(#[from] crate::admin::AdminBindError),
    #[error("{0}")]
    StateLocked(crate::state::LockError),
    #[error("{plane} plane: cannot start its runtime: {cause}")]
    PlaneRuntime { plane: &'static str, cause: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl StartError {
    /// 2: a configuration netstrap refuses; 1: anything else that kept it from serving.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StartError::Refused(_) | StartError::StateLocked(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    /// What had happened when it failed: nothing is ever advertised before every listener is
    /// bound.
    fn consequence(&self) -> &'static str {
        match self {
            StartError::Runtime(_)
            | StartError::Certificate(_)
            | StartError::Discovery(_)
            | StartError::Plan(_)
            | StartError::Refused(_) => "nothing bound, nothing advertised",
            _ => "nothing advertised",
        }
    }
}

/// Discovery and the connection table: what `netstrap discover`, `netstrap policy` and
/// `netstrap run` all start from, computed one way.
pub struct Plan {
    pub discovery: Discovery,
    pub table: ConnectionTable,
}

impl Plan {
    pub async fn of(settings: &Settings) -> Plan {
        let discovery = discover(settings).await;
        let table = ConnectionTable::plan(settings, &discovery);
        Plan { discovery, table }
    }
}

/// Phase 1 of `run`: everything decided, nothing bound.
struct Prepared {
    settings: Settings,
    plan: Plan,
    tls_store: Option<Arc<crate::tls::CertStore>>,
    /// The process is netstrap's own (`run`), not a [`Daemon`] inside another program: only then
    /// does it speak for the process to systemd.
    owns_process: bool,
}

/// Listeners the caller has already bound, used by [`Daemon::start`] instead of binding the
/// table's addresses: a test binds `127.0.0.1:0`, puts the kernel's port into the settings (so the
/// table advertises it) and hands the listener in, so no port is ever chosen free and bound later
/// by someone else. A plane without one here is bound as `run` binds it.
#[derive(Debug, Default)]
pub struct Prebound {
    pub planes: Vec<(Plane, std::net::TcpListener)>,
    /// For `NETSTRAP_ADMIN_ADDR`.
    pub admin: Option<std::net::TcpListener>,
}

/// Phase 2: every listener bound, nothing served or advertised yet.
struct Bound {
    prepared: Prepared,
    listeners: Vec<(Plane, std::net::TcpListener)>,
    admin: Option<std::net::TcpListener>,
    _state_lock: Option<crate::state::StateLock>,
    tls: Option<crate::tls::Tls>,
    rest_tls: Option<Arc<rustls::ServerConfig>>,
    broker_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Phase 3: serving and advertising, until a signal or a plane stopping.
struct Running {
    health: Health,
    shutdown: Shutdown,
    done: tokio::sync::mpsc::UnboundedReceiver<Done>,
    runtimes: Vec<tokio::runtime::Runtime>,
    delay: Duration,
    grace: Duration,
    owns_process: bool,
    _state_lock: Option<crate::state::StateLock>,
}

pub fn run(settings: Settings) -> ExitCode {
    let open_files = raise_open_file_limit();
    tracing::debug!(?open_files, "open-file limit");
    spawn_trimmer_once();
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
        .and_then(|control| {
            {
                let _in = control.enter();
                ignore_stray_signals();
            }
            let prepared = control.block_on(Prepared::new(settings, true))?;
            let running = prepared.bind(Prebound::default())?.start(&control)?;
            Ok((control, running))
        });
    match started {
        Ok((control, running)) => {
            let code = running.wait(&control, None);
            // A blocking task still running (a file write, a look-up) gets a second to finish;
            // an exit is never held up longer (dropping the runtime would wait for it).
            control.shutdown_timeout(Duration::from_secs(1));
            code
        }
        Err(e) => {
            error!("{e}");
            error!("{}", e.consequence());
            e.exit_code()
        }
    }
}

/// The memory trimmer is one thread per process, however many daemons it runs.
fn spawn_trimmer_once() {
    static TRIMMER: std::sync::Once = std::sync::Once::new();
    TRIMMER.call_once(crate::memory::spawn_trimmer);
}

/// `netstrap run` inside another program (the integration tests, an embedder): the same phases
/// as [`run`], with the control runtime on a thread of its own and [`Daemon::shutdown`] in place
/// of SIGTERM. It installs no signal handlers (they are the process's, not the daemon's) and
/// tells systemd nothing; several can run in one process, each with its own state directory.
pub struct Daemon {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<ExitCode>>,
}

impl Daemon {
    /// Prepare, bind (using `prebound` where given) and start serving; returns once "started"
    /// is logged, or with what kept it from starting.
    pub fn start(settings: Settings, prebound: Prebound) -> Result<Daemon, StartError> {
        raise_open_file_limit();
        spawn_trimmer_once();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("netstrap-control".into())
            .spawn(move || {
                let started = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(StartError::Runtime)
                    .and_then(|control| {
                        let prepared = control.block_on(Prepared::new(settings, false))?;
                        let running = prepared.bind(prebound)?.start(&control)?;
                        Ok((control, running))
                    });
                match started {
                    Ok((control, running)) => {
                        let _ = started_tx.send(Ok(()));
                        running.wait(&control, Some(stop_rx))
                    }
                    Err(e) => {
                        let code = e.exit_code();
                        let _ = started_tx.send(Err(e));
                        code
                    }
                }
            })
            .map_err(StartError::Runtime)?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Daemon { stop: Some(stop_tx), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended without a word: it panicked (the panic is on stderr).
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Runtime(std::io::Error::other("the control thread panicked while starting")))
            }
        }
    }

    /// Drain exactly as on SIGTERM (readiness 503, `NETSTRAP_SHUTDOWN_DELAY`, listeners closed,
    /// `NETSTRAP_SHUTDOWN_GRACE`) and return the exit code `run` would have.
    pub fn shutdown(mut self) -> ExitCode {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> ExitCode {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(code)) => code,
            Some(Err(_)) | None => ExitCode::FAILURE,
        }
    }
}

/// A daemon dropped without [`Daemon::shutdown`] (a failing test) still drains and releases its
/// ports and state directory before the next one starts.
impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl Prepared {
    async fn new(mut settings: Settings, owns_process: bool) -> Result<Prepared, StartError> {
        // The certificate is checked before anything else happens: a bad one is a configuration
        // error, reported naming the file.
        let tls_store = match &settings.tls {
            Some(t) => Some(
                crate::tls::CertStore::open(crate::tls::TlsFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                })
                .map_err(StartError::Certificate)?,
            ),
            None => None,
        };
        let plan = Plan::of(&settings).await;
        // On success the warnings are in the start-up summary (`crate::summary`), once.
        if !plan.discovery.problems.is_empty() {
            for w in &plan.discovery.warnings {
                warn!("{w}");
            }
            return Err(StartError::Discovery(plan.discovery.problems.clone()));
        }
        if settings.declare.value == crate::config::Declarer::Node {
            node_upstreams(&mut settings, &plan.table).map_err(StartError::Plan)?;
        }
        anonymous_broker_allowed(&settings, &plan.table).map_err(StartError::Refused)?;
        Ok(Prepared { settings, plan, tls_store, owns_process })
    }

    /// Bind every listener before serving anything (or take the caller's, [`Prebound`]).
    fn bind(self, mut prebound: Prebound) -> Result<Bound, StartError> {
        let (settings, table) = (&self.settings, &self.plan.table);
        let mut listeners = Vec::new();
        for (plane, addr) in crate::bind::addresses(table) {
            let listener = match prebound.planes.iter().position(|(p, _)| *p == plane) {
                Some(i) => handed_in(plane, addr, prebound.planes.swap_remove(i).1)?,
                None => crate::bind::bind(plane, addr)?,
            };
            listeners.push((plane, listener));
            info!(plane = plane.name(), %addr, "bound");
        }
        // NETSTRAP_ADMIN_ADDR: bound with the planes, served once they serve (src/admin.rs).
        let admin = match (settings.admin_addr, prebound.admin.take()) {
            (Some(addr), Some(listener)) => Some(handed_in_admin(addr, listener)?),
            (addr, _) => addr.map(crate::admin::bind).transpose()?,
        };
        // One instance per state directory, held until the process ends.
        let state_lock = match crate::state::lock(&settings.state_dir) {
            Ok(lock) => Some(lock),
            Err(e @ crate::state::LockError::Held { .. }) => return Err(StartError::StateLocked(e)),
            Err(e) => {
                warn!("{e}");
                None
            }
        };
        // TLS: which planes use it (a broker that is off has none), and their server settings.
        let tls = match (&settings.tls, self.tls_store.clone()) {
            (Some(t), Some(store)) => {
                let planes: Vec<Plane> = [(Plane::Rest, t.rest), (Plane::Broker, t.broker)]
                    .into_iter()
                    .filter(|(p, on)| *on && table.row(*p).is_some())
                    .map(|(p, _)| p)
                    .collect();
                Some(crate::tls::Tls { store, planes })
            }
            _ => None,
        };
        let server_tls = |plane: Plane| -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
            match &tls {
                Some(t) if t.on(plane) => {
                    let alpn: &[&[u8]] = if plane == Plane::Rest { &[crate::tls::ALPN_HTTP1] } else { &[] };
                    crate::tls::server_config(t.store.clone(), alpn)
                        .map(Some)
                        .map_err(StartError::Certificate)
                }
                _ => Ok(None),
            }
        };
        let (rest_tls, broker_tls) = (server_tls(Plane::Rest)?, server_tls(Plane::Broker)?);
        Ok(Bound { prepared: self, listeners, admin, _state_lock: state_lock, tls, rest_tls, broker_tls })
    }
}

/// A listener handed in for `plane` must be where the table says the plane listens: the table is
/// what netstrap advertises.
fn handed_in(
    plane: Plane,
    addr: SocketAddr,
    listener: std::net::TcpListener,
) -> Result<std::net::TcpListener, StartError> {
    let local = listener.local_addr().and_then(|local| listener.set_nonblocking(true).map(|_| local));
    match local {
        Ok(local) if local.port() == addr.port() => Ok(listener),
        Ok(local) => Err(StartError::Plan(format!(
            "{} listener handed in is bound to {local}, but the table says {addr}: set {} to {}",
            plane.name(),
            plane.port_var(),
            local.port()
        ))),
        Err(cause) => Err(StartError::Bind(crate::bind::BindError {
            plane: plane.name(),
            addr,
            cause,
            hint: " — the listener handed in is not usable".into(),
        })),
    }
}

/// The admin listener handed in must be on `NETSTRAP_ADMIN_ADDR`'s port.
fn handed_in_admin(
    addr: SocketAddr,
    listener: std::net::TcpListener,
) -> Result<std::net::TcpListener, StartError> {
    match listener.local_addr().and_then(|local| listener.set_nonblocking(true).map(|_| local)) {
        Ok(local) if local.port() == addr.port() => Ok(listener),
        Ok(local) => Err(StartError::Plan(format!(
            "admin listener handed in is bound to {local}, but NETSTRAP_ADMIN_ADDR is {addr}: set it to {local}"
        ))),
        Err(cause) => Err(StartError::Plan(format!("admin listener handed in is not usable: {cause}"))),
    }
}

impl Bound {
    /// Serve every plane, then advertise.
    fn start(self, control: &tokio::runtime::Runtime) -> Result<Running, StartError> {
        let Bound { prepared, listeners, mut admin, _state_lock, tls, rest_tls, broker_tls } = self;
        let Prepared { settings, plan, owns_process, .. } = prepared;
        let Plan { discovery, table } = plan;
        let node_declares = settings.declare.value == crate::config::Declarer::Node;
        let health = Health::new();
        health.ok(CHECK_LISTENERS);
        health.ok(CHECK_DISCOVERY);
        let metrics = Arc::new(Metrics::new());
        let snap = snapshot(&settings, &discovery, &table);
        info!(name = %snap.identity.name, instance = %snap.identity.instance_id, "identity");
        // The start-up summary (and discovery's warnings), once, now that every listener is bound.
        crate::summary::print(&settings, &discovery, &table, &snap.identity.name);
        if let Some(t) = &tls {
            let info = &t.store.current().info;
            info!(
                planes = %t.planes.iter().map(|p| p.name()).collect::<Vec<_>>().join(","),
                subject = %info.subject,
                serial = %info.serial,
                not_after = %info.not_after,
                "TLS on"
            );
            t.log_san_check(&snap.table);
        }
        let (snap_tx, snap_rx) = tokio::sync::watch::channel(Arc::new(snap));
        let shutdown = Shutdown::new();
        if let Some(t) = &tls {
            // Reload on change; the SAN check is repeated against the current table.
            let (t2, snap_rx) = (t.clone(), snap_rx.clone());
            let on_load = move |_: &crate::tls::Loaded| {
                let table = snap_rx.borrow().table.clone();
                t2.log_san_check(&table);
            };
            control.spawn(t.store.clone().watch(crate::tls::RELOAD_INTERVAL, shutdown.clone(), on_load));
        }
        let settings = Arc::new(settings);
        // A node that declares itself keeps the registry's copy it syncs: netstrap reads it there.
        let node_rest = settings.rest.upstream.filter(|_| node_declares);
        let node_ledger = node_rest.map(|up| crate::config::Ledger::Anylog(up.to_string()));
        let node_client = node_rest.map(|up| {
            crate::registry::anylog::AnylogClient::new(
                &up.to_string(),
                &table.ledger_conn.value,
                crate::registry::REQUEST_TIMEOUT,
            )
        });
        let ledger = match (&settings.ledger, node_ledger) {
            (crate::config::Ledger::None, Some(node)) => node,
            (configured, _) => configured.clone(),
        };
        let registry = Registry::open(&ledger, &table.ledger_conn.value, crate::registry::REQUEST_TIMEOUT);
        let advertiser = Advertiser {
            settings: settings.clone(),
            registry,
            health: health.clone(),
            snapshot: snap_tx,
            metrics: metrics.clone(),
            node: node_client,
        };
        advertiser.register_checks(&discovery);
        // Every check is registered before any plane serves `/readyz`: a probe in between must not
        // see a partial list and answer 200.
        // netstrap's own broker; a relayed one is the node's, covered by `upstream` like the other
        // relays (else a node started after netstrap's readiness could never make it ready).
        let embedded_broker =
            !(settings.broker.mode.value == BrokerMode::Relay && settings.broker.upstream.is_some());
        if embedded_broker && listeners.iter().any(|(plane, _)| *plane == Plane::Broker) {
            health.register(CHECK_BROKER, "waiting for the broker to answer an MQTT CONNECT");
        }
        let upstreams: Vec<(&'static str, std::net::SocketAddr)> =
            Plane::ALL.into_iter().filter_map(|p| settings.upstream(p).map(|a| (p.name(), a))).collect();
        if settings.ready_upstream && !upstreams.is_empty() {
            health.register(crate::upstream::CHECK_UPSTREAM, "dialing the node's upstreams");
        }

        let mut runtimes = Vec::new();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
        for (plane, listener) in listeners {
            let row = table.row(plane).cloned();
            let Some(row) = row else { continue };
            // The rest plane runs REST_THREADS event loops of its own (`rest::serve_loops`): its
            // runtime has one worker, the first loop.
            let workers = if plane == Plane::Rest { 1 } else { row.threads.value };
            let runtime = plane_runtime(plane, workers, settings.data_nice)
                .map_err(|cause| StartError::PlaneRuntime { plane: plane.name(), cause })?;
            let metrics = metrics.clone();
            let shutdown = shutdown.clone();
            let done_tx = done_tx.clone();
            // Every event of the plane's tasks carries `plane=<name>`.
            let span = tracing::info_span!("plane", plane = plane.name());
            let report = move |r: Result<(), PlaneStopped>| {
                let _ = done_tx.send((plane, r));
            };
            match plane {
                Plane::Rest => {
                    let options = rest::RestOptions {
                        upstream: settings.rest.upstream,
                        timeout: settings.rest.timeout.value,
                        tls: rest_tls.clone(),
                        trusted_proxies: settings.rest.trusted_proxies.clone(),
                        max_connections: settings.rest.max_connections,
                        endpoints: if admin.is_some() {
                            rest::Endpoints::Public
                        } else {
                            rest::Endpoints::All
                        },
                        ..Default::default()
                    };
                    let state = rest::RestState::new(health.clone(), snap_rx.clone(), metrics, options)
                        .with_tls(tls.clone());
                    let loops = usize::from(row.threads.value.max(1));
                    runtime.spawn(
                        async move {
                            rest::serve_loops(listener, state, shutdown, loops).await;
                            report(Ok(()));
                        }
                        .instrument(span.clone()),
                    );
                }
                Plane::Tcp => {
                    let snap_rx = snap_rx.clone();
                    let mode = settings.tcp.mode.value;
                    let relay = settings.tcp.upstream.map(|upstream| tcp::RelayOptions {
                        upstream,
                        proxy_protocol: settings.tcp.proxy_protocol,
                        ..Default::default()
                    });
                    runtime.spawn(
                        async move {
                            let listener = match tokio::net::TcpListener::from_std(listener) {
                                Ok(l) => l,
                                Err(e) => return report(Err(PlaneStopped::Listener(e))),
                            };
                            match (mode, relay) {
                                (TcpMode::Relay, Some(opts)) => {
                                    tcp::serve_relay(listener, opts, metrics, shutdown).await
                                }
                                _ => {
                                    tcp::serve_native(
                                        listener,
                                        tcp::NativeOptions::default(),
                                        snap_rx,
                                        metrics,
                                        shutdown,
                                    )
                                    .await
                                }
                            }
                            report(Ok(()));
                        }
                        .instrument(span.clone()),
                    );
                }
                Plane::Broker => {
                    let mode = settings.broker.mode.value;
                    let upstream = settings.broker.upstream;
                    let listen = SocketAddr::new(row.bind_ip.value, row.port.value);
                    let opts = broker::BrokerOptions {
                        listen,
                        threads: usize::from(row.threads.value),
                        backlog: settings.broker.backlog,
                        slow_subscriber_timeout: settings.broker.slow_subscriber_timeout,
                        credentials: settings.broker.credentials.clone().map(|(u, p)| (u, p.0)),
                        tls: broker_tls.clone(),
                        limits: settings.broker.limits,
                        ..Default::default()
                    };
                    let relay_tls = broker_tls.clone();
                    runtime.spawn(
                        async move {
                            // The listener bound in phase 2 is served as it is, by the relay or the
                            // embedded broker: the port is never released, so a client connecting
                            // while rumqttd's router starts waits in the backlog, not refused.
                            let listener = match tokio::net::TcpListener::from_std(listener) {
                                Ok(l) => l,
                                Err(e) => return report(Err(PlaneStopped::Listener(e))),
                            };
                            match (mode, upstream) {
                                (BrokerMode::Relay, Some(up)) => {
                                    broker::serve_relay_tls(listener, up, relay_tls, metrics, shutdown).await;
                                    report(Ok(()));
                                }
                                _ => report(
                                    broker::serve_embedded_on(listener, opts, metrics, shutdown)
                                        .await
                                        .map_err(PlaneStopped::from),
                                ),
                            }
                        }
                        .instrument(span.clone()),
                    );
                }
            }
            if plane == Plane::Broker && embedded_broker {
                let target = crate::addr::local_target(row.bind_ip.value, row.port.value);
                let health = health.clone();
                let creds = settings.broker.credentials.clone().map(|(u, p)| (u, p.0));
                let client_tls = broker_tls.as_ref().map(|_| crate::tls::loopback_client_config(&[]));
                control.spawn(async move {
                    // The broker is usually up within a few milliseconds of start: look every
                    // millisecond (a refused connect costs microseconds) for the first 200 ms, then
                    // back off to every 100 ms.
                    let started = tokio::time::Instant::now();
                    let mut retry = Duration::from_millis(1);
                    loop {
                        match broker::mqtt_ping_tls(
                            target,
                            Duration::from_secs(1),
                            creds.clone(),
                            client_tls.clone(),
                        )
                        .await
                        {
                            Ok(()) => {
                                health.ok(CHECK_BROKER);
                                break;
                            }
                            Err(e) => health.set(CHECK_BROKER, crate::health::Check::Pending(e.to_string())),
                        }
                        tokio::time::sleep(retry).await;
                        if started.elapsed() > Duration::from_millis(200) {
                            retry = (retry * 2).min(Duration::from_millis(100));
                        }
                    }
                });
            }
            runtimes.push(runtime);
        }
        drop(done_tx);
        if let Some(listener) = admin.take() {
            let state = crate::admin::state(health.clone(), snap_rx.clone(), metrics.clone(), tls.clone());
            info!(addr = ?settings.admin_addr, "admin listener: /metrics and /v1/* (not on the rest port)");
            control.spawn(
                crate::admin::serve(listener, state, shutdown.clone())
                    .instrument(tracing::info_span!("admin")),
            );
        }
        info!("started");
        if settings.ready_upstream && !upstreams.is_empty() {
            let timeout = settings.source_timeout.min(Duration::from_secs(1));
            control.spawn(crate::upstream::watch(upstreams, health.clone(), timeout, shutdown.clone()));
        }
        // Advertise only now: every listener is bound and serving.
        control.spawn(
            advertiser
                .run(discovery.clone(), table.clone(), shutdown.clone())
                .instrument(tracing::info_span!("advertise")),
        );
        if owns_process {
            control.spawn(crate::systemd::notify_ready(health.clone()));
        }
        let delay = settings.shutdown_delay.unwrap_or(match discovery.environment.value {
            EnvironmentKind::Kubernetes => Duration::from_secs(5),
            _ => Duration::ZERO,
        });
        Ok(Running {
            health,
            shutdown,
            done: done_rx,
            runtimes,
            delay,
            grace: settings.shutdown_grace,
            owns_process,
            _state_lock,
        })
    }
}

impl Running {
    /// Wait for a signal — or, for a [`Daemon`], its owner's word (`owner`) — or a plane
    /// stopping; shut down in order, and say how it ended.
    fn wait(mut self, control: &tokio::runtime::Runtime, owner: Option<Stop>) -> ExitCode {
        let planes = self.runtimes.len();
        let code = control.block_on(async {
            let stops = match owner {
                Some(owner) => Stops::Owner(Some(owner)),
                None => match Stops::signals() {
                    Ok(signals) => signals,
                    Err(_) => {
                        error!("cannot install signal handlers");
                        return ExitCode::FAILURE;
                    }
                },
            };
            lifecycle(
                &self.health,
                &self.shutdown,
                &mut self.done,
                planes,
                self.delay,
                self.grace,
                stops,
                self.owns_process,
            )
            .await
        });
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
        code
    }
}

/// Signals with a default action of "terminate" that nothing in netstrap means: log each (at most
/// once per 10 s per kind, with the count not logged) and carry on.
fn ignore_stray_signals() {
    use crate::logging::Throttle;
    static THROTTLES: [Throttle; 4] = [const { Throttle::new(Duration::from_secs(10)) }; 4];
    let kinds = [
        (
            SignalKind::hangup(),
            "SIGHUP",
            "nothing to reload (configuration is read at start; restart to change it)",
        ),
        (SignalKind::user_defined1(), "SIGUSR1", "no meaning here"),
        (SignalKind::user_defined2(), "SIGUSR2", "no meaning here"),
        (SignalKind::alarm(), "SIGALRM", "no meaning here"),
    ];
    for (i, (kind, name, why)) in kinds.into_iter().enumerate() {
        match signal(kind) {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if let Some(suppressed) = THROTTLES[i].allow() {
                            warn!(suppressed, "{name} ignored: {why}");
                        }
                    }
                });
            }
            Err(e) => warn!("cannot handle {name} (it would end the process): {e}"),
        }
    }
}

/// How a [`Daemon`]'s owner asks it to stop.
type Stop = tokio::sync::oneshot::Receiver<()>;

/// What asks netstrap to stop: the process's signals (`run`), or a [`Daemon`]'s owner.
enum Stops {
    Signals {
        term: Signal,
        int: Signal,
        quit: Signal,
    },
    /// Asked once; there is no second request (`Daemon::shutdown` takes the daemon).
    Owner(Option<Stop>),
}

impl Stops {
    fn signals() -> std::io::Result<Stops> {
        Ok(Stops::Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next request to stop: what it was, for the log.
    async fn next(&mut self) -> &'static str {
        match self {
            Stops::Signals { term, int, quit } => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = quit.recv() => "SIGQUIT",
            },
            Stops::Owner(owner) => match owner.take() {
                // A dropped sender (its `Daemon` dropped) is a request too.
                Some(owner) => {
                    let _ = owner.await;
                    "shutdown requested"
                }
                None => std::future::pending().await,
            },
        }
    }
}

/// Wait for a signal (or a plane failing), then shut down in order.
#[allow(clippy::too_many_arguments)]
async fn lifecycle(
    health: &Health,
    shutdown: &Shutdown,
    done: &mut tokio::sync::mpsc::UnboundedReceiver<Done>,
    planes: usize,
    delay: Duration,
    grace: Duration,
    mut stops: Stops,
    owns_process: bool,
) -> ExitCode {
    tokio::select! {
        why = stops.next() => info!("{why}: shutting down"),
        Some((plane, result)) = done.recv() => {
            // A plane stopped by itself: the node is not serving what it advertises.
            let why = result.err().map_or_else(|| "stopped unexpectedly".into(), |e| e.to_string());
            error!("{} plane: {why}", plane.name());
            return ExitCode::FAILURE;
        }
    }
    health.start_draining();
    if owns_process {
        crate::systemd::stopping();
    }
    info!(delay_s = delay.as_secs(), "readiness is 503; waiting before closing the listeners");
    let second = stops.next();
    tokio::pin!(second);
    tokio::select! {
        _ = tokio::time::sleep(delay) => {},
        _ = &mut second => {
            warn!("second signal: exiting now");
            return ExitCode::from(130);
        }
    }
    shutdown.cancel();
    info!(grace_s = grace.as_secs(), "listeners closed; draining in-flight work");
    let drained = async {
        for _ in 0..planes {
            if done.recv().await.is_none() {
                break;
            }
        }
    };
    tokio::select! {
        _ = drained => info!("drained; bye"),
        _ = tokio::time::sleep(grace) => warn!("grace period over; exiting with work in flight"),
        _ = &mut second => {
            warn!("second signal: exiting now");
            return ExitCode::from(130);
        }
    }
    ExitCode::SUCCESS
}
