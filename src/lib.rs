#![deny(unsafe_code)] // one exception, with its reason: `memory::trim`
//! netstrap — a correct, stable network identity for peer-to-peer data nodes
//! (EdgeLake/AnyLog first) on Kubernetes, Docker and plain hosts.
//!
//! # Layout
//!
//! Modules follow the data flow; each stage hands plain structs to the next.
//!
//! - [`config`] — flags > environment > TOML file > defaults, parsed by a pure function of
//!   [`config::Layers`]; EdgeLake's variable names and defaults; [`config::variables`] is the
//!   reference the README is checked against.
//! - [`discover`] — the environment kind, the local IP, the external IP chain
//!   ([`discover::external`], with [`discover::cloud`], [`discover::stun`], [`discover::echo`]
//!   and the Kubernetes API in [`discover::kubernetes`] / [`discover::cluster_api`]), the
//!   stable name ([`discover::name`], [`discover::dns`]) and the exposed ports; every value
//!   with its [`provenance`].
//! - [`table`] — the connection table: what each plane binds and advertises, and why.
//! - [`bind`] — binding the listeners, with errors that name plane, address and cause.
//! - [`planes`] — the tcp (peer protocol / relay), rest (API + proxy) and broker (MQTT) planes.
//! - [`health`] — readiness latches and draining; [`metrics`] — Prometheus metrics.
//! - [`lifecycle`] — `netstrap run`: discover, bind, serve, advertise, shut down gracefully.
//! - [`policy`] — EdgeLake policies: rendering, ids, the `!var` template language.
//! - [`advertise`] — render, write the node's files ([`state`]: atomic writes), declare in a
//!   [`registry`] (EdgeLake REST, JSON-lines file, none) with retry, and watch for changes.
//! - [`verify`] — self-verification of the advertised endpoints; [`peers`] — reachability of
//!   every node in the registry.
//! - [`tls`] — optional TLS on the rest and broker planes: certificate reload, SAN check.
//! - [`cli`], [`report`], [`summary`], [`probe`], [`logging`] — the command line and its output
//!   ([`summary`]: what `netstrap run` prints once at start).

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
pub mod state;
pub mod summary;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod verify;
