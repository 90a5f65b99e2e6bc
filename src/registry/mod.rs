//! Registries where the node policy is declared (`NETSTRAP_LEDGER`): an EdgeLake/AnyLog node
//! over REST (`anylog://host:port`), EdgeLake's JSON-lines ledger file (`file:///path`), or
//! none (render and write files only). One interface, [`Registry`]; the idempotent declare
//! is in [`declare`].

pub mod anylog;
pub mod declare;
pub mod file;

use std::time::Duration;

use serde_json::Value;

use anylog::{AnylogClient, AnylogError};
use file::FileLedger;

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Not reachable or not readable/writable now: retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The registry answered and refused.
    #[error("registry refused: {0}")]
    Refused(String),
    /// The policy or the registry setting is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// How long one request to an EdgeLake registry may take, connect to last byte. Declaring
/// is off the probe path, so a slow master delays only the policy latch.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured registry.
#[derive(Clone, Debug)]
pub enum Registry {
    None,
    File(FileLedger),
    /// An EdgeLake node's REST server; inserts and deletes are pushed to its master.
    Anylog(AnylogClient),
}

impl Registry {
    /// Parse `NETSTRAP_LEDGER`. `master` is `LEDGER_CONN` (where an EdgeLake node pushes
    /// what it is given); `timeout` bounds each REST request.
    pub fn parse(setting: Option<&str>, master: &str, timeout: Duration) -> Result<Registry, String> {
        let Some(s) = setting.map(str::trim).filter(|s| !s.is_empty() && *s != "none") else {
            return Ok(Registry::None);
        };
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err("a file ledger needs an absolute path, e.g. file:///data/blockchain.json".into());
            }
            return Ok(Registry::File(FileLedger::new(path)));
        }
        if let Some(addr) = s.strip_prefix("anylog://") {
            let addr = addr.trim_end_matches('/');
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok || addr.contains('/') {
                return Err(
                    "an EdgeLake registry is anylog://host:rest_port, e.g. anylog://edgelake-master:32049"
                        .into(),
                );
            }
            return Ok(Registry::Anylog(AnylogClient::new(addr, master, timeout)));
        }
        // The caller names the variable, the value and the accepted forms (config::Settings).
        Err("not a registry address".to_string())
    }

    /// Stored policies with this identity.
    pub async fn find(
        &self,
        policy_type: &str,
        company: &str,
        name: &str,
    ) -> Result<Vec<Value>, RegistryError> {
        match self {
            Registry::None => Ok(Vec::new()),
            Registry::File(f) => {
                let (f, t, c, n) =
                    (f.clone(), policy_type.to_string(), company.to_string(), name.to_string());
                blocking(move || f.find(&t, &c, &n)).await
            }
            Registry::Anylog(a) => Ok(a.get(policy_type, company, name).await?),
        }
    }

    /// Every node (policies of the types in [`crate::peers::NODE_TYPES`]).
    pub async fn nodes(&self) -> Result<Vec<crate::peers::Node>, RegistryError> {
        match self {
            Registry::None => Ok(Vec::new()),
            Registry::File(f) => {
                let f = f.clone();
                Ok(blocking(move || f.nodes(crate::peers::NODE_TYPES)).await?.to_vec())
            }
            Registry::Anylog(a) => {
                let mut all = Vec::new();
                for ty in crate::peers::NODE_TYPES {
                    all.extend(a.get_nodes(ty).await?);
                }
                Ok(all)
            }
        }
    }

    /// Remove `old_ids` and insert `policy` (if any).
    pub async fn replace(&self, old_ids: &[String], policy: Option<&Value>) -> Result<(), RegistryError> {
        match self {
            Registry::None => Ok(()),
            Registry::File(f) => {
                let (f, old, p) = (f.clone(), old_ids.to_vec(), policy.cloned());
                blocking(move || f.replace(&old, p.as_ref()).map(|_| ())).await
            }
            Registry::Anylog(a) => {
                // An unconfirmed delete is settled by the caller's read-back.
                for id in old_ids {
                    a.delete(id).await?;
                }
                match policy.map(|p| (p, a)) {
                    None => Ok(()),
                    Some((p, a)) => match a.insert(p).await {
                        // The same content has the same id: an earlier insert already stored it
                        // (its read-back ran before the node had it).
                        Err(AnylogError::Refused { err_code: Some(70), .. }) => Ok(()),
                        other => Ok(other?),
                    },
                }
            }
        }
    }
}

impl From<AnylogError> for RegistryError {
    fn from(e: AnylogError) -> RegistryError {
        match e {
            AnylogError::Unreachable { .. } | AnylogError::Timeout { .. } => {
                RegistryError::Unavailable(e.to_string())
            }
            // 208: the node cannot reach its master now.
            AnylogError::Refused { err_code: Some(208), .. } => RegistryError::Unavailable(e.to_string()),
            AnylogError::Refused { .. } | AnylogError::BadReply(_) => RegistryError::Refused(e.to_string()),
            AnylogError::InvalidPolicy(_) | AnylogError::AmbiguousCluster { .. } => {
                RegistryError::Invalid(e.to_string())
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Unavailable(format!("ledger task failed: {e}")))?
}
