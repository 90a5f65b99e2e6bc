#![deny(unsafe_code)] // one exception, with its reason: `memory::trim`
//! netstrap — a correct, stable network identity for peer-to-peer data nodes
//! (EdgeLake/AnyLog first) on Kubernetes, Docker and plain hosts.
//!
//! # Layout
//!
//! Modules follow the data flow and depend one way, on what comes before them in this list
//! (no import circle; each stage hands plain, typed structs to the next and JSON is made only
//! at the HTTP/TCP edge):
//!
//! - leaves: [`addr`] (`host:port`, where to dial a wildcard bind), [`provenance`] (every
//!   value with where it came from), [`logging`], [`memory`].
//! - [`config`] — flags > environment > TOML file > defaults, parsed by a pure function of
//!   [`config::Layers`], split by concept (errors, reader, choices, TLS, ledger, one settings
//!   group per plane, overlay, Open Horizon); EdgeLake's variable names and defaults;
//!   [`config::Plane`] names each plane's variables;
//!   [`config::variables`] is the one source of every default, which the README's table and a
//!   test of the parser are checked against.
//! - [`discover`] — the environment kind, the local IP, the external IP chain
//!   ([`discover::external`], with [`discover::cloud`], [`discover::stun`], [`discover::echo`]
//!   and the Kubernetes API in [`discover::kubernetes`] / [`discover::cluster_api`]), the
//!   stable name ([`discover::name`], [`discover::dns`]) and the exposed ports.
//! - [`table`] — the connection table: what each plane binds and advertises, and why.
//! - [`policy`] — EdgeLake policies: rendering, ids, the `!var` template language.
//! - [`registry`] — where policies are declared (EdgeLake REST, JSON-lines file, none) and the
//!   nodes read back; [`peers`] — reachability of every node in the registry.
//! - [`snapshot`] — what the planes serve about the node (identity, table, discovery,
//!   declaration, verification), typed; [`health`] — readiness latches and draining;
//!   [`metrics`] — Prometheus metrics.
//! - [`tls`], [`bind`], [`planes`] — the tcp (peer protocol / relay), rest (API + proxy) and
//!   broker (MQTT) planes; [`admin`] — the optional admin listener; [`verify`] —
//!   self-verification of the advertised endpoints.
//! - [`advertise`] — render, write the node's files ([`state`]: atomic writes), declare with
//!   retry, watch for changes; [`systemd`] — `READY=1`/`STOPPING=1` (`Type=notify`).
//! - [`lifecycle`] — `netstrap run` as typed phases: `Prepared` (certificate, discovery, the
//!   [`lifecycle::Plan`] that `discover` and `policy` share) → `Bound` (every listener) →
//!   `Running` (planes, then the advertiser) → wait for a signal and drain; every start-up
//!   failure is a [`lifecycle::StartError`], mapped to an exit code in one place.
//! - [`cli`], [`report`], [`summary`], [`probe`] — the command line and its output ([`summary`]:
//!   what `netstrap run` prints once at start); [`cli::manual`] — its completions, man page and
//!   `--help` epilogue.

pub mod addr;
pub mod admin;
pub mod advertise;
pub mod bind;
pub mod cli;
pub mod config;
pub mod discover;
pub mod health;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod peers;
pub mod planes;
pub mod policy;
pub mod probe;
pub mod provenance;
pub mod registry;
pub mod report;
pub mod snapshot;
pub mod state;
pub mod summary;
pub mod systemd;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod verify;
