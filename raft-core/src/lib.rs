//! # raft-core: the Raft consensus protocol as a pure state machine
//!
//! This crate holds the protocol of the Raft paper (Ongaro and Ousterhout, 2014) and of
//! Ongaro's dissertation (2014), written so that it does no I/O, reads no clock and draws no
//! randomness it was not given. Time arrives as an [`Time`] argument; the only randomness (the
//! election timeout) comes from a seed passed to [`Raft::new`]. The same inputs always produce
//! the same outputs, which is what lets the simulator in this crate's tests explore thousands of
//! interleavings of loss, delay, partitions, crashes and clock drift, and replay any of them
//! from its seed.
//!
//! ## How data flows
//!
//! ```text
//!   driver ──tick(now)/step(msg)/propose/read/transfer──▶ Raft ──take_actions()──▶ Actions
//!      ▲                                                                            │
//!      └────────── persisted(last id) / applied(index) ◀─── storage, network, state machine
//! ```
//!
//! * [`raft`](Raft) — roles (one state type per role), elections (with PreVote and
//!   CheckQuorum), replication and commit, leases, reads (bounded-staleness freshness and reads
//!   on followers among them), leadership transfer, and log compaction with InstallSnapshot, one
//!   file per concept under `raft/`. `step` handles the message's term first, then the role.
//! * `log` — the in-memory log: entries, and the commit/apply/durability marks with their
//!   invariants; the conflict search behind AppendEntries' fast back-off.
//! * `progress` — the leader's view of each follower (probe / replicate / snapshot) and the
//!   inflight window, in messages and bytes.
//! * `quorum` — majority and joint-majority arithmetic over match indexes, rounds and votes.
//! * `lease` — heartbeat rounds, their majority acknowledgement, and the leader lease.
//! * `reads` — the queue of reads a leader is confirming (its own and its followers'), and the
//!   reads a follower forwarded to its leader.
//! * [`Actions`] — the output batch, whose documentation lists the driver's duties in order;
//!   `contract` checks, in debug builds, that every executor of it (the node, the test harness,
//!   the simulator) keeps those duties.
//! * [`wire`] — the encoding of [`Message`] on the wire, and its format version.
//! * [`node`] (default feature `runtime`) — the async node: it drives the protocol with tokio
//!   through the [`node::StateMachine`], [`node::LogStore`], [`node::SnapshotStore`] and
//!   [`node::Transport`] traits and
//!   offers the client API (writes with an acknowledgement level, reads at a chosen consistency,
//!   leadership transfer, status and failover history). **To replicate your own state machine,
//!   start there**: its documentation has a complete, runnable three-node example.
//!
//! ## Example: a single-node cluster
//!
//! ```
//! use raft_core::{Config, InitialState, Time, NodeId, Raft, Role};
//!
//! let id = NodeId(1);
//! let state = InitialState::new([id]);
//! let mut raft = Raft::new(Config::new(id), state, 42, Time(0)).unwrap();
//!
//! // Time passes until the election timeout: a lone voter elects itself.
//! raft.tick(raft.next_deadline());
//! assert_eq!(raft.role(), Role::Leader);
//! let index = raft.propose(b"set x = 1").unwrap().index;
//!
//! // The driver's loop: carry out the actions, report durability and apply.
//! let mut applied = Vec::new();
//! for _ in 0..3 {
//!     let actions = raft.take_actions();
//!     if let Some(last) = actions.entries.last() {
//!         raft.persisted(last.id()); // (after writing them to stable storage)
//!     }
//!     if let Some(range) = actions.committed {
//!         for index in range.indexes() {
//!             let entry = raft.entry(index).unwrap(); // read in place: apply it
//!             applied.push(entry.index);
//!         }
//!         raft.applied(range.last);
//!     }
//! }
//! assert!(applied.contains(&index));
//! ```

#![forbid(unsafe_code)]

mod actions;
mod config;
#[cfg_attr(not(any(test, feature = "runtime")), allow(dead_code))]
mod contract;
mod error;
mod lease;
mod log;
// Membership: voters, learners and joint configurations, and what each change may do.
mod membership;
mod message;
#[cfg(feature = "runtime")]
pub mod node;
mod progress;
mod quorum;
mod raft;
mod reads;
mod rng;
mod types;
pub mod wire;

#[cfg(test)]
mod tests;

pub use actions::{Actions, Committed, SnapshotRead, SnapshotWrite};
pub use config::{Config, ConfigError};
pub use error::ProtocolError;
pub use log::ConflictHint;
pub use membership::{MAX_ADDRESS_BYTES, Membership, MembershipError};
pub use message::{AppendOutcome, Freshness, Message, MessageBody};
pub use raft::{FreshCommit, InitialState, MembershipChange, PeerProgress, Raft, ReadMode, Role};
pub use reads::ReadId;
pub use types::{
    Entry, EntryData, EntryId, HardState, LogIndex, NodeId, Payload, SharedMembership,
    SnapshotMeta, Term, Time,
};
