#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod edgelake_netstrap;
mod edgelake_plain;
mod horizon_edgelake;
