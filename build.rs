//! Build facts for `netstrap_build_info` (src/metrics.rs): the target triple, and the commit
//! from `REVISION` (docker/Dockerfile's build argument; `REVISION=$(git rev-parse HEAD)` for
//! a host build), `unknown` when unset.
//!
//! And one link option: a dynamically linked glibc executable gets its relative relocations
//! packed (`-z pack-relative-relocs`, DT_RELR). A Rust PIE carries ~18 000 of them (vtables,
//! string tables): as `.rela.dyn` that is 440 KB the dynamic loader reads and applies at every
//! start, as `.relr.dyn` 5 KB. Start → ready fell by 0.6–1.3 ms (docs/benchmarks.md, "Issue 17,
//! last round"). It needs GNU ld ≥ 2.38 and glibc ≥ 2.36 where the binary is built and run (the
//! binary then asks for `GLIBC_ABI_DT_RELR`); `NETSTRAP_PACK_RELOCS=0` turns it off for a build
//! meant for an older glibc. Static builds (`+crt-static`, the images) are left as they are.

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

    println!("cargo:rerun-if-env-changed=NETSTRAP_PACK_RELOCS");
    let cfg = |name: &str| std::env::var(name).unwrap_or_default();
    let dynamic_glibc = cfg("CARGO_CFG_TARGET_OS") == "linux"
        && cfg("CARGO_CFG_TARGET_ENV") == "gnu"
        && !cfg("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static");
    if dynamic_glibc && cfg("NETSTRAP_PACK_RELOCS") != "0" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
