//! Open Horizon: the agent gives a service container `HZN_DEVICE_ID`, `HZN_NODE_ID` and
//! `HZN_ORGANIZATION`; EdgeLake's scripts put them into the node name and the node policy
//! (`EdgeLake/deploy_edgelake.sh`, `policies/node_policy.al`), and netstrap does the same, so
//! the policy is the one the node would make (docs/overlay.md, "Open Horizon").

use super::Reader;

/// The Open Horizon values, each set only when non-empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Horizon {
    pub device_id: Option<String>,
    pub node_id: Option<String>,
    pub organization: Option<String>,
}

impl Horizon {
    /// deploy_edgelake.sh: with `HZN_DEVICE_ID`, `NODE_NAME` becomes `${NODE_NAME}_${HZN_DEVICE_ID}`,
    /// or `HZN_DEVICE_ID` alone when `NODE_NAME` is unset or empty.
    pub fn node_name(&self, node_name: Option<&str>) -> Option<String> {
        let device = self.device_id.as_deref()?;
        Some(match node_name {
            Some(n) if !n.is_empty() => format!("{n}_{device}"),
            _ => device.to_string(),
        })
    }

    /// node_policy.al: `hzn_device_id` right after `hostname`.
    pub fn after_hostname(&self) -> Vec<(&'static str, String)> {
        self.device_id.iter().map(|d| ("hzn_device_id", d.clone())).collect()
    }

    /// node_policy.al, `:set-hzn-info:` (after `city`): `hzn_node_id` is `HZN_DEVICE_ID`, else
    /// `HZN_NODE_ID`; then `hzn_org`.
    pub fn after_location(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(id) = self.device_id.as_ref().or(self.node_id.as_ref()) {
            out.push(("hzn_node_id", id.clone()));
        }
        if let Some(org) = &self.organization {
            out.push(("hzn_org", org.clone()));
        }
        out
    }
}

pub(super) fn read(r: &mut Reader) -> Horizon {
    // The device id is part of the node name, which EdgeLake looks up by value.
    Horizon {
        device_id: r.policy_text("HZN_DEVICE_ID", true).map(|f| f.value),
        node_id: r.policy_text("HZN_NODE_ID", false).map(|f| f.value),
        organization: r.policy_text("HZN_ORGANIZATION", false).map(|f| f.value),
    }
}
