//! Optional TLS on the rest and broker planes (`NETSTRAP_TLS_CERT`, `NETSTRAP_TLS_KEY`,
//! `NETSTRAP_TLS_PLANES`). The tcp plane stays plain: EdgeLake's peer protocol has no TLS.
//!
//! - [`load`] reads a PEM certificate chain and private key and checks they belong together;
//!   every error names the file and what is wrong with it.
//! - [`CertStore`] is the server's certificate resolver: it holds the current pair, and
//!   [`CertStore::watch`] polls both files every few seconds and swaps in a changed pair once
//!   it loads. A pair that does not load is logged (naming the file) and the previous one
//!   kept. New handshakes get the new certificate; established connections are unaffected.
//! - [`san_check`] compares the advertised host names of the TLS planes with the
//!   certificate's subject alternative names (IP addresses as IP SANs, names as DNS SANs,
//!   wildcards for one label). A name that is not covered is a warning: a peer dialing it will
//!   fail to verify the certificate.
//! - [`loopback_client_config`] is the client netstrap uses to reach its own TLS listeners
//!   (`netstrap probe`, the broker readiness check).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::table::{ConnectionTable, Plane};

/// How often the certificate and key files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// ALPN protocol the rest plane announces (it serves HTTP/1.1 only).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a certificate/key pair cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate file {}: {problem}", path.display())]
    Cert { path: PathBuf, problem: String },
    #[error("TLS key file {}: {problem}", path.display())]
    Key { path: PathBuf, problem: String },
    #[error("TLS key file {} does not match the certificate in {}: {problem}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf, problem: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What the end-entity certificate says, for logs and `/v1/network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    /// Certificates in the file (leaf first, then intermediates).
    pub chain_length: usize,
}

/// A loaded certificate/key pair.
#[derive(Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    /// Hash of both files' contents (or of why they could not be read), to notice changes.
    fingerprint: u64,
}

/// The ring provider, used for every TLS context netstrap builds (independent of any
/// process-wide default another dependency might install).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A file's contents, or why it could not be read.
type Contents = Result<Vec<u8>, String>;

/// Both files' contents, and their fingerprint.
fn read_files(files: &TlsFiles) -> (Contents, Contents, u64) {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read it: {e}"));
    let cert = read(&files.cert);
    let key = read(&files.key);
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    (cert, key, h.finish())
}

/// Load and check the pair in `files`.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let (cert, key, fingerprint) = read_files(files);
    parse(files, cert, key, fingerprint)
}

fn parse(files: &TlsFiles, cert: Contents, key: Contents, fingerprint: u64) -> Result<Loaded, TlsError> {
    let cert_err = |problem: String| TlsError::Cert { path: files.cert.clone(), problem };
    let key_err = |problem: String| TlsError::Key { path: files.key.clone(), problem };
    let cert = cert.map_err(cert_err)?;
    let key = key.map_err(key_err)?;

    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no certificate in it (expected a PEM `-----BEGIN CERTIFICATE-----` block)".into(),
        ));
    }
    let info = cert_info(&chain[0], chain.len()).map_err(cert_err)?;

    let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        match e {
        rustls::pki_types::pem::Error::NoItemsFound => key_err(
            "no private key in it (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
                .into(),
        ),
        e => key_err(format!("not valid PEM: {e}")),
    }
    })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| key_err(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                problem: "the key's public key is not the certificate's".into(),
            });
        }
        Err(e) => {
            return Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                problem: e.to_string(),
            });
        }
    }
    Ok(Loaded { key: Arc::new(certified), info, fingerprint })
}

fn rfc3339(t: &x509_parser::time::ASN1Time) -> String {
    jiff::Timestamp::from_second(t.timestamp()).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
}

fn cert_info(der: &CertificateDer<'_>, chain_length: usize) -> Result<CertInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the first certificate is not valid X.509: {e}"))?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the certificate's subjectAltName extension is malformed: {e}"))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(n) => dns_names.push(n.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                16 => ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                _ => {}
            },
            _ => {}
        }
    }
    let validity = cert.validity();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        dns_names,
        ip_addresses,
        not_before: rfc3339(&validity.not_before),
        not_after: rfc3339(&validity.not_after),
        chain_length,
    })
}

impl CertInfo {
    /// `true` when the certificate's validity has ended.
    pub fn expired(&self) -> bool {
        self.not_after.parse::<jiff::Timestamp>().map(|t| t < jiff::Timestamp::now()).unwrap_or(false)
    }

    /// Does a SAN cover `host` (an IP address, possibly in brackets, or a DNS name)?
    pub fn covers(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|san| {
            let san = san.trim_end_matches('.').to_ascii_lowercase();
            match san.strip_prefix("*.") {
                // A wildcard stands for exactly one whole left-most label.
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && !label.contains('*') && rest == parent),
                None => san == host,
            }
        })
    }
}

/// One advertised host of a TLS plane and whether the certificate covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SanCheck {
    pub plane: Plane,
    pub host: String,
    pub covered: bool,
}

/// Check every `(plane, host)` against the certificate.
pub fn san_check(info: &CertInfo, hosts: &[(Plane, String)]) -> Vec<SanCheck> {
    hosts
        .iter()
        .map(|(plane, host)| SanCheck { plane: *plane, host: host.clone(), covered: info.covers(host) })
        .collect()
}

/// The advertised hosts (external and cluster) of `planes` in the connection table, without
/// duplicates.
pub fn advertised_hosts(table: &ConnectionTable, planes: &[Plane]) -> Vec<(Plane, String)> {
    let mut out: Vec<(Plane, String)> = Vec::new();
    for row in table.rows.iter().filter(|r| planes.contains(&r.plane)) {
        for host in [&row.external_host.value, &row.cluster_host.value] {
            let entry = (row.plane, host.clone());
            if !host.is_empty() && !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

/// The server's certificate: the current pair, replaced when the files change.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// Fingerprint of the files as last tried (loaded or rejected), so a bad pair is
    /// reported once, not on every poll.
    last_tried: RwLock<u64>,
}

/// What a reload attempt found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Loaded(Arc<Loaded>),
    Rejected(TlsError),
}

impl CertStore {
    /// Load the pair; an error here is fatal at start.
    pub fn open(files: TlsFiles) -> Result<Arc<CertStore>, TlsError> {
        let loaded = load(&files)?;
        let fp = loaded.fingerprint;
        Ok(Arc::new(CertStore { files, current: RwLock::new(Arc::new(loaded)), last_tried: RwLock::new(fp) }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the files; when they changed since the last attempt, load them and, if they
    /// form a good pair, make them current.
    pub fn reload(&self) -> Reload {
        let (cert, key, fp) = read_files(&self.files);
        {
            let mut last = self.last_tried.write().unwrap_or_else(|e| e.into_inner());
            if *last == fp {
                return Reload::Unchanged;
            }
            *last = fp;
        }
        match parse(&self.files, cert, key, fp) {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.clone();
                Reload::Loaded(loaded)
            }
            Err(e) => Reload::Rejected(e),
        }
    }

    /// Poll the files every `interval` until `shutdown`; log each change, and call
    /// `on_load` after a new pair is in use.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
        on_load: impl Fn(&Loaded) + Send + 'static,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let store = self.clone();
            let result = match tokio::task::spawn_blocking(move || store.reload()).await {
                Ok(r) => r,
                Err(e) => {
                    warn!("TLS: reloading the certificate failed: {e}");
                    continue;
                }
            };
            match result {
                Reload::Unchanged => {}
                Reload::Loaded(loaded) => {
                    info!(
                        subject = %loaded.info.subject,
                        serial = %loaded.info.serial,
                        not_after = %loaded.info.not_after,
                        cert = %self.files.cert.display(),
                        "TLS: certificate reloaded; new connections use it"
                    );
                    on_load(&loaded);
                }
                Reload::Rejected(e) => {
                    warn!("{e}; keeping the previous certificate (serial {})", self.current().info.serial)
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

/// A server configuration that takes its certificate from `store` (TLS 1.2 and 1.3, ring,
/// no client certificates), announcing `alpn` when not empty.
pub fn server_config(store: Arc<CertStore>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The running TLS setup: the certificate and which planes use it.
#[derive(Debug, Clone)]
pub struct Tls {
    pub store: Arc<CertStore>,
    pub planes: Vec<Plane>,
}

impl Tls {
    pub fn on(&self, plane: Plane) -> bool {
        self.planes.contains(&plane)
    }

    /// Check the advertised hosts of the TLS planes in `table` against the current
    /// certificate, and log the result.
    pub fn log_san_check(&self, table: &ConnectionTable) {
        let current = self.store.current();
        let checks = san_check(&current.info, &advertised_hosts(table, &self.planes));
        let missing: Vec<_> = checks.iter().filter(|c| !c.covered).collect();
        if missing.is_empty() {
            info!(
                names = %checks.iter().map(|c| c.host.as_str()).collect::<Vec<_>>().join(", "),
                "TLS: the certificate covers every advertised name"
            );
        }
        for c in missing {
            warn!(
                "TLS: advertised {} host {} is not in the certificate's SANs (DNS {:?}, IP {:?}); \
                 peers dialing it will fail to verify the certificate",
                c.plane.name(),
                c.host,
                current.info.dns_names,
                current.info.ip_addresses
            );
        }
        if current.info.expired() {
            warn!(not_after = %current.info.not_after, cert = %self.store.files.cert.display(), "TLS: the certificate has expired");
        }
    }

    /// The `tls` object of `/v1/network`.
    pub fn status(&self, table: &ConnectionTable) -> serde_json::Value {
        let current = self.store.current();
        let checks = san_check(&current.info, &advertised_hosts(table, &self.planes));
        let missing: Vec<String> =
            checks.iter().filter(|c| !c.covered).map(|c| format!("{} {}", c.plane.name(), c.host)).collect();
        json!({
            "enabled": true,
            "planes": self.planes.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "cert_file": self.store.files.cert,
            "key_file": self.store.files.key,
            "certificate": current.info,
            "expired": current.info.expired(),
            "advertised": checks,
            "missing": missing,
        })
    }
}

/// A client for netstrap's own TLS listeners over loopback (or the local IP): it does not
/// verify the server's certificate chain or name — it dials this very process, and the
/// probe's question is "does the listener answer", not "is the certificate trusted" (the SAN
/// check and the operator's clients answer that). Handshake signatures are still verified.
pub fn loopback_client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(LoopbackVerifier(provider.signature_verification_algorithms));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The server name to present when dialing `ip`.
pub fn server_name(ip: IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(ip.into())
}

#[derive(Debug)]
struct LoopbackVerifier(WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for LoopbackVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dns: &[&str], ips: &[&str]) -> CertInfo {
        CertInfo {
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            not_before: String::new(),
            not_after: "2000-01-01T00:00:00Z".into(),
            chain_length: 1,
        }
    }

    #[test]
    fn names_match_dns_sans_and_one_label_wildcards() {
        let i = info(&["node.example.com", "*.svc.cluster.local"], &["10.0.0.5", "fd00::5"]);
        assert!(i.covers("node.example.com"));
        assert!(i.covers("NODE.example.com."));
        assert!(i.covers("op.svc.cluster.local"));
        assert!(!i.covers("a.op.svc.cluster.local"), "a wildcard covers one label only");
        assert!(!i.covers("svc.cluster.local"));
        assert!(!i.covers("other.example.com"));
        assert!(i.covers("10.0.0.5"));
        assert!(i.covers("[fd00::5]"));
        assert!(!i.covers("10.0.0.6"));
        assert!(i.expired());
    }

    #[test]
    fn advertised_hosts_come_from_the_tls_planes_only() {
        use crate::config::{Layers, Origin, Settings};
        let env = [
            ("NETSTRAP_ENVIRONMENT", "host"),
            ("LOCAL_IP", "10.0.0.5"),
            ("EXTERNAL_IP", "1.2.3.4"),
            ("NETSTRAP_EXTERNAL_SOURCES", "explicit"),
            ("DNS", "a.b"),
            ("ANYLOG_BROKER_PORT", "32150"),
        ];
        let settings = Settings::parse(&Layers::new().push(Origin::Env, env)).unwrap();
        let facts = crate::discover::MachineFacts::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let d = rt.block_on(crate::discover::discover_with(&settings, &facts));
        let table = ConnectionTable::plan(&settings, &d);
        assert_eq!(
            advertised_hosts(&table, &[Plane::Rest]),
            vec![(Plane::Rest, "1.2.3.4".to_string()), (Plane::Rest, "a.b".to_string())]
        );
        assert_eq!(
            advertised_hosts(&table, &[Plane::Broker, Plane::Tcp]),
            vec![
                (Plane::Tcp, "1.2.3.4".to_string()),
                (Plane::Tcp, "a.b".to_string()),
                (Plane::Broker, "1.2.3.4".to_string()),
                (Plane::Broker, "a.b".to_string())
            ]
        );
    }
}
