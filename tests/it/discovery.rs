//! Discovery of the local IP, the environment kind, the external chain's order and the
//! connection table, from made-up machine facts (the network sources have their own tests).

use std::net::IpAddr;

use netstrap::config::{Layers, Origin, Settings};
use netstrap::discover::dns::ResolvConf;
use netstrap::discover::environment::{EnvironmentKind, HostFacts, environment};
use netstrap::discover::external::ExternalIpSource;
use netstrap::discover::local_ip::{InterfaceAddr, local_ip};
use netstrap::discover::name::NameFacts;
use netstrap::discover::{MachineFacts, discover_with};

use crate::support;
use netstrap::table::{ConnectionTable, Plane};
use support::dns_server::ClusterDns;

fn settings(pairs: &[(&str, &str)]) -> Settings {
    Settings::parse(&Layers::new().push(Origin::Env, pairs.iter().map(|(k, v)| (*k, v.to_string()))))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ifaces() -> Vec<InterfaceAddr> {
    let a =
        |name: &str, ip: &str, prefix| InterfaceAddr { name: name.into(), ip: ip.parse().unwrap(), prefix };
    vec![
        a("lo", "127.0.0.1", 8),
        a("lo", "::1", 128),
        a("eth0", "10.244.1.7", 24),
        a("eth0", "fd00:10:244:1::7", 64),
        a("eth0", "fe80::1", 64),
        a("wg0", "100.64.3.2", 32),
    ]
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn local(pairs: &[(&str, &str)], route: &[&str]) -> (IpAddr, String) {
    let route: Vec<IpAddr> = route.iter().map(|s| ip(s)).collect();
    let f = local_ip(&settings(pairs), &ifaces(), &route).unwrap();
    (f.value, f.why.summary())
}

#[test]
fn local_ip_order_explicit_then_downward_api_then_interface_then_cidr_then_route() {
    let route = ["10.244.1.7"];
    assert_eq!(local(&[("LOCAL_IP", "192.0.2.9"), ("POD_IP", "10.244.1.7")], &route).0, ip("192.0.2.9"));
    let (v, why) = local(&[("POD_IP", "10.244.1.8"), ("NETSTRAP_INTERFACE", "wg0")], &route);
    assert_eq!(v, ip("10.244.1.8"));
    assert!(why.contains("POD_IP") && why.contains("LOCAL_IP not set"), "{why}");
    let (v, why) = local(&[("NETSTRAP_INTERFACE", "wg0"), ("NETSTRAP_CIDR", "10.0.0.0/8")], &route);
    assert_eq!(v, ip("100.64.3.2"));
    assert!(why.contains("interface wg0"), "{why}");
    let (v, why) = local(&[("NETSTRAP_CIDR", "100.64.0.0/10")], &route);
    assert_eq!(v, ip("100.64.3.2"));
    assert!(why.contains("100.64.0.0/10"), "{why}");
    let (v, why) = local(&[], &route);
    assert_eq!(v, ip("10.244.1.7"));
    assert!(why.contains("eth0 (default route)"), "{why}");
}

#[test]
fn dual_stack_pod_ips_follow_the_preferred_family() {
    let pairs = [("POD_IPS", "fd00:10:244:1::7,10.244.1.7")];
    assert_eq!(local(&pairs, &[]).0, ip("10.244.1.7"));
    let pairs = [("POD_IPS", "10.244.1.7,fd00:10:244:1::7"), ("NETSTRAP_IP_FAMILY", "ipv6")];
    assert_eq!(local(&pairs, &[]).0, ip("fd00:10:244:1::7"));
    // An interface with both families, IPv6 preferred: never the link-local address.
    let pairs = [("NETSTRAP_INTERFACE", "eth0"), ("NETSTRAP_IP_FAMILY", "ipv6")];
    assert_eq!(local(&pairs, &[]).0, ip("fd00:10:244:1::7"));
}

#[test]
fn no_route_falls_back_to_an_address_then_loopback() {
    let (v, why) = local(&[], &[]);
    assert_eq!(v, ip("10.244.1.7"));
    assert!(why.contains("no default route"), "{why}");
    let lo_only = vec![InterfaceAddr { name: "lo".into(), ip: ip("127.0.0.1"), prefix: 8 }];
    let f = local_ip(&settings(&[]), &lo_only, &[]).unwrap();
    assert_eq!(f.value, ip("127.0.0.1"));
    assert!(f.why.source.contains("loopback"));
}

#[test]
fn a_wrong_interface_or_cidr_says_what_is_there() {
    let err = local_ip(&settings(&[("NETSTRAP_INTERFACE", "eth9")]), &ifaces(), &[]).unwrap_err();
    assert!(err.contains("eth9") && err.contains("eth0") && err.contains("wg0"), "{err}");
    let err = local_ip(&settings(&[("NETSTRAP_CIDR", "172.16.0.0/12")]), &ifaces(), &[]).unwrap_err();
    assert!(err.contains("172.16.0.0/12") && err.contains("10.244.1.7"), "{err}");
}

#[test]
fn environment_kind_detection() {
    let none = HostFacts::default();
    let sa = HostFacts { service_account: true, ..Default::default() };
    let docker = HostFacts { container_marker: true, ..Default::default() };
    assert_eq!(environment(&settings(&[]), &none).value, EnvironmentKind::Host);
    assert_eq!(environment(&settings(&[]), &sa).value, EnvironmentKind::Kubernetes);
    assert_eq!(environment(&settings(&[]), &docker).value, EnvironmentKind::Docker);
    let s = settings(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]);
    assert_eq!(environment(&s, &docker).value, EnvironmentKind::Kubernetes, "a pod may also have the marker");
    let s = settings(&[("NETSTRAP_ENVIRONMENT", "host")]);
    assert_eq!(environment(&s, &sa).value, EnvironmentKind::Host, "an explicit choice wins");
    let s = settings(&[("IS_KUBERNETES", "True")]);
    assert_eq!(environment(&s, &none).value, EnvironmentKind::Kubernetes);
}

fn facts() -> MachineFacts {
    MachineFacts { interfaces: ifaces(), route_ips: vec![ip("10.244.1.7")], ..Default::default() }
}

#[tokio::test]
async fn explicit_external_ip_is_ingress_and_wins() {
    let s = settings(&[("EXTERNAL_IP", "203.0.113.7"), ("DNS", "node1.example.net")]);
    let d = discover_with(&s, &facts()).await;
    assert_eq!(d.external.value.host, "203.0.113.7");
    assert_eq!(d.external.value.source, ExternalIpSource::Explicit);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let t = ConnectionTable::plan(&s, &d);
    let tcp = t.row(Plane::Tcp).unwrap();
    assert_eq!(tcp.external_host.value, "203.0.113.7");
    assert_eq!(tcp.cluster_host.value, "node1.example.net");
    assert!(tcp.bind_ip.value.is_unspecified());
}

#[tokio::test]
async fn external_dns_goes_first_when_enabled() {
    let s = settings(&[
        ("EXTERNAL_IP", "203.0.113.7"),
        ("ENABLE_DNS", "true"),
        ("EXTERNAL_DNS", "edge.example.net"),
    ]);
    let d = discover_with(&s, &facts()).await;
    assert_eq!(d.external.value.host, "edge.example.net");
}

#[tokio::test]
async fn nothing_found_falls_back_to_the_local_ip_with_a_warning_and_reasons() {
    let s = settings(&[]);
    let d = discover_with(&s, &facts()).await;
    assert_eq!(d.external.value.source, ExternalIpSource::LocalFallback);
    assert_eq!(d.external.value.host, "10.244.1.7");
    assert!(d.external.why.skipped.iter().any(|w| w.contains("EXTERNAL_IP not set")), "{:?}", d.external.why);
    assert!(d.warnings.iter().any(|w| w.contains("no external address")), "{:?}", d.warnings);
}

#[tokio::test]
async fn table_binds_the_local_ip_only_when_asked_and_advertises_configured_ports() {
    let s = settings(&[
        ("NODE_TYPE", "operator"),
        ("TCP_BIND", "true"),
        ("ANYLOG_BROKER_PORT", "32150"),
        ("NETSTRAP_REST_EXTERNAL_PORT", "8080"),
        ("REST_TIMEOUT", "-1"),
    ]);
    let d = discover_with(&s, &facts()).await;
    let t = ConnectionTable::plan(&s, &d);
    assert_eq!(t.rows.len(), 3);
    let tcp = t.row(Plane::Tcp).unwrap();
    assert_eq!((tcp.bind_ip.value, tcp.port.value), (ip("10.244.1.7"), 32148));
    let rest = t.row(Plane::Rest).unwrap();
    assert!(rest.bind_ip.value.is_unspecified());
    assert_eq!((rest.port.value, rest.external_port.value), (32149, 8080));
    assert!(rest.external_port.why.source.contains("NETSTRAP_REST_EXTERNAL_PORT"));
    assert_eq!(rest.timeout.as_ref().unwrap().value.as_secs(), 0);
    assert_eq!(t.row(Plane::Broker).unwrap().port.value, 32150);
    let text = t.render_text();
    assert!(text.contains("| Message broker") && text.contains("run message broker"), "{text}");
}

#[tokio::test]
async fn ledger_conn_is_recomputed_from_the_stable_name_never_the_pod_ip() {
    let s = settings(&[("NODE_TYPE", "master"), ("DNS", "master.example.net"), ("POD_IP", "10.244.1.9")]);
    let t = ConnectionTable::plan(&s, &discover_with(&s, &facts()).await);
    assert_eq!(t.ledger_conn.value, "master.example.net:32048");
    let s = settings(&[("NODE_TYPE", "query"), ("DNS", "q.example.net")]);
    let t = ConnectionTable::plan(&s, &discover_with(&s, &facts()).await);
    assert_eq!(t.ledger_conn.value, "q.example.net:32048");
    let s = settings(&[("LEDGER_CONN", "master.edge.svc.cluster.local:32048")]);
    let t = ConnectionTable::plan(&s, &discover_with(&s, &facts()).await);
    assert_eq!(
        t.ledger_conn.value, "master.edge.svc.cluster.local:32048",
        "any other value is used as given"
    );
}

fn pod_facts(resolv: &str) -> MachineFacts {
    MachineFacts {
        names: NameFacts {
            resolv_conf: Some(ResolvConf::parse(resolv)),
            sa_namespace: Some("edge".into()),
            resolv_conf_error: None,
        },
        ..facts()
    }
}

const POD_RESOLV: &str =
    "search edge.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";

#[tokio::test]
async fn in_kubernetes_the_stable_name_is_the_service_fqdn_resolved_by_the_cluster_dns() {
    let dns = ClusterDns::start(&[("op.edge.svc.cluster.local", ip("10.96.7.7"))]).await;
    let ns = dns.addr.to_string();
    let s = settings(&[
        ("NETSTRAP_ENVIRONMENT", "kubernetes"),
        ("NETSTRAP_SERVICE", "op"),
        ("POD_IP", "10.244.1.7"),
        ("NETSTRAP_NAMESERVER", &ns),
    ]);
    let d = discover_with(&s, &pod_facts(POD_RESOLV)).await;
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.stable_name.value, "op.edge.svc.cluster.local");
    let why = d.stable_name.why.summary();
    assert!(why.contains("service-account namespace file") && why.contains("search entry"), "{why}");
    assert_eq!(d.resolution.as_ref().unwrap().addresses, vec![ip("10.96.7.7")]);
    let t = ConnectionTable::plan(&s, &d);
    assert!(t.rows.iter().all(|r| r.cluster_host.value == "op.edge.svc.cluster.local"));
    assert!(
        !serde_json::to_string(&t).unwrap().contains("\"10.244.1.7:"),
        "the pod IP is never an advertised address"
    );
}

#[tokio::test]
async fn a_custom_cluster_domain_and_per_pod_names() {
    let resolv = "search edge.svc.corp.example svc.corp.example corp.example\nnameserver 10.96.0.10\n";
    let s = settings(&[
        ("NETSTRAP_ENVIRONMENT", "kubernetes"),
        ("KUBERNETES_SERVICE_IP", "op"),
        ("NETSTRAP_PER_POD_NAME", "true"),
        ("HOSTNAME", "op-0"),
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "200"),
        ("NETSTRAP_NAMESERVER", "127.0.0.1:9"),
    ]);
    let d = discover_with(&s, &pod_facts(resolv)).await;
    assert_eq!(d.stable_name.value, "op-0.op.edge.svc.corp.example");
    assert!(d.resolution.as_ref().unwrap().error.is_some(), "nothing answers on port 9");
    assert!(d.warnings.iter().any(|w| w.contains("does not resolve yet")), "{:?}", d.warnings);
}

#[tokio::test]
async fn without_a_cluster_domain_discovery_says_what_to_set() {
    let s = settings(&[("NETSTRAP_ENVIRONMENT", "kubernetes"), ("NETSTRAP_SERVICE", "op")]);
    let d = discover_with(&s, &pod_facts("nameserver 8.8.8.8\n")).await;
    assert!(d.problems.iter().any(|p| p.contains("NETSTRAP_CLUSTER_DOMAIN")), "{:?}", d.problems);
    let s = settings(&[
        ("NETSTRAP_ENVIRONMENT", "kubernetes"),
        ("NETSTRAP_SERVICE", "Edge_Op"),
        ("NETSTRAP_CLUSTER_DOMAIN", "cluster.local"),
    ]);
    let d = discover_with(&s, &pod_facts(POD_RESOLV)).await;
    assert!(d.problems.iter().any(|p| p.contains("Edge_Op")), "{:?}", d.problems);
}

/// An HTTP server that answers every request with `body`, or never answers when `None`.
async fn http_server(body: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match body {
                    Some(b) => {
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        );
                        let _ = s.write_all(reply.as_bytes()).await;
                    }
                    None => tokio::time::sleep(std::time::Duration::from_secs(30)).await,
                }
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn a_hanging_source_costs_no_more_than_its_timeout_and_the_chain_falls_through() {
    let hang = http_server(None).await;
    let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stun = silent_udp.local_addr().unwrap().to_string();
    let s = settings(&[
        ("NETSTRAP_EXTERNAL_SOURCES", "stun,echo,fallback"),
        ("NETSTRAP_STUN_SERVERS", &stun),
        ("NETSTRAP_ECHO_URL", &hang),
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "300"),
    ]);
    let started = std::time::Instant::now();
    let d = discover_with(&s, &facts()).await;
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_millis(900), "two 300 ms sources took {elapsed:?}");
    assert_eq!(d.external.value.source, ExternalIpSource::LocalFallback);
    let skipped = d.external.why.skipped.join("\n");
    assert!(skipped.contains("stun: no answer within 300ms"), "{skipped}");
    assert!(skipped.contains("echo: no answer within 300ms"), "{skipped}");
    assert!(skipped.find("stun").unwrap() < skipped.find("echo").unwrap(), "in chain order");
}

#[tokio::test]
async fn egress_answers_are_kept_but_a_later_ingress_answer_wins() {
    let echo = http_server(Some("198.51.100.4\n")).await;
    let s = settings(&[
        ("NETSTRAP_EXTERNAL_SOURCES", "echo,explicit,fallback"),
        ("NETSTRAP_ECHO_URL", &echo),
        ("EXTERNAL_IP", "203.0.113.7"),
    ]);
    let d = discover_with(&s, &facts()).await;
    assert_eq!(d.external.value.host, "203.0.113.7", "ingress (explicit) beats egress (echo)");
    assert!(d.candidates.iter().any(|c| c.host == "198.51.100.4" && c.source == ExternalIpSource::HttpEcho));

    let s = settings(&[("NETSTRAP_EXTERNAL_SOURCES", "echo,fallback"), ("NETSTRAP_ECHO_URL", &echo)]);
    let d = discover_with(&s, &facts()).await;
    assert_eq!(d.external.value.host, "198.51.100.4", "egress beats the local fallback");
    assert!(d.external.why.source.contains("HTTP echo"));
}

#[tokio::test]
async fn network_sources_are_off_unless_configured() {
    let s = settings(&[
        ("NETSTRAP_EXTERNAL_SOURCES", "aws,stun,echo,fallback"),
        ("NETSTRAP_METADATA_URL", "http://127.0.0.1:9"),
    ]);
    let d = discover_with(&s, &facts()).await;
    let skipped = d.external.why.skipped.join("\n");
    assert!(skipped.contains("stun: off (NETSTRAP_STUN_SERVERS not set)"), "{skipped}");
    assert!(skipped.contains("echo: off (NETSTRAP_ECHO_URL not set)"), "{skipped}");
    assert!(skipped.contains("aws: cannot connect"), "aws was listed, so it was asked: {skipped}");
}
