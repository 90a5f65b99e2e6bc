//! Real-shaped stand-ins shared by the integration tests. Each test binary uses only
//! part of this, so unused items are expected.
#![allow(dead_code)]

pub mod dns_server;
pub mod edgelake;
pub mod fake_edgelake;
pub mod fake_kube;
pub mod hostns;
pub mod ledger;
pub mod netns;
pub mod ports;
pub mod prereq;
pub mod process;
