//! The host-networking packaging and the StatefulSet's scheduling (docs/overlay.md, k8s/README.md):
//! `k8s/overlays/hostnetwork` and `k8s/overlays/statefulset` rendered by `kubectl kustomize`,
//! validated strictly against the Kubernetes 1.29 and 1.33 schemas (kubernetes-validate), and
//! parsed; `docker/compose.host.yaml` as `docker-compose config` resolves it. checkov scans
//! both overlays with the rest of k8s/ (tests/packaging/packaging.rs). Tools as in tests/packaging/packaging.rs:
//! `.ci/run` installs them; a missing one skips, or fails under `CI=true`.

use crate::support::prereq;
use crate::support::tools;
use tools::{output, tool};

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// YAML documents as JSON, with the tools venv's python (PyYAML).
fn yaml_docs(yaml: &str) -> Result<Vec<Value>, String> {
    let python = tool("python3")?;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), yaml).unwrap();
    let script =
        "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let json = output(Command::new(python).arg("-c").arg(script).arg(tmp.path()))?;
    Ok(serde_json::from_str(&json).unwrap())
}

/// An overlay rendered and validated against both schemas: its documents.
fn render(overlay: &str) -> Result<Vec<Value>, String> {
    let kubectl = tool("kubectl")?;
    let validate = tool("kubernetes-validate")?;
    let dir = Path::new(REPO).join("k8s/overlays").join(overlay);
    let yaml = output(Command::new(&kubectl).arg("kustomize").arg(&dir))
        .unwrap_or_else(|e| panic!("{overlay} does not render: {e}"));
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    for version in ["1.29.0", "1.33.0"] {
        let result =
            output(Command::new(&validate).args(["--strict", "--quiet", "-k", version]).arg(file.path()));
        assert!(result.is_ok(), "{overlay} against Kubernetes {version}: {}", result.unwrap_err());
    }
    yaml_docs(&yaml)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    arr(list).iter().find(|x| x["name"] == name)
}

fn config_map<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    of_kind(docs, "ConfigMap").into_iter().find(|c| c["metadata"]["name"] == name).expect("ConfigMap")
}

#[test]
fn hostnetwork_overlay_puts_the_pod_on_the_host_with_ports_that_follow_the_node() {
    let _gate = crate::support::gate::enter(module_path!());
    let docs = need!(render("hostnetwork"));
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let pod = &deployments[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "the Service names must resolve");
    let netstrap = &config_map(&docs, "netstrap")["data"];
    let node = &config_map(&docs, "edgelake-node")["data"];
    assert_eq!(netstrap["NETSTRAP_DECLARE"], "node");
    let offset: u16 = netstrap["NETSTRAP_PORT_OFFSET"].as_str().unwrap().parse().unwrap();
    let sidecar = named(&pod["initContainers"], "netstrap").unwrap();
    for (name, node_var, own_var, external_var) in [
        ("tcp", "ANYLOG_SERVER_PORT", "NETSTRAP_TCP_PORT", "NETSTRAP_TCP_EXTERNAL_PORT"),
        ("rest", "ANYLOG_REST_PORT", "NETSTRAP_REST_PORT", "NETSTRAP_REST_EXTERNAL_PORT"),
        ("broker", "ANYLOG_BROKER_PORT", "NETSTRAP_BROKER_PORT", "NETSTRAP_BROKER_EXTERNAL_PORT"),
    ] {
        // netstrap's port is derived, never fixed: another node on the host moves both.
        assert!(netstrap.get(own_var).is_none(), "{own_var} is fixed: {netstrap:#}");
        let node_port: u16 = node[node_var].as_str().unwrap().parse().unwrap();
        // What the container declares (its host port) is where netstrap listens.
        let container = named(&sidecar["ports"], name).unwrap();
        assert_eq!(container["containerPort"], node_port + offset, "{name}");
        assert!(container["hostPort"].is_null() || container["hostPort"] == container["containerPort"]);
        // Outside peers get the node's own port on the node's address.
        assert_eq!(netstrap[external_var].as_str(), Some(node_port.to_string().as_str()), "{name}");
    }
    // The node's address comes from the Node object.
    let roles = of_kind(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    assert_eq!(
        roles[0]["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
    );
    // hostNetwork is refused under the restricted and baseline standards.
    for ns in of_kind(&docs, "Namespace") {
        assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
    }
    // Everything else of the pod stays restricted.
    for c in arr(&pod["initContainers"]).iter().chain(arr(&pod["containers"])) {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{}", c["name"]);
        assert!(sc["privileged"] != true && sc["capabilities"]["add"].is_null(), "{}", c["name"]);
    }
}

#[test]
fn statefulset_pods_spread_over_hosts_and_zones_and_are_evicted_one_at_a_time() {
    let _gate = crate::support::gate::enter(module_path!());
    let docs = need!(render("statefulset"));
    let sets = of_kind(&docs, "StatefulSet");
    assert_eq!(sets.len(), 1);
    let template = &sets[0]["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    let selects_the_pods = |selector: &Value| {
        selector["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
    };
    let spread = arr(&template["spec"]["topologySpreadConstraints"]);
    let keys: Vec<&str> = spread.iter().filter_map(|c| c["topologyKey"].as_str()).collect();
    assert_eq!(keys, ["kubernetes.io/hostname", "topology.kubernetes.io/zone"], "{spread:#?}");
    for c in spread {
        assert_eq!(c["maxSkew"], 1);
        // A pod that cannot be spread still starts (a drain, fewer hosts than pods).
        assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway");
        assert!(selects_the_pods(&c["labelSelector"]), "{c:#}");
    }
    let pdbs = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1);
    let pdb = pdbs[0];
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selects_the_pods(&pdb["spec"]["selector"]), "{pdb:#}");
    assert_eq!(
        pdb["metadata"]["namespace"], sets[0]["metadata"]["namespace"],
        "the PDB must be in the pods' namespace"
    );
}

#[test]
fn compose_host_variant_shares_the_host_network_and_derives_netstraps_ports() {
    let _gate = crate::support::gate::enter(module_path!());
    if let Err(e) = Command::new("docker-compose").arg("version").output() {
        prereq::missing(&format!("no docker-compose: {e}"));
        return;
    }
    let file = format!("{REPO}/docker/compose.host.yaml");
    let config = |env: &[(&str, &str)]| {
        let out = Command::new("docker-compose")
            .args(["-f", &file, "config"])
            .env_remove("NODE_NAME")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Without NODE_NAME every node on a host would be named after the host.
    let (ok, _, err) = config(&[]);
    assert!(!ok && err.contains("NODE_NAME"), "{err}");
    let (ok, yaml, err) =
        config(&[("NODE_NAME", "edge-op-2"), ("TCP_PORT", "32158"), ("NETSTRAP_OVERLAY", "tailscale0")]);
    assert!(ok, "{err}");
    let docs = need!(yaml_docs(&yaml));
    let services = &docs[0]["services"];
    for name in ["netstrap", "node"] {
        let s = &services[name];
        assert_eq!(s["network_mode"], "host", "{name}");
        assert!(s["ports"].is_null(), "{name}: nothing to publish on the host network");
        assert_eq!(s["environment"]["ANYLOG_SERVER_PORT"], "32158", "{name}");
        assert_eq!(s["environment"]["NODE_NAME"], "edge-op-2", "{name}");
    }
    let env = &services["netstrap"]["environment"];
    assert_eq!(env["NETSTRAP_DECLARE"], "node");
    assert_eq!(env["NETSTRAP_PORT_OFFSET"], "1000");
    assert_eq!(env["NETSTRAP_OVERLAY"], "tailscale0");
    for var in
        ["NETSTRAP_TCP_PORT", "NETSTRAP_REST_PORT", "NETSTRAP_BROKER_PORT", "NETSTRAP_TCP_EXTERNAL_PORT"]
    {
        assert!(env[var].is_null(), "{var} must follow the node's port: {env:#}");
    }
}
