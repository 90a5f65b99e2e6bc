//! `NETSTRAP_READY_UPSTREAM`: readiness that follows the co-located node. In relay mode a
//! netstrap whose node is down still accepts connections and closes each at once; with this
//! check the pod (or the Docker HEALTHCHECK) turns unready instead, so traffic goes elsewhere.
//! In Kubernetes the node container's own probe usually does this job; the check is off by
//! default.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::{info, warn};

use crate::health::{Check, Health};
use crate::planes::Shutdown;

/// Readiness check name.
pub const CHECK_UPSTREAM: &str = "upstream";

/// How often the upstreams are dialed.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Dial every `(plane, address)` each [`INTERVAL`] until shutdown; ready while all accept a
/// TCP connection within `timeout`. Transitions are logged.
pub async fn watch(
    upstreams: Vec<(&'static str, SocketAddr)>,
    health: Health,
    timeout: Duration,
    shutdown: Shutdown,
) {
    let mut last: Option<String> = None;
    loop {
        let mut failed = Vec::new();
        for (plane, addr) in &upstreams {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failed.push(format!("{plane} upstream {addr}: {e}")),
                Err(_) => failed.push(format!("{plane} upstream {addr}: no connection within {timeout:?}")),
            }
        }
        let now = failed.join("; ");
        if failed.is_empty() {
            health.ok(CHECK_UPSTREAM);
            if last.as_deref().is_some_and(|l| !l.is_empty()) {
                info!("the node's upstreams accept connections again");
            }
        } else {
            health.set(CHECK_UPSTREAM, Check::Pending(format!("the node is not accepting: {now}")));
            if last.as_deref() != Some(now.as_str()) {
                warn!("not ready: the node is not accepting: {now}");
            }
        }
        last = Some(now);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
