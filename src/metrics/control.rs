//! What the control plane did, for `/metrics`: registry calls (by operation and outcome, and
//! how long they took), node/config/cluster policy declares by outcome, and self-verification
//! results. Process-wide, like the broker's drop counters: the registry and the declare code
//! count where they act, without a handle passed down to them. Every label takes a value
//! from a fixed set, so the number of series is bounded.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Buckets of registry calls, in seconds: a file ledger answers in well under a millisecond,
/// an EdgeLake node on the LAN in milliseconds, one that pushes to its master in up to
/// seconds; a call gives up at `registry::REQUEST_TIMEOUT` (10 s).
pub const REGISTRY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A registry call: `operation` is `find` (look-up by identity), `nodes` (every node, for
/// `/v1/peers`), `replace` (delete and/or insert) or `declare` (the file ledger's locked
/// look-up-and-write); `outcome` is `ok`, `unavailable`, `refused` or `invalid`
/// (`registry::RegistryError`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryCall {
    pub operation: &'static str,
    pub outcome: &'static str,
}

/// A registry call's operation (the histogram's label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

/// A declare: `policy` is `node`, `config` or `cluster`; `outcome` is `inserted`, `replaced`,
/// `unchanged` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeclareOutcome {
    pub policy: &'static str,
    pub outcome: &'static str,
}

/// A self-verification of one advertised endpoint: `result` is `verified` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerifyResult {
    pub plane: &'static str,
    pub result: &'static str,
}

fn registry_histogram() -> Histogram {
    Histogram::new(REGISTRY_BUCKETS)
}

/// Registry calls since start.
pub static REGISTRY_CALLS: LazyLock<Family<RegistryCall, Counter>> = LazyLock::new(Family::default);
/// Histograms by label set, each made with its buckets.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// How long registry calls took.
pub static REGISTRY_DURATION: LazyLock<Histograms<Operation>> =
    LazyLock::new(|| Family::new_with_constructor(registry_histogram as fn() -> Histogram));
/// Declares since start.
pub static DECLARES: LazyLock<Family<DeclareOutcome, Counter>> = LazyLock::new(Family::default);
/// Endpoint verifications since start.
pub static VERIFICATIONS: LazyLock<Family<VerifyResult, Counter>> = LazyLock::new(Family::default);

/// Count one registry call that took `seconds`.
pub fn registry_call(operation: &'static str, outcome: &'static str, seconds: f64) {
    REGISTRY_CALLS.get_or_create(&RegistryCall { operation, outcome }).inc();
    REGISTRY_DURATION.get_or_create(&Operation { operation }).observe(seconds);
}
