//! `netstrap peers` and `/v1/peers`: read every node policy from the registry and dial each
//! node's TCP, REST and broker endpoints concurrently, with a timeout — EdgeLake's
//! `test network`, from outside the node.
//!
//! The address is chosen as EdgeLake peers choose it: `ip:port` when the policy has an `ip`,
//! else `local_ip:port` (netstrap does not know the dialer's NAT, so the "same external IP →
//! local address" rule is not applied).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::registry::Node;

/// One endpoint's reachability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reach {
    pub endpoint: String,
    pub ok: bool,
    pub detail: String,
}

/// One node and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerReport {
    pub node_type: String,
    pub name: String,
    pub company: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub tcp: Option<Reach>,
    pub rest: Option<Reach>,
    pub broker: Option<Reach>,
}

impl PeerReport {
    pub fn all_ok(&self) -> bool {
        [&self.tcp, &self.rest, &self.broker].iter().all(|r| r.as_ref().is_none_or(|r| r.ok))
    }
}

async fn dial(endpoint: String, timeout: Duration) -> Reach {
    let (ok, detail) = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&endpoint)).await {
        Ok(Ok(_)) => (true, "reachable".to_string()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, format!("no connection within {timeout:?}")),
    };
    Reach { endpoint, ok, detail }
}

/// Dials in flight at once, whatever the registry holds: each costs a descriptor, and a
/// registry full of stale policies must not take the descriptors the planes and probes need.
pub const MAX_DIALS: usize = 64;
/// Nodes dialed per check; the rest are reported as not checked. With [`MAX_DIALS`] and a 1 s
/// timeout, a check of nodes that all time out takes at most 3 × 1 000 / 64 ≈ 47 s.
pub const MAX_CHECKED: usize = 1_000;

/// Dial `nodes`, [`MAX_DIALS`] endpoints at a time, the first [`MAX_CHECKED`] of them.
pub async fn check(nodes: &[Node], timeout: Duration) -> Vec<PeerReport> {
    let dials = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_DIALS));
    let mut set = tokio::task::JoinSet::new();
    let mut not_checked = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let Node { node_type: ty, name, company, id, tcp, rest, broker } = node.clone();
        if set.len() >= MAX_CHECKED {
            let skip = |e: Option<String>| {
                e.map(|endpoint| Reach {
                    endpoint,
                    ok: false,
                    detail: format!("not checked (over {MAX_CHECKED} nodes)"),
                })
            };
            let report = PeerReport {
                node_type: ty,
                name,
                company,
                id,
                tcp: skip(tcp),
                rest: skip(rest),
                broker: skip(broker),
            };
            not_checked.push((i, report));
            continue;
        }
        let dials = dials.clone();
        set.spawn(async move {
            let checked = |endpoint: Option<String>| {
                let dials = dials.clone();
                async move {
                    let endpoint = endpoint?;
                    // Never closed: acquiring only fails on a closed semaphore.
                    let _permit = dials.acquire_owned().await.ok()?;
                    Some(dial(endpoint, timeout).await)
                }
            };
            let (tcp, rest, broker) = tokio::join!(checked(tcp), checked(rest), checked(broker));
            (i, PeerReport { node_type: ty, name, company, id, tcp, rest, broker })
        });
    }
    let mut out = set.join_all().await;
    out.extend(not_checked);
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The reachability table.
pub fn render(reports: &[PeerReport]) -> String {
    let cell = |r: &Option<Reach>| match r {
        None => "-".to_string(),
        Some(r) if r.ok => format!("{} ok", r.endpoint),
        Some(r) => format!("{} FAILED ({})", r.endpoint, r.detail),
    };
    let mut rows: Vec<[String; 5]> = vec![["Type", "Name", "TCP", "REST", "Broker"].map(String::from)];
    for r in reports {
        rows.push([r.node_type.clone(), r.name.clone(), cell(&r.tcp), cell(&r.rest), cell(&r.broker)]);
    }
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}
