//! The node's three listeners, bound per the connection table: tcp (native peer protocol or
//! relay), rest (netstrap's HTTP API + reverse proxy), broker (embedded MQTT or relay).

pub mod broker;
pub mod broker_guard;
mod broker_stream;
pub mod rest;
pub mod tcp;

use std::sync::Arc;

/// Stops the planes: cancelled when shutdown starts (stop accepting, finish in-flight work).
pub type Shutdown = tokio_util::sync::CancellationToken;

/// The accept loop of the tcp and broker planes: accept until `shutdown`, at most `max`
/// connections at once (more are closed at accept), each handled on its own task that holds
/// its permit, so a slow peer never holds up `accept`; then close the listener (new attempts
/// fail at once instead of queueing while in-flight work drains) and wait for every handler.
/// Accept failures and refusals are logged at most once per 10 s per plane, with the count.
///
/// `handle` gets the connection's permit and must keep it for the connection's life. Its
/// future is spawned as it is: wrapping it in another future would take its size twice.
pub(crate) async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    plane: &'static str,
    max: usize,
    shutdown: &Shutdown,
    mut handle: F,
) where
    F: FnMut(tokio::net::TcpStream, std::net::SocketAddr, tokio::sync::OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    use std::time::Duration;
    let throttle = || crate::logging::Throttle::new(Duration::from_secs(10));
    let (failed, refused) = (throttle(), throttle());
    let tracker = tokio_util::task::TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    if let Some(suppressed) = failed.allow() {
                        tracing::warn!(suppressed, "{plane} plane: accept failed: {e}");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(suppressed) = refused.allow() {
                tracing::warn!(%peer, max, suppressed, "{plane} plane: connection limit reached; closing the new connection");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(handle(stream, peer, permit));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

pub use crate::snapshot::{Identity, NodeSnapshot, SnapshotRx};
