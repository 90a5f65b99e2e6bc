//! `NETSTRAP_OVERLAY`: the overlay network (Tailscale, Nebula, WireGuard, ZeroTier) whose
//! address this node is reached at, given as an interface name (`tailscale0`, `nebula1`) or a
//! CIDR (`100.64.0.0/10`). Discovery looks the address up on every pass (docs/overlay.md).

use std::fmt;

use ipnet::IpNet;

use super::Reader;
use crate::provenance::Found;

/// How the overlay address is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlaySpec {
    /// The address of this interface.
    Interface(String),
    /// The interface address inside this range.
    Cidr(IpNet),
}

impl fmt::Display for OverlaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverlaySpec::Interface(name) => write!(f, "{name}"),
            OverlaySpec::Cidr(net) => write!(f, "{net}"),
        }
    }
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1), without `/`, `:` or whitespace.
fn interface_name(s: &str) -> Result<String, String> {
    if s.len() > 15 {
        return Err(format!("{} bytes: a Linux interface name has at most 15", s.len()));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ':')) {
        return Err(format!("{c:?} cannot be in an interface name"));
    }
    Ok(s.to_string())
}

/// Parse `NETSTRAP_OVERLAY`: a CIDR when it holds a `/`, an address is refused (that is
/// `OVERLAY_IP`), anything else an interface name.
pub fn parse(s: &str) -> Result<OverlaySpec, String> {
    let s = s.trim();
    if s.contains('/') {
        return s.parse::<IpNet>().map(OverlaySpec::Cidr).map_err(|_| "not a CIDR".into());
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Err(
            "an address, not an interface or a range: put a fixed overlay address in OVERLAY_IP".into()
        );
    }
    interface_name(s).map(OverlaySpec::Interface)
}

pub(super) fn read(r: &mut Reader) -> Option<Found<OverlaySpec>> {
    r.parse(
        "NETSTRAP_OVERLAY",
        "an interface name (tailscale0, nebula1, wg0) or a CIDR (100.64.0.0/10, fd7a:115c:a1e0::/48)",
        parse,
    )
}
