//! k8s/ as an operator applies it: every overlay rendered by `kubectl kustomize`, validated
//! against the Kubernetes schemas (kubernetes-validate, strict, 1.29 — the first release with
//! native sidecars on by default — and 1.33), scanned by checkov together with docker/, and
//! parsed, so that a later edit cannot silently drop the sidecar, a probe, the downward API,
//! the securityContext or the minimal RBAC.
//!
//! The tools come from PyPI (.ci/run installs them into `$NETSTRAP_TOOLS_VENV`, by default
//! ~/.cache/netstrap-ci/venv; PATH is the fallback). Without them a test prints
//! `SKIPPED: <why>` — except under `CI=true`, where a missing tool fails the test.

use crate::support::prereq;
use crate::support::tools;
use tools::{output, tool};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const OVERLAYS: &[&str] = &["clusterip", "nodeport", "loadbalancer", "statefulset"];

/// One overlay as rendered: the YAML and its documents as JSON.
struct Rendered {
    yaml: String,
    docs: Vec<Value>,
}

/// The tools rendering needs, or why they are missing.
fn render_tools() -> Result<(PathBuf, PathBuf), String> {
    Ok((tool("kubectl")?, tool("python3")?))
}

/// Every overlay, rendered once per test run. A render failure fails the test (only a
/// missing tool skips).
fn rendered() -> Result<&'static BTreeMap<&'static str, Rendered>, String> {
    let (kubectl, python) = render_tools()?;
    static CELL: OnceLock<BTreeMap<&'static str, Rendered>> = OnceLock::new();
    Ok(CELL.get_or_init(|| {
        let mut all = BTreeMap::new();
        for overlay in OVERLAYS {
            let dir = Path::new(REPO).join("k8s/overlays").join(overlay);
            let yaml = output(Command::new(&kubectl).arg("kustomize").arg(&dir))
                .unwrap_or_else(|e| panic!("{overlay} does not render: {e}"));
            let tmp = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(tmp.path(), &yaml).unwrap();
            let json = output(Command::new(&python).arg("-c").arg(YAML_TO_JSON).arg(tmp.path()))
                .unwrap_or_else(|e| panic!("{e}\n(python3 needs PyYAML: pip install pyyaml)"));
            let docs: Vec<Value> = serde_json::from_str(&json).unwrap();
            all.insert(*overlay, Rendered { yaml, docs });
        }
        all
    }))
}

const YAML_TO_JSON: &str =
    "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, overlay: &str) -> &'a Value {
    let all = find(docs, kind);
    assert_eq!(all.len(), 1, "{overlay}: expected one {kind}, found {}", all.len());
    all[0]
}

/// The workload (Deployment or StatefulSet) of an overlay.
fn workload<'a>(docs: &'a [Value], overlay: &str) -> &'a Value {
    let w: Vec<_> = docs.iter().filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet").collect();
    assert_eq!(w.len(), 1, "{overlay}: expected one workload, found {}", w.len());
    w[0]
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    arr(list).iter().find(|x| x["name"] == name)
}

/// A ConfigMap's value, by ConfigMap name and key.
fn config<'a>(docs: &'a [Value], map: &str, key: &str) -> Option<&'a str> {
    find(docs, "ConfigMap").into_iter().find(|c| c["metadata"]["name"] == map)?["data"][key].as_str()
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_schemas() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    let validate = need!(tool("kubernetes-validate"));
    for (overlay, r) in all {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), &r.yaml).unwrap();
        for version in ["1.29.0", "1.33.0"] {
            let result =
                output(Command::new(&validate).args(["--strict", "--quiet", "-k", version]).arg(file.path()));
            assert!(result.is_ok(), "{overlay} against Kubernetes {version}: {}", result.unwrap_err());
        }
        assert!(r.docs.len() >= 9, "{overlay}: only {} objects rendered", r.docs.len());
    }
}

/// checkov's reports (one per framework) for one directory.
fn checkov(checkov: &Path, dir: &str, framework: &str) -> Vec<Value> {
    let result = output(
        Command::new(checkov)
            .current_dir(REPO)
            .args(["-d", dir, "--framework", framework])
            // No calls home: guidelines and policy downloads need the internet.
            .args(["--skip-download", "--compact", "-o", "json"])
            .env("BC_SKIP_MAPPING", "TRUE"),
    );
    // checkov exits 1 when a check fails; the JSON says which.
    let json = result.unwrap_or_else(|e| e);
    let start = json.find(['[', '{']).unwrap_or(0);
    let reports: Value = serde_json::from_str(&json[start..])
        .unwrap_or_else(|e| panic!("checkov {dir}: not JSON ({e}):\n{json}"));
    let reports = if reports.is_array() { arr(&reports).to_vec() } else { vec![reports] };
    assert!(
        reports.iter().any(|r| r["check_type"] == framework),
        "checkov did not scan {dir} as {framework}"
    );
    reports
}

#[test]
fn the_security_scan_has_no_unjustified_failure() {
    let _gate = crate::support::gate::enter(module_path!());
    let checkov_bin = need!(tool("checkov"));
    need!(tool("kubectl")); // checkov's kustomize framework renders with kubectl
    let mut reports = checkov(&checkov_bin, "k8s", "kustomize");
    reports.extend(checkov(&checkov_bin, "docker", "dockerfile"));
    for report in &reports {
        let kind = report["check_type"].as_str().unwrap_or("?");
        let passed = report["summary"]["passed"].as_u64().unwrap_or(0);
        assert!(passed > 20, "{kind}: only {passed} checks passed: is anything scanned?");
        let failed: Vec<String> = arr(&report["results"]["failed_checks"])
            .iter()
            .map(|c| {
                format!("{} {} ({} in {})", c["check_id"], c["check_name"], c["resource"], c["file_path"])
            })
            .collect();
        assert!(failed.is_empty(), "{kind}: failed checks:\n{}", failed.join("\n"));
        let skipped = arr(&report["results"]["skipped_checks"]);
        assert_eq!(
            report["summary"]["skipped"].as_u64(),
            Some(skipped.len() as u64),
            "{kind}: skips not listed"
        );
        for skipped in skipped {
            let why = skipped["check_result"]["suppress_comment"].as_str().unwrap_or_default();
            assert!(
                why.len() >= 30,
                "{kind}: {} skipped without a justification: {why:?}",
                skipped["check_id"]
            );
        }
        println!(
            "checkov {kind}: {passed} passed, {} skipped",
            arr(&report["results"]["skipped_checks"]).len()
        );
    }
}

#[test]
fn netstrap_is_a_native_sidecar_with_the_downward_api_and_probes_on_its_endpoints() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    let downward = [
        ("POD_IP", "status.podIP"),
        ("POD_IPS", "status.podIPs"),
        ("HOST_IP", "status.hostIP"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
        ("K8S_NODE_NAME", "spec.nodeName"),
    ];
    for (overlay, r) in all {
        let pod = &workload(&r.docs, overlay)["spec"]["template"]["spec"];
        let sidecar =
            named(&pod["initContainers"], "netstrap").unwrap_or_else(|| panic!("{overlay}: no netstrap"));
        assert_eq!(sidecar["restartPolicy"], "Always", "{overlay}: netstrap is not a native sidecar");
        for (var, field) in downward {
            let env = named(&sidecar["env"], var).unwrap_or_else(|| panic!("{overlay}: no {var}"));
            assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], field, "{overlay}: {var}");
        }
        let probe = |p: &str| &sidecar[p]["httpGet"];
        assert_eq!(probe("livenessProbe")["path"], "/livez", "{overlay}");
        assert_eq!(probe("readinessProbe")["path"], "/readyz", "{overlay}");
        assert!(
            ["/livez", "/readyz"].contains(&probe("startupProbe")["path"].as_str().unwrap_or("")),
            "{overlay}"
        );
        for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(probe(p)["port"], "rest", "{overlay}: {p} is not on the rest port");
            assert!(sidecar[p]["timeoutSeconds"].as_u64().unwrap_or(1) <= 5, "{overlay}: {p}");
        }
        // Container ports named as netstrap matches targetPorts, numbered as netstrap's own
        // listeners (the node binds the advertised ports itself: docs/edgelake.md).
        let refs: Vec<&str> =
            arr(&sidecar["envFrom"]).iter().filter_map(|e| e["configMapRef"]["name"].as_str()).collect();
        let setting = |key: &str| refs.iter().find_map(|m| config(&r.docs, m, key));
        assert_eq!(setting("NETSTRAP_DECLARE"), Some("node"), "{overlay}: the node declares itself");
        for (name, var) in
            [("tcp", "NETSTRAP_TCP_PORT"), ("rest", "NETSTRAP_REST_PORT"), ("broker", "NETSTRAP_BROKER_PORT")]
        {
            let port = named(&sidecar["ports"], name).unwrap_or_else(|| panic!("{overlay}: no port {name}"));
            assert_eq!(
                port["containerPort"].to_string(),
                setting(var).unwrap_or("unset"),
                "{overlay}: {name}"
            );
        }
        assert_eq!(setting("NODE_TYPE"), Some("operator"), "{overlay}: EdgeLake variables reach netstrap");
        // The node behind netstrap: started by edgelake-start.sh (netstrap.env first), on the
        // advertised ports netstrap relays to (no fixed upstream: a nodePort is discovered),
        // probed where it listens.
        let node =
            named(&pod["containers"], "node").unwrap_or_else(|| panic!("{overlay}: no node container"));
        for var in ["NETSTRAP_TCP_UPSTREAM", "NETSTRAP_REST_UPSTREAM", "NETSTRAP_BROKER_UPSTREAM"] {
            assert_eq!(setting(var), None, "{overlay}: {var} is derived from the advertised port");
        }
        assert!(node["command"].to_string().contains("edgelake-start.sh"), "{overlay}: {}", node["command"]);
        let node_probe = node["readinessProbe"]["exec"]["command"].to_string();
        assert!(
            node_probe.contains("netstrap.env") && node_probe.contains("$ANYLOG_REST_PORT"),
            "{overlay}: node probe {node_probe}"
        );
    }
}

#[test]
fn every_container_runs_restricted() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    for (overlay, r) in all {
        let pod = &workload(&r.docs, overlay)["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{overlay}");
        assert_ne!(pod["securityContext"]["runAsUser"], 0, "{overlay}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{overlay}: the token goes to netstrap only");
        for c in arr(&pod["initContainers"]).iter().chain(arr(&pod["containers"])) {
            let (name, sc) = (&c["name"], &c["securityContext"]);
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}/{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay}/{name}");
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{overlay}/{name}");
            assert!(sc["capabilities"]["add"].is_null() && sc["privileged"] != true, "{overlay}/{name}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{overlay}/{name}: no memory limit");
        }
    }
    // The namespace is created apart from the overlays (k8s/namespace.yaml), and enforces the
    // restricted standard.
    let ns = std::fs::read_to_string(Path::new(REPO).join("k8s/namespace.yaml")).unwrap();
    assert!(ns.contains("kind: Namespace") && ns.contains("pod-security.kubernetes.io/enforce: restricted"));
}

/// `kubectl delete -k` deletes what the overlay renders: a Namespace there would take the
/// node's PersistentVolumeClaims with it. The operator chooses the namespace (`kubectl -n`),
/// except where a ClusterRoleBinding must name it (nodeport), which sets it for every object.
#[test]
fn no_overlay_creates_or_hard_codes_a_namespace() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    for (overlay, r) in all {
        assert!(find(&r.docs, "Namespace").is_empty(), "{overlay} creates a Namespace");
        let namespaces: std::collections::BTreeSet<String> =
            r.docs.iter().map(|d| d["metadata"]["namespace"].as_str().unwrap_or("").to_string()).collect();
        let cluster_scoped = find(&r.docs, "ClusterRole").len() + find(&r.docs, "ClusterRoleBinding").len();
        if *overlay == "nodeport" {
            let namespaced = r.docs.len() - cluster_scoped;
            let set = r.docs.iter().filter(|d| d["metadata"]["namespace"] == "edgelake").count();
            assert_eq!(set, namespaced, "{overlay}: every namespaced object in one namespace");
            let binding = one(&r.docs, "ClusterRoleBinding", overlay);
            assert_eq!(binding["subjects"][0]["namespace"], "edgelake", "{overlay}");
        } else {
            assert_eq!(
                namespaces.into_iter().collect::<Vec<_>>(),
                vec![String::new()],
                "{overlay}: kubectl -n decides"
            );
        }
    }
}

#[test]
fn the_state_dir_is_persistent_and_shared_with_the_node() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    for (overlay, r) in all {
        let w = workload(&r.docs, overlay);
        let pod = &w["spec"]["template"]["spec"];
        let sidecar = named(&pod["initContainers"], "netstrap").unwrap();
        let dir = config(&r.docs, "netstrap", "NETSTRAP_STATE_DIR").expect("NETSTRAP_STATE_DIR");
        let mount =
            arr(&sidecar["volumeMounts"]).iter().find(|m| m["mountPath"] == dir).expect("state mount");
        assert_ne!(mount["readOnly"], true, "{overlay}: netstrap must write {dir}");
        let volume = mount["name"].as_str().unwrap();
        let persistent = match named(&pod["volumes"], volume) {
            Some(v) => {
                let claim = v["persistentVolumeClaim"]["claimName"].as_str().expect("a PVC");
                find(&r.docs, "PersistentVolumeClaim").iter().any(|p| p["metadata"]["name"] == claim)
            }
            None => arr(&w["spec"]["volumeClaimTemplates"]).iter().any(|t| t["metadata"]["name"] == volume),
        };
        assert!(persistent, "{overlay}: {dir} is not on a persistent volume");
        let node = named(&pod["containers"], "node").unwrap();
        assert!(
            arr(&node["volumeMounts"]).iter().any(|m| m["name"] == volume && m["mountPath"] == dir),
            "{overlay}"
        );
    }
}

#[test]
fn rbac_grants_get_on_the_own_service_and_nodes_only_for_nodeport() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    for (overlay, r) in all {
        let service = one(&r.docs, "Service", overlay);
        let name = service["metadata"]["name"].as_str().unwrap();
        assert_eq!(config(&r.docs, "netstrap", "NETSTRAP_SERVICE"), Some(name), "{overlay}");
        let role = one(&r.docs, "Role", overlay);
        let expected = serde_json::json!([{"apiGroups": [""], "resources": ["services"], "resourceNames": [name], "verbs": ["get"]}]);
        assert_eq!(role["rules"], expected, "{overlay}");
        let cluster_roles = find(&r.docs, "ClusterRole");
        if *overlay == "nodeport" {
            let expected = serde_json::json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]);
            assert_eq!(cluster_roles.len(), 1, "{overlay}");
            assert_eq!(cluster_roles[0]["rules"], expected, "{overlay}");
        } else {
            assert!(cluster_roles.is_empty(), "{overlay} needs no cluster-wide access");
        }
        let account = workload(&r.docs, overlay)["spec"]["template"]["spec"]["serviceAccountName"].clone();
        for binding in find(&r.docs, "RoleBinding").into_iter().chain(find(&r.docs, "ClusterRoleBinding")) {
            assert_eq!(binding["subjects"][0]["name"], account, "{overlay}");
            assert_eq!(binding["subjects"][0]["namespace"], service["metadata"]["namespace"], "{overlay}");
        }
    }
}

#[test]
fn each_overlay_exposes_the_node_its_way() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    for (overlay, r) in all {
        let service = one(&r.docs, "Service", overlay);
        let spec = &service["spec"];
        let w = workload(&r.docs, overlay);
        let per_pod = config(&r.docs, "netstrap", "NETSTRAP_PER_POD_NAME");
        match *overlay {
            "clusterip" => assert_eq!(spec["type"], "ClusterIP"),
            "nodeport" => {
                assert_eq!(spec["type"], "NodePort");
                assert_eq!(spec["externalTrafficPolicy"], "Local", "the advertised node must serve the pod");
            }
            "loadbalancer" => assert_eq!(spec["type"], "LoadBalancer"),
            "statefulset" => {
                assert_eq!(spec["clusterIP"], "None");
                assert_eq!(spec["publishNotReadyAddresses"], true, "per-pod names must resolve before ready");
                assert_eq!(w["kind"], "StatefulSet");
                assert_eq!(w["spec"]["serviceName"], service["metadata"]["name"]);
                assert_eq!(per_pod, Some("true"));
            }
            other => panic!("untested overlay {other}"),
        }
        if *overlay != "statefulset" {
            assert_eq!(w["kind"], "Deployment", "{overlay}");
            assert_eq!(w["spec"]["strategy"]["type"], "Recreate", "{overlay}: two pods, one identity");
            assert_ne!(per_pod, Some("true"), "{overlay}");
        }
        // Service ports: EdgeLake's names and numbers, targeting the sidecar's named ports.
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for (k, v) in spec["selector"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{overlay}: the Service does not select the pod");
        }
        let sidecar = named(&w["spec"]["template"]["spec"]["initContainers"], "netstrap").unwrap();
        for name in ["tcp", "rest", "broker"] {
            let port =
                named(&spec["ports"], name).unwrap_or_else(|| panic!("{overlay}: no Service port {name}"));
            assert_eq!(port["targetPort"], name, "{overlay}");
            // The Service port is the node's (what it advertises and binds), not netstrap's.
            let container = named(&sidecar["ports"], name).unwrap();
            assert_ne!(port["port"], container["containerPort"], "{overlay}: {name}");
        }
    }
}

#[test]
fn the_grace_period_covers_netstraps_shutdown_sequence() {
    let _gate = crate::support::gate::enter(module_path!());
    let all = need!(rendered());
    for (overlay, r) in all {
        let pod = &workload(&r.docs, overlay)["spec"]["template"]["spec"];
        let secs =
            |key: &str| -> u64 { config(&r.docs, "netstrap", key).and_then(|v| v.parse().ok()).unwrap() };
        let (delay, grace) = (secs("NETSTRAP_SHUTDOWN_DELAY"), secs("NETSTRAP_SHUTDOWN_GRACE"));
        let node = named(&pod["containers"], "node").unwrap();
        let pre_stop = &node["lifecycle"]["preStop"]["exec"]["command"];
        assert_eq!(pre_stop[0], "sleep", "{overlay}: the node waits for endpoint removal before stopping");
        let node_wait: u64 = pre_stop[1].as_str().and_then(|s| s.parse().ok()).unwrap();
        assert!(node_wait >= delay, "{overlay}: preStop {node_wait}s < propagation delay {delay}s");
        let total = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            total >= node_wait + delay + grace + 5,
            "{overlay}: terminationGracePeriodSeconds {total} < preStop {node_wait} + delay {delay} + grace {grace} + 5"
        );
    }
}

/// k8s/master provides what the operator's LEDGER_CONN names: a Service of that name and port
/// in front of an EdgeLake master (validated as the overlays are; checkov scans it with k8s/).
#[test]
fn the_master_ledger_conn_names_is_provided() {
    let _gate = crate::support::gate::enter(module_path!());
    let (kubectl, python) = need!(render_tools());
    let validate = need!(tool("kubernetes-validate"));
    let dir = Path::new(REPO).join("k8s/master");
    let yaml = output(Command::new(&kubectl).arg("kustomize").arg(&dir)).unwrap_or_else(|e| panic!("{e}"));
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    for version in ["1.29.0", "1.33.0"] {
        let result =
            output(Command::new(&validate).args(["--strict", "--quiet", "-k", version]).arg(file.path()));
        assert!(result.is_ok(), "k8s/master against Kubernetes {version}: {}", result.unwrap_err());
    }
    let json = output(Command::new(&python).arg("-c").arg(YAML_TO_JSON).arg(file.path())).unwrap();
    let docs: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert!(find(&docs, "Namespace").is_empty() && docs.iter().all(|d| d["metadata"]["namespace"].is_null()));

    let node_env = std::fs::read_to_string(Path::new(REPO).join("k8s/base/node.env")).unwrap();
    let ledger_conn = node_env.lines().find_map(|l| l.strip_prefix("LEDGER_CONN=")).expect("LEDGER_CONN");
    let (host, port) = ledger_conn.rsplit_once(':').unwrap();
    let service = one(&docs, "Service", "master");
    assert_eq!(service["metadata"]["name"], host, "LEDGER_CONN={ledger_conn} names another Service");
    let tcp = named(&service["spec"]["ports"], "tcp").expect("a tcp port");
    assert_eq!(tcp["port"].to_string(), port, "LEDGER_CONN={ledger_conn}");
    assert_eq!(config(&docs, "edgelake-master", "NODE_TYPE"), Some("master"));
    assert_eq!(config(&docs, "edgelake-master", "ANYLOG_SERVER_PORT"), Some(port));
    let pod = &one(&docs, "Deployment", "master")["spec"]["template"]["spec"];
    let labels = &one(&docs, "Deployment", "master")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service does not select the master");
    }
    // The same EdgeLake release as the operator's.
    let operator = rendered().ok().map(|all| {
        let pod = &workload(&all["clusterip"].docs, "clusterip")["spec"]["template"]["spec"];
        named(&pod["containers"], "node").unwrap()["image"].clone()
    });
    let image = named(&pod["containers"], "node").unwrap()["image"].clone();
    assert!(image.as_str().is_some_and(|i| !i.ends_with(":latest") && i.contains(':')), "{image}");
    if let Some(operator) = operator {
        assert_eq!(image, operator);
    }
}
