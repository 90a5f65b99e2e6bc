#![forbid(unsafe_code)]
//! netstrap — a correct, stable network identity for peer-to-peer data nodes.

pub mod bind;
pub mod cli;
pub mod config;
pub mod discover;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod planes;
pub mod policy;
pub mod probe;
pub mod provenance;
pub mod report;
pub mod table;
