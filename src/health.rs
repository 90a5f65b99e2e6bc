//! Liveness and readiness.
//!
//! Readiness is a set of named checks (latches): `listeners`, `discovery`, `broker`, and
//! later `policy`. Each starts pending with a reason and is set ok or failed by the stage
//! that owns it; `/readyz` is 200 only when every check not excluded is ok and the process is
//! not draining. Liveness never depends on anything outside the process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// The state of one readiness check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Check {
    Pending(String),
    Ok,
    Failed(String),
}

/// The readiness verdict with every check, for `/readyz?verbose` and `/v1/network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub draining: bool,
    pub checks: Vec<(String, Check)>,
}

impl Readiness {
    /// kube-apiserver's `?verbose` text: `[+]name ok` / `[-]name failed: reason`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, check) in &self.checks {
            let _ = match check {
                Check::Ok => writeln!(out, "[+]{name} ok"),
                Check::Pending(r) => writeln!(out, "[-]{name} pending: {r}"),
                Check::Failed(r) => writeln!(out, "[-]{name} failed: {r}"),
            };
        }
        if self.draining {
            out.push_str("[-]shutdown draining: the process is shutting down\n");
        }
        out.push_str(if self.ready { "readyz check passed\n" } else { "readyz check failed\n" });
        out
    }
}

/// Shared health state. Clones share the same checks.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
    draining: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Add a check, pending until its owner reports.
    pub fn register(&self, name: &str, why_pending: &str) {
        self.set(name, Check::Pending(why_pending.to_string()));
    }

    pub fn set(&self, name: &str, check: Check) {
        if let Ok(mut c) = self.checks.lock() {
            c.insert(name.to_string(), check);
        }
    }

    pub fn ok(&self, name: &str) {
        self.set(name, Check::Ok);
    }

    pub fn fail(&self, name: &str, reason: impl Into<String>) {
        self.set(name, Check::Failed(reason.into()));
    }

    /// Shutdown started: readiness fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The verdict, skipping the checks named in `exclude`.
    pub fn readiness(&self, exclude: &[&str]) -> Readiness {
        let checks: Vec<(String, Check)> = self
            .checks
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(n, _)| !exclude.contains(&n.as_str()))
                    .map(|(n, c)| (n.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let draining = self.is_draining() && !exclude.contains(&"shutdown");
        let ready = !draining && checks.iter().all(|(_, c)| *c == Check::Ok);
        Readiness { ready, draining, checks }
    }
}
