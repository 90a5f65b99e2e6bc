//! The human-readable discovery report of `netstrap discover` and the start-up log.

use crate::provenance::json_name;
use std::fmt::Write as _;

use crate::config::Settings;
use crate::discover::Discovery;
use crate::table::ConnectionTable;

pub fn render(settings: &Settings, d: &Discovery, table: &ConnectionTable) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netstrap: {} node, {} environment\n",
        settings.node_type.value.name(),
        serde_json::to_value(d.environment.value)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    );
    out.push_str(&table.render_text());
    let _ = writeln!(out, "\nDiscovery:");
    let mut line = |what: &str, value: String, why: String| {
        let _ = writeln!(out, "  {what:<14} {value:<40} {why}");
    };
    line("environment", json_name(&d.environment.value), d.environment.why.summary());
    line("local ip", d.local_ip.value.to_string(), d.local_ip.why.summary());
    if let Some(o) = &d.overlay {
        line("overlay ip", o.value.to_string(), o.why.summary());
    }
    if let Some(h) = &d.host_ip {
        line("node ip", h.value.to_string(), h.why.summary());
    }
    line("stable name", d.stable_name.value.clone(), d.stable_name.why.summary());
    if let Some(r) = &d.resolution {
        let value = r.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        line(
            "resolves to",
            if value.is_empty() { "-".into() } else { value },
            r.error.clone().unwrap_or_default(),
        );
    }
    line(
        "external",
        d.external.value.host.clone(),
        format!("{}, {}", json_name(&d.external.value.reach), d.external.why.summary()),
    );
    for c in d.candidates.iter().filter(|c| **c != d.external.value) {
        line("  candidate", c.host.clone(), format!("{} ({})", json_name(&c.source), json_name(&c.reach)));
    }
    for w in &d.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for p in &d.problems {
        let _ = writeln!(out, "error: cannot determine {p}");
    }
    out
}
