//! The stable cluster name (README, "How values are discovered"): reading the pod's resolv.conf
//! (nameservers, search list, ndots), finding the cluster domain in the search list instead
//! of assuming `cluster.local`, validating Kubernetes names, building the Service FQDN
//! `<svc>.<ns>.svc.<domain>` and the per-pod name `<pod>.<svc>.<ns>.svc.<domain>`, and
//! resolving a name with the cluster's nameservers.
//!
//! Resolution always asks for the *absolute* name (trailing dot), so a pod's `ndots:5` and
//! search list never turn one lookup into five queries for names that do not exist.

use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::{Resolver, TokioResolver};

use super::SourceError;

/// glibc reads at most this many `nameserver` lines (MAXNS) and ignores the rest.
const MAX_NAMESERVERS: usize = 3;
/// glibc caps `ndots` at 15 (RES_MAXNDOTS).
const MAX_NDOTS: u8 = 15;
/// RFC 1035: a DNS name is at most 253 characters in text form (without the final dot).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// What the stub resolver of this pod (or container, or host) is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    /// The nameservers, port 53, in file order (at most three, as glibc).
    pub nameservers: Vec<SocketAddr>,
    /// The search list, without trailing dots, from the last `search` or `domain` line.
    pub search: Vec<String>,
    /// `options ndots:N`; 1 when absent.
    pub ndots: u8,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf { nameservers: Vec::new(), search: Vec::new(), ndots: 1 }
    }
}

impl ResolvConf {
    /// Parse resolv.conf text the way glibc does. Lines it would not understand are ignored,
    /// never an error: a broken line must not stop the node from starting.
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            // glibc treats `#` and `;` as comments; cutting at any of them is safe because
            // neither can appear in an address, a domain or an option.
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else { continue };
            match keyword {
                "nameserver" => {
                    if rc.nameservers.len() < MAX_NAMESERVERS
                        && let Some(addr) = words.next().and_then(parse_nameserver)
                    {
                        rc.nameservers.push(addr);
                    }
                }
                // The last `search` or `domain` line wins; `domain x` means `search x`.
                "search" | "domain" => {
                    let list: Vec<String> = words
                        .map(|w| w.trim_end_matches('.').to_string())
                        .filter(|w| !w.is_empty())
                        .collect();
                    if !list.is_empty() {
                        rc.search =
                            if keyword == "domain" { list.into_iter().take(1).collect() } else { list };
                    }
                }
                "options" => {
                    for opt in words {
                        if let Some(n) = opt.strip_prefix("ndots:").and_then(|n| n.parse::<u32>().ok()) {
                            rc.ndots = n.min(u32::from(MAX_NDOTS)) as u8;
                        }
                    }
                }
                _ => {}
            }
        }
        rc
    }

    /// Read and parse a resolv.conf file (normally `/etc/resolv.conf`).
    pub fn read(path: &Path) -> Result<ResolvConf, SourceError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(ResolvConf::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::NotConfigured(format!(
                "{} does not exist: no cluster resolver configured",
                path.display()
            ))),
            Err(e) => Err(SourceError::Failed(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// `10.96.0.10`, `fd00::a`, `fe80::1%eth0` or `fe80::1%2` → address on port 53.
fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    let (addr, scope) = match word.split_once('%') {
        Some((a, s)) => (a, Some(s)),
        None => (word, None),
    };
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if scope.is_none() => Some(SocketAddr::from((v4, 53))),
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some(SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, scope.map_or(0, scope_id)))),
    }
}

/// An interface name or number → scope id; unknown names give 0, as glibc's fallback does.
fn scope_id(scope: &str) -> u32 {
    if let Ok(n) = scope.parse::<u32>() {
        return n;
    }
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| ifs.into_iter().find(|i| i.name == scope).and_then(|i| i.index))
        .unwrap_or(0)
}

/// The cluster domain from the search list, and why: Kubernetes writes
/// `<ns>.svc.<domain> svc.<domain> <domain>` into every pod's resolv.conf, so the domain is
/// what follows `svc.` — whatever the cluster was installed with. `None` outside a pod
/// (Docker, a host), where no entry has that shape.
pub fn cluster_domain(rc: &ResolvConf, namespace: Option<&str>) -> Option<(String, String)> {
    let entries: Vec<String> =
        rc.search.iter().map(|s| s.trim_end_matches('.').to_ascii_lowercase()).collect();
    let valid = |d: &str| d.split('.').all(|l| validate_label("cluster domain label", l).is_ok());
    if let Some(ns) = namespace {
        let prefix = format!("{}.svc.", ns.to_ascii_lowercase());
        for e in &entries {
            if let Some(domain) = e.strip_prefix(&prefix).filter(|d| valid(d)) {
                let why = format!("resolv.conf search entry {e} (<namespace>.svc.<domain>, namespace {ns})");
                return Some((domain.to_string(), why));
            }
        }
    }
    for e in &entries {
        if let Some(domain) = e.strip_prefix("svc.").filter(|d| valid(d)) {
            return Some((domain.to_string(), format!("resolv.conf search entry {e} (svc.<domain>)")));
        }
    }
    None
}

/// What is wrong with a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    /// A label longer than 63 characters (its length).
    TooLong(usize),
    UpperCase,
    /// A character outside `a-z 0-9 -`.
    InvalidChar(char),
    HyphenAtEdge,
    /// Service names are DNS-1035 labels: the first character must be a letter.
    NotStartingWithLetter,
    /// The whole name is longer than 253 characters (its length).
    NameTooLong(usize),
}

/// A name Kubernetes (or DNS) would refuse, with what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NameError {
    /// What the value is, in the operator's words ("Service name", "namespace").
    pub kind: String,
    pub value: String,
    pub problem: NameProblem,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NameError { kind, value, problem } = self;
        write!(f, "{kind} {value:?} ")?;
        match problem {
            NameProblem::Empty => write!(f, "is empty; set it to the name of the Kubernetes object")?,
            NameProblem::TooLong(n) => write!(f, "is {n} characters long; a DNS label has at most 63")?,
            NameProblem::UpperCase => {
                write!(f, "contains upper-case letters; Kubernetes names are lower case (RFC 1123)")?
            }
            NameProblem::InvalidChar('.') => write!(
                f,
                "contains '.'; give the bare name (the namespace is set separately) \
                 or the whole <svc>.<ns>.svc.<domain>"
            )?,
            NameProblem::InvalidChar(c) => {
                write!(f, "contains {c:?}; only a-z, 0-9 and '-' are allowed (RFC 1123)")?
            }
            NameProblem::HyphenAtEdge => {
                write!(f, "starts or ends with '-'; it must begin and end with a-z or 0-9")?
            }
            NameProblem::NotStartingWithLetter => write!(
                f,
                "starts with {:?}; Service names are DNS-1035 labels and must start with a letter (a-z)",
                value.chars().next().unwrap_or(' ')
            )?,
            NameProblem::NameTooLong(n) => write!(f, "is {n} characters long; a DNS name has at most 253")?,
        }
        if let Some(s) = suggestion(value).filter(|s| s != value) {
            write!(f, " — for example {s:?}")?;
        }
        Ok(())
    }
}

/// A nearby valid label, when one is obvious (`My_Svc` → `my-svc`).
fn suggestion(value: &str) -> Option<String> {
    if value.contains('.') {
        return None;
    }
    let s: String = value
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(MAX_LABEL_LEN)
        .collect();
    let s = s.trim_matches('-').to_string();
    (!s.is_empty()).then_some(s)
}

/// Check an RFC 1123 label (Kubernetes namespaces, pod hostnames, domain labels): 1–63
/// characters of `a-z 0-9 -`, not starting or ending with `-`.
pub fn validate_label(kind: &str, s: &str) -> Result<(), NameError> {
    let err = |problem| Err(NameError { kind: kind.to_string(), value: s.to_string(), problem });
    if s.is_empty() {
        return err(NameProblem::Empty);
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        return err(NameProblem::InvalidChar(c));
    }
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        return err(NameProblem::UpperCase);
    }
    if s.len() > MAX_LABEL_LEN {
        return err(NameProblem::TooLong(s.len()));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return err(NameProblem::HyphenAtEdge);
    }
    Ok(())
}

/// Check a Kubernetes Service name: an RFC 1123 label that also starts with a letter (DNS-1035).
pub fn validate_service_name(s: &str) -> Result<(), NameError> {
    validate_label("Service name", s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(NameError {
            kind: "Service name".into(),
            value: s.into(),
            problem: NameProblem::NotStartingWithLetter,
        });
    }
    Ok(())
}

fn validate_domain(kind: &str, domain: &str) -> Result<(), NameError> {
    domain
        .split('.')
        .try_for_each(|l| validate_label(kind, l).map_err(|e| NameError { value: domain.into(), ..e }))
}

fn checked_length(kind: &str, name: String) -> Result<String, NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError {
            kind: kind.into(),
            problem: NameProblem::NameTooLong(name.len()),
            value: name,
        });
    }
    Ok(name)
}

/// `<svc>.<ns>.svc.<domain>`. A service given already as an FQDN (it contains `.svc.`) is
/// validated and returned as is (without a trailing dot).
pub fn service_fqdn(service: &str, namespace: &str, domain: &str) -> Result<String, NameError> {
    let service = service.trim_end_matches('.');
    if service.contains(".svc.") {
        validate_domain("Service FQDN", service)?;
        return checked_length("Service FQDN", service.to_string());
    }
    validate_service_name(service)?;
    validate_label("namespace", namespace)?;
    let domain = domain.trim_end_matches('.');
    validate_domain("cluster domain", domain)?;
    checked_length("Service FQDN", format!("{service}.{namespace}.svc.{domain}"))
}

/// `<pod>.<svc>.<ns>.svc.<domain>`: the per-pod name a headless Service (StatefulSet)
/// publishes; `pod_hostname` is the pod's hostname (its name in a StatefulSet).
pub fn pod_fqdn(
    pod_hostname: &str,
    service: &str,
    namespace: &str,
    domain: &str,
) -> Result<String, NameError> {
    validate_label("pod hostname", pod_hostname)?;
    let svc = service_fqdn(service, namespace, domain)?;
    checked_length("pod FQDN", format!("{pod_hostname}.{svc}"))
}

/// EdgeLake's Helm chart builds `PROXY_IP` as `<ns>.<svc>.svc.cluster.local` — reversed.
/// When the first label is the known namespace and the second is not, return the name in
/// the right order; otherwise `None` (nothing to fix, or no way to tell).
pub fn fix_reversed_proxy_ip(proxy_ip: &str, known_namespace: Option<&str>) -> Option<String> {
    let ns = known_namespace?;
    let mut parts = proxy_ip.trim_end_matches('.').splitn(4, '.');
    let (first, second, svc, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (svc == "svc" && first == ns && second != ns && !rest.is_empty())
        .then(|| format!("{second}.{first}.svc.{rest}"))
}

/// Resolve `name` (A and AAAA) with the given nameservers, as the absolute name — the search
/// list and ndots never rewrite it. A fresh resolver per call, so nothing (in particular no
/// negative answer) is cached between calls: DNS that comes back is seen at once.
/// The whole lookup is bounded by `timeout`.
pub async fn resolve(
    name: &str,
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<IpAddr>, SourceError> {
    if nameservers.is_empty() {
        return Err(SourceError::NotConfigured(
            "no nameserver to ask (resolv.conf lists none): cannot resolve the stable name".into(),
        ));
    }
    let absolute = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let fqdn = Name::from_ascii(&absolute)
        .map_err(|e| SourceError::Failed(format!("{name:?} is not a DNS name: {e}")))?;
    let asked = nameservers.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    let resolver = cluster_resolver(nameservers, timeout)
        .map_err(|e| SourceError::Failed(format!("cannot set up a resolver for {asked}: {e}")))?;
    let no_answer = || {
        SourceError::Failed(format!(
            "no answer for {absolute} within {timeout:?} from nameserver {asked}: is the cluster DNS \
             (CoreDNS/kube-dns) running, and do NetworkPolicies allow UDP and TCP port 53 to it?"
        ))
    };
    let lookup = match tokio::time::timeout(timeout, resolver.lookup_ip(fqdn)).await {
        Err(_) => return Err(no_answer()),
        Ok(r) => r,
    };
    match lookup {
        Ok(ips) => {
            let mut out: Vec<IpAddr> = Vec::new();
            for ip in ips.iter() {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            Ok(out)
        }
        Err(e) if e.is_nx_domain() => Err(SourceError::NotFound(format!(
            "{absolute} does not exist in DNS — asked {asked} (in Kubernetes: is the Service created, in \
             this namespace, and is the cluster domain right? On a host or under Docker: is the name in DNS \
             (or NETSTRAP_NAMESERVER's server), spelt as in DNS/DNS_DOMAIN?)"
        ))),
        Err(e) if e.is_no_records_found() => Err(SourceError::NotFound(format!(
            "{absolute} exists but has no A or AAAA records (a headless Service with no ready pods, \
             or a Service without a selector?) — asked {asked}"
        ))),
        Err(hickory_resolver::net::NetError::Timeout) => Err(no_answer()),
        Err(e) => Err(SourceError::Failed(format!("resolving {absolute} with nameserver {asked}: {e}"))),
    }
}

/// A resolver that asks exactly these nameservers (UDP, then TCP for truncated answers),
/// never /etc/hosts, with no search list.
fn cluster_resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let servers = nameservers
        .iter()
        .map(|ns| {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.ndots = 1;
    // Ask every nameserver at once: one that is down must not use up the whole timeout.
    opts.num_concurrent_reqs = nameservers.len();
    opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // A pod's /etc/hosts holds its own pod IP under its hostname: never the answer we want.
    opts.use_hosts_file = ResolveHosts::Never;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts).build()
}
