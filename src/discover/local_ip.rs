//! The local (virtual) IP: `LOCAL_IP` > downward API `POD_IP`/`POD_IPS` > interface by name
//! > interface by CIDR > the overlay address (`OVERLAY_IP`, `NETSTRAP_OVERLAY`) > the interface of the default route > loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use serde::Serialize;

use crate::config::{IpFamily, Settings};
use crate::provenance::{Found, Provenance};

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceAddr {
    pub name: String,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// The host's interface addresses (via if-addrs).
pub fn interfaces() -> Vec<InterfaceAddr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let prefix = match &i.addr {
                if_addrs::IfAddr::V4(a) => a.prefixlen,
                if_addrs::IfAddr::V6(a) => a.prefixlen,
            };
            InterfaceAddr { ip: i.ip(), name: i.name, prefix }
        })
        .collect()
}

/// The source address the kernel picks for the default route of each family, found by
/// connecting a UDP socket (no packet is sent) to a documentation address.
pub fn default_route_ips() -> Vec<IpAddr> {
    let probe = |bind: IpAddr, dst: IpAddr| {
        let sock = UdpSocket::bind(SocketAddr::new(bind, 0)).ok()?;
        sock.connect(SocketAddr::new(dst, 9)).ok()?;
        sock.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
    };
    [
        probe(Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::new(192, 0, 2, 1).into()),
        probe(
            Ipv6Addr::UNSPECIFIED.into(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::LOCALHOST).into(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub(super) fn family_rank(family: IpFamily, ip: &IpAddr) -> u8 {
    match (family, ip) {
        (IpFamily::Ipv4, IpAddr::V4(_)) | (IpFamily::Ipv6, IpAddr::V6(_)) => 0,
        _ => 1,
    }
}

/// Usable addresses for binding/advertising: not link-local IPv6 (needs a scope id).
pub(super) fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

/// Pick the local IP. Pure: the interfaces and default-route addresses are inputs.
/// Errors (a named interface without a usable address, a CIDR matching nothing) say
/// what was there instead.
pub fn local_ip(
    settings: &Settings,
    interfaces: &[InterfaceAddr],
    route_ips: &[IpAddr],
) -> Result<Found<IpAddr>, String> {
    let mut skipped = Vec::new();
    let fam = settings.ip_family;

    if let Some(ip) = &settings.local_ip {
        return Ok(ip.clone());
    }
    skipped.push("LOCAL_IP not set".to_string());

    let mut pod_ips: Vec<IpAddr> = settings.pod_ips.clone();
    if let Some(p) = &settings.pod_ip {
        pod_ips.insert(0, p.value);
    }
    if let Some(ip) = pod_ips.iter().min_by_key(|ip| family_rank(fam, ip)) {
        let src = if settings.pod_ips.contains(ip) && settings.pod_ip.as_ref().map(|p| p.value) != Some(*ip) {
            "env POD_IPS (downward API)"
        } else {
            "env POD_IP (downward API)"
        };
        return Ok(Found::new(*ip, Provenance::new(src).after(skipped)));
    }
    skipped.push("POD_IP/POD_IPS not set".to_string());

    let best =
        |cands: Vec<&InterfaceAddr>| cands.into_iter().min_by_key(|a| family_rank(fam, &a.ip)).cloned();

    if let Some(name) = &settings.interface {
        let on_if: Vec<&InterfaceAddr> = interfaces.iter().filter(|a| &a.name == name).collect();
        return match best(on_if.iter().copied().filter(|a| usable(&a.ip)).collect()) {
            Some(a) => Ok(Found::new(
                a.ip,
                Provenance::new(format!("interface {name} (NETSTRAP_INTERFACE)")).after(skipped),
            )),
            None => Err(format!(
                "NETSTRAP_INTERFACE={name}: no usable address on that interface; interfaces here: {}",
                names(interfaces)
            )),
        };
    }
    skipped.push("NETSTRAP_INTERFACE not set".to_string());

    if let Some(net) = &settings.cidr {
        return match best(interfaces.iter().filter(|a| net.contains(&a.ip)).collect()) {
            Some(a) => Ok(Found::new(
                a.ip,
                Provenance::new(format!("interface {} in {net} (NETSTRAP_CIDR)", a.name)).after(skipped),
            )),
            None => Err(format!(
                "NETSTRAP_CIDR={net}: no interface address in that range; addresses here: {}",
                interfaces.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>().join(", ")
            )),
        };
    }
    skipped.push("NETSTRAP_CIDR not set".to_string());

    // The overlay address (its own error is reported by discovery, once).
    match super::overlay::overlay_ip(settings, interfaces) {
        Ok(Some(ip)) => return Ok(Found::new(ip.value, ip.why.after(skipped))),
        Ok(None) => skipped.push("OVERLAY_IP / NETSTRAP_OVERLAY not set".to_string()),
        Err(_) => skipped.push("NETSTRAP_OVERLAY found no address".to_string()),
    }

    if let Some(ip) = route_ips.iter().filter(|ip| usable(ip)).min_by_key(|ip| family_rank(fam, ip)) {
        let name = interfaces.iter().find(|a| a.ip == *ip).map(|a| a.name.as_str()).unwrap_or("?");
        return Ok(Found::new(
            *ip,
            Provenance::new(format!("interface {name} (default route)")).after(skipped),
        ));
    }
    skipped.push("no default route".to_string());

    if let Some(a) = best(interfaces.iter().filter(|a| usable(&a.ip) && !a.ip.is_loopback()).collect()) {
        return Ok(Found::new(
            a.ip,
            Provenance::new(format!("interface {} (first non-loopback address)", a.name)).after(skipped),
        ));
    }
    skipped.push("no non-loopback address".to_string());
    let lo: IpAddr = match fam {
        IpFamily::Ipv4 => Ipv4Addr::LOCALHOST.into(),
        IpFamily::Ipv6 => Ipv6Addr::LOCALHOST.into(),
    };
    Ok(Found::new(lo, Provenance::new("loopback (no network: this host only)").after(skipped)))
}

pub(super) fn names(interfaces: &[InterfaceAddr]) -> String {
    let mut n: Vec<&str> = Vec::new();
    for a in interfaces {
        if !n.contains(&a.name.as_str()) {
            n.push(&a.name);
        }
    }
    n.join(", ")
}
