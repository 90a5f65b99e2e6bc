//! Discovery: the environment kind, the local (virtual) IP, the external IP chain, the
//! stable cluster name and the external ports — each with its provenance.

pub mod cloud;
pub mod dns;
pub mod echo;
pub mod environment;
pub mod external;
pub mod http;
pub mod kubernetes;
pub mod local_ip;
pub mod stun;

use std::time::Duration;

/// Why a discovery source gave no value. The text is shown to operators in provenance,
/// so it says what happened and, where it can, what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source is off (not configured, or not applicable in this environment).
    #[error("{0}")]
    NotConfigured(String),
    /// The source did not answer within its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The API refused the call (RBAC); degraded, never fatal.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The object asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The source answered, but not with something usable, or the transport failed.
    #[error("{0}")]
    Failed(String),
}

/// Run `fut` with `timeout`, mapping an elapsed timer to [`SourceError::Timeout`].
pub async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Timeout(timeout)),
    }
}
