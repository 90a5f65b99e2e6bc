//! The Kubernetes API as a discovery source: how netstrap reaches the API server the way a
//! pod does (in-cluster service account, or a kubeconfig outside the cluster), and the two
//! objects it reads — its own Service (type, ports, LoadBalancer ingress) and its Node
//! (ExternalIP / InternalIP addresses) — reduced to plain facts.
//!
//! Nothing here has a timeout of its own: callers wrap each call in
//! [`crate::discover::with_timeout`]. Every future is cancel-safe (dropping it drops the HTTP
//! request), so a hung API server costs the caller its timeout and nothing more.
//! RBAC refusals are [`SourceError::Forbidden`] with the exact rule to grant: discovery
//! degrades, it never fails because a Role is missing.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use kube::{Api, Client, Config};
use serde::Serialize;

use crate::discover::SourceError;

/// Where a pod finds its service-account token, CA bundle and namespace.
pub const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How netstrap reaches the Kubernetes API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeTarget {
    /// From inside a pod: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and the
    /// mounted service-account directory (`token`, `ca.crt`, `namespace`).
    InCluster { host: String, port: u16, sa_dir: PathBuf },
    /// From outside the cluster: a kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

impl KubeTarget {
    /// Choose the target from configured values: an explicit kubeconfig wins (an operator
    /// set it on purpose), else the in-cluster API when `KUBERNETES_SERVICE_HOST` is set.
    pub fn choose(
        kubeconfig: Option<&Path>,
        service_host: Option<&str>,
        service_port: u16,
        sa_dir: &Path,
    ) -> Result<KubeTarget, SourceError> {
        if let Some(path) = kubeconfig {
            return Ok(KubeTarget::Kubeconfig(path.to_path_buf()));
        }
        match service_host.map(str::trim).filter(|h| !h.is_empty()) {
            Some(host) => Ok(KubeTarget::InCluster {
                host: host.to_string(),
                port: service_port,
                sa_dir: sa_dir.to_path_buf(),
            }),
            None => Err(SourceError::NotConfigured(
                "no Kubernetes API: KUBERNETES_SERVICE_HOST is not set and no kubeconfig is configured"
                    .into(),
            )),
        }
    }
}

impl fmt::Display for KubeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeTarget::InCluster { host, port, sa_dir } => write!(
                f,
                "in-cluster API {} (service account {})",
                cluster_url(host, *port),
                sa_dir.display()
            ),
            KubeTarget::Kubeconfig(path) => write!(f, "kubeconfig {}", path.display()),
        }
    }
}

/// `https://host:port`, with IPv6 literals bracketed (`KUBERNETES_SERVICE_HOST` is a bare
/// address on IPv6 clusters).
fn cluster_url(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The client configuration for `target`. Files are checked here so an error names the
/// file that is missing or unreadable.
pub async fn config(target: &KubeTarget) -> Result<Config, SourceError> {
    match target {
        KubeTarget::InCluster { host, port, sa_dir } => in_cluster_config(host, *port, sa_dir).await,
        KubeTarget::Kubeconfig(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| SourceError::Failed(format!("kubeconfig {}: {}", path.display(), chain(&e))))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| SourceError::Failed(format!("kubeconfig {}: {}", path.display(), chain(&e))))
        }
    }
}

/// A Kubernetes API client for `target`.
pub async fn client(target: &KubeTarget) -> Result<Client, SourceError> {
    // rustls needs one process-wide crypto provider; when a build links two (test builds
    // do, through dev-dependencies) it refuses to pick, so pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = config(target).await?;
    Client::try_from(config).map_err(|e| {
        SourceError::Failed(format!("cannot build a Kubernetes API client for {target}: {}", chain(&e)))
    })
}

/// Built by hand rather than with `Config::incluster()`, which hard-codes the
/// service-account paths. kube parses the CA bundle (through an in-memory kubeconfig) and
/// re-reads both the token file and `ca.crt` when they rotate.
async fn in_cluster_config(host: &str, port: u16, sa_dir: &Path) -> Result<Config, SourceError> {
    let token_path = sa_dir.join("token");
    let ca_path = sa_dir.join("ca.crt");
    let token = read_sa_file(&token_path, "service-account token").await?;
    if token.trim().is_empty() {
        return Err(SourceError::Failed(format!("service-account token {} is empty", token_path.display())));
    }
    let ca = read_sa_file(&ca_path, "service-account CA bundle").await?;
    if !ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(SourceError::Failed(format!(
            "service-account CA bundle {} holds no PEM certificate",
            ca_path.display()
        )));
    }
    let namespace_path = sa_dir.join("namespace");
    // Only a default for requests that name no namespace, so a missing file is not fatal.
    let namespace = match tokio::fs::read_to_string(&namespace_path).await {
        Ok(ns) if !ns.trim().is_empty() => ns.trim().to_string(),
        Ok(_) => "default".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "default".to_string(),
        Err(e) => {
            return Err(SourceError::Failed(format!(
                "cannot read service-account namespace {}: {e}",
                namespace_path.display()
            )));
        }
    };

    let url = cluster_url(host, port);
    let as_text = |p: &Path| {
        p.to_str().map(str::to_string).ok_or_else(|| {
            SourceError::Failed(format!("service-account path {} is not valid UTF-8", p.display()))
        })
    };
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "in-cluster".into(),
            cluster: Some(Cluster {
                server: Some(url.clone()),
                certificate_authority: Some(as_text(&ca_path)?),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "service-account".into(),
            auth_info: Some(AuthInfo { token_file: Some(as_text(&token_path)?), ..Default::default() }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "in-cluster".into(),
            context: Some(Context {
                cluster: "in-cluster".into(),
                user: Some("service-account".into()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("in-cluster".into()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| SourceError::Failed(format!("in-cluster API {url}: {}", chain(&e))))?;
    // As the pod's own client does: the CA file is re-read on rotation, and the API server
    // is dialled directly (a proxy from HTTPS_PROXY is for the node's traffic, not ours).
    config.root_cert_file = Some(ca_path);
    config.proxy_url = None;
    config.default_namespace = namespace;
    Ok(config)
}

async fn read_sa_file(path: &Path, what: &str) -> Result<String, SourceError> {
    tokio::fs::read_to_string(path).await.map_err(|e| {
        SourceError::Failed(format!(
            "cannot read {what} {}: {e} — is the ServiceAccount token mounted \
             (automountServiceAccountToken) and NETSTRAP_SA_DIR right?",
            path.display()
        ))
    })
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePortFacts {
    pub name: Option<String>,
    pub protocol: String,
    pub port: u16,
    /// The container port, as a number or a port name.
    pub target_port: Option<String>,
    pub node_port: Option<u16>,
}

/// What netstrap needs to know about its Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceFacts {
    pub namespace: String,
    pub name: String,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    pub service_type: String,
    /// `"None"` for a headless Service, kept as the API says it.
    pub cluster_ip: Option<String>,
    pub ports: Vec<ServicePortFacts>,
    /// LoadBalancer ingress: the IP, else the hostname, of each entry.
    pub ingress: Vec<String>,
    pub external_ips: Vec<String>,
}

impl ServiceFacts {
    /// Reduce a Service object to facts. Ports outside 1..=65535 are dropped.
    pub fn from_service(service: &Service, namespace: &str, name: &str) -> ServiceFacts {
        let spec = service.spec.as_ref();
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .filter(|v| !v.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        ServiceFacts {
            namespace: service.metadata.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            name: service.metadata.name.clone().unwrap_or_else(|| name.to_string()),
            service_type: spec.and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".to_string()),
            cluster_ip: spec.and_then(|s| s.cluster_ip.clone()).filter(|ip| !ip.is_empty()),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .map(|ports| ports.iter().filter_map(port_facts).collect())
                .unwrap_or_default(),
            ingress,
            external_ips: spec.and_then(|s| s.external_ips.clone()).unwrap_or_default(),
        }
    }

    /// The Service port that leads to container port `internal_port` (whose names are
    /// `port_names`): targetPort is that number, else targetPort is one of the names, else
    /// (no targetPort, so it defaults to `port`) `port` is that number. TCP only.
    pub fn port_for(&self, internal_port: u16, port_names: &[&str]) -> Option<&ServicePortFacts> {
        let number = internal_port.to_string();
        let tcp = || self.ports.iter().filter(|p| p.protocol.eq_ignore_ascii_case("TCP"));
        tcp()
            .find(|p| p.target_port.as_deref() == Some(number.as_str()))
            .or_else(|| tcp().find(|p| p.target_port.as_deref().is_some_and(|t| port_names.contains(&t))))
            .or_else(|| tcp().find(|p| p.target_port.is_none() && p.port == internal_port))
    }

    /// A headless Service (`clusterIP: None`) has no virtual IP: its name resolves to pods.
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

fn port_facts(port: &ServicePort) -> Option<ServicePortFacts> {
    Some(ServicePortFacts {
        name: port.name.clone().filter(|n| !n.is_empty()),
        protocol: port.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
        port: u16::try_from(port.port).ok().filter(|p| *p != 0)?,
        target_port: port.target_port.as_ref().map(|t| match t {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        }),
        node_port: port.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0),
    })
}

/// Read Service `namespace/name`.
pub async fn service_facts(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<ServiceFacts, SourceError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(service) => Ok(ServiceFacts::from_service(&service, namespace, name)),
        Err(e) => Err(api_error(
            e,
            &format!("Service {namespace}/{name}"),
            &format!(
                "grant \"get\" on \"services\" in namespace {namespace} to the pod's ServiceAccount \
                 (a Role with apiGroups [\"\"], resources [\"services\"], verbs [\"get\"], and a RoleBinding)"
            ),
        )),
    }
}

/// The addresses of one Node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeFacts {
    pub name: String,
    pub external_ips: Vec<IpAddr>,
    pub internal_ips: Vec<IpAddr>,
    /// Hostname, ExternalDNS and InternalDNS addresses, in the API's order.
    pub hostnames: Vec<String>,
}

impl NodeFacts {
    /// Reduce a Node object to its addresses; unparsable IPs are dropped.
    pub fn from_node(node: &Node, name: &str) -> NodeFacts {
        let mut facts = NodeFacts {
            name: node.metadata.name.clone().unwrap_or_else(|| name.to_string()),
            external_ips: Vec::new(),
            internal_ips: Vec::new(),
            hostnames: Vec::new(),
        };
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for address in addresses.into_iter().flatten() {
            let ip = || address.address.trim().parse::<IpAddr>().ok();
            match address.type_.as_str() {
                "ExternalIP" => facts.external_ips.extend(ip()),
                "InternalIP" => facts.internal_ips.extend(ip()),
                "Hostname" | "ExternalDNS" | "InternalDNS" if !address.address.is_empty() => {
                    facts.hostnames.push(address.address.clone())
                }
                _ => {}
            }
        }
        facts
    }
}

/// Read Node `node_name` (cluster-scoped).
pub async fn node_facts(client: &Client, node_name: &str) -> Result<NodeFacts, SourceError> {
    let api: Api<Node> = Api::all(client.clone());
    match api.get(node_name).await {
        Ok(node) => Ok(NodeFacts::from_node(&node, node_name)),
        Err(e) => Err(api_error(
            e,
            &format!("Node {node_name}"),
            "grant \"get\" on \"nodes\" to the pod's ServiceAccount (nodes are cluster-scoped: \
             a ClusterRole with apiGroups [\"\"], resources [\"nodes\"], verbs [\"get\"], and a \
             ClusterRoleBinding)",
        )),
    }
}

fn api_error(e: kube::Error, object: &str, grant: &str) -> SourceError {
    match e {
        kube::Error::Api(status) => match status.code {
            403 => SourceError::Forbidden(format!("{grant}; the API said: {}", status.message)),
            404 => SourceError::NotFound(format!("{object} does not exist")),
            401 => SourceError::Failed(format!(
                "unauthorized (401) reading {object}: the API server rejected the token — \
                 is the ServiceAccount token (or the kubeconfig user) valid for this cluster?"
            )),
            code => SourceError::Failed(format!(
                "reading {object}: the API answered {code} {}: {}",
                status.reason, status.message
            )),
        },
        other => SourceError::Failed(format!("reading {object}: {}", chain(&other))),
    }
}

/// An error and its causes on one line: kube's transport errors say little at the top.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(
        name: Option<&str>,
        protocol: &str,
        port: u16,
        target: Option<&str>,
        node: Option<u16>,
    ) -> ServicePortFacts {
        ServicePortFacts {
            name: name.map(String::from),
            protocol: protocol.into(),
            port,
            target_port: target.map(String::from),
            node_port: node,
        }
    }

    fn facts(ports: Vec<ServicePortFacts>) -> ServiceFacts {
        ServiceFacts {
            namespace: "edge".into(),
            name: "node".into(),
            service_type: "NodePort".into(),
            cluster_ip: Some("10.96.0.10".into()),
            ports,
            ingress: vec![],
            external_ips: vec![],
        }
    }

    #[test]
    fn port_for_prefers_numeric_target_then_name_then_port() {
        let svc = facts(vec![
            port(Some("by-port"), "TCP", 32049, None, Some(30001)),
            port(Some("by-name"), "TCP", 80, Some("rest"), Some(30002)),
            port(Some("by-number"), "TCP", 81, Some("32049"), Some(30003)),
        ]);
        assert_eq!(svc.port_for(32049, &["rest"]).and_then(|p| p.node_port), Some(30003));
        assert_eq!(svc.port_for(9999, &["rest"]).and_then(|p| p.node_port), Some(30002));
        assert!(svc.port_for(80, &[]).is_none(), "port 80 forwards to the named port, not to 80");
    }

    #[test]
    fn port_for_ignores_udp() {
        let svc = facts(vec![port(None, "UDP", 5353, Some("5353"), Some(30053))]);
        assert!(svc.port_for(5353, &[]).is_none());
    }

    #[test]
    fn ipv6_service_host_is_bracketed() {
        assert_eq!(cluster_url("fd00::1", 443), "https://[fd00::1]:443");
        assert_eq!(cluster_url("[fd00::1]", 6443), "https://[fd00::1]:6443");
        assert_eq!(cluster_url("10.96.0.1", 443), "https://10.96.0.1:443");
    }

    #[test]
    fn explicit_kubeconfig_wins_over_in_cluster() {
        let sa = Path::new(DEFAULT_SA_DIR);
        let t = KubeTarget::choose(Some(Path::new("/k")), Some("10.96.0.1"), 443, sa);
        assert_eq!(t, Ok(KubeTarget::Kubeconfig("/k".into())));
        let t = KubeTarget::choose(None, Some("10.96.0.1"), 443, sa);
        assert!(matches!(t, Ok(KubeTarget::InCluster { port: 443, .. })));
        assert!(matches!(KubeTarget::choose(None, None, 443, sa), Err(SourceError::NotConfigured(_))));
    }
}
