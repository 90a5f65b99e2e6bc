//! netstrap for aarch64 (Raspberry Pi, Jetson): the static binary `docker/build-arm64` makes,
//! run under qemu-aarch64-static (`--version`, `discover --json`, `run` answering `/readyz` and
//! draining on SIGTERM), its ELF header, and the multi-arch image `docker/build-multiarch`
//! writes: an OCI image index with linux/amd64 and linux/arm64 images, read back from the
//! archive, by skopeo, through a real registry (docker-registry on loopback) that the engine
//! pulls the arm64 image from, loaded with `docker load`, and the arm64 image run.
//!
//! The aarch64 binary is built once per run with the `arm64-test` profile (Cargo.toml: no
//! optimisation or debug info; see README.md, "Run on arm64", for the measured difference)
//! into target/aarch64-static. Without the cross toolchain, qemu,
//! Docker, skopeo or docker-registry a test prints `SKIPPED: <why>` (a failure under `CI=true`;
//! .ci/run installs them all).

use crate::support::prereq;
use crate::support::static_binary;

use crate::support::ports;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// `free_port` (support/ports.rs): the port is for the arm64 binary, run under qemu.
use ports::free_port;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const QEMU: &str = "/usr/bin/qemu-aarch64-static";
/// The Cargo profile the tests build the aarch64 binary with (Cargo.toml).
const PROFILE: &str = "arm64-test";
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the aarch64 build and qemu need, and which of it is missing.
fn missing_cross() -> Option<String> {
    let sysroot = Command::new("/usr/bin/rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "/usr".into());
    let needs = [
        ("/usr/bin/cargo".to_string(), "cargo-web"),
        (format!("{sysroot}/lib/rustlib/aarch64-unknown-linux-gnu/lib"), "libstd-rust-web-dev:arm64"),
        ("/usr/bin/aarch64-linux-gnu-gcc".to_string(), "gcc-aarch64-linux-gnu"),
        ("/usr/aarch64-linux-gnu/lib/libc.a".to_string(), "libc6-dev-arm64-cross"),
        (QEMU.to_string(), "qemu-user-static"),
    ];
    let missing: Vec<String> = needs
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(p, pkg)| format!("{p} ({pkg})"))
        .collect();
    (!missing.is_empty())
        .then(|| format!("the aarch64 cross build needs {} (.ci/run installs them)", missing.join(", ")))
}

macro_rules! require {
    ($why:expr) => {
        if let Some(why) = $why {
            prereq::missing(&why);
            return;
        }
    };
}

/// The static aarch64 binary, built once per test run by the operators' script.
fn arm64_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let started = Instant::now();
        let out = run(Command::new(Path::new(REPO).join("docker/build-arm64"))
            .args(["--profile", PROFILE])
            .env_remove("CARGO")
            .env_remove("RUSTC_WRAPPER"));
        assert!(out.status.success(), "docker/build-arm64 failed:\n{}", String::from_utf8_lossy(&out.stderr));
        println!("aarch64 {PROFILE} build: {:.0?}", started.elapsed());
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "docker/build-arm64 printed {path:?}, which is not a file");
        path
    })
}

/// An ELF executable's machine, and whether it loads without a dynamic loader or shared
/// library (no PT_INTERP, no DT_NEEDED: static, or static-pie).
struct Elf {
    machine: u16,
    static_: bool,
}

fn elf(bytes: &[u8]) -> Elf {
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    assert_eq!(bytes[5], 1, "not little-endian");
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54) as usize, u16_at(56) as usize);
    let mut static_ = true;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => static_ = false, // PT_INTERP: a dynamic loader
            2 => {
                // PT_DYNAMIC: a static-pie has one (its relocations), but no DT_NEEDED.
                let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
                for entry in (off..off + size).step_by(16) {
                    match u64_at(entry) {
                        0 => break,
                        1 => static_ = false,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Elf { machine: u16_at(18), static_ }
}

#[test]
fn the_binary_is_a_static_aarch64_executable() {
    let _gate = crate::support::gate::enter(module_path!());
    require!(missing_cross());
    let bin = arm64_binary();
    let bytes = std::fs::read(bin).unwrap();
    let header = elf(&bytes);
    assert_eq!(header.machine, EM_AARCH64, "{bin:?} is for ELF machine {}, not aarch64", header.machine);
    assert!(header.static_, "{bin:?} needs a dynamic loader or shared libraries: not static");
    // The check tells the difference: this test program is linked dynamically against glibc.
    let own = elf(&std::fs::read(std::env::current_exe().unwrap()).unwrap());
    assert!(!own.static_, "the ELF check calls a dynamically linked test binary static");
    println!("aarch64 binary: {} bytes ({PROFILE} profile)", bytes.len());
}

#[test]
fn version_under_qemu() {
    let _gate = crate::support::gate::enter(module_path!());
    require!(missing_cross());
    let out = ok(Command::new(QEMU).arg(arm64_binary()).arg("--version").env_clear());
    assert_eq!(out, format!("netstrap {}", env!("CARGO_PKG_VERSION")));
}

/// The environment of a host node on loopback (as tests/it/run.rs).
fn node_env<'a>(cmd: &'a mut Command, state: &Path, (tcp, rest, broker): (u16, u16, u16)) -> &'a mut Command {
    cmd.env_clear()
        .env("NETSTRAP_ENVIRONMENT", "host")
        .env("LOCAL_IP", "127.0.0.1")
        .env("DNS", "node1.example.net")
        .env("ANYLOG_SERVER_PORT", tcp.to_string())
        .env("ANYLOG_REST_PORT", rest.to_string())
        .env("ANYLOG_BROKER_PORT", broker.to_string())
        .env("NETSTRAP_BROKER_ANONYMOUS", "true")
        .env("NETSTRAP_STATE_DIR", state)
        .env("NETSTRAP_LOG_FORMAT", "json")
}

#[test]
fn discover_json_under_qemu() {
    let _gate = crate::support::gate::enter(module_path!());
    require!(missing_cross());
    let dir = tempfile::tempdir().unwrap();
    let out = ok(node_env(
        Command::new(QEMU).arg(arm64_binary()),
        &dir.path().join("state"),
        (41001, 41002, 41003),
    )
    .args(["discover", "--json"]));
    let json: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("discover --json is not JSON ({e}):\n{out}"));
    assert_eq!(json["discovery"]["environment"]["value"], "host", "{out}");
    assert_eq!(json["discovery"]["local_ip"]["value"], "127.0.0.1", "{out}");
    let rows = json["table"]["rows"].as_array().unwrap_or_else(|| panic!("no table rows:\n{out}"));
    let planes: Vec<(&str, u64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["plane"].as_str().unwrap(),
                r["port"]["value"].as_u64().unwrap(),
                r["external_host"]["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        planes,
        [
            ("tcp", 41001, "node1.example.net"),
            ("rest", 41002, "node1.example.net"),
            ("broker", 41003, "node1.example.net")
        ],
        "{out}"
    );
}

fn ready(rest: u16) -> bool {
    netstrap::probe::probe(
        format!("127.0.0.1:{rest}").parse().unwrap(),
        netstrap::probe::ProbeKind::Ready,
        Duration::from_secs(2),
    )
    .is_ok_and(|(code, _)| code == 200)
}

fn wait_exit(child: &mut Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    (status.and_then(|s| s.code()), log)
}

#[test]
fn run_answers_readyz_and_drains_on_sigterm_under_qemu() {
    let _gate = crate::support::gate::enter(module_path!());
    require!(missing_cross());
    let bin = arm64_binary();
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let mut child = node_env(Command::new(QEMU).arg(bin), &dir.path().join("state"), ports)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Emulated, it starts in a second or two; 60 s leaves room for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(ports.1) {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let (code, log) = wait_exit(&mut child, Duration::from_secs(1));
            panic!("the aarch64 netstrap was not ready within 60 s (exit {code:?}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let policy = dir.path().join("state/node_policy.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !policy.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let policy: Value = serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert_eq!(policy["generic"]["local_ip"], "node1.example.net");
    // qemu-user passes the signal on to the emulated process.
    ok(Command::new("kill").args(["-s", "TERM", &child.id().to_string()]));
    let (code, log) = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "no clean exit on SIGTERM:\n{log}");
    assert!(log.contains("drained"), "{log}");
}

// ---- the multi-arch image -----------------------------------------------------------------

fn missing_image_tools() -> Option<String> {
    if let Some(why) = missing_cross() {
        return Some(why);
    }
    match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!("no Docker engine answers: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        Err(e) => return Some(format!("no docker client: {e}")),
    }
    for (tool, pkg) in [("skopeo", "skopeo"), ("docker-registry", "docker-registry"), ("python3", "python3")]
    {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("no {tool} (Debian package {pkg}; .ci/run installs it)"));
        }
    }
    None
}

/// Docker objects and processes the test made, removed when dropped (failures included).
struct Cleanup {
    images: Vec<String>,
    containers: Vec<String>,
    registry: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f"]).args(&self.containers).output();
        }
        if !self.images.is_empty() {
            let _ = Command::new("docker").args(["rmi", "-f"]).args(&self.images).output();
        }
        if let Some(mut registry) = self.registry.take() {
            let _ = registry.kill();
            let _ = registry.wait();
        }
    }
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))).unwrap()
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    layout.join("blobs/sha256").join(digest.as_str().unwrap().strip_prefix("sha256:").unwrap())
}

fn platforms(index: &Value) -> BTreeSet<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

/// The arm64 image run by the engine (binfmt_misc has qemu-aarch64 registered), else its
/// binary copied out of a created container and run under qemu-aarch64-static.
fn run_arm64_image(image: &str, args: &[&str], cleanup: &mut Cleanup, scratch: &Path) -> String {
    let binfmt = std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap_or_default();
    if binfmt.starts_with("enabled") {
        println!("running {image} in the engine (binfmt_misc qemu-aarch64)");
        let name = format!("netstrap-arm64-{}", std::process::id());
        cleanup.containers.push(name.clone());
        ok(Command::new("docker").args(["run", "--name", &name, "-e", "DNS=edge-1", image]).args(args))
    } else {
        println!("no binfmt_misc qemu-aarch64: running the binary from {image} under {QEMU}");
        let name = format!("netstrap-arm64-{}", std::process::id());
        cleanup.containers.push(name.clone());
        ok(Command::new("docker").args(["create", "--name", &name, image]));
        let bin = scratch.join("netstrap-from-image");
        ok(Command::new("docker").args(["cp", &format!("{name}:/usr/local/bin/netstrap")]).arg(&bin));
        ok(Command::new(QEMU).arg(&bin).args(args).env_clear().env("DNS", "edge-1"))
    }
}

#[test]
fn multiarch_image_index_with_amd64_and_arm64() {
    let _gate = crate::support::gate::enter(module_path!());
    require!(missing_image_tools());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("netstrap-test-multiarch-{}-{nanos}", std::process::id());
    let tag = format!("{name}:0.1.0");
    let mut cleanup = Cleanup {
        images: vec![format!("{tag}-amd64"), format!("{tag}-arm64")],
        containers: vec![],
        registry: None,
    };
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("netstrap.oci.tar");

    let started = Instant::now();
    ok(Command::new(Path::new(REPO).join("docker/build-multiarch"))
        .args(["--tag", &tag, "--output"])
        .arg(&archive)
        .arg("--amd64-binary")
        .arg(static_binary::static_binary())
        .arg("--arm64-binary")
        .arg(arm64_binary()));
    println!("two images and the OCI archive: {:.1?}", started.elapsed());

    // The archive as an OCI image layout: index.json -> the image index, tagged 0.1.0 ->
    // one manifest per platform -> config and layers, each image's binary for its platform.
    let layout = scratch.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    ok(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&layout));
    assert_eq!(json_file(&layout.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
    let top = json_file(&layout.join("index.json"));
    let entry = &top["manifests"][0];
    assert_eq!(entry["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
    let index = json_file(&blob(&layout, &entry["digest"]));
    assert_eq!(platforms(&index), BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()]));
    for manifest in index["manifests"].as_array().unwrap() {
        let arch = manifest["platform"]["architecture"].as_str().unwrap();
        let image = json_file(&blob(&layout, &manifest["digest"]));
        let config = json_file(&blob(&layout, &image["config"]["digest"]));
        assert_eq!(config["architecture"], arch, "{arch} image's config");
        assert_eq!(config["config"]["User"], "65532:65532");
        let rootfs = scratch.path().join(format!("rootfs-{arch}"));
        std::fs::create_dir(&rootfs).unwrap();
        for layer in image["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
            ok(Command::new("tar").arg("-xzf").arg(blob(&layout, &layer["digest"])).arg("-C").arg(&rootfs));
        }
        let header = elf(&std::fs::read(rootfs.join("usr/local/bin/netstrap")).unwrap());
        let want = if arch == "arm64" { EM_AARCH64 } else { EM_X86_64 };
        assert_eq!(
            header.machine, want,
            "the {arch} image's /usr/local/bin/netstrap is for ELF machine {}",
            header.machine
        );
        assert!(header.static_, "the {arch} image's binary is not static");
    }

    // skopeo (containers/image) reads it as the same multi-arch image.
    let oci_ref = format!("oci-archive:{}:0.1.0", archive.display());
    let raw: Value =
        serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--raw", &oci_ref]))).unwrap();
    assert_eq!(platforms(&raw), platforms(&index));
    let arm: Value = serde_json::from_str(&ok(Command::new("skopeo").args([
        "inspect",
        "--override-arch",
        "arm64",
        &oci_ref,
    ])))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");

    // Published as one image to a registry (the operator's step, README.md), the engine sees
    // the index and pulls the arm64 image from it by platform.
    let port = free_port();
    let config = scratch.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            scratch.path().join("registry").display()
        ),
    )
    .unwrap();
    cleanup.registry = Some(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not listen on 127.0.0.1:{port} within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let remote = format!("127.0.0.1:{port}/netstrap:0.1.0");
    ok(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &oci_ref,
        &format!("docker://{remote}"),
    ]));
    let listed: Value = serde_json::from_str(&ok(Command::new("docker").args([
        "manifest",
        "inspect",
        "--insecure",
        &remote,
    ])))
    .unwrap();
    assert_eq!(platforms(&listed), platforms(&index), "the registry's index");
    cleanup.images.push(remote.clone());
    ok(Command::new("docker").args(["pull", "-q", "--platform", "linux/arm64", &remote]));
    assert_eq!(
        ok(Command::new("docker").args(["image", "inspect", "-f", "{{.Architecture}}", &remote])),
        "arm64"
    );

    // `docker load` gives each platform's image under its own tag.
    for image in &cleanup.images[..2] {
        ok(Command::new("docker").args(["rmi", image]));
    }
    ok(Command::new("docker").arg("load").arg("-i").arg(&archive));
    for arch in ["amd64", "arm64"] {
        let got = ok(Command::new("docker").args([
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            &format!("{tag}-{arch}"),
        ]));
        assert_eq!(got, format!("linux/{arch}"));
    }

    // The arm64 image runs.
    let image = format!("{tag}-arm64");
    let version = run_arm64_image(&image, &["--version"], &mut cleanup, scratch.path());
    assert_eq!(version, format!("netstrap {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_scripts_name_what_to_fix_in_bad_arguments() {
    let _gate = crate::support::gate::enter(module_path!());
    let script = |name: &str, args: &[&str]| {
        let out = run(Command::new(Path::new(REPO).join("docker").join(name)).args(args));
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = script("build-multiarch", &["--tag", "netstrap"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tag 'netstrap' has no tag: give name:tag"), "{err}");
    let (code, err) = script(
        "build-multiarch",
        &["--tag", "n:1", "--amd64-binary", "/nonexistent", "--arm64-binary", "/x"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("the amd64 binary /nonexistent does not exist"), "{err}");
    let (code, err) = script("build-arm64", &["--profle", "release"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unknown argument '--profle' (accepted: --profile NAME, --target-dir DIR)"),
        "{err}"
    );
}
