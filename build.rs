//! Build facts for `netstrap_build_info` (src/metrics.rs): the target triple, and the commit
//! from `REVISION` (docker/Dockerfile's build argument; `REVISION=$(git rev-parse HEAD)` for
//! a host build), `unknown` when unset.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REVISION");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    let revision = std::env::var("REVISION")
        .ok()
        .map(|r| r.trim().chars().filter(|c| !c.is_control()).take(64).collect::<String>())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NETSTRAP_TARGET={target}");
    println!("cargo:rustc-env=NETSTRAP_REVISION={revision}");
}
