//! Advertise (DESIGN.md §2 steps 5 and 7): render the policies, write the node's files and
//! declare the node policy idempotently — retrying an unreachable registry with backoff and
//! jitter while the node keeps serving — then watch for changes of what is advertised.

pub mod files;
