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
    /// Bumped on every change, for whoever waits for readiness (`systemd::notify_ready`).
    changed: Arc<tokio::sync::watch::Sender<()>>,
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
        self.lock().insert(name.to_string(), check);
        self.changed.send_replace(());
    }

    /// A receiver that sees every change of a check or of draining.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The checks, also after a thread panicked holding them: a map insert leaves the map
    /// whole, and readiness must never answer from an empty (all-passing) set instead.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Check>> {
        self.checks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        self.changed.send_replace(());
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The verdict, skipping the checks named in `exclude`.
    pub fn readiness(&self, exclude: &[&str]) -> Readiness {
        let checks: Vec<(String, Check)> = self
            .lock()
            .iter()
            .filter(|(n, _)| !exclude.contains(&n.as_str()))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        let draining = self.is_draining() && !exclude.contains(&"shutdown");
        let ready = !draining && checks.iter().all(|(_, c)| *c == Check::Ok);
        Readiness { ready, draining, checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_stays_closed_after_a_thread_panicked_holding_the_checks() {
        let health = Health::new();
        health.register("policy", "not declared yet");
        let h = health.clone();
        let _ = std::thread::spawn(move || {
            let _guard = h.checks.lock().unwrap();
            panic!("a panic while the checks are held poisons their lock");
        })
        .join();
        assert!(health.checks.is_poisoned());
        let r = health.readiness(&[]);
        assert!(!r.ready, "a pending check still fails readiness: {:?}", r.checks);
        assert_eq!(r.checks.len(), 1);
        health.ok("policy");
        assert!(health.readiness(&[]).ready, "and checks still update");
    }
}
