//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) for `netstrap run`: `READY=1` the
//! first time `/readyz` would answer 200, `STOPPING=1` when shutdown starts (the moment
//! `/readyz` turns 503). Nothing happens without `$NOTIFY_SOCKET` (not started by systemd, or
//! another `Type=`). A failed send is logged once and changes nothing else.
//!
//! packaging/systemd/netstrap.service uses it; README, "Run on a host".

use sd_notify::NotifyState;
use tracing::{info, warn};

use crate::health::Health;

fn send(state: NotifyState<'_>, what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(&[state]) {
        Ok(()) => info!("told systemd: {what}"),
        Err(e) => warn!("cannot tell systemd {what} ($NOTIFY_SOCKET): {e}"),
    }
}

/// Wait until every readiness check passes (what a plain `/readyz` answers), then send
/// `READY=1`, once. Returns early when shutdown starts first.
pub async fn notify_ready(health: Health) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut changes = health.subscribe();
    loop {
        // Marked seen before reading: a change after this read wakes the next `changed`.
        changes.borrow_and_update();
        let readiness = health.readiness(&[]);
        if readiness.ready {
            send(NotifyState::Ready, "READY=1");
            return;
        }
        if readiness.draining || changes.changed().await.is_err() {
            return;
        }
    }
}

/// Shutdown started: `STOPPING=1`.
pub fn stopping() {
    send(NotifyState::Stopping, "STOPPING=1");
}
