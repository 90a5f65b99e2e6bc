//! The tcp plane: the node's peer-messaging port. Two modes:
//!
//! - **native** ([`serve_native`]) — netstrap's peer protocol: newline-delimited
//!   JSON, one request line → one response line, bounded line length and idle timeout.
//!   [`handle_line`] is the whole protocol as a pure function; [`hello`] is the client that
//!   self-verification and `netstrap peers` use to prove which node answers an address.
//! - **relay** ([`serve_relay`]) — an L4 relay to the co-located node's own TCP server, with an
//!   optional PROXY protocol v2 header so the node sees its peers' real addresses.
//!
//! # Shutdown
//!
//! Both `serve_*` functions stop accepting as soon as the [`Shutdown`](super::Shutdown) token is cancelled, then
//! wait for their in-flight connections and return only when the last one has finished. The
//! caller owns the grace period: it bounds the wait by bounding the future, e.g.
//! `tokio::time::timeout(grace, serve_relay(..))`, and tasks still running after that are
//! dropped with the runtime. Native connections close after answering the request they are
//! reading (an idle peer is not waited for); relayed transfers run to completion (or until
//! their idle timeout), because cutting a peer message in half is worse than a late exit.
//!
//! Per-connection errors are logged, never returned.

mod hello;
mod native;
mod relay;

use super::accept_loop;

pub use hello::{HelloError, hello};
pub use native::{MAX_NONCE, NativeOptions, handle_line, serve_native};
pub use relay::{RelayOptions, proxy_header, serve_relay};

/// Concurrent connections either mode accepts by default; more are closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
