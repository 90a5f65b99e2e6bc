#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod cluster_e2e;
mod host_network;
mod host_setup;
mod overlay;
mod pod_discovery;
