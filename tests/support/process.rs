//! `netstrap run` as a child process, for tests that need several of them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::ports::free_port;

/// A running `netstrap run`; killed when dropped.
pub struct Netstrap {
    pub child: Child,
    pub tcp: u16,
    pub rest: u16,
    pub state: PathBuf,
}

/// Start netstrap on host-kind defaults plus `env`, with free ports unless `env` sets them.
pub fn start(state: &Path, env: &[(&str, String)]) -> Netstrap {
    let get = |k: &str| env.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
    let tcp = get("ANYLOG_SERVER_PORT").map(|p| p.parse().unwrap()).unwrap_or_else(free_port);
    let rest = get("ANYLOG_REST_PORT").map(|p| p.parse().unwrap()).unwrap_or_else(free_port);
    let child = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .arg("run")
        .env_clear()
        .env("NETSTRAP_ENVIRONMENT", "host")
        .env("LOCAL_IP", "127.0.0.1")
        .env("ANYLOG_SERVER_PORT", tcp.to_string())
        .env("ANYLOG_REST_PORT", rest.to_string())
        .env("NETSTRAP_STATE_DIR", state)
        .env("NETSTRAP_SOURCE_TIMEOUT_MS", "1000")
        // The broker binds 0.0.0.0 here (BROKER_BIND=false): tests that are not about
        // credentials let anyone in, as an operator would have to say (tests/it/broker_limits.rs).
        .env("NETSTRAP_BROKER_ANONYMOUS", "true")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Netstrap { child, tcp, rest, state: state.to_path_buf() }
}

/// Poll `/readyz?verbose` on the rest port for up to 30 s: `Ok` at 200, else its last answer.
pub fn poll_ready(rest: u16) -> Result<(), Option<(u16, String)>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        match http_get(rest, "/readyz?verbose") {
            Some((200, _)) => return Ok(()),
            other => last = other,
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(last)
}

impl Netstrap {
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.rest, path)
    }

    /// Wait up to 30 s for `/readyz` 200; on timeout, fail saying why: that the process had
    /// exited (its log is on `stop()`), or its last `/readyz?verbose` answer.
    pub fn wait_ready(&self) {
        let Err(last) = poll_ready(self.rest) else { return };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let exited = stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z'));
        panic!("timed out waiting for ready (process exited: {exited}); last /readyz?verbose: {last:?}");
    }

    /// SIGTERM, then wait for the exit; returns the exit code and the log.
    pub fn stop(mut self) -> (i32, String) {
        Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut log = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut log);
                }
                return (status.code().unwrap_or(-1), log);
            }
            assert!(Instant::now() < deadline, "netstrap did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netstrap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on 127.0.0.1:`port` (HTTP/1.1, Connection: close): status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let code = reply.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

/// `netstrap run` with `env`: it must exit non-zero by itself; returns its stderr.
pub fn run_fails(state: &Path, env: &[(&str, String)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .arg("run")
        .env_clear()
        .env("NETSTRAP_ENVIRONMENT", "host")
        .env("LOCAL_IP", "127.0.0.1")
        .env("ANYLOG_SERVER_PORT", free_port().to_string())
        .env("ANYLOG_REST_PORT", free_port().to_string())
        .env("NETSTRAP_STATE_DIR", state)
        .env("NETSTRAP_SOURCE_TIMEOUT_MS", "500")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("netstrap kept running with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "netstrap exited 0 with {env:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}
