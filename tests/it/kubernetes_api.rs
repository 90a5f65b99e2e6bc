//! The Kubernetes API source against a fake API server shaped like the real one, through
//! both ways a netstrap reaches it: in-cluster (HTTPS, service-account dir) and kubeconfig.

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netstrap::discover::kubernetes::{self, KubeTarget, ServiceFacts};
use netstrap::discover::{SourceError, with_timeout};
use support::fake_kube::{self, FakeKube};
use tempfile::TempDir;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.netstrap-sa-token";

#[derive(Clone, Copy, Debug)]
enum Way {
    InCluster,
    Kubeconfig,
}

const WAYS: [Way; 2] = [Way::InCluster, Way::Kubeconfig];

/// A fake API server and the target that reaches it the given way, with `token`.
async fn reach(way: Way, token: &str) -> (FakeKube, KubeTarget, TempDir) {
    let dir = TempDir::new().unwrap();
    match way {
        Way::InCluster => {
            let fake = FakeKube::start_https(TOKEN).await;
            let sa_dir = fake_kube::write_sa_dir(dir.path(), token, "edge");
            let target = KubeTarget::InCluster { host: "127.0.0.1".into(), port: fake.addr().port(), sa_dir };
            (fake, target, dir)
        }
        Way::Kubeconfig => {
            let fake = FakeKube::start_http(TOKEN).await;
            let path = fake.write_kubeconfig(dir.path(), token, "edge");
            (fake, KubeTarget::Kubeconfig(path), dir)
        }
    }
}

async fn get_service(target: &KubeTarget, name: &str) -> Result<ServiceFacts, SourceError> {
    let client = kubernetes::client(target).await.expect("client");
    kubernetes::service_facts(&client, "edge", name).await
}

#[tokio::test]
async fn load_balancer_service_gives_ingress_ip_or_hostname() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        let ports = || vec![fake_kube::service_port("tcp", 32048, Some("32048"), Some(31048))];
        fake.set_service(fake_kube::with_ingress(
            fake_kube::service("edge", "by-ip", "LoadBalancer", "10.96.7.7", ports()),
            &[(Some("203.0.113.10"), None)],
        ));
        fake.set_service(fake_kube::with_ingress(
            fake_kube::service("edge", "by-name", "LoadBalancer", "10.96.7.8", ports()),
            &[(None, Some("edge-lb.elb.example.com"))],
        ));

        let by_ip = get_service(&target, "by-ip").await.unwrap();
        assert_eq!(by_ip.service_type, "LoadBalancer", "{way:?}");
        assert_eq!(by_ip.ingress, vec!["203.0.113.10"], "{way:?}");
        assert_eq!(by_ip.port_for(32048, &[]).map(|p| p.port), Some(32048), "{way:?}");
        let by_name = get_service(&target, "by-name").await.unwrap();
        assert_eq!(by_name.ingress, vec!["edge-lb.elb.example.com"], "{way:?}");

        let seen = fake.requests();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/api/v1/namespaces/edge/services/by-ip", "{way:?}");
        assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    }
}

#[tokio::test]
async fn node_port_service_maps_internal_ports_to_node_ports() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        let mut udp = fake_kube::service_port("dns", 32050, Some("32050"), Some(30050));
        udp.protocol = Some("UDP".into());
        fake.set_service(fake_kube::service(
            "edge",
            "operator",
            "NodePort",
            "10.96.3.3",
            vec![
                fake_kube::service_port("tcp", 32148, Some("32148"), Some(30148)),
                fake_kube::service_port("rest", 80, Some("rest"), Some(30149)),
                fake_kube::service_port("broker", 32150, None, Some(30150)),
                udp,
            ],
        ));

        let svc = get_service(&target, "operator").await.unwrap();
        assert_eq!(svc.service_type, "NodePort");
        assert_eq!(svc.port_for(32148, &[]).and_then(|p| p.node_port), Some(30148), "numeric targetPort");
        let rest = svc.port_for(32149, &["rest"]).expect("named targetPort");
        assert_eq!((rest.port, rest.node_port), (80, Some(30149)), "{way:?}");
        assert_eq!(svc.port_for(32150, &[]).and_then(|p| p.node_port), Some(30150), "no targetPort");
        assert!(svc.port_for(32050, &[]).is_none(), "UDP ports do not carry TCP planes");
        assert!(svc.port_for(32149, &[]).is_none(), "without the name, the REST port is unknown");
    }
}

#[tokio::test]
async fn cluster_ip_service_has_no_node_port_and_headless_is_detected() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        let ports = || vec![fake_kube::service_port("tcp", 32048, Some("32048"), None)];
        fake.set_service(fake_kube::service("edge", "plain", "ClusterIP", "10.96.1.1", ports()));
        fake.set_service(fake_kube::service("edge", "pods", "ClusterIP", "None", ports()));

        let plain = get_service(&target, "plain").await.unwrap();
        assert_eq!(plain.cluster_ip.as_deref(), Some("10.96.1.1"));
        assert!(!plain.is_headless());
        let port = plain.port_for(32048, &[]).expect("the TCP port");
        assert_eq!((port.port, port.node_port), (32048, None), "{way:?}");
        assert!(plain.ingress.is_empty());

        let headless = get_service(&target, "pods").await.unwrap();
        assert!(headless.is_headless(), "{way:?}: {headless:?}");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    }
}

#[tokio::test]
async fn node_addresses_are_split_into_external_and_internal() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        fake.set_node(fake_kube::node(
            "worker-1",
            &[
                ("InternalIP", "10.0.0.21"),
                ("InternalIP", "fd00::21"),
                ("ExternalIP", "198.51.100.21"),
                ("Hostname", "worker-1"),
                ("InternalDNS", "worker-1.internal"),
            ],
        ));
        let client = kubernetes::client(&target).await.unwrap();
        let node = kubernetes::node_facts(&client, "worker-1").await.unwrap();
        let ips = |v: &[&str]| v.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect::<Vec<_>>();
        assert_eq!(node.name, "worker-1");
        assert_eq!(node.external_ips, ips(&["198.51.100.21"]), "{way:?}");
        assert_eq!(node.internal_ips, ips(&["10.0.0.21", "fd00::21"]), "{way:?}");
        assert_eq!(node.hostnames, vec!["worker-1", "worker-1.internal"]);
        assert_eq!(fake.requests()[0].path, "/api/v1/nodes/worker-1");
    }
}

#[tokio::test]
async fn rbac_denial_is_forbidden_with_the_rule_to_grant() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        fake.set_service(fake_kube::service("edge", "operator", "ClusterIP", "10.96.1.1", vec![]));
        fake.set_node(fake_kube::node("worker-1", &[("ExternalIP", "198.51.100.21")]));
        fake.forbid("services");
        fake.forbid("nodes");
        let client = kubernetes::client(&target).await.unwrap();

        match kubernetes::service_facts(&client, "edge", "operator").await {
            Err(SourceError::Forbidden(text)) => {
                assert!(text.contains(r#"grant "get" on "services" in namespace edge"#), "{text}");
                assert!(text.contains("ServiceAccount"), "{text}");
            }
            other => panic!("{way:?}: expected Forbidden, got {other:?}"),
        }
        match kubernetes::node_facts(&client, "worker-1").await {
            Err(SourceError::Forbidden(text)) => {
                assert!(text.contains(r#"grant "get" on "nodes""#), "{text}");
                assert!(text.contains("ClusterRole"), "{text}");
            }
            other => panic!("{way:?}: expected Forbidden, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn missing_service_is_not_found_naming_it() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        match get_service(&target, "ghost").await {
            Err(SourceError::NotFound(text)) => assert!(text.contains("edge/ghost"), "{text}"),
            other => panic!("{way:?}: expected NotFound, got {other:?}"),
        }
        assert_eq!(fake.requests()[0].path, "/api/v1/namespaces/edge/services/ghost");
    }
}

#[tokio::test]
async fn wrong_token_says_unauthorized() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, "a-token-from-another-cluster").await;
        fake.set_service(fake_kube::service("edge", "operator", "ClusterIP", "10.96.1.1", vec![]));
        match get_service(&target, "operator").await {
            Err(SourceError::Failed(text)) => assert!(text.contains("unauthorized"), "{text}"),
            other => panic!("{way:?}: expected an unauthorized failure, got {other:?}"),
        }
        let seen = fake.requests();
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer a-token-from-another-cluster"));
    }
}

#[tokio::test]
async fn hung_api_server_costs_only_the_callers_timeout() {
    for way in WAYS {
        let (fake, target, _dir) = reach(way, TOKEN).await;
        fake.hang();
        let client = kubernetes::client(&target).await.unwrap();
        let started = Instant::now();
        let result =
            with_timeout(Duration::from_millis(300), kubernetes::service_facts(&client, "edge", "operator"))
                .await;
        let took = started.elapsed();
        assert_eq!(result, Err(SourceError::Timeout(Duration::from_millis(300))), "{way:?}");
        assert!(took < Duration::from_millis(450), "{way:?}: took {took:?}");
        assert_eq!(fake.requests().len(), 1, "the request reached the server and hung there");
    }
}

#[tokio::test]
async fn missing_service_account_files_are_named() {
    let fake = FakeKube::start_https(TOKEN).await;
    for file in ["token", "ca.crt"] {
        let dir = TempDir::new().unwrap();
        let sa_dir = fake_kube::write_sa_dir(dir.path(), TOKEN, "edge");
        std::fs::remove_file(sa_dir.join(file)).unwrap();
        let target = KubeTarget::InCluster { host: "127.0.0.1".into(), port: fake.addr().port(), sa_dir };
        match kubernetes::client(&target).await {
            Err(SourceError::Failed(text)) => {
                let path = dir.path().join("serviceaccount").join(file);
                assert!(text.contains(&path.display().to_string()), "{text}");
            }
            Err(other) => panic!("missing {file}: expected Failed, got {other:?}"),
            Ok(_) => panic!("missing {file}: a client was built"),
        }
    }
    assert!(fake.requests().is_empty(), "nothing is sent without credentials");
}

#[tokio::test]
async fn missing_kubeconfig_is_named() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("no-such-kubeconfig");
    match kubernetes::client(&KubeTarget::Kubeconfig(path.clone())).await {
        Err(SourceError::Failed(text)) => assert!(text.contains(&path.display().to_string()), "{text}"),
        Err(other) => panic!("expected Failed, got {other:?}"),
        Ok(_) => panic!("a client was built from a missing kubeconfig"),
    }
}

#[tokio::test]
async fn in_cluster_namespace_file_is_the_default_namespace() {
    let fake = FakeKube::start_https(TOKEN).await;
    let dir = TempDir::new().unwrap();
    let sa_dir = fake_kube::write_sa_dir(dir.path(), TOKEN, "edge\n");
    let target = KubeTarget::InCluster { host: "127.0.0.1".into(), port: fake.addr().port(), sa_dir };
    let config = kubernetes::config(&target).await.unwrap();
    assert_eq!(config.default_namespace, "edge");
    assert_eq!(config.cluster_url.to_string(), format!("https://127.0.0.1:{}/", fake.addr().port()));
}

#[tokio::test]
async fn api_server_certificate_not_signed_by_ca_crt_is_refused() {
    let fake = FakeKube::start_https(TOKEN).await;
    fake.set_service(fake_kube::service("edge", "operator", "ClusterIP", "10.96.1.1", vec![]));
    let dir = TempDir::new().unwrap();
    let sa_dir = fake_kube::write_sa_dir(dir.path(), TOKEN, "edge");
    // The server's own leaf certificate is not the CA that issued it.
    let leaf = std::fs::read(std::path::Path::new(fake_kube::TLS_DIR).join("server.crt")).unwrap();
    std::fs::write(sa_dir.join("ca.crt"), leaf).unwrap();
    let target = KubeTarget::InCluster { host: "127.0.0.1".into(), port: fake.addr().port(), sa_dir };
    match get_service(&target, "operator").await {
        Err(SourceError::Failed(text)) => assert!(text.to_lowercase().contains("certificate"), "{text}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(fake.requests().is_empty(), "no request is sent over an unverified connection");
}
