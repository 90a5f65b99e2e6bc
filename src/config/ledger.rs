//! `NETSTRAP_LEDGER`: where the node policy is declared, checked when the configuration is
//! parsed (the registry module opens what this names).

use std::path::PathBuf;

/// A parsed `NETSTRAP_LEDGER`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ledger {
    /// `none` or unset: render and write files only.
    #[default]
    None,
    /// `file:///path`: EdgeLake's JSON-lines ledger file.
    File(PathBuf),
    /// `anylog://host:port`: an EdgeLake/AnyLog node's REST API (`host:port`).
    Anylog(String),
}

/// What `NETSTRAP_LEDGER` accepts, for error messages.
pub const ACCEPTED: &str = "anylog://host:port, file:///path/blockchain.json or none";

impl Ledger {
    /// Parse a setting; the error says what is wrong with it (the caller names the variable
    /// and the value).
    pub fn parse(setting: &str) -> Result<Ledger, &'static str> {
        let s = setting.trim();
        if s.is_empty() || s == "none" {
            return Ok(Ledger::None);
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err("a file ledger needs an absolute path, e.g. file:///data/blockchain.json");
            }
            return Ok(Ledger::File(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("anylog://") {
            let addr = addr.trim_end_matches('/');
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok || addr.contains('/') {
                return Err(
                    "an EdgeLake registry is anylog://host:rest_port, e.g. anylog://edgelake-master:32049",
                );
            }
            return Ok(Ledger::Anylog(addr.to_string()));
        }
        Err("unknown scheme")
    }
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ledger::None => f.write_str("none"),
            Ledger::File(p) => write!(f, "file://{}", p.display()),
            Ledger::Anylog(a) => write!(f, "anylog://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_parses_and_prints_back() {
        for s in [
            "none",
            "file:///data/blockchain.json",
            "anylog://edgelake-master:32049",
            "anylog://[fd00::1]:32049",
        ] {
            assert_eq!(Ledger::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Ledger::parse("").unwrap(), Ledger::None);
        assert_eq!(Ledger::parse("anylog://m:32049/").unwrap(), Ledger::Anylog("m:32049".into()));
    }

    #[test]
    fn each_mistake_says_what_to_write() {
        assert!(Ledger::parse("file://data/x.json").unwrap_err().contains("absolute path"));
        assert!(Ledger::parse("anylog://master").unwrap_err().contains("anylog://host:rest_port"));
        assert!(Ledger::parse("anylog://m:0").unwrap_err().contains("anylog://host:rest_port"));
        assert_eq!(Ledger::parse("http://m:32049").unwrap_err(), "unknown scheme");
    }
}
