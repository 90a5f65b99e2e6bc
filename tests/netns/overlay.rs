//! Overlay networks (docs/overlay.md): `netstrap discover --json` and `netstrap policy --json`
//! run on a host (a network namespace with `eth0` and a default route) that also has the TUN
//! interface an overlay daemon creates — `tailscale0` with a 100.64.0.0/10 address, `nebula1`
//! with a Nebula /24 — and pick the overlay address, with its source, for the local IP, the
//! advertised `ip` and `local_ip`.

use crate::support;

use serde_json::Value;
use support::hostns::{HOST_IP, Host};

const TS_IP: &str = "100.101.102.103";

fn netstrap(host: &Host, env: &[(&str, &str)], args: &[&str]) -> (i32, Value, String) {
    let mut full: Vec<(&str, String)> = vec![
        ("NETSTRAP_ENVIRONMENT", "host".into()),
        ("HOSTNAME", "edge-1".into()),
        ("NETSTRAP_STATE_DIR", "/nonexistent".into()),
    ];
    full.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let mut argv = vec![env!("CARGO_BIN_EXE_netstrap")];
    argv.extend(args);
    let out = host.command(&full, &argv).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn tailscale_host() -> Option<Host> {
    let host = Host::new()?;
    host.add_tun("tailscale0", &format!("{TS_IP}/32"));
    Some(host)
}

fn source(found: &Value) -> &str {
    found["why"]["source"].as_str().unwrap_or_default()
}

#[test]
fn tailscale_interface_is_the_local_ip_the_advertised_ip_and_the_stable_name() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(host) = tailscale_host() else { return };
    let (code, v, err) = netstrap(&host, &[("NETSTRAP_OVERLAY", "tailscale0")], &["discover", "--json"]);
    assert_eq!(code, 0, "{err}");
    let d = &v["discovery"];
    assert_eq!(d["overlay"]["value"], TS_IP, "{d:#}");
    assert_eq!(source(&d["overlay"]), "interface tailscale0 (env NETSTRAP_OVERLAY)");
    // Chosen over the default route (eth0), and says what came before.
    assert_eq!(d["local_ip"]["value"], TS_IP);
    let skipped = d["local_ip"]["why"]["skipped"].to_string();
    assert!(skipped.contains("NETSTRAP_CIDR not set") && skipped.contains("POD_IP"), "{skipped}");
    assert_eq!(d["external"]["value"]["host"], TS_IP);
    assert_eq!(d["external"]["value"]["source"], "overlay");
    assert_eq!(d["external"]["value"]["reach"], "ingress");
    assert!(d["external"]["why"]["skipped"].to_string().contains("EXTERNAL_IP not set"), "{d:#}");
    assert_eq!(d["stable_name"]["value"], TS_IP);
    assert_eq!(source(&d["stable_name"]), "interface tailscale0 (env NETSTRAP_OVERLAY)");
    // The TCP row peers dial.
    let tcp = v["table"]["rows"].as_array().unwrap().iter().find(|r| r["plane"] == "tcp").unwrap();
    assert_eq!(tcp["external_host"]["value"], TS_IP, "{tcp:#}");

    // Without the overlay the same host advertises eth0's address: the interface made the difference.
    let (_, plain, _) = netstrap(&host, &[], &["discover", "--json"]);
    assert_eq!(plain["discovery"]["local_ip"]["value"], HOST_IP);

    let (code, p, err) = netstrap(&host, &[("NETSTRAP_OVERLAY", "tailscale0")], &["policy", "--json"]);
    assert_eq!(code, 0, "{err}");
    let node = &p["node"]["generic"];
    assert_eq!(node["ip"], TS_IP, "{p:#}");
    assert_eq!(node["local_ip"], TS_IP);
    assert_eq!(node["name"], "edge-1 generic");
}

#[test]
fn tailscale_cidr_picks_the_address_in_the_range() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(host) = tailscale_host() else { return };
    let (code, v, err) = netstrap(&host, &[("NETSTRAP_OVERLAY", "100.64.0.0/10")], &["discover", "--json"]);
    assert_eq!(code, 0, "{err}");
    let d = &v["discovery"];
    assert_eq!(d["overlay"]["value"], TS_IP);
    assert_eq!(source(&d["overlay"]), "interface tailscale0 in 100.64.0.0/10 (env NETSTRAP_OVERLAY)");
    assert_eq!(d["external"]["value"]["host"], TS_IP);
}

#[test]
fn explicit_external_ip_and_dns_keep_their_places_and_the_overlay_fills_the_rest() {
    let _gate = crate::support::gate::enter(module_path!());
    // EdgeLake with TCP_BIND=false: `ip` is the external address, `local_ip` the overlay.
    let Some(host) = tailscale_host() else { return };
    let env = [("NETSTRAP_OVERLAY", "tailscale0"), ("EXTERNAL_IP", "203.0.113.7")];
    let (code, p, err) = netstrap(&host, &env, &["policy", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p["node"]["generic"]["ip"], "203.0.113.7", "{p:#}");
    assert_eq!(p["node"]["generic"]["local_ip"], TS_IP);
    // A MagicDNS name is the stable name; the overlay address is still what peers dial.
    let env = [("NETSTRAP_OVERLAY", "tailscale0"), ("DNS", "edge-1.tail1234.ts.net")];
    let (code, p, err) = netstrap(&host, &env, &["policy", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p["node"]["generic"]["ip"], TS_IP, "{p:#}");
    assert_eq!(p["node"]["generic"]["local_ip"], "edge-1.tail1234.ts.net");
}

#[test]
fn nebula_interface_and_overlay_ip_precedence() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(host) = Host::new() else { return };
    host.add_tun("nebula1", "10.10.1.15/24");
    let (code, v, err) = netstrap(&host, &[("NETSTRAP_OVERLAY", "nebula1")], &["discover", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["discovery"]["overlay"]["value"], "10.10.1.15");
    assert_eq!(v["discovery"]["external"]["value"]["host"], "10.10.1.15");
    // EdgeLake's OVERLAY_IP, when also set, wins, and says so.
    let env = [("NETSTRAP_OVERLAY", "nebula1"), ("OVERLAY_IP", "10.10.1.99")];
    let (code, v, err) = netstrap(&host, &env, &["discover", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["discovery"]["overlay"]["value"], "10.10.1.99");
    assert_eq!(source(&v["discovery"]["overlay"]), "env OVERLAY_IP (before NETSTRAP_OVERLAY=nebula1)");
}

#[test]
fn a_missing_overlay_interface_is_a_clear_error() {
    let _gate = crate::support::gate::enter(module_path!());
    let Some(host) = Host::new() else { return };
    let (code, v, err) = netstrap(&host, &[("NETSTRAP_OVERLAY", "tailscale0")], &["discover", "--json"]);
    assert_eq!(code, 1, "{err}");
    let problems = v["discovery"]["problems"].to_string();
    assert!(
        problems.contains(
            "NETSTRAP_OVERLAY=tailscale0: there is no interface tailscale0 here (interfaces: lo, eth0)"
        ),
        "{problems}"
    );
    assert!(err.contains("there is no interface tailscale0 here"), "{err}");
    // `run` refuses to start rather than advertise eth0's address to overlay peers.
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let env = [("NETSTRAP_OVERLAY", "tailscale0"), ("NETSTRAP_STATE_DIR", dir.as_str())];
    let (code, _, err) = netstrap(&host, &env, &["run"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("there is no interface tailscale0 here"), "{err}");
    // A range with nothing in it names the addresses there.
    let (code, v, _) = netstrap(&host, &[("NETSTRAP_OVERLAY", "100.64.0.0/10")], &["discover", "--json"]);
    assert_eq!(code, 1);
    assert!(v["discovery"]["problems"].to_string().contains(&format!("{HOST_IP} on eth0")), "{v:#}");
}

#[test]
fn an_address_or_a_bad_name_in_netstrap_overlay_is_a_configuration_error() {
    let _gate = crate::support::gate::enter(module_path!());
    for (value, says) in [
        ("100.64.1.1", "put a fixed overlay address in OVERLAY_IP"),
        ("100.64.0.0/33", "not a CIDR"),
        ("a-very-long-interface-name", "at most 15"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_netstrap"))
            .args(["discover", "--set", &format!("NETSTRAP_OVERLAY={value}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(err.contains("NETSTRAP_OVERLAY") && err.contains(says), "{value}: {err}");
    }
}
