//! The start-up summary of `netstrap run`: printed once, after every listener is bound, as
//! one block — what kind of environment this is, the identity, EdgeLake's connection table,
//! why each value is what it is, where the node's files are and where probes and metrics
//! answer. A chain of sources that gave nothing ("skipped: …") is said once, in a numbered
//! list at the end, and referred to by its number everywhere else (the table's rows share
//! them: the same chain stood behind every plane's external host).
//!
//! Text logs: the block goes to stderr as it is (no log prefix on every line), then each
//! discovery warning as a log event. JSON logs: one `info` event whose `summary` field holds
//! the block.

use std::fmt::Write as _;
use std::path::Path;

use crate::addr::host_port;
use crate::config::{Declarer, Settings};
use crate::discover::Discovery;
use crate::provenance::Provenance;
use crate::provenance::json_name;
use crate::table::{ConnectionTable, Plane};

/// The files netstrap writes for the node into the state dir (advertise::files).
pub const NODE_FILES: [&str; 5] =
    ["netstrap.env", "netstrap.al", "node_policy.json", "config_policy.json", "network.json"];

/// Chains of skipped sources, numbered in the order they are first met.
#[derive(Default)]
struct Chains(Vec<String>);

impl Chains {
    /// `[n]` for this chain (numbered on first use).
    fn reference(&mut self, chain: &str) -> String {
        let n = match self.0.iter().position(|c| c == chain) {
            Some(i) => i + 1,
            None => {
                self.0.push(chain.to_string());
                self.0.len()
            }
        };
        format!("[{n}]")
    }

    /// The provenance in one line, its skipped chain (and any chain already numbered that
    /// its source text quotes) replaced by a reference.
    fn why(&mut self, p: &Provenance) -> String {
        let source = self.shorten(&p.source);
        if p.skipped.is_empty() {
            source
        } else {
            let r = self.reference(&p.skipped.join("; "));
            format!("{source} (skipped: see {r})")
        }
    }

    /// Text with every chain already numbered replaced by its reference.
    fn shorten(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (i, chain) in self.0.iter().enumerate() {
            out = out.replace(&format!("(skipped: {chain})"), &format!("(skipped: see [{}])", i + 1));
            out = out.replace(chain.as_str(), &format!("see [{}]", i + 1));
        }
        out
    }
}

/// The summary block, and the discovery warnings with their chains referenced.
pub fn render(
    settings: &Settings,
    d: &Discovery,
    table: &ConnectionTable,
    name: &str,
) -> (String, Vec<String>) {
    let mut chains = Chains::default();
    // The discovery's own chains first, in the order shown: the rows quote them.
    for why in [&d.local_ip.why, &d.stable_name.why, &d.external.why] {
        let _ = chains.why(why);
    }

    let mut out = String::new();
    let env = json_name(&d.environment.value);
    let _ = writeln!(
        out,
        "netstrap {}: {} node \"{name}\" on {}",
        env!("CARGO_PKG_VERSION"),
        settings.node_type.value.name(),
        match env.as_str() {
            "kubernetes" => "Kubernetes".to_string(),
            "docker" => "Docker (a container)".to_string(),
            "host" => "a host (no container, no Kubernetes)".to_string(),
            other => other.to_string(),
        }
    );
    let line = |out: &mut String, what: &str, value: &str, why: String| {
        let _ = writeln!(out, "  {what:<13} {value:<24} {why}");
    };
    line(&mut out, "environment", &env, chains.why(&d.environment.why));
    line(&mut out, "local ip", &d.local_ip.value.to_string(), chains.why(&d.local_ip.why));
    line(&mut out, "stable name", &d.stable_name.value, chains.why(&d.stable_name.why));
    line(
        &mut out,
        "external",
        &d.external.value.host,
        format!("{}, {}", json_name(&d.external.value.reach), chains.why(&d.external.why)),
    );
    let registry = settings.ledger.to_string();
    let declares = match settings.declare.value {
        Declarer::Node => "the node declares its own policy (NETSTRAP_DECLARE=node)",
        Declarer::Netstrap if registry == "none" => {
            "the node policy is rendered, not declared (NETSTRAP_LEDGER)"
        }
        Declarer::Netstrap => "netstrap declares the node policy there",
    };
    line(&mut out, "registry", &registry, declares.to_string());
    line(&mut out, "LEDGER_CONN", &table.ledger_conn.value, chains.why(&table.ledger_conn.why));

    // EdgeLake's connection table: the first lines of ConnectionTable::render_text.
    out.push('\n');
    for l in table.render_text().lines().take_while(|l| l.starts_with('|')) {
        let _ = writeln!(out, "  {l}");
    }
    out.push('\n');
    for r in &table.rows {
        let _ = writeln!(out, "  {} ({}):", r.plane.title(), r.mode.value);
        let mut why = |what: &str, value: String, p: &Provenance| {
            let text = chains.why(p);
            let _ = writeln!(out, "    {what:<13} {value:<22} {text}");
        };
        why("mode", r.mode.value.clone(), &r.mode.why);
        why("bind", host_port(&r.bind_ip.value.to_string(), r.port.value), &r.bind_ip.why);
        why("external", r.external_host.value.clone(), &r.external_host.why);
        why("external port", r.external_port.value.to_string(), &r.external_port.why);
        why("cluster", r.cluster_host.value.clone(), &r.cluster_host.why);
        why("cluster port", r.cluster_port.value.to_string(), &r.cluster_port.why);
    }

    out.push('\n');
    let state = absolute(&settings.state_dir);
    let _ = writeln!(out, "  state dir     {state} (NETSTRAP_STATE_DIR)");
    let _ = writeln!(out, "  node files    {} (rewritten on every change)", NODE_FILES.join(", "));
    if let Some(rest) = table.row(Plane::Rest) {
        let tls = settings.tls.as_ref().is_some_and(|t| t.rest);
        let host = if rest.bind_ip.value.is_unspecified() {
            if rest.bind_ip.value.is_ipv6() { "::1".to_string() } else { "127.0.0.1".to_string() }
        } else {
            rest.bind_ip.value.to_string()
        };
        let base = format!("{}://{}", if tls { "https" } else { "http" }, host_port(&host, rest.port.value));
        let _ = writeln!(out, "  probes        {base}/livez, {base}/readyz (netstrap probe live|ready)");
        let _ = writeln!(out, "  metrics       {base}/metrics; the table as JSON: {base}/v1/network");
    }
    if !chains.0.is_empty() {
        let _ = writeln!(out, "\n  Sources that gave nothing, in the order tried:");
        for (i, c) in chains.0.iter().enumerate() {
            let _ = writeln!(out, "  [{}] {c}", i + 1);
        }
    }
    let warnings = d
        .warnings
        .iter()
        .map(|w| match chains.shorten(w) {
            short if short == *w => short,
            short => format!("{short} (the numbered sources are in the start-up summary)"),
        })
        .collect();
    (out, warnings)
}

/// Print the summary once (see the module's documentation for where it goes).
pub fn print(settings: &Settings, d: &Discovery, table: &ConnectionTable, name: &str) {
    let (block, warnings) = render(settings, d, table, name);
    if settings.log_json {
        tracing::info!(summary = %block, "start-up summary");
    } else {
        use std::io::Write as _;
        let _ = std::io::stderr().lock().write_all(format!("\n{block}\n").as_bytes());
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_numbered_once_and_referred_to_after() {
        let mut c = Chains::default();
        let p =
            Provenance::new("the local IP").after(vec!["DNS not set".into(), "OVERLAY_IP not set".into()]);
        assert_eq!(c.why(&p), "the local IP (skipped: see [1])");
        assert_eq!(c.why(&p), "the local IP (skipped: see [1])");
        let quoting =
            Provenance::new("the stable name (fallback (skipped: DNS not set; OVERLAY_IP not set))");
        assert_eq!(c.why(&quoting), "the stable name (fallback (skipped: see [1]))");
        assert_eq!(c.0, vec!["DNS not set; OVERLAY_IP not set".to_string()]);
    }
}
