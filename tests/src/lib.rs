//! Workspace-level tests: turmoil simulations of whole clusters running the async node over the
//! real transports. The pure protocol's own simulator lives in `raft-core`'s tests.
//!
//! * [`kv`] — the key-value state machine the clusters replicate.
//! * [`linearizability`] — the judge of those simulations: clients record a [`History`] of the
//!   requests they made to the replicated key-value store and what came back, and
//!   [`check`](linearizability::check) has raft-sim's checker decide whether some
//!   real-time-respecting order of them is a legal run of a single-copy map
//!   ([`KvModel`]).
//!
//! [`History`]: linearizability::History
//! [`KvModel`]: linearizability::KvModel

/// Throw-away certificates for the TLS tests.
pub mod certs;

/// Turmoil simulations of whole clusters with a nemesis and history checks.
pub mod kv_sim;

/// A cluster of async nodes in one process, on the channel transport and in-memory stores.
pub mod in_process;

/// An in-process network that loses messages by kind, for scenario tests.
pub mod filtered;

/// A replicated key-value state machine (get, put, delete, compare-and-swap) for the tests.
pub mod kv;

/// The key-value store as a model for raft-sim's linearizability checker, and the client
/// histories of the replicated store that it checks.
pub mod linearizability;

/// A seeded random generator for the simulations' choices.
pub mod rng;
