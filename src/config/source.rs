//! Layered key/value sources: flags > environment > TOML file > defaults.
//!
//! Parsing is a pure function of [`Layers`], so tests build layers from literals and never
//! touch the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::variables;

/// Where a configured value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag (`--set KEY=VALUE` or a named flag).
    Flag,
    /// The process environment.
    Env,
    /// The TOML file given with `--config`.
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env => f.write_str("env"),
            Origin::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// The configuration sources, highest precedence first.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    layers: Vec<(Origin, BTreeMap<String, String>)>,
}

impl Layers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a layer below the ones already added. Keys are matched case-insensitively
    /// (stored upper-case, as environment names are).
    pub fn push<K, V>(mut self, origin: Origin, pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let map = pairs.into_iter().map(|(k, v)| (k.as_ref().to_ascii_uppercase(), v.into())).collect();
        self.layers.push((origin, map));
        self
    }

    /// The value of `key` from the highest layer that sets it. An empty value counts as
    /// unset, as in EdgeLake's scripts (`${VAR:-default}`).
    pub fn get(&self, key: &str) -> Option<(&str, &Origin)> {
        self.layers.iter().find_map(|(origin, map)| {
            map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()).map(|v| (v, origin))
        })
    }

    /// Keys set by flags or the file that netstrap does not know: almost always a typo.
    /// (The environment holds many unrelated variables, so it is not checked.)
    pub fn unknown_keys(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (origin, map) in &self.layers {
            if *origin == Origin::Env {
                continue;
            }
            for key in map.keys() {
                if variables::find(key).is_none() {
                    errors.push(ConfigError::UnknownKey {
                        key: key.clone(),
                        origin: origin.to_string(),
                        hint: variables::closest(key)
                            .map(|k| format!("did you mean {k}?"))
                            .unwrap_or_else(|| "see the configuration reference in README.md".into()),
                    });
                }
            }
        }
        errors
    }
}

/// Read a TOML configuration file: a flat table of `KEY = value` using the same names as
/// the environment (case-insensitive). Strings, integers, floats and booleans are accepted;
/// arrays become comma-separated lists.
pub fn read_toml_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.to_path_buf(), reason: e.to_string() })?;
    parse_toml(&text).map_err(|reason| ConfigError::File { path: path.to_path_buf(), reason })
}

/// Parse the TOML text of a configuration file (see [`read_toml_file`]).
pub fn parse_toml(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in table {
        let s = scalar(&value).or_else(|| match &value {
            toml::Value::Array(items) => {
                items.iter().map(scalar).collect::<Option<Vec<_>>>().map(|v| v.join(","))
            }
            _ => None,
        });
        match s {
            Some(s) => out.push((key, s)),
            None => {
                return Err(format!(
                    "key `{key}`: nested tables are not supported; use flat keys with the \
                     environment variable names, e.g. TCP_BIND = true"
                ));
            }
        }
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}
