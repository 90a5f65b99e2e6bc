//! Defaults and limits of the planes, configured here and used by the planes.

use std::time::Duration;

/// `NETSTRAP_BROKER_BACKLOG` when unset.
pub const DEFAULT_BROKER_BACKLOG: usize = 4 << 20;

/// `NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT` when unset (docs/broker.md says why 30 s).
pub const DEFAULT_BROKER_SLOW_SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(30);

/// `NETSTRAP_REST_MAX_CONNECTIONS` when unset: concurrent connections of the rest plane.
pub const DEFAULT_REST_MAX_CONNECTIONS: usize = 4096;

/// The embedded broker's front-door limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Topic filters one connection may hold (`NETSTRAP_BROKER_MAX_SUBSCRIPTIONS`).
    pub subscriptions_per_client: usize,
    /// Distinct topic filters the broker takes on since start (`NETSTRAP_BROKER_MAX_FILTERS`).
    pub filters: usize,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits { subscriptions_per_client: 32, filters: 64 }
    }
}
