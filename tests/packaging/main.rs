#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod arm64;
mod docker;
mod packaging;
mod packaging_host;
mod readme;
