//! The static x86_64 release binary, built as the README builds it (`target/`, `+crt-static`),
//! once per test process: tests/packaging/docker.rs, tests/packaging/arm64.rs and tests/packaging/readme.rs share the build.
//! Built here, not by the crate that runs the tests: `cargo test` does not hold target/'s lock
//! while tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

pub fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target_dir = repo.join("target");
        let started = Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo)
            .args(["build", "--locked", "--release", "--target", "x86_64-unknown-linux-gnu"])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("CARGO_TARGET_DIR", &target_dir);
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(out.status.success(), "static build failed:\n{}", String::from_utf8_lossy(&out.stderr));
        println!("x86_64 static release build: {:.0?}", started.elapsed());
        target_dir.join("x86_64-unknown-linux-gnu/release/netstrap")
    })
}
