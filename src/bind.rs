//! Binding the listeners before anything is advertised (README, "What `netstrap run` serves"). A failure
//! names the plane, the address and the cause, with a hint at the usual fix.

use std::io;
use std::net::{SocketAddr, TcpListener};

use crate::table::{ConnectionTable, Plane};

/// A bind failure, phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{plane} listener: cannot bind {addr}: {cause}{hint}")]
pub struct BindError {
    pub plane: &'static str,
    pub addr: SocketAddr,
    pub cause: io::Error,
    pub hint: String,
}

/// Bind one plane's address (non-blocking, SO_REUSEADDR as std sets it on Unix).
pub fn bind(plane: Plane, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|_| l));
    listener.map_err(|cause| {
        let var = (plane.bind_var(), plane.port_var(), plane.own_port_var());
        let hint = match cause.kind() {
            io::ErrorKind::AddrInUse => format!(
                " — another process listens on port {}; if it is the node itself, move the node to another \
                 internal port and relay to it, or change {} ({}); with host networking every node on this host \
                 shares its ports: give each node its own {} (netstrap's then follow with NETSTRAP_PORT_OFFSET)",
                addr.port(),
                var.2,
                var.1,
                var.1
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                " — address not available on this host; is {}=true with LOCAL_IP set to another host's address?",
                var.0
            ),
            io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port".to_string()
            }
            _ => String::new(),
        };
        BindError { plane: plane.name(), addr, cause, hint }
    })
}

/// The address each enabled plane binds, from the table.
pub fn addresses(table: &ConnectionTable) -> Vec<(Plane, SocketAddr)> {
    table.rows.iter().map(|r| (r.plane, SocketAddr::new(r.bind_ip.value, r.port.value))).collect()
}
