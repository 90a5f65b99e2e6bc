//! What the Kubernetes API says about this node's Service and Node, as used by the external
//! IP chain (LoadBalancer ingress, node addresses) and for the external ports (nodePort,
//! LoadBalancer port). The API is optional: without RBAC or outside a cluster, discovery
//! degrades to the downward API and configuration, and says so.

use kube::Client;

use crate::config::{Plane, Settings};
use crate::provenance::{Found, Provenance};

use super::environment::EnvironmentKind;
use super::external::{ExternalCandidate, ExternalIpSource};
use super::kubernetes::{KubeTarget, ServiceFacts, client, node_facts, service_facts};
use super::name::{NameFacts, namespace};
use super::{ExposedPort, SourceError, with_timeout};

/// The API client and our Service, fetched once per discovery.
pub struct KubeContext {
    pub client: Option<Client>,
    pub service: Result<ServiceFacts, SourceError>,
}

impl KubeContext {
    pub async fn gather(settings: &Settings, kind: EnvironmentKind, names: &NameFacts) -> KubeContext {
        let off =
            |why: &str| KubeContext { client: None, service: Err(SourceError::NotConfigured(why.into())) };
        if kind != EnvironmentKind::Kubernetes && settings.kubeconfig.is_none() {
            return off("not in Kubernetes");
        }
        let Some(service) = &settings.service else {
            return off("no Service name (NETSTRAP_SERVICE)");
        };
        // A Service given as an FQDN carries its namespace.
        let (name, ns) = match service.value.split('.').collect::<Vec<_>>().as_slice() {
            [name, ns, "svc", ..] => (name.to_string(), Some(ns.to_string())),
            _ => (service.value.clone(), namespace(settings, names).map(|f| f.value)),
        };
        let Some(ns) = ns else {
            return off("the Service's namespace is unknown (POD_NAMESPACE)");
        };
        let target = match KubeTarget::choose(
            settings.kubeconfig.as_deref(),
            settings.kubernetes_service_host.as_deref(),
            settings.kubernetes_service_port,
            &settings.sa_dir,
        ) {
            Ok(t) => t,
            Err(e) => return KubeContext { client: None, service: Err(e) },
        };
        let t = settings.source_timeout;
        let client = match with_timeout(t, client(&target)).await {
            Ok(c) => c,
            Err(e) => return KubeContext { client: None, service: Err(e) },
        };
        let service = with_timeout(t, service_facts(&client, &ns, &name)).await;
        KubeContext { client: Some(client), service }
    }

    fn service_label(f: &ServiceFacts) -> String {
        format!("Service {}/{}", f.namespace, f.name)
    }

    /// The chain's `service` step: the LoadBalancer ingress.
    pub fn service_step(&self) -> Result<(ExternalCandidate, String), SourceError> {
        let f = self.service.as_ref().map_err(Clone::clone)?;
        match f.ingress.first() {
            Some(host) => Ok((
                candidate(host.clone(), ExternalIpSource::ServiceIngress),
                format!("{} status.loadBalancer.ingress", Self::service_label(f)),
            )),
            None if f.service_type == "LoadBalancer" => Err(SourceError::NotFound(format!(
                "{} has no LoadBalancer ingress yet (pending)",
                Self::service_label(f)
            ))),
            None => Err(SourceError::NotConfigured(format!(
                "{} is {}: no LoadBalancer ingress",
                Self::service_label(f),
                f.service_type
            ))),
        }
    }

    /// The chain's `node` step: the Node's ExternalIP, then InternalIP, then `HOST_IP` —
    /// only when a node address reaches the Service (NodePort/LoadBalancer), or when the
    /// Service is unknown but external ports are configured (hostPort, manual NodePort).
    pub async fn node_step(&self, settings: &Settings) -> Result<(ExternalCandidate, String), SourceError> {
        match &self.service {
            Ok(f) if f.service_type == "NodePort" || f.service_type == "LoadBalancer" => {}
            Ok(f) => {
                return Err(SourceError::NotConfigured(format!(
                    "{} is {}: a node address does not reach it",
                    Self::service_label(f),
                    f.service_type
                )));
            }
            Err(e) => {
                let configured = Plane::ALL.into_iter().any(|p| settings.listen(p).external_port.is_some());
                if !configured {
                    return Err(SourceError::NotConfigured(format!(
                        "the Service is unknown ({e}) and no NETSTRAP_*_EXTERNAL_PORT is set: a node address \
                         alone reaches nothing"
                    )));
                }
            }
        }
        let mut why_not = Vec::new();
        if let (Some(client), Some(node)) = (&self.client, &settings.k8s_node_name) {
            match with_timeout(settings.source_timeout, node_facts(client, node)).await {
                Ok(n) => {
                    if let Some(ip) = n.external_ips.first() {
                        return Ok((
                            candidate(ip.to_string(), ExternalIpSource::NodeAddress),
                            format!("Node {node} ExternalIP"),
                        ));
                    }
                    if let Some(ip) = n.internal_ips.first() {
                        return Ok((
                            candidate(ip.to_string(), ExternalIpSource::NodeAddress),
                            format!("Node {node} InternalIP (the node has no ExternalIP)"),
                        ));
                    }
                    why_not.push(format!("Node {node} lists no addresses"));
                }
                Err(e) => why_not.push(format!("Node API: {e}")),
            }
        } else {
            why_not.push("node API not asked (K8S_NODE_NAME not set or no API client)".to_string());
        }
        match &settings.host_ip {
            Some(ip) => Ok((
                candidate(ip.value.to_string(), ExternalIpSource::NodeAddress),
                format!("env HOST_IP (downward API status.hostIP); {}", why_not.join("; ")),
            )),
            None => Err(SourceError::NotFound(format!("{}; HOST_IP not set", why_not.join("; ")))),
        }
    }

    /// The ports peers use for one plane: a configured `NETSTRAP_*_EXTERNAL_PORT` wins; else
    /// the Service's port for this container port (inside the cluster) and its nodePort or
    /// LoadBalancer port (outside), matching the external address's source.
    pub fn exposed(
        &self,
        plane: Plane,
        port_names: &[&str],
        settings: &Settings,
        external: ExternalIpSource,
    ) -> ExposedPort {
        let (s, plane_var) = (settings.listen(plane), plane.external_port_var());
        let internal = s.port.as_ref().map(|p| p.value).unwrap_or(0);
        // Without a Service port, peers get the node's own port (ANYLOG_*_PORT), which is
        // netstrap's listening port unless NETSTRAP_*_PORT moved it.
        let node = s.node_port.as_ref().map(|p| p.value).unwrap_or(internal);
        let same = |what: String| {
            if node == internal {
                Found::new(internal, Provenance::new(format!("the internal port ({what})")))
            } else {
                Found::new(node, Provenance::new(format!("the node's port ({what})")))
            }
        };
        let sp = self.service.as_ref().ok().and_then(|f| f.port_for(internal, port_names).map(|p| (f, p)));
        let cluster = match sp {
            Some((f, p)) => Found::new(
                p.port,
                Provenance::new(format!("{} port for targetPort {internal}", Self::service_label(f))),
            ),
            None => same(match &self.service {
                Ok(f) => format!("{} has no port for {internal}", Self::service_label(f)),
                Err(e) => format!("no Service: {e}"),
            }),
        };
        if let Some(p) = &s.external_port {
            return ExposedPort { cluster, external: p.clone() };
        }
        let external = match (sp, external) {
            (Some((f, p)), ExternalIpSource::NodeAddress) => match p.node_port {
                Some(np) => Found::new(np, Provenance::new(format!("{} nodePort", Self::service_label(f)))),
                None => same(format!("{} has no nodePort", Self::service_label(f))),
            },
            (Some((f, p)), ExternalIpSource::ServiceIngress) => {
                Found::new(p.port, Provenance::new(format!("{} LoadBalancer port", Self::service_label(f))))
            }
            (Some((f, p)), _) if f.service_type == "NodePort" && p.node_port.is_some() => Found::new(
                p.node_port.unwrap_or(internal),
                Provenance::new(format!("{} nodePort", Self::service_label(f))),
            ),
            _ => same(format!("no Service nodePort, {plane_var} not set")),
        };
        ExposedPort { cluster, external }
    }
}

fn candidate(host: String, source: ExternalIpSource) -> ExternalCandidate {
    ExternalCandidate { host, source, reach: source.reach() }
}
