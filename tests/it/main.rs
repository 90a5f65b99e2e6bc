#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod advertise;
mod advertise_anylog;
mod audit;
mod broker_backlog;
mod broker_limits;
mod broker_plane;
mod cli;
mod cluster_dns;
mod config;
mod discovery;
mod external_sources;
mod horizon;
mod kubernetes_api;
mod manual;
mod metrics;
mod policy_ids;
mod registry_anylog;
mod registry_file;
mod rest_plane;
mod run;
mod tcp_plane;
mod templates;
mod tls;
