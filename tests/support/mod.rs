//! Real-shaped stand-ins shared by the integration tests, and the harnesses that run netstrap:
//! in-process (`harness`) or as a process (`process`). Each test binary uses only part of this,
//! so unused items are expected.
#![allow(dead_code)]

pub mod dns_server;
pub mod edgelake;
pub mod fake_edgelake;
pub mod fake_kube;
pub mod gate;
pub mod harness;
pub mod hostns;
pub mod ledger;
pub mod netns;
pub mod ports;
pub mod prereq;
pub mod process;
pub mod snapshot;
pub mod static_binary;
#[macro_use]
pub mod tools;
