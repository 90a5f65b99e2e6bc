//! Registries where the node policy is declared (`NETSTRAP_LEDGER`): an EdgeLake/AnyLog node
//! over REST (`anylog://host:port`), EdgeLake's JSON-lines ledger file (`file:///path`), or
//! none (render and write files only). One interface, [`Registry`]; the idempotent declare
//! is in [`declare`].

pub mod anylog;
pub mod declare;
pub mod file;

use serde_json::Value;

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

/// A configured registry.
#[derive(Clone, Debug)]
pub enum Registry {
    None,
    File(FileLedger),
}

impl Registry {
    /// Parse `NETSTRAP_LEDGER`.
    pub fn parse(setting: Option<&str>) -> Result<Registry, String> {
        let Some(s) = setting.map(str::trim).filter(|s| !s.is_empty() && *s != "none") else {
            return Ok(Registry::None);
        };
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "NETSTRAP_LEDGER={s}: a file ledger needs an absolute path, e.g. file:///data/blockchain.json"
                ));
            }
            return Ok(Registry::File(FileLedger::new(path)));
        }
        Err(format!("NETSTRAP_LEDGER={s}: expected anylog://host:port, file:///path/blockchain.json or none"))
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
        }
    }

    /// Every node policy (the types in [`crate::peers::NODE_TYPES`]).
    pub async fn nodes(&self) -> Result<Vec<Value>, RegistryError> {
        match self {
            Registry::None => Ok(Vec::new()),
            Registry::File(f) => {
                let f = f.clone();
                blocking(move || f.all(crate::peers::NODE_TYPES)).await
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
