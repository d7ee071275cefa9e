//! # raft-sim: test your state machine under partitions, crashes and message loss
//!
//! You implemented [`raft_core::node::StateMachine`] (and perhaps your own log store). This
//! crate runs it the way production would, only faster and reproducibly: a cluster of real
//! nodes ([`raft_core::node::Node`]) on the real TCP transport, inside
//! [turmoil](https://docs.rs/turmoil)'s simulated network (and, if you want, its simulated
//! disk), while a nemesis partitions, delays, drops, crashes and restarts, and clients you write
//! as ordinary async code make requests. Then it checks what the clients saw against a
//! sequential model you write, and what the nodes did against Raft's invariants. A failing run
//! prints its seed, the command that replays it, and the shortest failing part of its history.
//!
//! Add it as a dev-dependency; it is meant for tests.
//!
//! ## How it fits together
//!
//! ```text
//!  Simulation::new(factory, model)  ──run(seed)──▶ turmoil::Sim
//!    .nemesis(Nemesis)                              ├─ host n1..nN: Node<Recording<SM>> + TcpTransport<TurmoilNet>
//!    .storage(Storage)                              │                 + stores (memory / simulated disk / yours)
//!    .client(name, |client| async {..})             ├─ clients: your code ─Client─▶ NodeHandle  ──▶ History
//!                                                   ├─ every step: Nemesis injects; Status ──▶ invariants
//!                                                   └─ at the end: crash all, read the final voters' stores back
//!  Report ◀── checker::check(model, history) + replicas' applied commands vs the model
//!             + bounded-staleness reads vs acknowledgements + acknowledged writes vs the stores
//! ```
//!
//! * [`Simulation`] (module `sim`): the builder and the run of one seed; [`seeds`] reads
//!   `RAFT_SIM_SEED` / `RAFT_SIM_SEEDS`.
//! * [`Client`] (module `client`): what your workload code gets; every request it makes is
//!   recorded in a [`History`] with its [`Outcome`].
//! * [`Nemesis`] and [`Fault`] (module `nemesis`): which faults, how often; every fault is
//!   recorded with its time ([`FaultRecord`]). Membership churn (module `churn`) and leadership
//!   transfers (module `transfer`) run beside the other faults, as tasks of their own.
//! * [`Director`] (module `director`): scripted faults, for scenarios the random nemesis cannot
//!   aim at: a task of yours that watches the nodes and partitions, crashes, empties and
//!   restarts them when it sees fit, with checks of its own ([`Simulation::director`]).
//! * [`Storage`] (module `storage`): in memory (kept across crashes), the durable file stores
//!   on turmoil's simulated disk, or your own.
//! * [`Model`] and [`check`] (modules `model`, `checker`): your sequential specification
//!   (written out, or made of your state machine's pure logic with [`sequential`]), and a
//!   linearizability checker for any model (Wing and Gong's search with Lowe's memoisation,
//!   per part of the state when [`Model::partition`] says, with operations of unknown outcome),
//!   usable on histories of your own too; when the model describes each part as one register
//!   ([`Model::register`], [`Register`]), sound register rules leave out operations of unknown
//!   outcome that cannot matter and refute some parts before the search. A history that fails
//!   is cut down to its shortest
//!   failing prefix and the few answers in it that no order explains, with what ran around
//!   them ([`Counterexample`]).
//! * [`Recording`] (module `recording`): the wrapper around your state machine that records
//!   what every replica applied.
//! * The checks made once a run is over (modules `checks`, `audit`, `invariants`): answers
//!   against the model at their log index, read-your-writes, bounded staleness, the store
//!   audit.
//! * [`Report`] (module `report`): what a run did and found.
//!
//! ## What is checked
//!
//! * **Linearizability** of every write (`Ack::Quorum`, `Ack::All`) and every `Linearizable`
//!   or `Lease` read against the [`Model`]. A refused request (`NotLeader`, ...) had no effect;
//!   a timed-out one (`Timeout`, `Shutdown`, `Storage`) may take effect at any point after its
//!   invocation, or never, as `raft_core::node::Error` documents.
//! * **Every answer that names a log index** against the model replayed over the commands the
//!   replicas applied: a write's response at its index, and any read's answer at the applied
//!   index it was served at (`Stale` and `BoundedStaleness` reads included: stale, never wrong).
//! * **Read-your-writes**: an `AtLeast(token)` read is served at or after its token.
//! * **Bounded staleness**, as `Consistency::BoundedStaleness(bound)` promises: the data served
//!   reflects every write acknowledged more than `bound` before the read is answered. Measured
//!   from the clients, giving the node every doubt: a read whose answer reached its client at
//!   `t` must have been served at an applied index no lower than that of any write (`Ack::Quorum`
//!   or `Ack::All`) whose acknowledgement reached its client before `t - bound - 1 ms` (an
//!   answer may reach its client one 1 ms step after the node sent it). The node measures the
//!   age on its own clock, so with clock drift the bound is stretched by the slowest rate a
//!   clock may run at: `(bound + 1 ms) / (1 - d)`.
//! * **State machine safety and determinism**: every replica applied the same command at each
//!   index (compared as the log encodes it), and returned the same response for it (compared
//!   as `Debug` prints it: a response holding a `HashMap` may print equal values differently).
//! * **Invariants on every node's `Status` after every step**: at most one leader per term;
//!   within one start of a node, its term and commit index never go back; applied never
//!   beyond committed; and, from the same statuses once the run is over, **leases**
//!   (dissertation §6.4.1): no `Lease` read invoked after a leader of a later term than the one
//!   it was served in was seen may be answered (the term is the serving node's right after it
//!   answered, so a stale read can be missed, and only a read wholly after the later term's
//!   election is blamed). Every term seen, with its leader, is in [`Report::terms`] for checks of your own
//!   (a healthy cluster keeps its first leader). And **liveness**: within 10 s of the faults
//!   stopping, a leader whose membership is committed and not joint, followed by every voter
//!   of that membership (the final voters: with membership churn, not the first ones).
//! * **The stores, once the run is over** (the store audit): after the liveness check, every
//!   host is crashed (whatever its stores had not made durable is lost) and the final voters'
//!   stores are read back as a restart would find them: the harness's in-memory stores
//!   ([`Storage::Memory`]), the file stores opened on the host's simulated disk
//!   ([`Storage::SimulatedDisk`]), or what your factory returns for one more start
//!   ([`Storage::custom`]). Every write acknowledged at `Ack::Quorum` or `Ack::All` must be on a
//!   majority of them: in the log at its index, of its term, with its command's bytes, or at or
//!   below the last index of the latest snapshot (which must restore into a fresh state
//!   machine, and end in a term no earlier than the write's). A store that cannot be read back
//!   is a problem too.
//!
//! Clocks drift too ([`Fault::ClockDrift`], in the default nemesis): turmoil gives every host
//! one clock, so each node runs on a `raft_core::node::NodeClock` of its own whose rate the
//! nemesis keeps changing, within the nodes' `clock_drift_bound_ms` unless told otherwise.
//!
//! Your own transport meets the same faults either as a wrapper around the TCP transport
//! ([`Simulation::transport`]: compression, encryption, batching on the sending side) or in
//! its place on both sides ([`Simulation::own_transport`]: it listens on turmoil's network
//! itself and hands what it receives to the node's inbox, [`TransportStart`]).
//!
//! ## Example: a replicated counter
//!
//! ```no_run
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use raft_core::node::{Consistency, SnapshotReader, SnapshotSource, StateMachine};
//! use raft_core::{LogIndex, SnapshotMeta};
//! use raft_sim::{ClusterOp, ClusterRet, Model, Simulation};
//!
//! /// The state machine under test: adds to a number.
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! #[async_trait]
//! impl StateMachine for Counter {
//!     type Command = i64;
//!     type Response = i64;
//!     type Query = ();
//!     type QueryResponse = i64;
//!     async fn apply(&mut self, _: LogIndex, delta: i64) -> i64 {
//!         self.0 += delta;
//!         self.0
//!     }
//!     async fn query(&self, _: ()) -> i64 {
//!         self.0
//!     }
//!     async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
//!         Ok(Box::new(Bytes::from(self.0.to_be_bytes().to_vec())))
//!     }
//!     async fn restore(&mut self, _: &SnapshotMeta, image: &mut SnapshotReader<'_>) -> Result<(), String> {
//!         let image = image.read_to_end().await?;
//!         self.0 = i64::from_be_bytes(image.try_into().map_err(|_| "not 8 bytes".to_string())?);
//!         Ok(())
//!     }
//! }
//!
//! /// What one copy of the counter would do.
//! struct CounterModel;
//!
//! impl Model for CounterModel {
//!     type Op = ClusterOp<i64, ()>;
//!     type Ret = ClusterRet<i64, i64>;
//!     type State = i64;
//!     fn init(&self) -> i64 {
//!         0
//!     }
//!     fn step(&self, state: &i64, op: &Self::Op) -> (i64, Self::Ret) {
//!         match op {
//!             ClusterOp::Write(delta) => (state + delta, ClusterRet::Write(state + delta)),
//!             ClusterOp::Read(()) => (*state, ClusterRet::Read(*state)),
//!         }
//!     }
//! }
//!
//! // In a test: `#[test] fn the_counter_is_linearizable_under_faults() { ... }`.
//! fn main() {
//!     Simulation::new(|_node| Counter::default(), CounterModel)
//!         .clients(3, |client| async move {
//!             while client.running() {
//!                 client.propose(1).await;
//!                 client.read((), Consistency::Linearizable).await;
//!             }
//!         })
//!         .check(); // seeds 0..4, or RAFT_SIM_SEEDS=n, or RAFT_SIM_SEED=s; panics with a report
//! }
//! ```
//!
//! The guide's chapter "Testing your state machine under partitions" (`docs/guide.md`) walks
//! through a larger example, `examples/bank`.
//!
//! ## Determinism
//!
//! A run depends on its seed only: turmoil's world is seeded and its clock starts at a fixed
//! epoch; every node's and transport's randomness, the snapshot policy, the nemesis and the
//! clients' generators are drawn from the seed; the nodes, transports and clients run on
//! their host's local task set (a snapshot build runs on a task of its own, which does not
//! change the run); the harness keeps everything in ordered maps. Keep your workload code to the
//! same rules: randomness from [`Client::rng`], time from tokio's clock, no `HashMap`
//! iteration order, no threads. [`Report::digest`] hashes a run's history and faults, so two
//! runs of a seed can be compared.

#![forbid(unsafe_code)]

mod audit;
mod checker;
mod checks;
mod churn;
mod client;
mod director;
mod drift;
mod history;
mod invariants;
mod model;
mod nemesis;
mod outcome;
mod recording;
mod register;
mod report;
mod sim;
mod storage;
mod transfer;
mod transport;
mod world;

pub use checker::{
    Counterexample, DEFAULT_STEP_BUDGET, Refutation, Verdict, check, check_with_budget,
};
pub use client::{Client, SimHandle, Target};
pub use director::Director;
pub use history::{History, OpId, Operation, Recorded};
pub use invariants::TermRecord;
pub use model::{ClusterOp, ClusterRet, Model, OpOf, Registered, RetOf, Sequential, sequential};
pub use nemesis::{Fault, FaultRecord, Nemesis};
pub use outcome::Outcome;
pub use recording::Recording;
pub use register::Register;
pub use report::Report;
pub use sim::{DEFAULT_SEEDS, Simulation, seeds};
pub use storage::{CustomStores, LOG_DIR, SNAPSHOT_DIR, Storage};
pub use transport::{NodeStart, TransportStart};
pub use world::OperationCounts;

use raft_core::node::StateMachine;
use std::fmt::Debug;

/// A state machine the kit can simulate and check: a [`StateMachine`] whose commands and
/// queries can be cloned and shown (they are recorded in the history), and whose answers can
/// also be compared (with the model's), and which is `Sync` (as its `&self` methods need
/// anyway). Implemented for every such state machine.
pub trait SimStateMachine:
    Sync
    + StateMachine<
        Command: Clone + Debug,
        Query: Clone + Debug,
        Response: Clone + Debug + PartialEq,
        QueryResponse: Clone + Debug + PartialEq,
    >
{
}

impl<SM> SimStateMachine for SM
where
    SM: StateMachine + Sync,
    SM::Command: Clone + Debug,
    SM::Query: Clone + Debug,
    SM::Response: Clone + Debug + PartialEq,
    SM::QueryResponse: Clone + Debug + PartialEq,
{
}
