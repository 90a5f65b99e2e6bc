//! The stable name peers use inside the cluster, and what it resolves to.
//!
//! Order: `DNS` > `<HOSTNAME>.<DNS_DOMAIN>` > the Service FQDN `<svc>.<ns>.svc.<domain>`
//! (per-pod `<pod>.<svc>.<ns>.svc.<domain>` with `NETSTRAP_PER_POD_NAME`) > the overlay address
//! (`OVERLAY_IP`, `NETSTRAP_OVERLAY`) >
//! the local IP (with a warning). In Kubernetes a Service name is required: without it
//! every restart would advertise a new address.

use std::net::{IpAddr, SocketAddr};

use crate::config::Settings;
use crate::provenance::{Found, Provenance};

use super::Resolution;
use super::dns::{ResolvConf, cluster_domain, pod_fqdn, resolve, service_fqdn};
use super::environment::EnvironmentKind;

/// What the name step needs from the machine.
#[derive(Clone, Debug, Default)]
pub struct NameFacts {
    /// The resolver configuration (`NETSTRAP_RESOLV_CONF`), if readable.
    pub resolv_conf: Option<ResolvConf>,
    /// The service-account namespace file's content, if present.
    pub sa_namespace: Option<String>,
    /// Why the resolver configuration could not be read, when it could not.
    pub resolv_conf_error: Option<String>,
}

impl NameFacts {
    pub fn read(settings: &Settings) -> NameFacts {
        let resolv_conf = ResolvConf::read(&settings.resolv_conf);
        NameFacts {
            resolv_conf_error: resolv_conf.as_ref().err().map(ToString::to_string),
            resolv_conf: resolv_conf.ok(),
            sa_namespace: std::fs::read_to_string(settings.sa_dir.join("namespace"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// The namespace: `NETSTRAP_NAMESPACE`/`POD_NAMESPACE`, else the service-account file.
pub fn namespace(settings: &Settings, facts: &NameFacts) -> Option<Found<String>> {
    settings.namespace.clone().or_else(|| {
        facts.sa_namespace.clone().map(|ns| Found::new(ns, Provenance::new("service-account namespace file")))
    })
}

/// The stable name, or why it cannot be had (pushed to `problems`).
pub fn stable_name(
    settings: &Settings,
    kind: EnvironmentKind,
    local_ip: &Found<IpAddr>,
    overlay: Option<&Found<IpAddr>>,
    facts: &NameFacts,
    problems: &mut Vec<String>,
) -> Found<String> {
    let mut skipped = Vec::new();
    if let Some(dns) = &settings.dns {
        return dns.clone();
    }
    skipped.push("DNS not set".to_string());
    if let Some(domain) = &settings.dns_domain {
        match &settings.hostname {
            Some(host) => {
                return Found::new(
                    format!("{host}.{}", domain.value),
                    Provenance::new("env HOSTNAME + env DNS_DOMAIN").after(skipped),
                );
            }
            None => skipped.push("DNS_DOMAIN set but HOSTNAME is not".to_string()),
        }
    } else {
        skipped.push("DNS_DOMAIN not set".to_string());
    }

    if let Some(service) = &settings.service {
        match service_name(settings, &service.value, facts) {
            Ok(found) => return Found::new(found.value, found.why.after(skipped)),
            Err(e) => {
                problems.push(format!("the stable name: {e}"));
                return Found::new(service.value.clone(), Provenance::new("placeholder: see the error"));
            }
        }
    }
    skipped.push("NETSTRAP_SERVICE / KUBERNETES_SERVICE_IP not set".to_string());
    if kind == EnvironmentKind::Kubernetes {
        problems.push(
            "the stable name: set NETSTRAP_SERVICE (or KUBERNETES_SERVICE_IP) to the Service that selects this pod"
                .into(),
        );
    }
    if let Some(ip) = overlay {
        return Found::new(ip.value.to_string(), ip.why.clone().after(skipped));
    }
    skipped.push("OVERLAY_IP / NETSTRAP_OVERLAY not set".to_string());
    Found::new(
        local_ip.value.to_string(),
        Provenance::new("the local IP (no stable name configured: set DNS or NETSTRAP_SERVICE)")
            .after(skipped),
    )
}

/// `<svc>.<ns>.svc.<domain>` (or per pod), each part from its source.
fn service_name(settings: &Settings, service: &str, facts: &NameFacts) -> Result<Found<String>, String> {
    if service.contains(".svc.") {
        let name = service_fqdn(service, "", "").map_err(|e| e.to_string())?;
        return Ok(Found::new(name, Provenance::new("the Service FQDN as configured")));
    }
    let ns = namespace(settings, facts).ok_or(
        "the Service's namespace is unknown: set POD_NAMESPACE from the downward API (metadata.namespace) or \
         NETSTRAP_NAMESPACE",
    )?;
    let (domain, domain_why) = match &settings.cluster_domain {
        Some(d) => (d.value.clone(), d.why.source.clone()),
        None => match facts.resolv_conf.as_ref().and_then(|rc| cluster_domain(rc, Some(&ns.value))) {
            Some(found) => found,
            None => {
                return Err(format!(
                    "the cluster domain: {} has no `<namespace>.svc.<domain>` or `svc.<domain>` search entry; set \
                     NETSTRAP_CLUSTER_DOMAIN (e.g. cluster.local)",
                    settings.resolv_conf.display()
                ));
            }
        },
    };
    let why = |shape: &str| {
        Provenance::new(format!(
            "{shape}: Service {service} ({}), namespace {} ({}), domain {domain} ({domain_why})",
            settings.service.as_ref().map(|s| s.why.source.as_str()).unwrap_or("?"),
            ns.value,
            ns.why.source
        ))
    };
    if settings.per_pod_name {
        let pod = settings.hostname.clone().or_else(|| settings.pod_name.clone()).ok_or(
            "NETSTRAP_PER_POD_NAME=true needs the pod's hostname: HOSTNAME or POD_NAME (downward API metadata.name)",
        )?;
        let name = pod_fqdn(&pod, service, &ns.value, &domain).map_err(|e| e.to_string())?;
        return Ok(Found::new(name, why("per-pod name (NETSTRAP_PER_POD_NAME)")));
    }
    let name = service_fqdn(service, &ns.value, &domain).map_err(|e| e.to_string())?;
    Ok(Found::new(name, why("Service FQDN")))
}

/// The nameservers to ask: `NETSTRAP_NAMESERVER`, else resolv.conf's.
pub fn nameservers(settings: &Settings, facts: &NameFacts) -> Vec<SocketAddr> {
    if !settings.nameservers.is_empty() {
        return settings.nameservers.clone();
    }
    facts.resolv_conf.as_ref().map(|rc| rc.nameservers.clone()).unwrap_or_default()
}

/// Resolve the stable name with the cluster resolver; `None` when it is an IP address.
pub async fn resolution(settings: &Settings, facts: &NameFacts, name: &str) -> Option<Resolution> {
    if name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let servers = nameservers(settings, facts);
    if let (true, Some(why)) = (servers.is_empty(), &facts.resolv_conf_error) {
        let error = format!("no nameserver to ask ({why}): cannot resolve {name}; set NETSTRAP_NAMESERVER");
        return Some(Resolution { addresses: Vec::new(), error: Some(error) });
    }
    Some(match resolve(name, &servers, settings.source_timeout).await {
        Ok(addresses) => Resolution { addresses, error: None },
        Err(e) => Resolution { addresses: Vec::new(), error: Some(e.to_string()) },
    })
}

/// Resolve a name the way the node's resolver would: a name with fewer dots than `ndots`
/// (`edgelake-master`) is tried with each search domain first (`edgelake-master.<ns>.svc.
/// cluster.local`, ...), then as given. The first name that has addresses wins; the error
/// of the last attempt otherwise. `None` when `name` is an IP address.
pub async fn resolution_searched(
    settings: &Settings,
    facts: &NameFacts,
    name: &str,
) -> Option<(String, Resolution)> {
    if name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let rc = facts.resolv_conf.clone().unwrap_or_default();
    let dots = name.trim_end_matches('.').matches('.').count();
    let mut candidates: Vec<String> = Vec::new();
    if !name.ends_with('.') && dots < usize::from(rc.ndots) {
        candidates.extend(rc.search.iter().map(|d| format!("{name}.{d}")));
    }
    candidates.push(name.trim_end_matches('.').to_string());
    let mut last = None;
    for candidate in candidates {
        match resolution(settings, facts, &candidate).await {
            Some(r) if r.error.is_none() && !r.addresses.is_empty() => return Some((candidate, r)),
            other => last = other.map(|r| (candidate, r)),
        }
    }
    last
}
