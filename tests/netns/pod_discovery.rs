//! `netstrap discover --json` run as a process inside a pod-like environment: the in-cluster
//! API (HTTPS, service-account dir), the cluster DNS and resolv.conf, the downward API.

use crate::support;

use std::net::IpAddr;

use serde_json::Value;
use support::dns_server::ClusterDns;
use support::fake_kube::{self, FakeKube};

const TOKEN: &str = "pod-token";

struct Pod {
    kube: FakeKube,
    _dns: ClusterDns,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

async fn pod() -> Pod {
    let kube = FakeKube::start_https(TOKEN).await;
    let dns =
        ClusterDns::start(&[("op.edge.svc.cluster.local", "10.96.7.7".parse::<IpAddr>().unwrap())]).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = fake_kube::write_sa_dir(&dir.path().join("sa"), TOKEN, "edge");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "search edge.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
        .unwrap();
    let env = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT", kube.addr().port().to_string()),
        ("NETSTRAP_SA_DIR", sa.display().to_string()),
        ("NETSTRAP_RESOLV_CONF", resolv.display().to_string()),
        ("NETSTRAP_NAMESERVER", dns.addr.to_string()),
        ("POD_IP", "10.244.1.7".into()),
        ("POD_NAMESPACE", "edge".into()),
        ("POD_NAME", "op-7b7bb55f89-8m8mn".into()),
        ("HOSTNAME", "op-7b7bb55f89-8m8mn".into()),
        ("HOST_IP", "192.168.50.11".into()),
        ("K8S_NODE_NAME", "node-a".into()),
        ("NETSTRAP_SERVICE", "op".into()),
        ("NODE_TYPE", "operator".into()),
        // An operator names its cluster, or discover (as policy) exits 1.
        ("CLUSTER_NAME", "edge-cluster".into()),
        ("ANYLOG_BROKER_PORT", "32150".into()),
        ("NETSTRAP_SOURCE_TIMEOUT_MS", "1000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Pod { kube, _dns: dns, dir, env }
}

async fn discover(env: &[(String, String)]) -> (i32, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["discover", "--json"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn row<'a>(v: &'a Value, plane: &str) -> &'a Value {
    v["table"]["rows"].as_array().unwrap().iter().find(|r| r["plane"] == plane).unwrap()
}

fn addr(r: &Value, host: &str, port: &str) -> String {
    format!("{}:{}", r[host]["value"].as_str().unwrap(), r[port]["value"])
}

fn nodeport_service() -> k8s_openapi::api::core::v1::Service {
    fake_kube::service(
        "edge",
        "op",
        "NodePort",
        "10.96.7.7",
        vec![
            fake_kube::service_port("tcp", 32148, Some("32148"), Some(30148)),
            fake_kube::service_port("rest", 32149, Some("rest"), Some(30149)),
            fake_kube::service_port("broker", 1883, Some("32150"), Some(30150)),
        ],
    )
}

#[tokio::test]
async fn nodeport_pod_advertises_node_address_and_nodeports_and_the_service_name_inside() {
    let _gate = crate::support::gate::enter(module_path!());
    let p = pod().await;
    p.kube.set_service(nodeport_service());
    p.kube.set_node(fake_kube::node(
        "node-a",
        &[("InternalIP", "192.168.50.11"), ("ExternalIP", "203.0.113.10")],
    ));
    let (code, v, stderr) = discover(&p.env).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["discovery"]["environment"]["value"], "kubernetes");
    assert_eq!(v["discovery"]["local_ip"]["value"], "10.244.1.7");
    assert_eq!(v["discovery"]["stable_name"]["value"], "op.edge.svc.cluster.local");
    assert_eq!(v["discovery"]["resolution"]["addresses"][0], "10.96.7.7");
    assert_eq!(v["discovery"]["external"]["value"]["source"], "node-address");

    let tcp = row(&v, "tcp");
    assert_eq!(addr(tcp, "external_host", "external_port"), "203.0.113.10:30148");
    assert_eq!(addr(tcp, "cluster_host", "cluster_port"), "op.edge.svc.cluster.local:32148");
    assert_eq!(addr(tcp, "bind_ip", "port"), "0.0.0.0:32148");
    let rest = row(&v, "rest");
    assert_eq!(addr(rest, "external_host", "external_port"), "203.0.113.10:30149", "named targetPort `rest`");
    let broker = row(&v, "broker");
    assert_eq!(addr(broker, "cluster_host", "cluster_port"), "op.edge.svc.cluster.local:1883");
    assert_eq!(addr(broker, "external_host", "external_port"), "203.0.113.10:30150");
    assert!(broker["external_port"]["why"]["source"].as_str().unwrap().contains("nodePort"));

    let advertised: Vec<String> = ["tcp", "rest", "broker"]
        .iter()
        .flat_map(|pl| {
            let r = row(&v, pl);
            [addr(r, "external_host", "external_port"), addr(r, "cluster_host", "cluster_port")]
        })
        .collect();
    assert!(
        advertised.iter().all(|a| !a.contains("10.244.1.7")),
        "the pod IP is never advertised: {advertised:?}"
    );
    let asked: Vec<String> = p.kube.requests().iter().map(|r| r.path.clone()).collect();
    assert!(asked.contains(&"/api/v1/namespaces/edge/services/op".to_string()), "{asked:?}");
    drop(p.dir);
}

#[tokio::test]
async fn loadbalancer_ingress_wins_with_the_service_port() {
    let _gate = crate::support::gate::enter(module_path!());
    let p = pod().await;
    let lb = fake_kube::service(
        "edge",
        "op",
        "LoadBalancer",
        "10.96.7.7",
        vec![
            fake_kube::service_port("tcp", 32148, Some("32148"), Some(30148)),
            fake_kube::service_port("rest", 80, Some("32149"), Some(30149)),
        ],
    );
    p.kube.set_service(fake_kube::with_ingress(lb, &[(Some("198.51.100.20"), None)]));
    let (code, v, stderr) = discover(&p.env).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["discovery"]["external"]["value"]["source"], "service-ingress");
    assert_eq!(addr(row(&v, "rest"), "external_host", "external_port"), "198.51.100.20:80");
    assert_eq!(addr(row(&v, "rest"), "cluster_host", "cluster_port"), "op.edge.svc.cluster.local:80");
}

#[tokio::test]
async fn rbac_forbidden_degrades_to_the_downward_api_and_says_what_to_grant() {
    let _gate = crate::support::gate::enter(module_path!());
    let mut p = pod().await;
    p.kube.forbid("services");
    p.env.push(("NETSTRAP_TCP_EXTERNAL_PORT".into(), "30148".into()));
    let (code, v, stderr) = discover(&p.env).await;
    assert_eq!(code, 0, "degraded, not fatal: {stderr}");
    let warnings = v["discovery"]["warnings"].to_string();
    assert!(warnings.contains("grant") && warnings.contains("services"), "{warnings}");
    let tcp = row(&v, "tcp");
    assert_eq!(
        addr(tcp, "external_host", "external_port"),
        "192.168.50.11:30148",
        "HOST_IP + configured port"
    );
    assert!(tcp["external_host"]["why"]["source"].as_str().unwrap().contains("HOST_IP"));
    assert_eq!(addr(tcp, "cluster_host", "cluster_port"), "op.edge.svc.cluster.local:32148");
}

#[tokio::test]
async fn clusterip_service_has_no_external_address_but_the_stable_name() {
    let _gate = crate::support::gate::enter(module_path!());
    let p = pod().await;
    p.kube.set_service(fake_kube::service(
        "edge",
        "op",
        "ClusterIP",
        "10.96.7.7",
        vec![fake_kube::service_port("tcp", 32148, None, None)],
    ));
    let (code, v, stderr) = discover(&p.env).await;
    assert_eq!(code, 0, "{stderr}");
    let skipped = v["discovery"]["external"]["why"]["skipped"].to_string();
    assert!(skipped.contains("is ClusterIP: no LoadBalancer ingress"), "{skipped}");
    assert!(skipped.contains("a node address does not reach it"), "{skipped}");
    assert_eq!(addr(row(&v, "tcp"), "cluster_host", "cluster_port"), "op.edge.svc.cluster.local:32148");
}
