//! A prerequisite a test needs is missing (root, network namespaces, Docker, a tool, the
//! EdgeLake snapshot, the advisory database): under `CI=true` that fails the test — a skip is
//! not a pass, and CI installs everything — elsewhere it prints `SKIPPED: <why>` and the
//! caller returns.

/// Whether this run is CI's (`CI=true`), where every test must run.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Report the missing prerequisite: a panic under CI, else `SKIPPED: <why>` on stderr.
pub fn missing(why: &str) {
    assert!(!ci(), "CI=true and {why}");
    eprintln!("SKIPPED: {why}");
}
