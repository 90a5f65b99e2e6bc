//! Open Horizon (docs/overlay.md, "Open Horizon"): with `HZN_DEVICE_ID`, `HZN_NODE_ID` and
//! `HZN_ORGANIZATION` netstrap names the node and fills the policy as EdgeLake's own scripts
//! do. The name is checked against EdgeLake's `deploy_edgelake.sh` itself — its `HZN_DEVICE_ID`
//! block, cut from the real file in `../shared/edgelake` and run by bash with the same inputs —
//! and the policy's keys against the order `policies/node_policy.al` sets them in.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn edgelake_file(rel: &str) -> Option<String> {
    let dir = std::env::var("NETSTRAP_EDGELAKE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(support::edgelake::DEFAULT_DIR));
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(s) => Some(s),
        Err(e) => {
            support::prereq::missing(&format!("the EdgeLake snapshot ({}): {e}", dir.join(rel).display()));
            None
        }
    }
}

/// The `if [[ -n "${HZN_DEVICE_ID}" ]]; then ... fi` block of deploy_edgelake.sh.
fn hzn_block(script: &str) -> String {
    let start = script
        .find("if [[ -n \"${HZN_DEVICE_ID}\" ]]")
        .expect("deploy_edgelake.sh has no HZN_DEVICE_ID block");
    let rest = &script[start..];
    let end = rest.find("\nfi\n").expect("the HZN_DEVICE_ID block has no end") + 4;
    rest[..end].to_string()
}

/// What EdgeLake's script makes NODE_NAME (`None`: unset, set_params.al then uses
/// `<hostname> <node_type>`).
fn edgelake_node_name(block: &str, env: &[(&str, &str)]) -> Option<String> {
    let script =
        format!("{block}\nif [[ -v NODE_NAME ]]; then printf '%s' \"$NODE_NAME\"; else printf '<unset>'; fi");
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let name = String::from_utf8(out.stdout).unwrap();
    // set_params.al: `if $NODE_NAME then node_name = $NODE_NAME` — an empty one counts as unset.
    (name != "<unset>" && !name.is_empty()).then_some(name)
}

fn netstrap_policy(env: &[(&str, &str)]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["policy", "--json"])
        .env_clear()
        .envs([("NETSTRAP_ENVIRONMENT", "host"), ("HOSTNAME", "edge-host"), ("NODE_TYPE", "generic")])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["node"]["generic"].clone()
}

#[test]
fn node_name_is_what_deploy_edgelake_sh_makes_it() {
    let Some(script) = edgelake_file("EdgeLake/deploy_edgelake.sh") else { return };
    let block = hzn_block(&script);
    let cases: [&[(&str, &str)]; 6] = [
        &[("NODE_NAME", "edge-operator"), ("HZN_DEVICE_ID", "rpi-42")],
        &[("HZN_DEVICE_ID", "rpi-42")],
        &[("NODE_NAME", ""), ("HZN_DEVICE_ID", "rpi-42")],
        &[("NODE_NAME", "edge-operator"), ("HZN_NODE_ID", "node-7"), ("HZN_ORGANIZATION", "acme")],
        &[("NODE_NAME", "edge-operator")],
        &[],
    ];
    for env in cases {
        let expected = edgelake_node_name(&block, env).unwrap_or_else(|| "edge-host generic".into());
        let policy = netstrap_policy(env);
        assert_eq!(policy["name"], expected.as_str(), "inputs {env:?}: {policy:#}");
    }
}

/// The keys node_policy.al sets, in order (`set policy new_policy [!node_type][<key>]`).
fn node_policy_al_keys(al: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for line in al.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("[!node_type][") {
            rest = &rest[i + "[!node_type][".len()..];
            let key = rest.split(']').next().unwrap_or_default().to_string();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

#[test]
fn policy_has_the_hzn_fields_where_node_policy_al_puts_them() {
    let Some(al) = edgelake_file("deployment-scripts/node-deployment/policies/node_policy.al") else {
        return;
    };
    let order = node_policy_al_keys(&al);
    let env = [("NODE_NAME", "edge-operator"), ("HZN_DEVICE_ID", "rpi-42"), ("HZN_ORGANIZATION", "acme")];
    let policy = netstrap_policy(&env);
    assert_eq!(policy["hzn_device_id"], "rpi-42", "{policy:#}");
    assert_eq!(policy["hzn_node_id"], "rpi-42", "HZN_DEVICE_ID comes before HZN_NODE_ID");
    assert_eq!(policy["hzn_org"], "acme");
    // Every key netstrap writes that node_policy.al also sets comes in the script's order
    // (policy ids hash the key order).
    let keys: Vec<&String> = policy.as_object().unwrap().keys().filter(|k| order.contains(k)).collect();
    let positions: Vec<usize> = keys.iter().map(|k| order.iter().position(|o| o == *k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "netstrap {keys:?}, node_policy.al {order:?}");
    for k in ["hzn_device_id", "hzn_node_id", "hzn_org"] {
        assert!(order.iter().any(|o| o == k), "node_policy.al no longer sets {k}: {order:?}");
    }

    // HZN_NODE_ID alone: no device id, no name change.
    let policy = netstrap_policy(&[("NODE_NAME", "edge-operator"), ("HZN_NODE_ID", "node-7")]);
    assert_eq!(policy["name"], "edge-operator");
    assert_eq!(policy["hzn_node_id"], "node-7");
    assert!(policy.get("hzn_device_id").is_none() && policy.get("hzn_org").is_none(), "{policy:#}");
    // Without HZN_* the policy has none of them.
    let policy = netstrap_policy(&[("NODE_NAME", "edge-operator")]);
    assert!(!policy.as_object().unwrap().keys().any(|k| k.starts_with("hzn")), "{policy:#}");
}

#[test]
fn a_device_id_edgelake_cannot_look_up_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_netstrap"))
        .args(["policy", "--set", "HZN_DEVICE_ID=rpi\"42"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HZN_DEVICE_ID") && err.contains("look-up by value"), "{err}");
}
