//! `netstrap run` inside the test binary ([`netstrap::lifecycle::Daemon`]), for tests where a
//! process is not the point: the same phases as the binary, with listeners the test bound itself
//! handed in (no port is ever chosen free and bound again later, so no other test or outgoing
//! connection can take it in between) and shutdown by a call instead of SIGTERM.
//!
//! What needs a real process stays in `support::process`: exit codes and signals, the state lock
//! against `kill -9`, stderr, RSS.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use netstrap::config::{Layers, Origin, Settings};
use netstrap::lifecycle::{Daemon, Prebound, StartError};
use netstrap::table::Plane;

use super::process::{http_get, poll_ready};

/// A running in-process netstrap; drained and stopped when dropped.
pub struct Node {
    daemon: Option<Daemon>,
    pub tcp: u16,
    pub rest: u16,
    pub broker: u16,
    /// `NETSTRAP_STATE_DIR`.
    pub state: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

const PLANES: [Plane; 3] = [Plane::Tcp, Plane::Rest, Plane::Broker];

impl Node {
    /// Start on host-kind defaults plus `env` (later pairs win); fails the test saying why if it
    /// does not start.
    pub fn start(env: &[(&str, &str)]) -> Node {
        Node::try_start(env).unwrap_or_else(|e| panic!("netstrap did not start with {env:?}: {e}"))
    }

    /// Start as [`Node::start`] does, or say what kept it from starting.
    ///
    /// Each plane whose port `env` does not set (nor binds to LOCAL_IP with `*_BIND=true`) gets a
    /// listener on 127.0.0.1:0, and its port goes into `ANYLOG_*_PORT` so that the table
    /// advertises it. `NETSTRAP_STATE_DIR` is a fresh temporary directory unless `env` sets it.
    pub fn try_start(env: &[(&str, &str)]) -> Result<Node, StartError> {
        let set = |key: &str| env.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let dir = match set("NETSTRAP_STATE_DIR") {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("a temporary directory")),
        };
        let state = match (&dir, set("NETSTRAP_STATE_DIR")) {
            (Some(dir), _) => dir.path().join("state"),
            (None, given) => PathBuf::from(given.unwrap_or_default()),
        };
        let mut prebound = Prebound::default();
        let mut vars: Vec<(String, String)> = [
            ("NETSTRAP_ENVIRONMENT", "host"),
            ("LOCAL_IP", "127.0.0.1"),
            ("NETSTRAP_SOURCE_TIMEOUT_MS", "1000"),
            // The broker binds 0.0.0.0 here (BROKER_BIND=false): tests that are not about
            // credentials let anyone in, as an operator would have to say.
            ("NETSTRAP_BROKER_ANONYMOUS", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.push(("NETSTRAP_STATE_DIR".into(), state.display().to_string()));
        let mut ports = [0u16; 3];
        for (i, plane) in PLANES.into_iter().enumerate() {
            let chosen = set(plane.port_var()).or(set(plane.own_port_var()));
            let bound_to_local_ip = set(plane.bind_var()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
            ports[i] = match chosen {
                Some(port) => port.parse().unwrap_or(0),
                None if bound_to_local_ip => 0,
                None => {
                    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener on 127.0.0.1:0");
                    let port = listener.local_addr().expect("its address").port();
                    vars.push((plane.port_var().into(), port.to_string()));
                    prebound.planes.push((plane, listener));
                    port
                }
            };
        }
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // One layer, the last value of each name winning, as a process's environment would.
        let settings = Settings::parse(&Layers::new().push(Origin::Env, vars))
            .unwrap_or_else(|e| panic!("settings from {env:?} do not parse: {e}"));
        let daemon = Daemon::start(settings, prebound)?;
        let [tcp, rest, broker] = ports;
        Ok(Node { daemon: Some(daemon), tcp, rest, broker, state, _dir: dir })
    }

    /// GET `path` on the rest port: status and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.rest, path)
    }

    /// Wait up to 30 s for `/readyz` 200; on timeout, fail with the last `/readyz?verbose`.
    pub fn ready(&self) {
        if let Err(last) = poll_ready(self.rest) {
            panic!("timed out waiting for ready; last /readyz?verbose: {last:?}");
        }
    }

    /// Drain as on SIGTERM; the exit code `netstrap run` would have.
    pub fn stop(mut self) -> ExitCode {
        self.daemon.take().map(Daemon::shutdown).unwrap_or(ExitCode::FAILURE)
    }
}
