//! Cluster in a box: a small Kubernetes-like network made of Linux network namespaces, for
//! end-to-end tests that run `netstrap` where it is meant to run — in a pod.
//!
//! Topology (every namespace is private to one [`Cluster`], so two tests never share a
//! link, a route, an iptables table or a conntrack table; nothing is put in the host's own
//! network namespace):
//!
//! ```text
//!  infra 192.168.50.1 (LAN router; API server at :6443)    external client 192.168.50.100
//!          \                                                  /
//!           +------------------ lan0 (bridge, "lan" ns) -------+
//!          /                                                  \
//!  node-0 eth0 192.168.50.11                          node-1 eth0 192.168.50.12
//!  cbr0 10.244.1.1/24 (pods .2, .3, ...)               cbr0 10.244.2.1/24
//! ```
//!
//! - Nodes route each other's pod CIDR over the LAN; pods leaving the cluster network are
//!   masqueraded as their node (ip-masq-agent's rule).
//! - Pods: a namespace with one veth on the node's bridge (hairpin on, as kubenet sets it), an
//!   address never handed out twice (a restarted pod always gets a new IP), their own UTS
//!   hostname, `/etc/netns/<ns>/resolv.conf` and `hosts` (bind-mounted by `ip netns exec`,
//!   as kubelet mounts them), and the downward-API environment ([`Cluster::pod_env`]).
//! - Services are programmed the way kube-proxy's iptables mode does: `KUBE-SERVICES` →
//!   `KUBE-SVC-*` (random spread) → `KUBE-SEP-*` DNAT; NodePorts on every node address;
//!   masquerade for node-originated, NodePort and hairpin traffic; REJECT for a Service
//!   without endpoints. Each node's nat and filter tables are replaced atomically with
//!   `iptables-restore` on every endpoint change, and conntrack entries of removed endpoints
//!   (and of UDP Services) are flushed, as kube-proxy does.
//! - Endpoints are the live pods matching the Service's selector (`app`). Pods count as
//!   endpoints as soon as they exist, i.e. every Service has `publishNotReadyAddresses: true`.
//! - Cluster DNS: dnsmasq in a `kube-system` pod behind the `kube-dns` Service 10.96.0.10,
//!   answering `<svc>.<ns>.svc.cluster.local` for every Service and NXDOMAIN for other
//!   cluster names; rewritten and reloaded (SIGHUP) when a Service is added.
//! - The Kubernetes API: [`FakeKube`] in the test process holds a Service object for every
//!   harness Service and a Node object for every node. Pods reach it at the `kubernetes`
//!   Service 10.96.0.1:443 → infra 192.168.50.1:6443, where socat forwards to a UNIX socket
//!   that the test process bridges to the fake (which listens on the host's loopback only).
//!   Pods use a kubeconfig (plain HTTP: the fake's certificate names only 127.0.0.1 and
//!   `kubernetes.default.svc`), plus `KUBERNETES_SERVICE_HOST/PORT` as kubelet sets them.
//!
//! Dropping the cluster kills every process in its namespaces, deletes the namespaces (which
//! removes every link, rule and conntrack entry with them) and their `/etc/netns` files, also
//! when the test panics. Namespaces left by a killed test run are removed by the next one.
//!
//! Layout: this file owns the topology, pods, Services, DNS and the API server;
//! `netns/kube_proxy.rs` the iptables rules; `netns/exec.rs` running processes in namespaces.

mod exec;
mod kube_proxy;

use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::fake_kube::{self, FakeKube};
use exec::{PATH_ENV, command, ip, run};
use kube_proxy::Service;

pub use exec::{Proc, poll};
pub use kube_proxy::Port;

pub const TOKEN: &str = "cluster-in-a-box";
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const API_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
const INFRA_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const API_PORT: u16 = 6443;
const PREFIX: &str = "nsk";

/// A worker node.
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    netns: String,
    subnet: u8,
    next_host: u8,
}

/// A pod as it is now; a restart makes a new one.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub ip: Ipv4Addr,
    pub node: usize,
    pub netns: String,
}

/// `/etc/netns/<ns>/<file>`: `ip netns exec` bind-mounts it over `/etc/<file>`.
fn write_etc(netns: &str, file: &str, text: &str) {
    let dir = Path::new("/etc/netns").join(netns);
    // Another test may remove an empty /etc/netns between our mkdir and write: try again.
    for _ in 0..3 {
        let _ = std::fs::create_dir_all(&dir);
        if std::fs::write(dir.join(file), text).is_ok() {
            return;
        }
    }
    panic!("cannot write {}/{file}", dir.display());
}

fn delete_netns(netns: &str) {
    for pid in run(&["ip", "netns", "pids", netns]).unwrap_or_default().split_whitespace() {
        let _ = run(&["kill", "-KILL", pid]);
    }
    let _ = run(&["ip", "netns", "del", netns]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(netns));
    let _ = std::fs::remove_dir("/etc/netns"); // only when empty, i.e. no other test uses it
}

/// Remove namespaces (and `/etc/netns` files) of test processes that were killed before
/// they could clean up.
fn remove_leftovers() {
    let listed = run(&["ip", "netns", "list"]).unwrap_or_default();
    let listed = listed.lines().filter_map(|l| l.split_whitespace().next()).map(String::from);
    let etc = std::fs::read_dir("/etc/netns").into_iter().flatten().flatten();
    let etc = etc.map(|e| e.file_name().to_string_lossy().into_owned());
    for name in listed.chain(etc) {
        let mut parts = name.split('-');
        if let (Some(PREFIX), Some(pid)) = (parts.next(), parts.next())
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
        {
            delete_netns(&name);
        }
    }
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()) == Some("0")
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// The running cluster. See the module documentation.
pub struct Cluster {
    pub nodes: Vec<Node>,
    prefix: String,
    netns: Vec<String>,
    pods: Vec<Pod>,
    services: Vec<Service>,
    daemons: Vec<(String, Child)>,
    dns: Option<Pod>,
    next_pod: u32,
    br_netfilter: bool,
    // Dropped after the namespaces are gone (fields drop in order, after `Drop::drop`).
    pub kube: FakeKube,
    rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster of `nodes` nodes with its cluster DNS running; `None` (after printing
    /// `SKIPPED: <why>` to stderr; a panic under `CI=true`) where network namespaces cannot
    /// be made.
    pub fn new(nodes: usize) -> Option<Cluster> {
        if !is_root() {
            super::prereq::missing("not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN");
            return None;
        }
        remove_leftovers();
        let prefix = format!("{PREFIX}-{}-{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::SeqCst));
        let lan = format!("{prefix}-lan");
        if let Err(e) = run(&["ip", "netns", "add", &lan]) {
            super::prereq::missing(&format!("cannot create a network namespace ({e})"));
            return None;
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let kube = rt.block_on(FakeKube::start_http(TOKEN));
        let mut c = Cluster {
            nodes: Vec::new(),
            netns: vec![lan.clone()],
            prefix,
            pods: Vec::new(),
            services: Vec::new(),
            daemons: Vec::new(),
            dns: None,
            next_pod: 0,
            br_netfilter: Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists(),
            kube,
            rt,
            dir: tempfile::tempdir().unwrap(),
        };
        ip(&lan, "link add lan0 type bridge");
        ip(&lan, "link set lan0 up");
        let infra = c.lan_host("infra", INFRA_IP);
        c.lan_host("ext", EXTERNAL_IP);
        for i in 0..nodes {
            c.add_node(i);
        }
        c.start_api_server(&infra);
        let api = vec![Port::tcp("https", 443, API_PORT)];
        c.add_service_with("default", "kubernetes", "ClusterIP", API_IP, api, Err(vec![INFRA_IP]));
        let dns = vec![Port::udp("dns", 53, 53), Port::tcp("dns-tcp", 53, 53)];
        c.add_service_with("kube-system", "kube-dns", "ClusterIP", DNS_IP, dns, Ok("kube-dns".into()));
        c.start_dns();
        Some(c)
    }

    fn add_netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        ip("", &format!("netns add {ns}"));
        self.netns.push(ns.clone());
        ns
    }

    /// A namespace whose `eth0` is plugged into the LAN bridge as `leg`, at `addr`.
    fn plug_into_lan(&mut self, name: &str, leg: &str, addr: Ipv4Addr) -> String {
        let ns = self.add_netns(name);
        let lan = &self.netns[0];
        ip(lan, &format!("link add {leg} type veth peer name eth0 netns {ns}"));
        ip(lan, &format!("link set {leg} master lan0 up"));
        ip(&ns, &format!("addr add {addr}/24 dev eth0"));
        ip(&ns, "link set eth0 up");
        ip(&ns, "link set lo up");
        if addr != INFRA_IP {
            ip(&ns, &format!("route add default via {INFRA_IP}"));
        }
        ns
    }

    /// A host on the LAN that is not a node (the infra router, the external client).
    fn lan_host(&mut self, name: &str, addr: Ipv4Addr) -> String {
        self.plug_into_lan(name, name, addr)
    }

    /// A plain machine on the LAN at `addr` in 192.168.50.0/24 (not the infra's .1, a node's .11
    /// and up, nor the external client's .100): a host that runs netstrap and a node without
    /// Kubernetes. Returns its namespace.
    pub fn add_host(&mut self, name: &str, addr: Ipv4Addr) -> String {
        self.lan_host(name, addr)
    }

    fn add_node(&mut self, i: usize) {
        let name = format!("node-{i}");
        let addr = Ipv4Addr::new(192, 168, 50, 11 + i as u8);
        let subnet = i as u8 + 1;
        let ns = self.plug_into_lan(&name, &format!("n{i}"), addr);
        ip(&ns, "link add cbr0 type bridge");
        ip(&ns, &format!("addr add 10.244.{subnet}.1/24 dev cbr0"));
        ip(&ns, "link set cbr0 up");
        run(&["ip", "netns", "exec", &ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
        if self.br_netfilter {
            // As kubeadm requires: bridged pod-to-pod traffic passes through iptables.
            let set = "net.bridge.bridge-nf-call-iptables=1";
            run(&["ip", "netns", "exec", &ns, "sysctl", "-qw", set]).unwrap();
        }
        for other in &self.nodes {
            ip(&ns, &format!("route add 10.244.{}.0/24 via {}", other.subnet, other.ip));
            ip(&other.netns, &format!("route add 10.244.{subnet}.0/24 via {addr}"));
        }
        let addresses = [("InternalIP", addr.to_string()), ("Hostname", name.clone())];
        let addresses: Vec<(&str, &str)> = addresses.iter().map(|(t, a)| (*t, a.as_str())).collect();
        self.kube.set_node(fake_kube::node(&name, &addresses));
        self.nodes.push(Node { name, ip: addr, netns: ns, subnet, next_host: 2 });
    }

    /// socat in the infra namespace forwards :6443 to a UNIX socket; the test process
    /// forwards that socket to the fake API server, which listens on the host's loopback.
    fn start_api_server(&mut self, infra: &str) {
        let target = self.kube.addr();
        self.bridge(infra, INFRA_IP, API_PORT, target);
        let kubeconfig = self.kube.write_kubeconfig(self.dir.path(), TOKEN, "default");
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        std::fs::write(&kubeconfig, text.replace(&self.kube.url(), &format!("http://{API_IP}:443"))).unwrap();
    }

    /// Make `target` (a server on the host's loopback, e.g. a fake in the test process) answer
    /// at `addr:port` inside `netns`: socat there forwards to a UNIX socket that the test
    /// process bridges to `target`. Returns once socat listens.
    fn bridge(&mut self, netns: &str, addr: Ipv4Addr, port: u16, target: std::net::SocketAddr) {
        let sock = self.dir.path().join(format!("bridge-{}.sock", self.daemons.len()));
        let listener = {
            let _guard = self.rt.enter();
            tokio::net::UnixListener::bind(&sock).expect("bind the bridge socket")
        };
        self.rt.spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                });
            }
        });
        let listen = format!("TCP-LISTEN:{port},bind={addr},fork,reuseaddr");
        let unix = format!("UNIX-CONNECT:{}", sock.display());
        self.daemon(netns, None, &["socat", &listen, &unix]);
        poll("the bridge to listen", Duration::from_secs(10), || {
            let out = run(&["ip", "netns", "exec", netns, "ss", "-Hltn", &format!("sport = :{port}")])?;
            if out.trim().is_empty() { Err("not listening".into()) } else { Ok(()) }
        });
    }

    /// Run `target` (a server in the test process) as if it were `pod`'s container listening
    /// on `port`: reachable at the pod IP, so through the pod's Service like any workload.
    pub fn serve_from_pod(&mut self, pod: &Pod, port: u16, target: std::net::SocketAddr) {
        let (netns, addr) = (pod.netns.clone(), pod.ip);
        self.bridge(&netns, addr, port, target);
    }

    /// Run `f` on the cluster's runtime (where in-process fakes live).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A process the cluster itself runs (API forwarder, cluster DNS), logged into `dir`.
    fn daemon(&mut self, netns: &str, hostname: Option<&str>, args: &[&str]) {
        let log =
            File::create(self.dir.path().join(format!("{}-{}.log", args[0], self.daemons.len()))).unwrap();
        let child = command(netns, hostname, &[], args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (install it: see .ci/run)", args[0]));
        self.daemons.push((netns.to_string(), child));
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The external client's namespace, on the LAN at [`EXTERNAL_IP`].
    pub fn external(&self) -> String {
        format!("{}-ext", self.prefix)
    }

    /// Start the cluster DNS (a new `kube-system` pod, so a new endpoint) and wait until it
    /// answers through its Service.
    pub fn start_dns(&mut self) {
        assert!(self.dns.is_none(), "the cluster DNS is already running");
        let pod = self.create_pod("kube-dns", "kube-system", 0);
        let hosts = self.dir.path().join("dns-hosts");
        std::fs::write(&hosts, self.dns_records()).unwrap();
        let args = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            &format!("--addn-hosts={}", hosts.display()),
            &format!("--listen-address={}", pod.ip),
            "--bind-interfaces",
            "--user=root",
            &format!("--pid-file={}", self.dir.path().join("dnsmasq.pid").display()),
            &format!("--log-facility={}", self.dir.path().join("dnsmasq.log").display()),
            // Other names under the cluster domain are NXDOMAIN, so search lists move on.
            "--local=/cluster.local/",
            "--local-ttl=1",
        ];
        self.daemon(&pod.netns, Some(&pod.name), &args);
        self.dns = Some(pod.clone());
        self.wait_resolves(&pod, "kube-dns.kube-system.svc.cluster.local");
    }

    /// Delete the cluster DNS pod: the `kube-dns` Service has no endpoints until
    /// [`Cluster::start_dns`].
    pub fn stop_dns(&mut self) {
        let pod = self.dns.take().expect("the cluster DNS is running");
        self.delete_pod(&pod);
    }

    /// Ask from `from`'s resolv.conf, i.e. through the kube-dns Service (hairpin for the DNS pod).
    fn wait_resolves(&self, from: &Pod, name: &str) {
        poll(&format!("{name} to resolve through the cluster DNS"), Duration::from_secs(10), || {
            run(&["ip", "netns", "exec", &from.netns, "getent", "hosts", name])
        });
    }

    fn dns_records(&self) -> String {
        self.services.iter().fold(String::new(), |mut out, s| {
            let _ = writeln!(out, "{} {}.{}.svc.cluster.local", s.cluster_ip, s.name, s.namespace);
            out
        })
    }

    /// Add a Service selecting pods labelled `app=<name>`, with a DNS name; its ClusterIP.
    pub fn add_service(
        &mut self,
        namespace: &str,
        name: &str,
        type_: &'static str,
        ports: Vec<Port>,
    ) -> Ipv4Addr {
        let cluster_ip = Ipv4Addr::new(10, 96, 1, 10 + self.services.len() as u8);
        self.add_service_with(namespace, name, type_, cluster_ip, ports, Ok(name.to_string()));
        if let Some(dns) = self.dns.clone() {
            std::fs::write(self.dir.path().join("dns-hosts"), self.dns_records()).unwrap();
            let pid = self.daemons.iter().find(|(ns, _)| *ns == dns.netns).map(|(_, c)| c.id());
            run(&["kill", "-HUP", &pid.expect("dnsmasq runs").to_string()]).unwrap();
            self.wait_resolves(&dns, &format!("{name}.{namespace}.svc.cluster.local"));
        }
        cluster_ip
    }

    fn add_service_with(
        &mut self,
        namespace: &str,
        name: &str,
        type_: &'static str,
        cluster_ip: Ipv4Addr,
        ports: Vec<Port>,
        selector: Result<String, Vec<Ipv4Addr>>,
    ) {
        let svc = Service {
            namespace: namespace.into(),
            name: name.into(),
            type_,
            cluster_ip,
            ports,
            selector,
            ingress: None,
        };
        self.kube.set_service(svc.api_object());
        self.services.push(svc);
        self.program(&[]);
    }

    /// A LoadBalancer Service whose ingress address is `ingress` (a LAN address no host has):
    /// every node DNATs it as kube-proxy does, and the external client routes it through
    /// node-0 (as a MetalLB L2 speaker would draw it). Returns the ClusterIP.
    pub fn add_load_balancer(
        &mut self,
        namespace: &str,
        name: &str,
        ingress: Ipv4Addr,
        ports: Vec<Port>,
    ) -> Ipv4Addr {
        let cluster_ip = self.add_service(namespace, name, "LoadBalancer", ports);
        let svc = self.services.iter_mut().find(|s| s.namespace == namespace && s.name == name);
        let svc = svc.expect("the Service just added");
        svc.ingress = Some(ingress);
        self.kube.set_service(svc.api_object());
        self.program(&[]);
        ip(&self.external(), &format!("route add {ingress}/32 via {}", self.nodes[0].ip));
        cluster_ip
    }

    /// Point the Service at pods labelled `app=<app>` (what `kubectl patch` of the selector does).
    pub fn set_selector(&mut self, namespace: &str, name: &str, app: &str) {
        let svc = self.services.iter_mut().find(|s| s.namespace == namespace && s.name == name);
        let svc = svc.expect("a Service of this cluster");
        let old = std::mem::replace(&mut svc.selector, Ok(app.to_string())).unwrap_or_default();
        self.kube.set_service(svc.api_object());
        let removed: Vec<Ipv4Addr> =
            self.pods.iter().filter(|p| p.app == old && p.app != app).map(|p| p.ip).collect();
        self.program(&removed);
    }

    /// A new pod labelled `app=<app>` on node `node`, with an address never used before.
    pub fn create_pod(&mut self, app: &str, namespace: &str, node: usize) -> Pod {
        self.next_pod += 1;
        let k = self.next_pod;
        let netns = self.add_netns(&format!("pod{k}"));
        let n = &mut self.nodes[node];
        assert!(n.next_host < 255, "node {} is out of pod addresses", n.name);
        let addr = Ipv4Addr::new(10, 244, n.subnet, n.next_host);
        n.next_host += 1;
        let (node_ns, subnet) = (n.netns.clone(), n.subnet);
        // Deployment-style names: `<app>-<template hash>-<random>`.
        let name = format!("{app}-7d4b9c{:x}-x{k:04x}", node + 5);
        ip(&node_ns, &format!("link add veth{k} type veth peer name eth0 netns {netns}"));
        ip(&node_ns, &format!("link set veth{k} master cbr0 up"));
        // As kubenet: a pod reaching itself through its Service leaves and enters on one port.
        run(&["bridge", "-n", &node_ns, "link", "set", "dev", &format!("veth{k}"), "hairpin", "on"]).unwrap();
        ip(&netns, &format!("addr add {addr}/24 dev eth0"));
        ip(&netns, "link set eth0 up");
        ip(&netns, "link set lo up");
        ip(&netns, &format!("route add default via 10.244.{subnet}.1"));
        let search = format!("{namespace}.svc.cluster.local svc.cluster.local cluster.local");
        write_etc(&netns, "resolv.conf", &format!("search {search}\nnameserver {DNS_IP}\noptions ndots:5\n"));
        write_etc(&netns, "hosts", &format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{addr}\t{name}\n"));
        let pod = Pod { name, namespace: namespace.into(), app: app.into(), ip: addr, node, netns };
        self.pods.push(pod.clone());
        self.program(&[]);
        pod
    }

    /// Delete a pod: its endpoints are removed, its processes killed, its namespace deleted.
    pub fn delete_pod(&mut self, pod: &Pod) {
        self.pods.retain(|p| p.netns != pod.netns);
        self.program(&[pod.ip]);
        delete_netns(&pod.netns);
        self.netns.retain(|n| *n != pod.netns);
        for (_, child) in self.daemons.iter_mut().filter(|(ns, _)| *ns == pod.netns) {
            let _ = child.wait();
        }
        self.daemons.retain(|(ns, _)| *ns != pod.netns);
    }

    /// Delete the pod and create its replacement (same app and namespace) on `node`.
    pub fn restart_pod(&mut self, pod: &Pod, node: usize) -> Pod {
        self.delete_pod(pod);
        self.create_pod(&pod.app, &pod.namespace, node)
    }

    /// kube-proxy on every node, after a change to pods or Services.
    fn program(&self, removed: &[Ipv4Addr]) {
        let services: Vec<(&Service, Vec<Ipv4Addr>)> = self
            .services
            .iter()
            .map(|svc| {
                let endpoints = match &svc.selector {
                    Ok(app) => {
                        let selected =
                            self.pods.iter().filter(|p| p.app == *app && p.namespace == svc.namespace);
                        selected.map(|p| p.ip).collect()
                    }
                    Err(fixed) => fixed.clone(),
                };
                (svc, endpoints)
            })
            .collect();
        let udp: Vec<Ipv4Addr> =
            self.services.iter().filter(|s| s.ports.iter().any(|p| p.udp)).map(|s| s.cluster_ip).collect();
        for node in &self.nodes {
            let rules = kube_proxy::rules(&services, node.subnet, self.br_netfilter);
            kube_proxy::apply(&node.netns, &rules, removed, &udp);
        }
    }

    /// The environment kubelet gives a container of `pod`: the downward API (as netstrap's
    /// manifests map it), `HOSTNAME`, the in-cluster API variables and the kubeconfig.
    pub fn pod_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let node = &self.nodes[pod.node];
        [
            ("PATH", PATH_ENV.to_string()),
            ("HOSTNAME", pod.name.clone()),
            ("POD_NAME", pod.name.clone()),
            ("POD_NAMESPACE", pod.namespace.clone()),
            ("POD_IP", pod.ip.to_string()),
            ("POD_IPS", pod.ip.to_string()),
            ("HOST_IP", node.ip.to_string()),
            ("K8S_NODE_NAME", node.name.clone()),
            ("KUBERNETES_SERVICE_HOST", API_IP.to_string()),
            ("KUBERNETES_SERVICE_PORT", "443".to_string()),
            ("NETSTRAP_KUBECONFIG", self.kubeconfig().display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The pod's environment with `extra` on top; an empty value unsets a variable.
    fn env_for(&self, pod: &Pod, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env = self.pod_env(pod);
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.clone()));
        }
        env.retain(|(_, v)| !v.is_empty());
        env
    }

    fn start(&self, cmd: &mut Command, log_name: &str) -> Proc {
        let log = self.dir.path().join(format!("{log_name}.log"));
        let file = File::create(&log).unwrap();
        let child = cmd.stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        Proc { child, log }
    }

    /// Start `args` as a container process of `pod` (pod env + `extra`).
    pub fn spawn(&self, pod: &Pod, extra: &[(&str, String)], args: &[&str]) -> Proc {
        let program = args[0].rsplit('/').next().unwrap_or_default();
        let mut cmd = command(&pod.netns, Some(&pod.name), &self.env_for(pod, extra), args);
        self.start(&mut cmd, &format!("{}-{program}", pod.name))
    }

    /// Start `args` in any of this cluster's namespaces, e.g. [`Cluster::external`].
    pub fn spawn_in(&self, netns: &str, args: &[&str]) -> Proc {
        self.start(&mut command(netns, None, &[], args), &format!("{netns}-{}", args[0]))
    }

    /// Run `args` to completion in `pod` (pod env + `extra`).
    pub fn exec(&self, pod: &Pod, extra: &[(&str, String)], args: &[&str]) -> Output {
        command(&pod.netns, Some(&pod.name), &self.env_for(pod, extra), args).output().unwrap()
    }

    /// Run `args` to completion in any of this cluster's namespaces, with `stdin`.
    pub fn exec_in(&self, netns: &str, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut cmd = command(netns, None, &[], args);
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// `GET path` from inside `netns` to `host:port` (names resolve through the pod's
    /// resolv.conf): the status and the body.
    pub fn http_get(&self, netns: &str, host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        // shut-none: no half-close; the server answers and closes.
        let target = format!("TCP:{host}:{port},connect-timeout=2,shut-none");
        let out = self.exec_in(netns, &["socat", "-t", "10", "-", &target], &request);
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        match reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
            Some(code) => {
                Ok((code, reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
            }
            None => Err(format!(
                "no HTTP answer from {host}:{port}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// Send one line to `host:port` from inside `netns` and read the answer line.
    pub fn tcp_line(&self, netns: &str, host: &str, port: u16, line: &str) -> Result<String, String> {
        let target = format!("TCP:{host}:{port},connect-timeout=2");
        let out = self.exec_in(netns, &["socat", "-t", "5", "-", &target], &format!("{line}\n"));
        let reply = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
        if reply.is_empty() {
            Err(format!("no answer from {host}:{port}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        } else {
            Ok(reply)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for ns in self.netns.iter().rev() {
            delete_netns(ns);
        }
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
