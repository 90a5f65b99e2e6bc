//! Discovery in order (README, "How values are discovered"): environment, local IP, Kubernetes facts,
//! external IP chain, stable name and its resolution, exposed ports.

use std::net::IpAddr;

use crate::config::{ExternalStep, Plane, Settings};
use crate::provenance::{Found, Provenance};

use super::cluster_api::KubeContext;
use super::environment::{HostFacts, environment};
use super::external::{ExternalCandidate, ExternalIpSource};
use super::local_ip::{InterfaceAddr, default_route_ips, interfaces, local_ip};
use super::name::{NameFacts, resolution, stable_name};
use super::{Discovery, Resolution, SourceError, cloud, echo, stun, with_timeout};

/// Container/Service port names that identify each plane when a Service's targetPort is a
/// name (k8s/ names them `tcp`, `rest`, `broker`).
const PORT_NAMES_TCP: &[&str] = &["tcp", "anylog-tcp", "server"];
const PORT_NAMES_REST: &[&str] = &["rest", "anylog-rest", "http"];
const PORT_NAMES_BROKER: &[&str] = &["broker", "anylog-broker", "mqtt"];

/// What discovery reads from the machine, gathered up front so the rest can be tested
/// with made-up facts.
#[derive(Clone, Debug, Default)]
pub struct MachineFacts {
    pub host: HostFacts,
    pub interfaces: Vec<InterfaceAddr>,
    pub route_ips: Vec<IpAddr>,
    pub names: NameFacts,
}

impl MachineFacts {
    pub fn read(settings: &Settings) -> MachineFacts {
        MachineFacts {
            host: HostFacts::read(settings),
            interfaces: interfaces(),
            route_ips: default_route_ips(),
            names: NameFacts::read(settings),
        }
    }
}

/// Run discovery against this machine.
pub async fn discover(settings: &Settings) -> Discovery {
    discover_with(settings, &MachineFacts::read(settings)).await
}

/// Run discovery with the given machine facts (network sources are still real).
pub async fn discover_with(settings: &Settings, facts: &MachineFacts) -> Discovery {
    let mut warnings = Vec::new();
    let mut problems = Vec::new();

    let environment = environment(settings, &facts.host);
    let overlay = super::overlay::overlay_ip(settings, &facts.interfaces).unwrap_or_else(|e| {
        problems.push(format!("the overlay address: {e}"));
        None
    });
    let local_ip = match local_ip(settings, &facts.interfaces, &facts.route_ips) {
        Ok(ip) => ip,
        Err(e) => {
            problems.push(format!("the local IP: {e}"));
            Found::new(IpAddr::from([127, 0, 0, 1]), Provenance::new("placeholder: see the error above"))
        }
    };
    if local_ip.value.is_loopback() {
        warnings.push("the local IP is a loopback address: only this host can reach the node".into());
    }
    let host_ip = settings.host_ip.clone();

    let kube = KubeContext::gather(settings, environment.value, &facts.names).await;
    if let Err(
        e @ (SourceError::Forbidden(_)
        | SourceError::Failed(_)
        | SourceError::Timeout(_)
        | SourceError::NotFound(_)),
    ) = &kube.service
    {
        warnings.push(format!("Kubernetes API: {e}; external ports come from configuration"));
    }
    let (external, candidates) = external_chain(settings, &kube, &local_ip, overlay.as_ref()).await;
    if external.value.source == ExternalIpSource::LocalFallback {
        warnings.push(format!(
            "no external address found ({}); outside peers are given the stable name",
            external.why.skipped.join("; ")
        ));
    }

    let stable_name =
        stable_name(settings, environment.value, &local_ip, overlay.as_ref(), &facts.names, &mut problems);
    let resolution =
        if problems.is_empty() { resolution(settings, &facts.names, &stable_name.value).await } else { None };
    if let Some(Resolution { error: Some(e), .. }) = &resolution {
        warnings.push(format!("the stable name {} does not resolve yet: {e}", stable_name.value));
    }

    let ledger = ledger_resolution(settings, &facts.names, &mut warnings).await;

    let src = external.value.source;
    let tcp = kube.exposed(Plane::Tcp, PORT_NAMES_TCP, settings, src);
    let rest = kube.exposed(Plane::Rest, PORT_NAMES_REST, settings, src);
    let broker = settings
        .broker
        .listen
        .port
        .as_ref()
        .map(|_| kube.exposed(Plane::Broker, PORT_NAMES_BROKER, settings, src));

    if let Some(proxy) = &settings.proxy_ip {
        warnings.push(format!(
            "PROXY_IP={proxy} is ignored: EdgeLake's chart builds it as <ns>.<svc>.svc.cluster.local \
             (reversed); netstrap advertises <svc>.<ns>.svc.<domain>"
        ));
    }

    Discovery {
        environment,
        local_ip,
        overlay,
        host_ip,
        external,
        candidates,
        stable_name,
        resolution,
        ledger,
        service: kube.service.as_ref().ok().cloned(),
        tcp,
        rest,
        broker,
        warnings,
        problems,
    }
}

/// The external IP chain, in the configured order. The first *ingress* candidate wins; an
/// egress candidate (the address we leave through) is kept and used only when no ingress
/// source answers; the local IP is the last resort.
async fn external_chain(
    settings: &Settings,
    kube: &KubeContext,
    local_ip: &Found<IpAddr>,
    overlay: Option<&Found<IpAddr>>,
) -> (Found<ExternalCandidate>, Vec<ExternalCandidate>) {
    let mut skipped = Vec::new();
    let mut candidates = Vec::new();
    let mut egress: Option<(ExternalCandidate, Provenance)> = None;
    for step in &settings.external_sources {
        if *step == ExternalStep::Fallback {
            break;
        }
        let is_egress_only = !matches!(
            step,
            ExternalStep::Explicit | ExternalStep::Overlay | ExternalStep::Service | ExternalStep::Node
        );
        if is_egress_only && egress.is_some() {
            continue;
        }
        let result = match step {
            ExternalStep::Overlay => overlay_step(overlay),
            _ => external_step(settings, kube, *step).await,
        };
        match result {
            Ok((cand, why)) => {
                candidates.push(cand.clone());
                let prov = Provenance::new(why).after(skipped.clone());
                if cand.reach == super::external::Reach::Ingress {
                    return (Found::new(cand, prov), candidates);
                }
                if egress.is_none() {
                    egress = Some((cand, prov));
                }
            }
            Err(e) => skipped.push(format!("{}: {e}", step_name(*step))),
        }
    }
    if let Some((cand, prov)) = egress {
        return (Found::new(cand, prov), candidates);
    }
    let cand = ExternalCandidate {
        host: local_ip.value.to_string(),
        source: ExternalIpSource::LocalFallback,
        reach: ExternalIpSource::LocalFallback.reach(),
    };
    candidates.push(cand.clone());
    (Found::new(cand, Provenance::new("fallback: the local IP").after(skipped)), candidates)
}

/// The overlay address as an ingress candidate: every peer on the overlay dials it.
fn overlay_step(overlay: Option<&Found<IpAddr>>) -> Result<(ExternalCandidate, String), SourceError> {
    let ip =
        overlay.ok_or_else(|| SourceError::NotConfigured("OVERLAY_IP / NETSTRAP_OVERLAY not set".into()))?;
    let source = ExternalIpSource::Overlay;
    Ok((
        ExternalCandidate { host: ip.value.to_string(), source, reach: source.reach() },
        ip.why.source.clone(),
    ))
}

fn step_name(step: ExternalStep) -> String {
    crate::provenance::json_name(&step)
}

async fn external_step(
    settings: &Settings,
    kube: &KubeContext,
    step: ExternalStep,
) -> Result<(ExternalCandidate, String), SourceError> {
    match step {
        ExternalStep::Service => kube.service_step(),
        ExternalStep::Node => kube.node_step(settings).await,
        _ => other_step(settings, step).await,
    }
}

async fn other_step(
    settings: &Settings,
    step: ExternalStep,
) -> Result<(ExternalCandidate, String), SourceError> {
    let cand =
        |host: String, source: ExternalIpSource| ExternalCandidate { host, source, reach: source.reach() };
    match step {
        ExternalStep::Explicit => {
            if settings.enable_dns
                && let Some(dns) = &settings.external_dns
            {
                return Ok((
                    cand(dns.value.clone(), ExternalIpSource::Explicit),
                    "env EXTERNAL_DNS (ENABLE_DNS=true)".into(),
                ));
            }
            match &settings.external_ip {
                Some(ip) => {
                    Ok((cand(ip.value.to_string(), ExternalIpSource::Explicit), ip.why.source.clone()))
                }
                None => Err(SourceError::NotConfigured("EXTERNAL_IP not set".into())),
            }
        }
        ExternalStep::Aws | ExternalStep::Gcp | ExternalStep::Azure => {
            let timeout = settings.source_timeout;
            let (source, default_base) = match step {
                ExternalStep::Aws => (ExternalIpSource::Aws, cloud::AWS_METADATA_BASE),
                ExternalStep::Gcp => (ExternalIpSource::Gcp, cloud::GCP_METADATA_BASE),
                _ => (ExternalIpSource::Azure, cloud::AZURE_METADATA_BASE),
            };
            let base = settings.metadata_url.as_deref().unwrap_or(default_base);
            let ip = match step {
                ExternalStep::Aws => cloud::aws_public_ipv4(base, timeout).await?,
                ExternalStep::Gcp => cloud::gcp_external_ip(base, timeout).await?,
                _ => cloud::azure_public_ip(base, timeout).await?,
            };
            Ok((cand(ip.to_string(), source), format!("{} instance metadata at {base}", step_name(step))))
        }
        ExternalStep::Stun => {
            if settings.stun_servers.is_empty() {
                return Err(SourceError::NotConfigured("off (NETSTRAP_STUN_SERVERS not set)".into()));
            }
            // One bound for the whole step, however many servers are listed.
            let m = with_timeout(
                settings.source_timeout,
                stun::first_mapped(&settings.stun_servers, settings.source_timeout),
            )
            .await?;
            Ok((
                cand(m.address.ip().to_string(), ExternalIpSource::Stun),
                format!("STUN binding via {}", m.server),
            ))
        }
        ExternalStep::Echo => {
            let Some(url) = &settings.echo_url else {
                return Err(SourceError::NotConfigured("off (NETSTRAP_ECHO_URL not set)".into()));
            };
            let ip = echo::http_echo(url, settings.source_timeout).await?;
            Ok((cand(ip.to_string(), ExternalIpSource::HttpEcho), format!("HTTP echo {url}")))
        }
        ExternalStep::Service | ExternalStep::Node => {
            Err(SourceError::NotConfigured("not in Kubernetes".into()))
        }
        ExternalStep::Overlay => Err(SourceError::NotConfigured("handled by the chain".into())),
        ExternalStep::Fallback => Err(SourceError::NotConfigured("the last resort".into())),
    }
}

/// Words EdgeLake reads as a blockchain query when a destination's text holds them
/// (`member_cmd.get_command_ip_port`).
pub const MISREAD_WORDS: [&str; 4] = ["master", "operator", "query", "publisher"];

/// Resolve the host of `LEDGER_CONN` when it is a name (a 127.0.0.1 value is recomputed from
/// the stable name, resolved above). A name EdgeLake would misread that cannot be resolved is
/// a warning: the node could not reach its master by it.
async fn ledger_resolution(
    settings: &Settings,
    names: &NameFacts,
    warnings: &mut Vec<String>,
) -> Option<crate::discover::LedgerResolution> {
    let given = settings.ledger_conn.value.trim();
    if given.starts_with("127.0.0.1") {
        return None;
    }
    let (host, port) = given.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (name, resolution) = super::name::resolution_searched(settings, names, host).await?;
    let misread = MISREAD_WORDS.iter().find(|w| host.to_ascii_lowercase().contains(*w));
    if let Some(e) = &resolution.error {
        match misread {
            Some(w) => warnings.push(format!(
                "LEDGER_CONN={given}: {host} does not resolve ({e}), and EdgeLake reads a destination holding \
                 `{w}` as a blockchain query, so the node cannot use the name itself: the master is unreachable \
                 until it resolves"
            )),
            None => warnings.push(format!("LEDGER_CONN={given}: {host} does not resolve yet ({e})")),
        }
    }
    Some(crate::discover::LedgerResolution { given: given.to_string(), port, name, resolution })
}
