//! Reading typed values out of the configuration layers, collecting every error.

use std::net::{IpAddr, SocketAddr};

use super::error::ConfigError;
use super::source::Layers;
use super::variables;
use crate::provenance::{Found, Provenance};

/// `4096`, `512KiB`, `16MiB`, `1GiB` (also `KB`/`MB`/`GB`, read as powers of 1024) → bytes,
/// within 64 KiB ..= 4 GiB.
pub(super) fn byte_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| "not a number".to_string())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "KB" | "K" | "k" => 10,
        "MiB" | "MB" | "M" => 20,
        "GiB" | "GB" | "G" => 30,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or("out of range")?;
    if !(64 << 10..=4 << 30).contains(&bytes) {
        return Err("out of range".into());
    }
    usize::try_from(bytes).map_err(|_| "too large for this platform".into())
}

const TRUE_SPELLINGS: &[&str] = &["true", "True", "TRUE"];
const FALSE_SPELLINGS: &[&str] = &["false", "False", "FALSE"];

/// Reads typed values out of the layers, collecting every error.
pub(super) struct Reader<'a> {
    pub(super) layers: &'a Layers,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    pub(super) fn raw(&self, key: &str) -> Option<(&'a str, Provenance)> {
        // Every variable read is documented (and so accepted in a configuration file).
        debug_assert!(variables::find(key).is_some(), "{key} is read but missing from config/variables.rs");
        self.layers.get(key).map(|(v, origin)| (v, Provenance::new(format!("{origin} {key}"))))
    }

    pub(super) fn parse<T>(
        &mut self,
        key: &str,
        accepted: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Found<T>> {
        let (value, why) = self.raw(key)?;
        match f(value) {
            Ok(v) => Some(Found::new(v, why)),
            Err(problem) => {
                let origin = self.layers.get(key).map(|(_, o)| o.to_string()).unwrap_or_default();
                self.errors.push(ConfigError::Invalid {
                    key: key.to_string(),
                    value: value.to_string(),
                    origin,
                    problem,
                    accepted: accepted.to_string(),
                });
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str) -> Option<Found<String>> {
        self.parse(key, "any text", |s| Ok(s.to_string()))
    }

    pub(super) fn text(&mut self, key: &str, default: &str) -> String {
        self.string(key).map(|f| f.value).unwrap_or_else(|| default.to_string())
    }

    /// Text that goes into a policy EdgeLake must store: no control character (a newline
    /// cannot go in the request header that carries a look-up, nor in a policy line), no `>`
    /// (it ends the `<var={json}>` body of `blockchain insert`: err 11) and, for what is
    /// looked up by value (`where name="…"`), no `"` and no leading `!` (a variable to
    /// EdgeLake); no `'` in `COMPANY_NAME` (a master's SQL insert breaks on it). Such a value
    /// could never be declared; it is refused here rather than retried forever.
    pub(super) fn policy_text(&mut self, key: &str, looked_up: bool) -> Option<Found<String>> {
        let accepted = if key == "COMPANY_NAME" {
            "text without control characters, '>', '\"' or \"'\", not starting with '!'"
        } else if looked_up {
            "text without control characters, '>' or '\"', not starting with '!'"
        } else {
            "text without control characters or '>'"
        };
        self.parse(key, accepted, |s| {
            if let Some(c) = s.chars().find(|c| c.is_control()) {
                return Err(format!("it contains the control character {c:?}, which EdgeLake cannot store"));
            }
            if s.contains('>') {
                return Err("it contains '>', which ends EdgeLake's policy body (err 11)".into());
            }
            if looked_up && s.contains('"') {
                return Err("it contains '\"', which EdgeLake's look-up by value cannot carry".into());
            }
            if looked_up && s.starts_with('!') {
                return Err(
                    "it starts with '!', which EdgeLake's look-up by value reads as a variable (err 240)"
                        .into(),
                );
            }
            if key == "COMPANY_NAME" && s.contains('\'') {
                // db_info.policy_to_insert: `'%s'` % company, unescaped: the insert fails.
                return Err("it contains \"'\", which an EdgeLake master writes unescaped into the SQL of \
                            its ledger table: the policy is never stored"
                    .into());
            }
            Ok(s.to_string())
        })
    }

    pub(super) fn port(&mut self, key: &str) -> Option<Found<u16>> {
        self.parse(key, "a port number 1-65535", |s| match s.parse::<u32>() {
            Ok(0) => Err("port 0 cannot be advertised".into()),
            Ok(p) if p <= 65535 => Ok(p as u16),
            Ok(_) => Err("out of range".into()),
            Err(_) => Err("not a number".into()),
        })
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> Found<bool> {
        self.parse(key, "true or false (also True/TRUE/False/FALSE)", |s| {
            if TRUE_SPELLINGS.contains(&s) {
                Ok(true)
            } else if FALSE_SPELLINGS.contains(&s) {
                Ok(false)
            } else {
                Err("not a boolean".into())
            }
        })
        .unwrap_or_else(|| Found::new(default, Provenance::new(format!("default {key}={default}"))))
    }

    pub(super) fn threads(&mut self, key: &str) -> Found<u16> {
        self.parse(key, "a whole number from 1 to 1024", |s| match s.parse::<i64>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n as u16),
            Ok(_) => Err("out of range".into()),
            Err(_) => Err("not a whole number".into()),
        })
        .unwrap_or_else(|| Found::new(6, Provenance::new(format!("default {key}=6"))))
    }

    pub(super) fn ip(&mut self, key: &str) -> Option<Found<IpAddr>> {
        self.parse(key, "an IPv4 or IPv6 address, e.g. 10.0.0.5 or fd00::5", |s| {
            s.parse::<IpAddr>().map_err(|_| "not an IP address".into())
        })
    }

    pub(super) fn socket(&mut self, key: &str) -> Option<SocketAddr> {
        self.parse(key, "ip:port, e.g. 127.0.0.1:32048 or [::1]:32048", |s| {
            s.parse::<SocketAddr>().map_err(|_| "not an ip:port address".into())
        })
        .map(|f| f.value)
    }

    pub(super) fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)]) -> Option<Found<T>> {
        let accepted = options.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        self.parse(key, &accepted, |s| {
            options
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|(_, v)| *v)
                .ok_or_else(|| "unknown value".into())
        })
    }

    pub(super) fn list(&mut self, key: &str) -> Vec<String> {
        self.string(key)
            .map(|f| f.value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// A comma-separated list, each item read by `item`; each one it refuses is an error
    /// (`problem`), the others are kept.
    pub(super) fn list_of<T>(
        &mut self,
        key: &str,
        problem: &str,
        accepted: &str,
        item: impl Fn(&str) -> Option<T>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for s in self.list(key) {
            match item(&s) {
                Some(v) => out.push(v),
                None => {
                    let origin = self.layers.get(key).map(|(_, o)| o.to_string()).unwrap_or_default();
                    self.errors.push(ConfigError::Invalid {
                        key: key.into(),
                        value: s,
                        origin,
                        problem: problem.into(),
                        accepted: accepted.into(),
                    });
                }
            }
        }
        out
    }
}
