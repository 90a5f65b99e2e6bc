//! The admin listener (`NETSTRAP_ADMIN_ADDR`): `/metrics` and `/v1/*` on an address of their
//! own, off the public rest port that a LoadBalancer or NodePort Service exposes. When it is
//! set the rest plane answers 404 for those paths; kubelet's probes (`/livez`, `/readyz`),
//! EdgeLake's health answers and `/v1/identity` stay on the rest port: the pod spec points
//! the probes there, and self-verification asks `/v1/identity` through the advertised (public)
//! endpoints. The admin listener answers those too. Plain HTTP, never proxied to the node, at most
//! [`MAX_CONNECTIONS`] connections; it is served on the control runtime, apart from the rest
//! plane's event loops, so a saturated rest plane does not hold up a scrape.
//!
//! Bound with the planes, before anything is advertised: a bind failure is a start-up error
//! naming the variable.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::planes::rest::{self, Endpoints, RestOptions, RestState};
use crate::planes::{Shutdown, SnapshotRx};

/// Concurrent connections of the admin listener (scrapers and operators, not clients).
pub const MAX_CONNECTIONS: usize = 256;

/// A bind failure of the admin listener, phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("admin listener (NETSTRAP_ADMIN_ADDR={addr}): cannot bind {addr}: {cause}{hint}")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    pub cause: io::Error,
    pub hint: &'static str,
}

/// Bind `NETSTRAP_ADMIN_ADDR` (non-blocking).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, AdminBindError> {
    let listener = TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|_| l));
    listener.map_err(|cause| {
        let hint = match cause.kind() {
            io::ErrorKind::AddrInUse => {
                " — another process, or one of netstrap's own planes, listens on that port; choose another \
                 port in NETSTRAP_ADMIN_ADDR"
            }
            io::ErrorKind::AddrNotAvailable => {
                " — not an address of this host; use 127.0.0.1 (this host only), 0.0.0.0 (every \
                 interface, e.g. for a Prometheus in the cluster) or one of the host's addresses"
            }
            io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port"
            }
            _ => "",
        };
        AdminBindError { addr, cause, hint }
    })
}

/// What the admin listener serves from: the rest plane's health, snapshot and metrics.
pub fn state(
    health: Health,
    snapshot: SnapshotRx,
    metrics: Arc<Metrics>,
    tls: Option<crate::tls::Tls>,
) -> RestState {
    let options =
        RestOptions { max_connections: MAX_CONNECTIONS, endpoints: Endpoints::Admin, ..Default::default() };
    RestState::new(health, snapshot, metrics, options).with_tls(tls)
}

/// Serve the admin listener until `shutdown`.
pub async fn serve(listener: TcpListener, state: RestState, shutdown: Shutdown) {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => rest::serve(listener, state, shutdown).await,
        Err(e) => tracing::error!("admin listener (NETSTRAP_ADMIN_ADDR): cannot listen: {e}"),
    }
}
