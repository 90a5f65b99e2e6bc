//! TLS on the rest and broker planes: `NETSTRAP_TLS_CERT`, `NETSTRAP_TLS_KEY`,
//! `NETSTRAP_TLS_PLANES`.

use std::path::PathBuf;

use super::error::ConfigError;
use super::reader::Reader;
use super::source::Layers;

/// TLS on the rest and broker planes (`NETSTRAP_TLS_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The rest plane serves HTTPS only.
    pub rest: bool,
    /// The broker plane serves MQTT over TLS only.
    pub broker: bool,
}

/// `NETSTRAP_TLS_CERT`, `NETSTRAP_TLS_KEY` (both or neither) and `NETSTRAP_TLS_PLANES`.
/// The files are read when the planes start, not here (parsing does no I/O).
pub(super) fn tls_settings(r: &mut Reader, layers: &Layers) -> Option<TlsSettings> {
    let cert = r.string("NETSTRAP_TLS_CERT").filter(|f| !f.value.is_empty());
    let key = r.string("NETSTRAP_TLS_KEY").filter(|f| !f.value.is_empty());
    let planes = r.parse(
        "NETSTRAP_TLS_PLANES",
        "a comma-separated subset of rest, broker (the tcp plane has no TLS: EdgeLake's peer protocol is plain TCP)",
        |s| {
            let mut rest = false;
            let mut broker = false;
            for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item.to_ascii_lowercase().as_str() {
                    "rest" => rest = true,
                    "broker" => broker = true,
                    "tcp" => return Err("the tcp plane cannot use TLS".to_string()),
                    other => return Err(format!("unknown plane `{other}`")),
                }
            }
            if rest || broker { Ok((rest, broker)) } else { Err("no plane named".into()) }
        },
    );
    let origin = |key: &str| layers.get(key).map(|(_, o)| o.to_string()).unwrap_or_default();
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let (rest, broker) = planes.map(|f| f.value).unwrap_or((true, true));
            Some(TlsSettings { cert: PathBuf::from(cert.value), key: PathBuf::from(key.value), rest, broker })
        }
        (None, None) => {
            if planes.is_some() {
                r.errors.push(ConfigError::Invalid {
                    key: "NETSTRAP_TLS_PLANES".into(),
                    value: layers.get("NETSTRAP_TLS_PLANES").map(|(v, _)| v.to_string()).unwrap_or_default(),
                    origin: origin("NETSTRAP_TLS_PLANES"),
                    problem: "TLS planes are chosen but no certificate is set".into(),
                    accepted: "set NETSTRAP_TLS_CERT and NETSTRAP_TLS_KEY, or unset NETSTRAP_TLS_PLANES"
                        .into(),
                });
            }
            None
        }
        (Some(set), None) | (None, Some(set)) => {
            let (have, missing) = if layers.get("NETSTRAP_TLS_CERT").is_some_and(|(v, _)| !v.is_empty()) {
                ("NETSTRAP_TLS_CERT", "NETSTRAP_TLS_KEY")
            } else {
                ("NETSTRAP_TLS_KEY", "NETSTRAP_TLS_CERT")
            };
            r.errors.push(ConfigError::Invalid {
                key: have.into(),
                value: set.value,
                origin: origin(have),
                problem: format!("{have} is set but {missing} is not; the certificate and key go together"),
                accepted: "both NETSTRAP_TLS_CERT and NETSTRAP_TLS_KEY (PEM files), or neither".into(),
            });
            None
        }
    }
}
