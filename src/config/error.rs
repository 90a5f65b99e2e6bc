//! Configuration errors, phrased so the operator knows what to change.

use std::fmt;
use std::path::PathBuf;

/// A configuration problem, phrased so the operator knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}={value:?} ({origin}): {problem}; accepted: {accepted}")]
    Invalid { key: String, value: String, origin: String, problem: String, accepted: String },
    #[error("{key} ({origin}) is not a netstrap variable; {hint}")]
    UnknownKey { key: String, origin: String, hint: String },
    #[error("configuration file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

/// All configuration problems found at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
