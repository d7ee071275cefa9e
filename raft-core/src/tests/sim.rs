//! A deterministic simulator of whole clusters running the pure protocol.
//!
//! One seed decides everything: cluster size and tunables, the order in which messages are
//! delivered, which are lost, duplicated or delayed, partitions (symmetric and one-way), crashes
//! that lose every write not yet durable, restarts from what was, clock rates that drift within
//! the configured bound, client proposals and reads, and leadership transfers. After every step
//! the simulator checks the Raft invariants (Figure 3 of the paper) and this library's own:
//!
//! * Election Safety — at most one leader per term;
//! * Leader Append-Only — a leader never overwrites or deletes entries in its log;
//! * Log Matching — two logs with an entry of the same index and term are identical up to it;
//! * Leader Completeness — a new leader holds every entry committed before its election;
//! * State Machine Safety — no two nodes apply different entries at one index, and an entry
//!   once committed anywhere never changes;
//! * the commit index never decreases (within one incarnation of a node), applied <= committed;
//! * lease safety — at no instant do two nodes hold a lease; and every read is served at an
//!   index at least the highest index committed anywhere when the read was asked (so a lease or
//!   ReadIndex read never misses a write that completed before it began).
//!
//! * a leadership transfer ends or is abandoned a minimum election timeout after it began: a
//!   leader that refuses a proposal with `TransferInProgress` later than that (plus the drift
//!   bound) is stuck. Some transfers go to a node that is running a pre-vote.
//!
//! Half the seeds also change the membership (paper §6): the leader adds learners from two
//! spare nodes that start empty, promotes them, removes voters (itself among them), removes
//! learners and replaces voters, while every fault above goes on. The invariants are checked
//! across configurations (Election Safety counts leaders of a term whatever their
//! membership), and a refused change must leave the leader's log as it was.
//!
//! After the fault phase the network heals and every node restarts: a leader must be elected
//! and a proposal committed within a bounded number of steps (liveness).
//!
//! A second kind of run, in [`healthy`], keeps the network healthy and checks stability: under
//! heavy read and write load, no leader change but the transfers it asks for, and each transfer
//! to a caught-up node completes in time.
//!
//! A failure prints the seed and the step, and the command that replays it:
//! `RAFT_SIM_SEED=<seed>` runs that one seed (of each kind of run, or of the test named), and
//! `RAFT_SIM_SEEDS=<n>` runs more seeds than the default: `n` fault runs and `n / 15` healthy
//! ones.

use super::harness::test_config;
use crate::contract::{Batch, ContractChecker};
use crate::rng::SplitMix64;
use crate::{
    Config, Entry, EntryId, HardState, InitialState, LogIndex, Message, NodeId, Raft, ReadId,
    ReadMode, Role, SnapshotMeta, SnapshotWrite, Term, Time,
};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

mod healthy;

/// Default number of seeds under `cargo test`.
const DEFAULT_SEEDS: u64 = 600;
/// Steps of the fault phase.
const FAULT_STEPS: u64 = 4000;
/// After healing, a leader must commit a proposal within this many steps.
const LIVENESS_STEPS: u64 = 4000;

/// A node's clock: `local = offset + real * rate_ppm / 1_000_000`, monotonic, drifting from
/// real time by at most the rate bound.
#[derive(Clone, Copy, Debug)]
struct Clock {
    rate_ppm: u64,
    offset_ms: u64,
}

impl Clock {
    fn local(&self, real_ms: u64) -> Time {
        Time(self.offset_ms + real_ms * self.rate_ppm / 1_000_000)
    }
}

/// A write handed to the disk and not yet durable, with the messages that wait for it.
#[derive(Debug)]
struct PendingWrite {
    batch: Batch,
    purge: Option<EntryId>,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    snapshot_writes: Vec<SnapshotWrite>,
    then_send: Vec<Message>,
}

/// The state machine's state after applying `entries` (from index 1), as a running hash.
fn state_hash(entries: &[Entry]) -> u64 {
    entries.iter().fold(0xcbf2_9ce4_8422_2325, hash_entry)
}

fn hash_entry(hash: u64, entry: &Entry) -> u64 {
    let bytes = postcard::to_stdvec(entry).unwrap_or_default();
    bytes.iter().fold(hash.rotate_left(5), |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct SimNode {
    config: Config,
    clock: Clock,
    raft: Option<Raft>,
    incarnation: u64,
    /// What survives a crash: the hard state, the log after `disk_log_start`, and the latest
    /// complete snapshot (its metadata and image: the applied entries, encoded).
    disk_hard_state: HardState,
    disk_log_start: EntryId,
    disk_entries: Vec<Entry>,
    disk_snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// The image being received (lost in a crash, as an unfinished writer is).
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
    /// The running hash of `applied`.
    applied_hash: u64,
    pending_writes: Vec<PendingWrite>,
    /// Checks that this simulator keeps the duties of `Actions` (one per incarnation).
    contract: ContractChecker,
    /// Entries applied in this incarnation, in order (the state machine is volatile).
    applied: Vec<Entry>,
    /// Reads asked and not yet answered: id → (mode, highest committed index anywhere then,
    /// asked of a node that was not leader).
    open_reads: BTreeMap<ReadId, (ReadMode, LogIndex, bool)>,
    /// Highest commit index seen in this incarnation.
    last_commit: LogIndex,
    /// Up to where this node's committed entries were compared with the global record.
    checked_commit: LogIndex,
}

#[derive(Debug)]
struct InFlight {
    msg: Message,
    deliver_at_ms: u64,
}

/// A leadership transfer as its leader began it.
#[derive(Clone, Copy, Debug)]
struct TransferStart {
    term: Term,
    target: NodeId,
    /// On the leader's clock.
    started_at: Time,
}

/// What one seed chose for the network.
#[derive(Clone, Copy, Debug)]
struct Faults {
    loss_percent: u64,
    duplicate_percent: u64,
    max_delay_ms: u64,
    /// Chance per step of a fault (partition, crash, restart, transfer), in thousandths.
    fault_per_mille: u64,
    /// Share of client requests that are writes (the rest are reads). Read-mostly seeds keep
    /// logs equal for long stretches, which is when a wrongly granted vote can win an election.
    write_percent: u64,
    /// Share of messages that take 30–150 ms longer than usual (a heavy tail: retransmits,
    /// pauses), so that news of a new term can reach a deposed leader late.
    tail_percent: u64,
}

pub(crate) struct Sim {
    seed: u64,
    rng: SplitMix64,
    real_ms: u64,
    step: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    /// The cluster's first voters; the other nodes start empty, to join it.
    voters: BTreeSet<NodeId>,
    /// Whether this run changes the membership.
    churn: bool,
    network: Vec<InFlight>,
    /// Directed links that drop everything: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Directed links with a latency spike: (from, to).
    slow: BTreeSet<(NodeId, NodeId)>,
    faults: Faults,
    next_read: u64,
    next_proposal: u64,
    /// Set for a healthy run: steady latency instead of the fault model above.
    steady: Option<healthy::SteadyNetwork>,
    // --- what the invariants remember ---
    /// The latest leadership transfer each leader began: a refused proposal is checked against it.
    transfers: BTreeMap<NodeId, TransferStart>,
    leader_of_term: BTreeMap<Term, NodeId>,
    /// For each node that is leader: its term and log at the previous check.
    leader_logs: BTreeMap<NodeId, (Term, Vec<EntryId>)>,
    /// Every entry known committed, by index.
    committed: BTreeMap<LogIndex, Entry>,
    /// Every entry applied anywhere, by index.
    applied: BTreeMap<LogIndex, Entry>,
    /// The state machine's state (hash) after applying each index, as the first node to reach
    /// it held it: every other node reaching that index must hold the same.
    states: BTreeMap<LogIndex, u64>,
    /// Running hash of everything that happened: equal seeds must give equal hashes.
    pub(crate) trace_hash: u64,
    pub(crate) stats: Stats,
}

/// What a run did, to check that runs exercise something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) elections: u64,
    pub(crate) commits: u64,
    pub(crate) reads_served: u64,
    /// Of those, reads served by a node that was not leader when asked (forwarded).
    pub(crate) follower_reads_served: u64,
    pub(crate) lease_reads_without_round_trip: u64,
    /// Proposals refused because the leader's uncommitted tail was full.
    pub(crate) refused_uncommitted: u64,
    /// Snapshots taken, and received snapshots installed.
    pub(crate) snapshots: u64,
    pub(crate) snapshots_installed: u64,
    /// Nodes whose log and snapshot were wiped.
    pub(crate) wipes: u64,
    pub(crate) crashes: u64,
    pub(crate) transfers: u64,
    pub(crate) truncations: u64,
    /// Healthy runs: transfers that ended with the target leading.
    pub(crate) transfers_completed: u64,
    /// Healthy runs: of those, transfers to a node that was running a pre-vote.
    pub(crate) transfers_to_pre_voting: u64,
    /// Healthy runs: abandoned transfers after which another leader had to be elected.
    pub(crate) transfers_disrupted: u64,
    /// Membership changes a leader accepted, and of those, changes of voters that removed
    /// the leader itself.
    pub(crate) membership_changes: u64,
    pub(crate) leader_removals: u64,
    /// Healthy runs: the most heartbeat rounds a leader started between sending a round and
    /// hearing it acknowledged (a maximum, not a sum).
    pub(crate) max_rounds_in_flight: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.elections += other.elections;
        self.commits += other.commits;
        self.reads_served += other.reads_served;
        self.follower_reads_served += other.follower_reads_served;
        self.lease_reads_without_round_trip += other.lease_reads_without_round_trip;
        self.refused_uncommitted += other.refused_uncommitted;
        self.snapshots += other.snapshots;
        self.snapshots_installed += other.snapshots_installed;
        self.wipes += other.wipes;
        self.crashes += other.crashes;
        self.transfers += other.transfers;
        self.truncations += other.truncations;
        self.transfers_completed += other.transfers_completed;
        self.transfers_to_pre_voting += other.transfers_to_pre_voting;
        self.transfers_disrupted += other.transfers_disrupted;
        self.membership_changes += other.membership_changes;
        self.leader_removals += other.leader_removals;
        self.max_rounds_in_flight = self.max_rounds_in_flight.max(other.max_rounds_in_flight);
    }
}

impl Sim {
    /// A run of `seed` that changes the membership in half the seeds.
    pub(crate) fn new(seed: u64) -> Sim {
        Sim::build(seed, true)
    }

    /// A run of `seed`; with `allow_churn`, half the seeds change the membership.
    pub(crate) fn build(seed: u64, allow_churn: bool) -> Sim {
        let mut rng = SplitMix64::new(seed);
        let n = if rng.range(0, 2) == 0 { 3 } else { 5 };
        let voters: BTreeSet<NodeId> = (1..=n).map(NodeId).collect();
        let churn = allow_churn && rng.range(0, 2) == 0;
        // Two spare nodes that start empty, for the leader to add.
        let spares = if churn { 2 } else { 0 };
        let pre_vote = rng.range(0, 4) != 0;
        let window = rng.range(1, 8) as usize;
        let batch = rng.range(1, 6) as usize;
        // Byte limits small enough for the mixed entry sizes of proposals (up to 1,200 bytes)
        // to hit them: bytes per message and in flight per follower, and the uncommitted tail.
        let byte_limits = rng.range(0, 2) == 1;
        let (bytes_per_append, inflight_bytes, uncommitted_bytes) = if byte_limits {
            (
                rng.range(100, 3000) as usize,
                rng.range(500, 5000) as usize,
                rng.range(2000, 20_000) as usize,
            )
        } else {
            let defaults = Config::new(NodeId(1));
            (
                defaults.max_bytes_per_append,
                defaults.max_inflight_bytes,
                defaults.max_uncommitted_bytes,
            )
        };
        let mut nodes = BTreeMap::new();
        for id in (1..=n + spares).map(NodeId) {
            let mut config = test_config(id.0);
            // The longest lease the rules allow, to test the bound at its edge.
            config.lease_duration_ms =
                config.election_timeout_min_ms - config.clock_drift_bound_ms - 1;
            config.pre_vote = pre_vote;
            config.max_inflight_appends = window;
            config.max_entries_per_append = batch;
            config.max_bytes_per_append = bytes_per_append;
            config.max_inflight_bytes = inflight_bytes;
            config.max_uncommitted_bytes = uncommitted_bytes;
            config.validate().unwrap();
            // Two clocks may disagree by the drift bound over one minimum election timeout; each
            // drifts by at most 90% of half that, leaving room for millisecond rounding.
            let max_ppm = config.clock_drift_bound_ms * 1_000_000 * 9
                / (10 * 2 * config.election_timeout_min_ms);
            let rate_ppm = 1_000_000 - max_ppm + rng.range(0, 2 * max_ppm + 1);
            let clock = Clock {
                rate_ppm,
                offset_ms: rng.range(0, 1_000_000),
            };
            nodes.insert(
                id,
                SimNode {
                    config,
                    clock,
                    raft: None,
                    incarnation: 0,
                    disk_hard_state: HardState::default(),
                    disk_log_start: EntryId::default(),
                    disk_entries: Vec::new(),
                    disk_snapshot: None,
                    receiving: None,
                    applied_hash: state_hash(&[]),
                    pending_writes: Vec::new(),
                    contract: ContractChecker::default(),
                    applied: Vec::new(),
                    open_reads: BTreeMap::new(),
                    last_commit: LogIndex(0),
                    checked_commit: LogIndex(0),
                },
            );
        }
        let faults = Faults {
            loss_percent: [0, 1, 5, 20][rng.range(0, 4) as usize],
            duplicate_percent: [0, 2, 10][rng.range(0, 3) as usize],
            max_delay_ms: [2, 10, 40][rng.range(0, 3) as usize],
            fault_per_mille: [1, 3, 6][rng.range(0, 3) as usize],
            write_percent: [2, 20, 50, 80][rng.range(0, 4) as usize],
            tail_percent: [0, 2, 10][rng.range(0, 3) as usize],
        };
        let mut sim = Sim {
            seed,
            rng,
            real_ms: 0,
            step: 0,
            nodes,
            voters: voters.clone(),
            churn,
            network: Vec::new(),
            blocked: BTreeSet::new(),
            slow: BTreeSet::new(),
            faults,
            next_read: 1,
            next_proposal: 1,
            steady: None,
            transfers: BTreeMap::new(),
            leader_of_term: BTreeMap::new(),
            leader_logs: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            states: BTreeMap::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            stats: Stats::default(),
        };
        let faults = sim.faults;
        sim.trace(format_args!(
            "{n} nodes, churn {churn}, pre_vote {pre_vote}, window {window}, batch {batch}, bytes per append {bytes_per_append}, in flight {inflight_bytes}, uncommitted {uncommitted_bytes}, {faults:?}"
        ));
        for id in (1..=n + spares).map(NodeId) {
            sim.start_node(id);
        }
        sim
    }

    fn trace(&mut self, event: std::fmt::Arguments<'_>) {
        let mut text = String::new();
        let _ = text.write_fmt(event);
        for byte in text.bytes() {
            self.trace_hash = (self.trace_hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        if std::env::var_os("RAFT_SIM_TRACE").is_some() {
            eprintln!("[{} @{}ms] {text}", self.step, self.real_ms);
        }
    }

    fn local_now(&self, id: NodeId) -> Time {
        self.nodes[&id].clock.local(self.real_ms)
    }

    fn start_node(&mut self, id: NodeId) {
        let now = self.local_now(id);
        let node = self.nodes.get_mut(&id).unwrap();
        node.incarnation += 1;
        // The state machine starts from the latest snapshot, or empty.
        let restored: Vec<Entry> = node
            .disk_snapshot
            .as_ref()
            .map(|(_, image)| postcard::from_bytes(image).unwrap_or_default())
            .unwrap_or_default();
        let applied = LogIndex(restored.len() as u64);
        let state = InitialState {
            hard_state: node.disk_hard_state,
            entries: node.disk_entries.clone(),
            applied,
            // The first membership, as the node saved it when it first started; a spare
            // node has none.
            membership: crate::Membership::new(self.voters.clone())
                .ok()
                .filter(|_| self.voters.contains(&id)),
            log_start: node.disk_log_start,
            snapshot: node.disk_snapshot.as_ref().map(|(meta, _)| meta.clone()),
            ..InitialState::default()
        };
        let seed = self.seed ^ (id.0 << 48) ^ (node.incarnation << 40);
        let durable_through = state
            .entries
            .last()
            .map_or(state.log_start.index, |e| e.index)
            .max(applied);
        node.contract = ContractChecker::new(durable_through, applied);
        node.raft = Some(Raft::new(node.config.clone(), state, seed, now).unwrap());
        node.applied_hash = state_hash(&restored);
        node.applied = restored;
        node.receiving = None;
        node.open_reads.clear();
        node.last_commit = LogIndex(0);
        node.checked_commit = LogIndex(0);
        let incarnation = self.nodes[&id].incarnation;
        self.trace(format_args!("start {id} incarnation {incarnation}"));
    }

    fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.raft = None;
        node.pending_writes.clear();
        node.open_reads.clear();
        self.leader_logs.remove(&id);
        self.stats.crashes += 1;
        self.trace(format_args!("crash {id}"));
    }

    /// Those of `ids` that are up and in `role`.
    fn in_role(&self, ids: &[NodeId], role: Role) -> Vec<NodeId> {
        ids.iter()
            .copied()
            .filter(|id| {
                self.nodes[id]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == role)
            })
            .collect()
    }

    fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.rng.range(0, items.len() as u64) as usize])
        }
    }

    fn percent(&mut self, p: u64) -> bool {
        self.rng.range(0, 100) < p
    }

    /// The live node that believes it leads in the highest term, if any.
    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raft.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    fn highest_committed(&self) -> LogIndex {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(LogIndex(0))
    }

    // ----- carrying out actions ----------------------------------------------------------------

    fn send(&mut self, msg: Message) {
        if self.steady.is_some() {
            self.send_steady(msg);
            return;
        }
        if self.percent(self.faults.loss_percent) {
            return;
        }
        let copies = if self.percent(self.faults.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.rng.range(1, self.faults.max_delay_ms + 1);
            if self.slow.contains(&(msg.from, msg.to)) || self.percent(self.faults.tail_percent) {
                delay += self.rng.range(30, 150);
            }
            self.network.push(InFlight {
                msg: msg.clone(),
                deliver_at_ms: self.real_ms + delay,
            });
        }
    }

    /// Takes a node's actions and carries out what happens at once: messages go out, writes go
    /// to the disk queue, committed entries are applied, reads are answered.
    fn drive(&mut self, id: NodeId) -> Result<(), String> {
        for _ in 0..64 {
            let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
                return Ok(());
            };
            let actions = raft.take_actions();
            if actions.is_empty() {
                return Ok(());
            }
            let batch = self.nodes.get_mut(&id).unwrap().contract.took(&actions);
            let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
                return Ok(());
            };
            let committed = actions
                .committed
                .map(|range| (range, raft.committed_entries(range)));
            for msg in actions.messages {
                self.send(msg);
            }
            if actions.hard_state.is_some()
                || !actions.entries.is_empty()
                || !actions.persisted_messages.is_empty()
                || actions.purge.is_some()
                || !actions.snapshot_writes.is_empty()
            {
                if let Some(first) = actions.entries.first()
                    && first.index
                        <= self.nodes[&id]
                            .disk_entries
                            .last()
                            .map_or(LogIndex(0), |e| e.index)
                {
                    self.stats.truncations += 1;
                }
                self.nodes
                    .get_mut(&id)
                    .unwrap()
                    .pending_writes
                    .push(PendingWrite {
                        batch,
                        purge: actions.purge,
                        hard_state: actions.hard_state,
                        entries: actions.entries,
                        snapshot_writes: actions.snapshot_writes,
                        then_send: actions.persisted_messages,
                    });
            }
            if let Some((range, entries)) = committed {
                if entries.len() as u64 != range.len() {
                    return Err(format!(
                        "{id}: committed range {range:?} not all in the log"
                    ));
                }
                self.apply(id, entries)?;
            }
            for (read, result) in actions.reads {
                if let Ok(index) = result {
                    self.nodes[&id].contract.answering_read(index);
                }
                self.answer_read(id, read, result)?;
            }
            // Duty 8: chunks of the latest snapshot, read at once.
            for read in actions.snapshot_reads {
                let node = self.nodes.get_mut(&id).unwrap();
                let Some((meta, image)) = node.disk_snapshot.clone() else {
                    return Err(format!("{id} asked to read a snapshot it does not hold"));
                };
                let start = usize::try_from(read.offset)
                    .unwrap_or(usize::MAX)
                    .min(image.len());
                let end = start.saturating_add(read.max_bytes).min(image.len());
                let data = image[start..end].to_vec();
                if let Some(raft) = node.raft.as_mut() {
                    raft.snapshot_read(read.to, meta, read.offset, data.into(), end == image.len());
                }
            }
        }
        Ok(())
    }

    /// Node `id` snapshots its state machine at its applied index, durably at once, and
    /// compacts its log, keeping a few entries (or none) before the snapshot.
    fn take_snapshot(&mut self, id: NodeId) -> Result<(), String> {
        let keep = [0, 0, 3, 20][self.rng.range(0, 4) as usize];
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let applied = raft.applied_index();
        let Some(meta) = raft.snapshot_meta(applied) else {
            return Ok(());
        };
        let image = postcard::to_stdvec(&node.applied).map_err(|e| e.to_string())?;
        node.disk_snapshot = Some((meta.clone(), image));
        raft.snapshot_created(meta)
            .map_err(|e| format!("{id}: snapshot refused: {e}"))?;
        let start = raft.compact(LogIndex(applied.0.saturating_sub(keep)));
        self.stats.snapshots += 1;
        self.trace(format_args!(
            "snapshot {id} at {applied}, log start {start:?}"
        ));
        self.drive(id)
    }

    /// The state machine of `id` is now `entries`: it must equal every other state seen at the
    /// same index.
    fn check_state(&mut self, id: NodeId, index: LogIndex, hash: u64) -> Result<(), String> {
        match self.states.get(&index) {
            Some(&known) if known != hash => Err(format!(
                "{id} holds another state at {index} than a node that applied it before"
            )),
            Some(_) => Ok(()),
            None => {
                self.states.insert(index, hash);
                Ok(())
            }
        }
    }

    fn apply(&mut self, id: NodeId, entries: Vec<Entry>) -> Result<(), String> {
        for entry in entries {
            let node = self.nodes.get_mut(&id).unwrap();
            let expected = LogIndex(node.applied.len() as u64 + 1);
            if entry.index != expected {
                return Err(format!(
                    "{id} applied {} where {} was next",
                    entry.index, expected
                ));
            }
            match self.applied.get(&entry.index) {
                Some(other) if *other != entry => {
                    return Err(format!(
                        "State Machine Safety: {id} applied {:?} at {} but {:?} was applied there before",
                        entry.id(),
                        entry.index,
                        other.id()
                    ));
                }
                Some(_) => {}
                None => {
                    self.applied.insert(entry.index, entry.clone());
                }
            }
            node.contract.applying(entry.index);
            node.applied_hash = hash_entry(node.applied_hash, &entry);
            let (index, hash) = (entry.index, node.applied_hash);
            node.applied.push(entry);
            self.check_state(id, index, hash)?;
        }
        let node = self.nodes.get_mut(&id).unwrap();
        let last = LogIndex(node.applied.len() as u64);
        if let Some(raft) = node.raft.as_mut() {
            node.contract.reported_applied(last);
            raft.applied(last);
        }
        Ok(())
    }

    fn answer_read(
        &mut self,
        id: NodeId,
        read: ReadId,
        result: Result<LogIndex, crate::ProtocolError>,
    ) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some((mode, committed_then, forwarded)) = node.open_reads.remove(&read) else {
            return Err(format!("{id} answered read {read:?} that was never asked"));
        };
        if let Ok(index) = result {
            if index < committed_then {
                return Err(format!(
                    "stale read: {id} served {mode:?} read {read:?} at index {index}, but {committed_then} was committed before it was asked"
                ));
            }
            if LogIndex(node.applied.len() as u64) < index {
                return Err(format!("{id} served read at {index} before applying it"));
            }
            self.stats.reads_served += 1;
            self.stats.follower_reads_served += u64::from(forwarded);
        }
        let text = format!("read {read:?} on {id}: {result:?}");
        self.trace(format_args!("{text}"));
        Ok(())
    }

    /// The oldest pending write of `id` becomes durable; then its messages go out.
    fn complete_write(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).unwrap();
        if node.pending_writes.is_empty() {
            return Ok(());
        }
        let write = node.pending_writes.remove(0);
        node.contract.wrote(write.batch);
        if let Some(start) = write.purge {
            // LogStore::purge_prefix.
            if start.index > node.disk_log_start.index {
                let held = node
                    .disk_entries
                    .iter()
                    .any(|e| e.index == start.index && e.term == start.term);
                if held {
                    node.disk_entries.retain(|e| e.index > start.index);
                } else {
                    node.disk_entries.clear();
                }
                node.disk_log_start = start;
            }
        }
        if let Some(hs) = write.hard_state {
            node.disk_hard_state = hs;
        }
        if let Some(first) = write.entries.first() {
            // As a real store, refuse a write that does not join the stored log.
            let disk_last = node
                .disk_entries
                .last()
                .map_or(node.disk_log_start.index, |e| e.index);
            if first.index > disk_last.next() || first.index <= node.disk_log_start.index {
                return Err(format!(
                    "{id}: a write at {} does not join the stored log {}..={disk_last}",
                    first.index,
                    node.disk_log_start.index.next()
                ));
            }
            let keep = (first.index.0 - node.disk_log_start.index.0 - 1) as usize;
            node.disk_entries.truncate(keep);
            node.disk_entries.extend(write.entries.iter().cloned());
        }
        let mut installing = None;
        for chunk in write.snapshot_writes {
            if chunk.offset == 0 {
                node.receiving = Some((chunk.meta.clone(), Vec::new()));
            }
            let Some((meta, image)) = node.receiving.as_mut() else {
                return Err(format!("{id}: a chunk at {} of no image", chunk.offset));
            };
            if *meta != chunk.meta || image.len() as u64 != chunk.offset {
                return Err(format!("{id}: a chunk out of order"));
            }
            image.extend_from_slice(&chunk.data);
            if chunk.last {
                let finished = node.receiving.take();
                if let Some((meta, image)) = finished {
                    if node
                        .disk_snapshot
                        .as_ref()
                        .is_none_or(|(m, _)| m.last.index < meta.last.index)
                    {
                        node.disk_snapshot = Some((meta.clone(), image));
                    }
                    installing = Some(meta);
                }
            }
        }
        if let (Some(last), Some(raft)) = (write.entries.last(), node.raft.as_mut()) {
            node.contract.reported_persisted(last.id());
            raft.persisted(last.id());
        }
        if !write.then_send.is_empty() {
            node.contract.sending_persisted(write.batch);
        }
        for msg in write.then_send {
            self.send(msg);
        }
        if let Some(meta) = installing {
            self.install(id, &meta)?;
        }
        self.drive(id)
    }

    /// Duty 7: restores `id`'s state machine from the stored image of `meta` and reports it.
    fn install(&mut self, id: NodeId, meta: &SnapshotMeta) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some((stored, image)) = node.disk_snapshot.as_ref() else {
            return Err(format!("{id}: installing a snapshot it did not store"));
        };
        if stored != meta {
            return Err(format!(
                "{id}: a newer snapshot than the one received was stored"
            ));
        }
        let restored: Vec<Entry> = postcard::from_bytes(image).map_err(|e| e.to_string())?;
        if restored.len() as u64 != meta.last.index.0 {
            return Err(format!(
                "{id}: image of {} entries for {meta:?}",
                restored.len()
            ));
        }
        let hash = state_hash(&restored);
        node.applied_hash = hash;
        node.applied = restored;
        node.contract.installed(meta.last.index);
        if let Some(raft) = node.raft.as_mut() {
            raft.snapshot_installed(meta)
                .map_err(|e| format!("{id}: install refused: {e}"))?;
        }
        self.stats.snapshots_installed += 1;
        self.trace(format_args!(
            "installed snapshot at {} on {id}",
            meta.last.index
        ));
        self.check_state(id, meta.last.index, hash)
    }

    // ----- one step -----------------------------------------------------------------------------

    fn deliver_one(&mut self) -> Result<bool, String> {
        let due: Vec<usize> = (0..self.network.len())
            .filter(|&i| self.network[i].deliver_at_ms <= self.real_ms)
            .collect();
        let Some(pick) = self.pick(&due) else {
            return Ok(false);
        };
        let InFlight { msg, .. } = self.network.swap_remove(pick);
        if self.blocked.contains(&(msg.from, msg.to)) {
            return Ok(true);
        }
        self.deliver(msg)?;
        Ok(true)
    }

    /// Hands `msg` to its recipient, if it is up, and carries out what follows.
    fn deliver(&mut self, msg: Message) -> Result<(), String> {
        let to = msg.to;
        let now = self.local_now(to);
        let text = format!("deliver {} -> {} {:?}", msg.from, msg.to, msg.body);
        self.trace(format_args!("{text}"));
        if let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) {
            let from = msg.from;
            if let Err(error) = raft.step(now, msg) {
                // Only a message from outside the recipient's membership may be refused (a
                // node removed, or one the recipient's log has not yet seen added).
                let member = raft.membership().is_some_and(|m| m.contains(from));
                if member || !matches!(error, crate::ProtocolError::RejectedMessage(_)) {
                    return Err(format!("valid message refused: {error}"));
                }
            }
            self.drive(to)?;
        }
        Ok(())
    }

    fn advance_time(&mut self, max_ms: u64) -> Result<(), String> {
        self.real_ms += self.rng.range(1, max_ms + 1);
        for id in self.live() {
            let now = self.local_now(id);
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.tick(now);
            }
            self.drive(id)?;
        }
        Ok(())
    }

    fn client_request(&mut self) -> Result<(), String> {
        // Mostly to a node that believes it leads, stale leaders included: that is where a read
        // could wrongly be served.
        let live = self.live();
        let leaders = self.in_role(&live, Role::Leader);
        let pool = if !leaders.is_empty() && self.percent(85) {
            leaders
        } else {
            live
        };
        let Some(target) = self.pick(&pool) else {
            return Ok(());
        };
        let now = self.local_now(target);
        let committed_now = self.highest_committed();
        // 0 = lease read, 1 = linearizable read, 2 = write.
        let read_kind = if self.percent(self.faults.write_percent) {
            2
        } else {
            self.rng.range(0, 2)
        };
        let node = self.nodes.get_mut(&target).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        if read_kind == 0 || read_kind == 1 {
            let mode = if read_kind == 0 {
                ReadMode::Lease
            } else {
                ReadMode::Linearizable
            };
            let id = ReadId(self.next_read);
            self.next_read += 1;
            let lease_before = raft.lease_holds();
            let forwarded = raft.role() != Role::Leader;
            if raft.read(now, id, mode).is_ok() {
                node.open_reads.insert(id, (mode, committed_now, forwarded));
                if mode == ReadMode::Lease && lease_before {
                    self.stats.lease_reads_without_round_trip += 1;
                }
            }
        } else {
            // Mixed sizes: most entries small, some large enough to fill a message alone.
            let padding = [0, 0, 50, 400, 1200][self.rng.range(0, 5) as usize];
            let payload = format!(
                "s{}-p{}{}",
                self.seed,
                self.next_proposal,
                "x".repeat(padding)
            );
            self.next_proposal += 1;
            let node = self.nodes.get_mut(&target).unwrap();
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            let result = raft.propose(Bytes::from(payload.into_bytes()));
            self.check_refusal(target, &result)?;
            if let Err(crate::ProtocolError::UncommittedLimit { .. }) = result {
                self.stats.refused_uncommitted += 1;
            }
        }
        self.trace(format_args!("client request at {target} kind {read_kind}"));
        self.drive(target)
    }

    /// One fault, drawn with weights that favour what stresses leases and elections most: a
    /// leader cut off from part of the cluster while the rest still hears it.
    fn fault(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let roll = self.rng.range(0, 100);
        match roll {
            0..=24 => self.cut_leader_link(&ids),
            25..=34 => {
                // Symmetric partition into two random groups.
                self.blocked.clear();
                let side: Vec<bool> = ids.iter().map(|_| self.rng.range(0, 2) == 0).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if side[i] != side[j] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                self.trace(format_args!("partition {side:?}"));
            }
            35..=42 => {
                if let Some(leader) = self.leader() {
                    self.blocked.clear();
                    for &other in &ids {
                        if other != leader {
                            self.blocked.insert((leader, other));
                            self.blocked.insert((other, leader));
                        }
                    }
                    self.trace(format_args!("isolate leader {leader}"));
                }
            }
            43..=49 => {
                // One-way: a random directed link drops everything.
                if let (Some(a), Some(b)) = (self.pick(&ids), self.pick(&ids))
                    && a != b
                {
                    self.blocked.insert((a, b));
                    self.trace(format_args!("block {a} -> {b}"));
                }
            }
            50..=64 => {
                self.blocked.clear();
                self.slow.clear();
                self.trace(format_args!("heal"));
            }
            65..=71 => {
                // Crash a live node, keeping a majority alive most of the time.
                let live = self.live();
                if (live.len() * 2 > ids.len() + 1 || self.percent(20))
                    && let Some(id) = self.pick(&live)
                {
                    self.crash(id);
                }
            }
            72..=76 => {
                if let Some(leader) = self.leader() {
                    self.crash(leader);
                }
            }
            77..=86 => {
                let down: Vec<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|id| self.nodes[id].raft.is_none())
                    .collect();
                if let Some(id) = self.pick(&down) {
                    self.start_node(id);
                    self.drive(id)?;
                }
            }
            87..=88 => self.wipe()?,
            89..=91 => {
                // Bounce: crash and restart at once, losing every write not yet durable.
                let live = self.live();
                if let Some(id) = self.pick(&live) {
                    self.crash(id);
                    self.start_node(id);
                    self.drive(id)?;
                }
            }
            92..=94 => {
                // A latency spike on one link, both ways, longer than a lease.
                if let (Some(a), Some(b)) = (self.pick(&ids), self.pick(&ids))
                    && a != b
                {
                    self.slow.insert((a, b));
                    self.slow.insert((b, a));
                    self.trace(format_args!("slow {a} <-> {b}"));
                }
            }
            _ => {
                if let Some(leader) = self.leader() {
                    let others: Vec<NodeId> =
                        ids.iter().copied().filter(|&i| i != leader).collect();
                    // Half the time, to a node running a pre-vote if there is one: it has not
                    // heard from this leader for an election timeout, and must still take over.
                    let pre_voting = self.in_role(&others, Role::PreCandidate);
                    let pool = if !pre_voting.is_empty() && self.percent(50) {
                        pre_voting
                    } else {
                        others
                    };
                    if let Some(to) = self.pick(&pool)
                        && self.transfer(leader, to)?
                    {
                        self.stats.transfers += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The leader proposes a random membership change: add a learner (a node outside the
    /// membership), remove one, promote one, remove a voter (itself, sometimes), or replace a
    /// voter with a learner. A refusal must change nothing.
    fn change_membership(&mut self) -> Result<(), String> {
        use crate::MembershipChange;
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let pool: Vec<NodeId> = self.nodes.keys().copied().collect();
        let Some(membership) = self.nodes[&leader]
            .raft
            .as_ref()
            .and_then(|r| r.membership().cloned())
        else {
            return Ok(());
        };
        let outside: Vec<NodeId> = pool
            .iter()
            .copied()
            .filter(|&id| !membership.contains(id))
            .collect();
        let learners: Vec<NodeId> = membership.learners().iter().copied().collect();
        let voters: BTreeSet<NodeId> = membership.voters().clone();
        let voter_list: Vec<NodeId> = voters.iter().copied().collect();
        let change = match self.rng.range(0, 6) {
            0 | 1 => self
                .pick(&outside)
                .map(|id| MembershipChange::AddLearner { id, address: None }),
            2 => self.pick(&learners).map(MembershipChange::RemoveLearner),
            3 => self.pick(&learners).filter(|_| voters.len() < 5).map(|id| {
                let mut next = voters.clone();
                next.insert(id);
                MembershipChange::ChangeVoters(next)
            }),
            4 => {
                // Remove a voter; the leader itself a third of the time.
                let gone = if self.percent(33) {
                    Some(leader)
                } else {
                    self.pick(&voter_list)
                };
                gone.filter(|_| voters.len() > 2 || self.percent(10))
                    .map(|id| {
                        let mut next = voters.clone();
                        next.remove(&id);
                        MembershipChange::ChangeVoters(next)
                    })
            }
            _ => match (self.pick(&voter_list), self.pick(&learners)) {
                (Some(out), Some(learner)) => {
                    let mut next = voters.clone();
                    next.remove(&out);
                    next.insert(learner);
                    Some(MembershipChange::ChangeVoters(next))
                }
                _ => None,
            },
        };
        let Some(change) = change else {
            return Ok(());
        };
        let raft = self.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap();
        let before = (raft.last_log_id(), raft.membership().cloned());
        let result = raft.change_membership(change.clone());
        if result.is_err() && (raft.last_log_id(), raft.membership().cloned()) != before {
            return Err(format!(
                "{leader} refused {change:?} ({result:?}) but changed"
            ));
        }
        if result.is_ok() {
            self.stats.membership_changes += 1;
            if matches!(&change, MembershipChange::ChangeVoters(v) if !v.contains(&leader)) {
                self.stats.leader_removals += 1;
            }
        }
        self.trace(format_args!(
            "membership {leader}: {change:?} -> {result:?}"
        ));
        self.drive(leader)
    }

    /// Asks `leader` to hand leadership to `to` and remembers when the transfer began, on the
    /// leader's clock. Returns whether the leader accepted.
    fn transfer(&mut self, leader: NodeId, to: NodeId) -> Result<bool, String> {
        let now = self.local_now(leader);
        let timeout_ms = self.nodes[&leader].config.election_timeout_min_ms;
        let Some(raft) = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut()) else {
            return Ok(false);
        };
        let term = raft.term();
        let accepted = raft.transfer_leadership(now, to).is_ok();
        if accepted {
            // A second request for the same target leaves the running transfer (and its
            // deadline) alone; one for another target, or after the deadline, starts anew.
            let running = self.transfers.get(&leader).is_some_and(|t| {
                t.term == term && t.target == to && now < t.started_at.plus_ms(timeout_ms)
            });
            if !running {
                self.transfers.insert(
                    leader,
                    TransferStart {
                        term,
                        target: to,
                        started_at: now,
                    },
                );
            }
        }
        self.trace(format_args!("transfer {leader} -> {to}: {accepted}"));
        self.drive(leader)?;
        Ok(accepted)
    }

    /// A leader refuses proposals while it hands leadership over, but a transfer ends or is
    /// abandoned a minimum election timeout after it began (dissertation §3.10): a refusal any
    /// later means the leader is stuck. The margin covers clock drift and tick rounding.
    fn check_refusal(
        &self,
        leader: NodeId,
        result: &Result<EntryId, crate::ProtocolError>,
    ) -> Result<(), String> {
        let node = &self.nodes[&leader];
        if let Err(crate::ProtocolError::UncommittedLimit { .. }) = result {
            // Only a leader with an uncommitted tail may refuse for its size.
            let raft = node.raft.as_ref().ok_or("a stopped node answered")?;
            if raft.last_log_id().index <= raft.commit_index() {
                return Err(format!(
                    "{leader} refused a proposal for its uncommitted tail with nothing uncommitted"
                ));
            }
            return Ok(());
        }
        if !matches!(result, Err(crate::ProtocolError::TransferInProgress)) {
            return Ok(());
        }
        if node.raft.as_ref().is_some_and(Raft::removal_committed) {
            // A leader removed from the voters hands over by a transfer of its own, which ends
            // when it steps down.
            return Ok(());
        }
        let term = node.raft.as_ref().map_or(Term(0), |r| r.term());
        let now = self.local_now(leader);
        let limit_ms = node.config.election_timeout_min_ms + node.config.clock_drift_bound_ms;
        match self.transfers.get(&leader) {
            Some(t) if t.term == term && now.ms_since(t.started_at) <= limit_ms => Ok(()),
            Some(t) if t.term == term => Err(format!(
                "transfer outlived its timeout: {leader} refused a proposal with TransferInProgress {} ms after it began handing {term} to {} (the limit is {limit_ms} ms)",
                now.ms_since(t.started_at),
                t.target
            )),
            _ => Err(format!(
                "{leader} refused a proposal with TransferInProgress in term {term}, but began no transfer in that term"
            )),
        }
    }

    /// Crashes a node and loses its log and snapshot (its hard state survives, so it never
    /// votes twice in a term), then restarts it: it must catch up from a snapshot or the log.
    /// Losing a log is only safe when the node's acknowledgements are not needed: every entry
    /// it holds is also durable on a majority of the other nodes. Only then is it wiped.
    fn wipe(&mut self) -> Result<(), String> {
        let live = self.live();
        let Some(id) = self.pick(&live) else {
            return Ok(());
        };
        // Every set of voters that decides now or may decide later: each half of every
        // membership any node holds, in memory or on disk, and the first voters.
        let mut halves: BTreeSet<BTreeSet<NodeId>> = BTreeSet::from([self.voters.clone()]);
        for node in self.nodes.values() {
            let in_memory = node.raft.as_ref().and_then(|r| r.membership().cloned());
            let on_disk = node.disk_entries.iter().filter_map(|e| match &e.payload {
                crate::Payload::Membership(m) => Some((**m).clone()),
                _ => None,
            });
            let snapshot = node
                .disk_snapshot
                .as_ref()
                .map(|(m, _)| (*m.membership).clone());
            for m in in_memory.into_iter().chain(on_disk).chain(snapshot) {
                halves.insert(m.voters().clone());
                if m.is_joint() {
                    halves.insert(m.outgoing_voters().clone());
                }
            }
        }
        let held = |node: &SimNode, entry: &Entry| {
            node.disk_entries.iter().any(|e| e == entry) || node.disk_log_start.index >= entry.index
        };
        let node = &self.nodes[&id];
        // What it acknowledged: its log, and what its snapshot and log start cover (committed
        // entries, so in the global record).
        let covered_up_to = node
            .disk_snapshot
            .as_ref()
            .map_or(LogIndex(0), |(m, _)| m.last.index)
            .max(node.disk_log_start.index);
        let compacted = self.committed.range(..=covered_up_to).map(|(_, e)| e);
        let covered = compacted
            .chain(node.disk_entries.iter())
            .chain(node.pending_writes.iter().flat_map(|w| w.entries.iter()))
            .all(|entry| {
                halves.iter().all(|half| {
                    let holders = half
                        .iter()
                        .filter(|&&other| other != id && held(&self.nodes[&other], entry))
                        .count();
                    holders > half.len() / 2
                })
            });
        if !covered {
            return Ok(());
        }
        self.crash(id);
        let node = self.nodes.get_mut(&id).unwrap();
        node.disk_entries.clear();
        node.disk_log_start = EntryId::default();
        node.disk_snapshot = None;
        self.stats.wipes += 1;
        self.trace(format_args!("wipe {id}"));
        self.start_node(id);
        self.drive(id)
    }

    /// Cuts the link between the leader and one other node, both ways, leaving every other link
    /// up: a partial partition in which some node hears both sides.
    fn cut_leader_link(&mut self, ids: &[NodeId]) {
        let Some(leader) = self.leader() else { return };
        let others: Vec<NodeId> = ids.iter().copied().filter(|&i| i != leader).collect();
        let Some(other) = self.pick(&others) else {
            return;
        };
        self.blocked.clear();
        self.slow.clear();
        self.blocked.insert((leader, other));
        self.blocked.insert((other, leader));
        self.trace(format_args!("cut {leader} <-> {other}"));
    }

    fn step_once(&mut self) -> Result<(), String> {
        self.step += 1;
        if self.rng.range(0, 1000) < self.faults.fault_per_mille {
            self.fault()?;
            return self.check_invariants();
        }
        if self.churn && self.rng.range(0, 1000) < 8 {
            self.change_membership()?;
            return self.check_invariants();
        }
        // Now and then, crash a leader that has committed entries its own disk does not hold
        // yet: legal (a majority of followers holds them), and the moment a leader that counted
        // itself too early would lose a committed entry (dissertation §10.2.1).
        if self.percent(3)
            && let Some(leader) = self.leader()
        {
            let raft = self.nodes[&leader].raft.as_ref().unwrap();
            if raft.commit_index() > raft.log().persisted {
                self.trace(format_args!("crash {leader} ahead of its disk"));
                self.crash(leader);
                return self.check_invariants();
            }
        }
        match self.rng.range(0, 100) {
            0..=44 => {
                // A few due messages arrive, each picked at random among those due (reordering).
                let burst = self.rng.range(1, 9);
                for _ in 0..burst {
                    if !self.deliver_one()? {
                        break;
                    }
                }
            }
            45..=62 => self.advance_time(10)?,
            63..=64 => {
                let live = self.live();
                if let Some(id) = self.pick(&live) {
                    self.take_snapshot(id)?;
                }
            }
            65..=84 => {
                // The disk finishes some of a node's queued writes, oldest first: often all of
                // them (group commit), sometimes only a few.
                let live = self.live();
                if let Some(id) = self.pick(&live) {
                    let queued = self.nodes[&id].pending_writes.len() as u64;
                    let count = if self.percent(50) {
                        queued
                    } else {
                        self.rng.range(1, queued + 1)
                    };
                    for _ in 0..count {
                        self.complete_write(id)?;
                    }
                }
            }
            _ => self.client_request()?,
        }
        self.check_invariants()
    }

    // ----- invariants ---------------------------------------------------------------------------

    fn check_invariants(&mut self) -> Result<(), String> {
        let live = self.live();
        let mut lease_holders = Vec::new();
        for &id in &live {
            let node = &self.nodes[&id];
            let raft = node.raft.as_ref().unwrap();
            raft.check_invariants();
            // Election Safety.
            if raft.role() == Role::Leader {
                match self.leader_of_term.get(&raft.term()) {
                    Some(&other) if other != id => {
                        return Err(format!(
                            "Election Safety: {id} and {other} both led term {}",
                            raft.term()
                        ));
                    }
                    Some(_) => {}
                    None => {
                        // Leader Completeness, at the moment of election (entries a snapshot
                        // covers are checked through the state at install).
                        let start = raft.log().start.index;
                        for (index, entry) in self.committed.range(start.next()..) {
                            if raft.entry(*index) != Some(entry) {
                                return Err(format!(
                                    "Leader Completeness: new leader {id} of {} lacks committed {:?}",
                                    raft.term(),
                                    entry.id()
                                ));
                            }
                        }
                        self.leader_of_term.insert(raft.term(), id);
                        self.stats.elections += 1;
                    }
                }
                // Leader Append-Only (compaction may drop a prefix, nothing else).
                let log: Vec<EntryId> = raft.log().iter().map(Entry::id).collect();
                if let Some((term, before)) = self.leader_logs.get(&id) {
                    let start = raft.log().start.index;
                    let kept: Vec<EntryId> =
                        before.iter().copied().filter(|e| e.index > start).collect();
                    if *term == raft.term()
                        && (log.len() < kept.len() || log[..kept.len()] != kept[..])
                    {
                        return Err(format!(
                            "Leader Append-Only: {id} changed its log in term {term}"
                        ));
                    }
                }
                self.leader_logs.insert(id, (raft.term(), log));
                if raft.lease_holds() {
                    lease_holders.push(id);
                }
            } else {
                self.leader_logs.remove(&id);
            }
            // Commit never goes back; applied <= committed.
            if raft.commit_index() < node.last_commit {
                return Err(format!(
                    "{id} commit index went back from {} to {}",
                    node.last_commit,
                    raft.commit_index()
                ));
            }
            if raft.applied_index() > raft.commit_index() {
                return Err(format!(
                    "{id} applied {} beyond commit {}",
                    raft.applied_index(),
                    raft.commit_index()
                ));
            }
        }
        if lease_holders.len() > 1 {
            return Err(format!(
                "lease safety: {lease_holders:?} hold a lease at once"
            ));
        }
        // Stronger: while a leader's lease holds, the majority that granted it will not vote, so
        // no node can have been elected in a later term (dissertation §6.4.1).
        if let Some(&holder) = lease_holders.first() {
            let term = self.nodes[&holder]
                .raft
                .as_ref()
                .map_or(Term(0), |r| r.term());
            for &id in &live {
                let raft = self.nodes[&id].raft.as_ref().unwrap();
                if raft.role() == Role::Leader && raft.term() > term {
                    return Err(format!(
                        "lease safety: {holder} holds a lease in {term} while {id} leads {}",
                        raft.term()
                    ));
                }
            }
        }
        // State Machine Safety at commit: committed entries never change.
        for &id in &live {
            let node = self.nodes.get_mut(&id).unwrap();
            let raft = node.raft.as_ref().unwrap();
            let commit = raft.commit_index();
            let mut index = node.checked_commit.max(raft.log().start.index).next();
            while index <= commit {
                let Some(entry) = raft.entry(index) else {
                    return Err(format!("{id} committed {index} beyond its log"));
                };
                match self.committed.get(&index) {
                    Some(known) if known != entry => {
                        return Err(format!(
                            "State Machine Safety: {id} committed {:?} at {index}, but {:?} was committed there",
                            entry.id(),
                            known.id()
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(index, entry.clone());
                        self.stats.commits += 1;
                    }
                }
                index = index.next();
            }
            node.checked_commit = commit;
            node.last_commit = commit;
        }
        // Log Matching, for every pair of live nodes.
        for (i, &a) in live.iter().enumerate() {
            for &b in &live[i + 1..] {
                let ra = self.nodes[&a].raft.as_ref().unwrap();
                let rb = self.nodes[&b].raft.as_ref().unwrap();
                let last = ra.last_log_id().index.min(rb.last_log_id().index);
                let floor = ra.log().start.index.max(rb.log().start.index);
                let mut index = last;
                while index > floor {
                    let (ea, eb) = (ra.entry(index).unwrap(), rb.entry(index).unwrap());
                    if ea.term == eb.term {
                        let mut k = index;
                        while k > floor {
                            if ra.entry(k) != rb.entry(k) {
                                return Err(format!(
                                    "Log Matching: {a} and {b} agree on {index} (term {}) but differ at {k}",
                                    ea.term
                                ));
                            }
                            k = k.prev();
                        }
                        break;
                    }
                    index = index.prev();
                }
            }
        }
        Ok(())
    }

    // ----- whole runs ---------------------------------------------------------------------------

    /// Heals everything and runs until a leader has committed a fresh proposal.
    fn check_liveness(&mut self) -> Result<(), String> {
        self.blocked.clear();
        self.slow.clear();
        self.faults.loss_percent = 0;
        self.faults.duplicate_percent = 0;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.raft.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.start_node(id);
        }
        self.trace(format_args!("liveness phase"));
        let mut proposal: Option<(NodeId, EntryId)> = None;
        for _ in 0..LIVENESS_STEPS {
            self.step += 1;
            // Every write completes, every due message arrives, then time moves on.
            for id in self.live() {
                while !self.nodes[&id].pending_writes.is_empty() {
                    self.complete_write(id)?;
                }
            }
            while self.deliver_one()? {}
            self.advance_time(5)?;
            self.check_invariants()?;
            if let Some((leader, entry)) = proposal {
                let raft = self.nodes[&leader].raft.as_ref().unwrap();
                if raft.role() != Role::Leader || raft.term() != entry.term {
                    proposal = None; // that leader is gone: propose to the next one
                } else if raft.commit_index() >= entry.index {
                    if raft.entry(entry.index).map(Entry::id) == Some(entry) {
                        return Ok(());
                    }
                    proposal = None; // lost in a change of leader: propose again
                }
            }
            if proposal.is_none()
                && let Some(leader) = self.leader()
            {
                let raft = self.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap();
                let result = raft.propose(Bytes::from_static(b"liveness"));
                if std::env::var_os("RAFT_SIM_TRACE").is_some() {
                    eprintln!("liveness propose: {result:?}");
                }
                self.check_refusal(leader, &result)?;
                if let Ok(entry) = result {
                    proposal = Some((leader, entry));
                }
                self.drive(leader)?;
            }
        }
        Err(format!(
            "liveness: no proposal committed within {LIVENESS_STEPS} steps after healing"
        ))
    }

    pub(crate) fn run(&mut self, steps: u64) -> Result<(), String> {
        for _ in 0..steps {
            self.step_once()?;
        }
        self.check_liveness()
    }

    /// The failure report: seed, step, every node, and the command that replays the run
    /// (`test` names the test function that runs it).
    pub(crate) fn describe_failure(&self, error: &str, test: &str) -> String {
        let mut nodes = String::new();
        for (id, node) in &self.nodes {
            match &node.raft {
                Some(r) => {
                    let _ = write!(
                        nodes,
                        "\n  {id}: {:?} {} leader {:?} last {:?} commit {} applied {} pending writes {}",
                        r.role(),
                        r.term(),
                        r.leader(),
                        r.last_log_id(),
                        r.commit_index(),
                        r.applied_index(),
                        node.pending_writes.len()
                    );
                }
                None => {
                    let _ = write!(nodes, "\n  {id}: down");
                }
            }
        }
        format!(
            "simulation failed: seed {} at step {} ({} ms): {error}{nodes}\n  replay: RAFT_SIM_SEED={} cargo test -p raft-core {test} -- --nocapture  (RAFT_SIM_TRACE=1 prints every event)",
            self.seed, self.step, self.real_ms, self.seed
        )
    }
}

/// The test function that runs the fault-phase simulation, for replay commands.
const FAULT_TEST: &str = "simulated_clusters_keep_every_invariant";

/// Runs one seed; returns the failure description if it fails (including a panic inside).
pub(crate) fn run_seed(seed: u64, steps: u64) -> Result<(u64, Stats), String> {
    catch_panic(seed, FAULT_TEST, || {
        let mut sim = Sim::new(seed);
        match sim.run(steps) {
            Ok(()) => Ok((sim.trace_hash, sim.stats)),
            Err(e) => Err(sim.describe_failure(&e, FAULT_TEST)),
        }
    })
}

/// Runs `run`, turning a panic inside it into a failure description with the replay command.
fn catch_panic(
    seed: u64,
    test: &str,
    run: impl FnOnce() -> Result<(u64, Stats), String> + std::panic::UnwindSafe,
) -> Result<(u64, Stats), String> {
    match std::panic::catch_unwind(run) {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!(
                "simulation panicked: seed {seed}: {text}\n  replay: RAFT_SIM_SEED={seed} cargo test -p raft-core {test} -- --nocapture"
            ))
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `seeds` seeds starting at `first` on every core; returns failures and summed stats.
fn run_many(
    first: u64,
    seeds: u64,
    run: impl Fn(u64) -> Result<(u64, Stats), String> + Sync,
) -> (Vec<String>, Stats) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let run = &run;
    let results: Vec<(Vec<String>, Stats)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut total = Stats::default();
                    let mut seed = first + w;
                    while seed < first + seeds {
                        match run(seed) {
                            Ok((_, s)) => total.add(&s),
                            Err(e) => failures.push(e),
                        }
                        seed += workers;
                    }
                    (failures, total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    let mut stats = Stats::default();
    for (f, s) in results {
        failures.extend(f);
        stats.add(&s);
    }
    failures.sort();
    (failures, stats)
}

/// Lists every failing seed, one line each, and panics with the first few in full.
fn report(failures: &[String], seeds: u64) {
    for failure in failures {
        eprintln!("{}", failure.lines().next().unwrap_or_default());
    }
    if !failures.is_empty() {
        panic!(
            "{} of {seeds} seeds failed; first ones:\n{}",
            failures.len(),
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn simulated_clusters_keep_every_invariant() {
    let steps = env_u64("RAFT_SIM_STEPS").unwrap_or(FAULT_STEPS);
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        match run_seed(seed, steps) {
            Ok((hash, stats)) => eprintln!("seed {seed}: ok, trace hash {hash:016x}, {stats:?}"),
            Err(e) => panic!("{e}"),
        }
        return;
    }
    let seeds = env_u64("RAFT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let (failures, stats) = run_many(0, seeds, |seed| run_seed(seed, steps));
    eprintln!(
        "simulated {seeds} seeds x {steps} steps in {:.1?}: {} failures; {stats:?}",
        started.elapsed(),
        failures.len()
    );
    report(&failures, seeds);
    // The runs must exercise what they claim to check.
    assert!(stats.elections >= seeds, "too few elections: {stats:?}");
    assert!(
        stats.commits > 0 && stats.reads_served > 0 && stats.crashes > 0 && stats.transfers > 0,
        "{stats:?}"
    );
    assert!(
        stats.lease_reads_without_round_trip > 0 && stats.truncations > 0,
        "{stats:?}"
    );
    assert!(
        stats.follower_reads_served > 0 && stats.refused_uncommitted > 0,
        "{stats:?}"
    );
    assert!(
        stats.snapshots > 0 && stats.snapshots_installed > 0 && stats.wipes > 0,
        "{stats:?}"
    );
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [1, 2, 3, 77] {
        let a = run_seed(seed, FAULT_STEPS).unwrap();
        let b = run_seed(seed, FAULT_STEPS).unwrap();
        assert_eq!(a.0, b.0, "seed {seed} diverged");
    }
    assert_ne!(
        run_seed(1, FAULT_STEPS).unwrap().0,
        run_seed(2, FAULT_STEPS).unwrap().0
    );
}
