//! Provenance: where a discovered or configured value came from, and why the sources
//! before it gave nothing. Every value netstrap binds or advertises carries one, so an
//! operator can ask "why this address?" and get an answer instead of a guess.

use serde::Serialize;

/// Why a value is what it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The source that gave the value, in the operator's words
    /// (`env LOCAL_IP`, `interface eth0 (default route)`, `Service edge/op status.loadBalancer`).
    pub source: String,
    /// Sources tried before it and why each gave nothing, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl Provenance {
    pub fn new(source: impl Into<String>) -> Self {
        Provenance { source: source.into(), skipped: Vec::new() }
    }

    pub fn after(mut self, skipped: Vec<String>) -> Self {
        self.skipped = skipped;
        self
    }

    /// One line: the source, then what was skipped.
    pub fn summary(&self) -> String {
        if self.skipped.is_empty() {
            self.source.clone()
        } else {
            format!("{} (skipped: {})", self.source, self.skipped.join("; "))
        }
    }
}

/// A value together with its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Found<T> {
    pub value: T,
    pub why: Provenance,
}

impl<T> Found<T> {
    pub fn new(value: T, why: Provenance) -> Self {
        Found { value, why }
    }
}

/// The serialized (kebab/lower-case) name of an enum value, as JSON output shows it.
pub fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}
