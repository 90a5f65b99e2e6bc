//! `cargo audit`, as a test: every crate in Cargo.lock checked against the RustSec advisory
//! database snapshot the project keeps beside it (`../shared/advisory-db`, or
//! `NETSTRAP_ADVISORY_DB`), with the `rustsec` library cargo-audit itself is built on. No
//! network: the snapshot is read from disk.
//!
//! A vulnerability fails the test. An informational advisory (unmaintained, unsound) fails it
//! too unless it is listed in [`ACCEPTED`] with the reason we keep the crate; an entry there
//! that no longer matches fails as well, so the list cannot go stale.

use crate::support::prereq;

use std::path::PathBuf;

use rustsec::advisory::Informational;
use rustsec::report::{Report, Settings};
use rustsec::{Database, Lockfile};

/// Informational advisories we accept, with why.
const ACCEPTED: &[(&str, &str)] = &[];

fn database_dir() -> PathBuf {
    std::env::var_os("NETSTRAP_ADVISORY_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/advisory-db"))
}

#[test]
fn no_dependency_has_a_known_vulnerability_or_an_unaccepted_warning() {
    let dir = database_dir();
    if !dir.join("crates").is_dir() {
        prereq::missing(&format!(
            "no advisory database at {} (set NETSTRAP_ADVISORY_DB to a rustsec/advisory-db checkout)",
            dir.display()
        ));
        return;
    }
    let db = Database::open(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    assert!(db.iter().count() > 100, "{} holds too few advisories to be the database", dir.display());
    let lockfile = Lockfile::load(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let settings = Settings {
        informational_warnings: vec![
            Informational::Unmaintained,
            Informational::Unsound,
            Informational::Notice,
        ],
        ..Settings::default()
    };
    let report = Report::generate(&db, &lockfile, &settings);

    let vulnerabilities: Vec<String> = report
        .vulnerabilities
        .list
        .iter()
        .map(|v| format!("{} {} {}: {}", v.advisory.id, v.package.name, v.package.version, v.advisory.title))
        .collect();
    assert!(vulnerabilities.is_empty(), "vulnerable dependencies:\n{}", vulnerabilities.join("\n"));

    let mut unaccepted = Vec::new();
    let mut seen = Vec::new();
    for warning in report.warnings.values().flatten() {
        let Some(advisory) = &warning.advisory else { continue };
        let id = advisory.id.as_str().to_string();
        if ACCEPTED.iter().any(|(a, _)| *a == id) {
            seen.push(id);
        } else {
            unaccepted.push(format!(
                "{id} {} {} ({:?}): {}",
                warning.package.name, warning.package.version, warning.kind, advisory.title
            ));
        }
    }
    assert!(
        unaccepted.is_empty(),
        "advisories against dependencies (replace the crate, or accept it in tests/it/audit.rs with why):\n{}",
        unaccepted.join("\n")
    );
    let stale: Vec<&str> =
        ACCEPTED.iter().map(|(a, _)| *a).filter(|a| !seen.iter().any(|s| s == a)).collect();
    assert!(stale.is_empty(), "accepted advisories that no longer apply, remove them: {stale:?}");
}
