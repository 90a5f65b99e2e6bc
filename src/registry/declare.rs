//! Declare = look up by identity (type, company, name); identical content → nothing to do;
//! different → replace; absent → insert; then read back to confirm. A hundred restarts with
//! a hundred pod IPs leave exactly one policy.

use serde_json::Value;

use super::{Registry, RegistryError};

/// Fields a registry adds or changes on insert; ignored when comparing.
const REGISTRY_FIELDS: &[&str] = &["id", "date", "ledger", "member", "status"];

/// What declaring did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Declared {
    /// The registry already held this exact policy.
    Unchanged { id: String },
    /// There was none: inserted.
    Inserted { id: String },
    /// A different version (or duplicates) replaced.
    Replaced { id: String, old: Vec<String> },
    /// No registry configured: rendered and written to files only.
    NotDeclared,
}

impl Declared {
    pub fn id(&self) -> Option<&str> {
        match self {
            Declared::Unchanged { id } | Declared::Inserted { id } | Declared::Replaced { id, .. } => {
                Some(id)
            }
            Declared::NotDeclared => None,
        }
    }
}

/// `(type, company, name)` of a policy `{"<type>": {...}}`.
pub fn identity(policy: &Value) -> Result<(String, String, String), RegistryError> {
    let bad =
        || RegistryError::Invalid("a policy is {\"<type>\": {\"company\": ..., \"name\": ..., ...}}".into());
    let (ty, inner) = policy.as_object().and_then(|o| o.iter().next()).ok_or_else(bad)?;
    let field = |k: &str| inner.get(k).and_then(Value::as_str).map(String::from).ok_or_else(bad);
    Ok((ty.clone(), field("company")?, field("name")?))
}

/// Whether a stored policy says the same as a rendered one, ignoring registry fields.
pub fn same_content(stored: &Value, rendered: &Value) -> bool {
    let strip = |v: &Value| -> Option<Value> {
        let (ty, inner) = v.as_object()?.iter().next()?;
        let mut inner = inner.as_object()?.clone();
        for f in REGISTRY_FIELDS {
            inner.shift_remove(*f);
        }
        Some(serde_json::json!({ ty.as_str(): inner }))
    };
    match (strip(stored), strip(rendered)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn id_of(v: &Value) -> Option<String> {
    v.as_object()?.values().next()?.get("id")?.as_str().map(String::from)
}

/// Declare `policy` in `registry`, idempotently; counted by policy and outcome
/// (`netstrap_declares_total`).
pub async fn declare(registry: &Registry, policy: &Value) -> Result<Declared, RegistryError> {
    if let Registry::None = registry {
        return Ok(Declared::NotDeclared);
    }
    let result = declare_in(registry, policy).await;
    let kind = match policy.as_object().and_then(|o| o.keys().next()).map(String::as_str) {
        Some("cluster") => "cluster",
        Some("config") => "config",
        _ => "node",
    };
    let outcome = match &result {
        Ok(Declared::Inserted { .. }) => "inserted",
        Ok(Declared::Replaced { .. }) => "replaced",
        Ok(Declared::Unchanged { .. } | Declared::NotDeclared) => "unchanged",
        Err(_) => "failed",
    };
    crate::metrics::control::DECLARES
        .get_or_create(&crate::metrics::control::DeclareOutcome { policy: kind, outcome })
        .inc();
    result
}

async fn declare_in(registry: &Registry, policy: &Value) -> Result<Declared, RegistryError> {
    // The file ledger declares under its lock, so concurrent writers cannot both insert.
    if let Registry::File(f) = registry {
        let (f, p) = (f.clone(), policy.clone());
        return registry.counted("declare", super::blocking(move || f.declare(&p))).await;
    }
    let (ty, company, name) = identity(policy)?;
    let stored = registry.find(&ty, &company, &name).await?;
    let (same, different): (Vec<&Value>, Vec<&Value>) = stored.iter().partition(|s| same_content(s, policy));
    if same.len() == 1 && different.is_empty() {
        return Ok(Declared::Unchanged { id: id_of(same[0]).unwrap_or_default() });
    }
    // Keep one identical copy if there is one; everything else goes.
    let keep = same.first().and_then(|s| id_of(s));
    let old: Vec<String> = stored.iter().filter_map(id_of).filter(|id| Some(id) != keep.as_ref()).collect();
    registry.replace(&old, if keep.is_some() { None } else { Some(policy) }).await?;

    // Read back: exactly one policy with this identity, and it is ours.
    let after = registry.find(&ty, &company, &name).await?;
    match after.as_slice() {
        [one] if same_content(one, policy) => {
            let id = id_of(one).unwrap_or_default();
            Ok(if stored.is_empty() { Declared::Inserted { id } } else { Declared::Replaced { id, old } })
        }
        [] => Err(RegistryError::Unavailable(format!(
            "the registry accepted the {ty} policy {company}/{name} but does not return it (not stored yet?)"
        ))),
        many => Err(RegistryError::Refused(format!(
            "after declaring, the registry holds {} {ty} policies named {company}/{name}",
            many.len()
        ))),
    }
}
