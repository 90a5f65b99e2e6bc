//! Services as kube-proxy's iptables mode programs them, and as the API server shows them.
//!
//! Per node, one `iptables-restore` input replaces the nat and filter tables at once:
//! `KUBE-SERVICES` → `KUBE-SVC-*` (random spread over endpoints) → `KUBE-SEP-*` (DNAT);
//! `KUBE-NODEPORTS` for every local address; `KUBE-MARK-MASQ` for traffic from outside the
//! pod network, NodePort traffic and hairpin (an endpoint reaching itself through its
//! Service); REJECT for a Service without endpoints. Chain names are indexes, not hashes:
//! the tables are private to one test's node namespaces.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::super::fake_kube;

pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// One Service port.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: &'static str,
    pub port: u16,
    pub target: u16,
    pub node_port: Option<u16>,
    pub udp: bool,
}

impl Port {
    pub fn tcp(name: &'static str, port: u16, target: u16) -> Port {
        Port { name, port, target, node_port: None, udp: false }
    }

    pub fn udp(name: &'static str, port: u16, target: u16) -> Port {
        Port { udp: true, ..Port::tcp(name, port, target) }
    }

    pub fn node_port(self, node_port: u16) -> Port {
        Port { node_port: Some(node_port), ..self }
    }
}

pub struct Service {
    pub namespace: String,
    pub name: String,
    pub type_: &'static str,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<Port>,
    /// The `app` label it selects, or fixed endpoints (the `kubernetes` Service).
    pub selector: Result<String, Vec<Ipv4Addr>>,
    /// A LoadBalancer's ingress address (status.loadBalancer.ingress[0].ip).
    pub ingress: Option<Ipv4Addr>,
}

impl Service {
    /// The object the API server holds for this Service.
    pub fn api_object(&self) -> k8s_openapi::api::core::v1::Service {
        let ports = self
            .ports
            .iter()
            .map(|p| {
                let target = p.target.to_string();
                let node_port = p.node_port.map(i32::from);
                let mut sp = fake_kube::service_port(p.name, p.port.into(), Some(&target), node_port);
                sp.protocol = Some(if p.udp { "UDP" } else { "TCP" }.into());
                sp
            })
            .collect();
        let ip = self.cluster_ip.to_string();
        let mut object = fake_kube::service(&self.namespace, &self.name, self.type_, &ip, ports);
        if let Some(spec) = object.spec.as_mut() {
            spec.selector = self.selector.as_ref().ok().map(|app| [("app".to_string(), app.clone())].into());
        }
        match self.ingress {
            Some(ip) => fake_kube::with_ingress(object, &[(Some(&ip.to_string()), None)]),
            None => object,
        }
    }
}

/// The iptables-restore input for a node whose pod subnet is `10.244.<subnet>.0/24`, given
/// each Service with its endpoints. Without br_netfilter, replies between pods on one
/// bridge bypass conntrack, so same-node clients are masqueraded too.
pub fn rules(services: &[(&Service, Vec<Ipv4Addr>)], subnet: u8, br_netfilter: bool) -> String {
    let (mut chains, mut nat, mut reject) = (String::new(), String::new(), String::new());
    let line = |out: &mut String, text: String| out.push_str(&(text + "\n"));
    for (si, (svc, eps)) in services.iter().enumerate() {
        for (pi, p) in svc.ports.iter().enumerate() {
            let proto = if p.udp { "udp" } else { "tcp" };
            let m = format!("-p {proto} -m {proto}");
            let dst = format!("-d {}/32 {m} --dport {}", svc.cluster_ip, p.port);
            if eps.is_empty() {
                line(
                    &mut reject,
                    format!("-A KUBE-SERVICES {dst} -j REJECT --reject-with icmp-port-unreachable"),
                );
                if let Some(np) = p.node_port {
                    line(
                        &mut reject,
                        format!("-A KUBE-SERVICES -m addrtype --dst-type LOCAL {m} --dport {np} -j REJECT"),
                    );
                }
                continue;
            }
            let svc_chain = format!("KUBE-SVC-{si}-{pi}");
            line(&mut chains, format!(":{svc_chain} - [0:0]"));
            line(&mut nat, format!("-A KUBE-SERVICES {dst} -j {svc_chain}"));
            // A LoadBalancer's ingress address, as kube-proxy handles it on every node.
            if let Some(lb) = svc.ingress {
                line(
                    &mut nat,
                    format!("-A KUBE-SERVICES -d {lb}/32 {m} --dport {} -j KUBE-MARK-MASQ", p.port),
                );
                line(&mut nat, format!("-A KUBE-SERVICES -d {lb}/32 {m} --dport {} -j {svc_chain}", p.port));
            }
            line(&mut nat, format!("-A {svc_chain} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"));
            if let Some(np) = p.node_port {
                line(&mut nat, format!("-A KUBE-NODEPORTS {m} --dport {np} -j KUBE-MARK-MASQ"));
                line(&mut nat, format!("-A KUBE-NODEPORTS {m} --dport {np} -j {svc_chain}"));
            }
            for (ei, ep) in eps.iter().enumerate() {
                let sep = format!("KUBE-SEP-{si}-{pi}-{ei}");
                line(&mut chains, format!(":{sep} - [0:0]"));
                let left = eps.len() - ei;
                let spread = match left {
                    1 => String::new(),
                    _ => format!("-m statistic --mode random --probability {:.5} ", 1.0 / left as f64),
                };
                line(&mut nat, format!("-A {svc_chain} {spread}-j {sep}"));
                line(&mut nat, format!("-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ"));
                if !br_netfilter && ep.octets()[2] == subnet {
                    line(&mut nat, format!("-A {sep} -s 10.244.{subnet}.0/24 -j KUBE-MARK-MASQ"));
                }
                line(&mut nat, format!("-A {sep} {m} -j DNAT --to-destination {ep}:{}", p.target));
            }
        }
    }
    let mut out = String::from("*nat\n");
    for chain in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        let _ = writeln!(out, ":{chain} ACCEPT [0:0]");
    }
    for chain in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out += &chains;
    out += "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n";
    // ip-masq-agent: pods leave the cluster network (to the LAN, the API server) as their node.
    let _ = writeln!(out, "-A POSTROUTING -s {CLUSTER_CIDR} ! -d {CLUSTER_CIDR} -o eth0 -j MASQUERADE");
    out += "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n";
    out += "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n";
    out += "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n-A KUBE-POSTROUTING -j MASQUERADE\n";
    out += &nat;
    // Last, so ClusterIP rules match first.
    out += "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n*filter\n";
    out += ":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n";
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        let _ = writeln!(out, "-A {chain} -m conntrack --ctstate NEW -j KUBE-SERVICES");
    }
    out + &reject + "COMMIT\n"
}

/// Load `rules` into `netns`, then delete conntrack entries of removed endpoints and of UDP
/// Services (a UDP flow would otherwise stick to a dead endpoint), as kube-proxy does.
pub fn apply(netns: &str, rules: &str, removed: &[Ipv4Addr], udp_services: &[Ipv4Addr]) {
    use std::io::Write as _;
    let mut restore = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-restore"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iptables-restore (install iptables: see .ci/run)");
    restore.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    let out = restore.wait_with_output().unwrap();
    assert!(out.status.success(), "iptables-restore: {}\n{rules}", String::from_utf8_lossy(&out.stderr));
    let flows = removed.iter().map(|ip| vec!["--reply-src".to_string(), ip.to_string()]).chain(
        udp_services.iter().map(|ip| vec!["-p".into(), "udp".into(), "--orig-dst".into(), ip.to_string()]),
    );
    for filter in flows {
        // Exit code 1 only means there was nothing to delete.
        let _ = Command::new("ip")
            .args(["netns", "exec", netns, "conntrack", "-D"])
            .args(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
