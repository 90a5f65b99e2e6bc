//! A plain host in a network namespace, for tests of netstrap on a host (overlay interfaces,
//! host networking): the "host" namespace has `eth0` 192.168.60.10/24 with a default route,
//! and a "peer" namespace on the same link (192.168.60.100) dials it from outside. Overlay
//! interfaces are TUN devices, which is what tailscaled (`tailscale0`) and nebula (`nebula1`)
//! create. Dropping it kills every process in both namespaces and deletes them; namespaces
//! of a killed test run are removed by the next one.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const HOST_IP: &str = "192.168.60.10";
pub const PEER_IP: &str = "192.168.60.100";
const PREFIX: &str = "nsh";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static HOSTS: AtomicU32 = AtomicU32::new(0);

pub struct Host {
    pub netns: String,
    pub peer: String,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e} (install it: see .ci/run)", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `ip -n <netns> <words>`, which must succeed.
pub fn ip(netns: &str, words: &str) {
    let mut args = vec!["ip", "-n", netns];
    args.extend(words.split_whitespace());
    run(&args).unwrap_or_else(|e| panic!("{e}"));
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()) == Some("0")
}

fn delete(netns: &str) {
    for pid in run(&["ip", "netns", "pids", netns]).unwrap_or_default().split_whitespace() {
        let _ = run(&["kill", "-KILL", pid]);
    }
    let _ = run(&["ip", "netns", "del", netns]);
}

fn remove_leftovers() {
    for line in run(&["ip", "netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.split('-');
        if let (Some(PREFIX), Some(pid)) = (parts.next(), parts.next())
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
        {
            delete(name);
        }
    }
}

impl Host {
    /// The host and its peer; `None` (after `support::prereq::missing`) without root or
    /// network namespaces.
    pub fn new() -> Option<Host> {
        if !is_root() {
            super::prereq::missing("not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN");
            return None;
        }
        remove_leftovers();
        let prefix = format!("{PREFIX}-{}-{}", std::process::id(), HOSTS.fetch_add(1, Ordering::SeqCst));
        let (netns, peer) = (format!("{prefix}-host"), format!("{prefix}-peer"));
        if let Err(e) = run(&["ip", "netns", "add", &netns]) {
            super::prereq::missing(&format!("cannot create a network namespace ({e})"));
            return None;
        }
        let host = Host { netns, peer };
        run(&["ip", "netns", "add", &host.peer]).unwrap();
        ip(&host.netns, &format!("link add eth0 type veth peer name eth0 netns {}", host.peer));
        for (ns, addr) in [(&host.netns, HOST_IP), (&host.peer, PEER_IP)] {
            ip(ns, &format!("addr add {addr}/24 dev eth0"));
            ip(ns, "link set eth0 up");
            ip(ns, "link set lo up");
        }
        ip(&host.netns, "route add default via 192.168.60.1");
        Some(host)
    }

    /// A TUN interface `name` with `addr` (`100.101.102.103/32`), as an overlay daemon makes it.
    pub fn add_tun(&self, name: &str, addr: &str) {
        ip(&self.netns, &format!("tuntap add dev {name} mode tun"));
        ip(&self.netns, &format!("addr add {addr} dev {name}"));
        ip(&self.netns, &format!("link set {name} up"));
    }

    /// `args` in the host namespace with exactly `env` (plus `PATH`).
    pub fn command(&self, env: &[(&str, String)], args: &[&str]) -> Command {
        in_netns(&self.netns, env, args)
    }

    /// `args` in the peer namespace.
    pub fn peer_command(&self, args: &[&str]) -> Command {
        in_netns(&self.peer, &[], args)
    }

    /// Run `args` in the peer namespace with `stdin`.
    pub fn peer_exec(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .peer_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

fn in_netns(netns: &str, env: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "env", "-i", &format!("PATH={PATH_ENV}")]);
    cmd.args(env.iter().map(|(k, v)| format!("{k}={v}"))).args(args);
    cmd.stdin(Stdio::null());
    cmd
}

impl Drop for Host {
    fn drop(&mut self) {
        delete(&self.netns);
        delete(&self.peer);
    }
}
