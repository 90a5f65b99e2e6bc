#![forbid(unsafe_code)]
//! netstrap — a correct, stable network identity for peer-to-peer data nodes.

pub mod cli;
pub mod config;
pub mod discover;
pub mod policy;
pub mod provenance;
