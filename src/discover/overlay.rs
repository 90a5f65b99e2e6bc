//! The overlay address (Tailscale, Nebula, WireGuard): `OVERLAY_IP` as given, else the
//! address `NETSTRAP_OVERLAY` names — an interface (`tailscale0`) or a range (`100.64.0.0/10`)
//! — looked up among this machine's interfaces (docs/overlay.md).
//!
//! It is used three times, as EdgeLake uses `OVERLAY_IP`: as the local IP (after `LOCAL_IP`,
//! the downward API, `NETSTRAP_INTERFACE` and `NETSTRAP_CIDR`), as the `overlay` step of the
//! external chain (an ingress address: every peer on the overlay dials it) and as the stable
//! name when no `DNS`, `DNS_DOMAIN` or Service gives one.

use std::net::IpAddr;

use crate::config::Settings;
use crate::config::overlay::OverlaySpec;
use crate::provenance::{Found, Provenance};

use super::local_ip::{InterfaceAddr, family_rank, names, usable};

/// The overlay address, `None` when neither variable is set, or why `NETSTRAP_OVERLAY` found
/// nothing (naming what is there instead).
pub fn overlay_ip(
    settings: &Settings,
    interfaces: &[InterfaceAddr],
) -> Result<Option<Found<IpAddr>>, String> {
    if let Some(ip) = &settings.overlay_ip {
        let why = match &settings.overlay {
            Some(spec) => {
                Provenance::new(format!("{} (before NETSTRAP_OVERLAY={})", ip.why.source, spec.value))
            }
            None => ip.why.clone(),
        };
        return Ok(Some(Found::new(ip.value, why)));
    }
    let Some(spec) = &settings.overlay else { return Ok(None) };
    let fam = settings.ip_family;
    let best = |cands: Vec<&InterfaceAddr>| {
        cands.into_iter().filter(|a| usable(&a.ip)).min_by_key(|a| family_rank(fam, &a.ip)).cloned()
    };
    let skipped = vec!["OVERLAY_IP not set".to_string()];
    match &spec.value {
        OverlaySpec::Interface(name) => {
            let on_if: Vec<&InterfaceAddr> = interfaces.iter().filter(|a| &a.name == name).collect();
            if on_if.is_empty() {
                return Err(format!(
                    "NETSTRAP_OVERLAY={name}: there is no interface {name} here (interfaces: {}); is the overlay \
                     up on this host (`tailscale up`, the nebula service) and, in a container, does it share the \
                     host's network (network_mode: host, hostNetwork: true)?",
                    names(interfaces)
                ));
            }
            match best(on_if.clone()) {
                Some(a) => Ok(Some(Found::new(
                    a.ip,
                    Provenance::new(format!("interface {name} ({})", spec.why.source)).after(skipped),
                ))),
                None => Err(format!(
                    "NETSTRAP_OVERLAY={name}: interface {name} has no usable address (only {}); is the overlay \
                     connected?",
                    on_if.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        OverlaySpec::Cidr(net) => match best(interfaces.iter().filter(|a| net.contains(&a.ip)).collect()) {
            Some(a) => Ok(Some(Found::new(
                a.ip,
                Provenance::new(format!("interface {} in {net} ({})", a.name, spec.why.source))
                    .after(skipped),
            ))),
            None => Err(format!(
                "NETSTRAP_OVERLAY={net}: no interface address in that range (addresses here: {}); is the overlay \
                 up on this host?",
                interfaces.iter().map(|a| format!("{} on {}", a.ip, a.name)).collect::<Vec<_>>().join(", ")
            )),
        },
    }
}
