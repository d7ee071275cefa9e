//! Turmoil simulations of whole clusters: the real node, the real TCP transport over
//! `turmoil::net`, the key-value state machine, concurrent clients, and a nemesis.
//!
//! One seed and one [`Scenario`](crate::cluster_sim::Scenario) decide the run: turmoil's network (latency, loss), the
//! nemesis' faults and their timing, and every client's choices. A run records:
//!
//! * a client [`History`](crate::linearizability::History) of puts, deletes, compare-and-swaps
//!   and linearizable or lease reads, with their call and return times, checked by raft-sim's
//!   linearizability checker against the key-value model of [`crate::linearizability`]. An
//!   error counts as the node's API documents it: a refusal (`NotLeader`,
//!   `NotEnoughReplicas`, `TransferInProgress`, `TooStale`, `InvalidArgument`) had no effect;
//!   a `Timeout`, `Shutdown` or `Storage` failure may or may not have;
//! * read-your-writes probes: after a write to a key only it writes, a client reads the key from
//!   a random node with `Consistency::AtLeast(token)` and must see its write;
//! * bounded-staleness reads (`Consistency::BoundedStaleness(d)`, random node, `d` of
//!   100–1000 ms): the applied index a read reports must reach every write whose acknowledgement
//!   reached its client more than `d` before the read's answer;
//! * every lease read (when, which node, its term) and every election (when, which term), so that
//!   a lease read served after a later term's leader was elected is caught;
//! * every leadership transfer a leader accepted: a write refused with `TransferInProgress`
//!   later than a minimum election timeout (plus 100 ms of slack) after its leader's
//!   latest transfer started is caught;
//! * on a healthy network ([`Scenario::Steady`](crate::cluster_sim::Scenario::Steady), [`Scenario::SteadyTransfers`](crate::cluster_sim::Scenario::SteadyTransfers)): every term any
//!   node entered after the first leader's, which must be the win of a transfer's target within
//!   its timeout; and every transfer to a target the leader had just heard from, which must
//!   complete within that timeout;
//! * whether, once the faults stop, a leader is elected and a write succeeds within a bound;
//! * every write acknowledged with `Ack::Quorum` (its index, term and command), and every
//!   command any node applied, by index ([`Applied`](crate::kv::Applied)). Once the run is over every host is
//!   crashed and restarted to read its stores back instead of running its node; each
//!   acknowledged write must then be on a majority of them: in the log at its index with its
//!   term and command, or covered by the latest snapshot, whose image must be the map the
//!   applied commands up to its last index make. No two nodes (or incarnations of one) may have
//!   applied different commands at one index, and the command applied at an acknowledged
//!   write's index must be that write's.
//!
//! The random nemesis ([`Scenario::Faults`](crate::cluster_sim::Scenario::Faults)) partitions the cluster (majority/minority,
//! one-way, leader isolated), holds and releases links, adds latency spikes and message loss
//! (`fail_rate`), crashes and restarts nodes, and asks the leader to transfer leadership, at
//! once or right after the target was cut off from it for longer than an election timeout
//! (when the target is likely running a pre-vote); a node's
//! [`MemLogStore`](raft_storage::MemLogStore) outlives its crashes, like a disk. The
//! divergent-tails nemesis ([`Scenario::DivergentTails`](crate::cluster_sim::Scenario::DivergentTails)) cuts each new leader off from all but
//! one follower while clients keep writing to it.
//!
//! Every scenario's nodes take a snapshot every few dozen to a couple of hundred applied entries
//! and keep at most a few entries before it ([`SimConfig::snapshot_every`](crate::cluster_sim::SimConfig::snapshot_every),
//! [`SimConfig::snapshot_keep_entries`](crate::cluster_sim::SimConfig::snapshot_keep_entries)), and send snapshots in chunks of a few dozen bytes
//! ([`SimConfig::snapshot_chunk_bytes`](crate::cluster_sim::SimConfig::snapshot_chunk_bytes)), so the log is compacted many times in a run, a node
//! restarts from a snapshot and the log after it, and a lagging follower is sent a snapshot of
//! several chunks over TCP. The catch-up nemesis ([`Scenario::SnapshotCatchUp`](crate::cluster_sim::Scenario::SnapshotCatchUp)) makes sure of
//! the last: it cuts one follower off until every other node has compacted past the follower's
//! last entry, and shuts a follower down and restarts it with empty stores; each time, a write
//! acknowledged after the follower came back must then be readable on it (`AtLeast`) within
//! [`CATCH_UP_MS`](crate::cluster_sim::CATCH_UP_MS). A run also counts the snapshots it saw taken, sent and installed (see
//! [`SimOutcome`](crate::cluster_sim::SimOutcome)).
//!
//! Where the nodes keep their logs and snapshots is [`SimConfig::storage`](crate::cluster_sim::SimConfig::storage): in memory, kept by
//! the harness across crashes ([`Storage::Memory`](crate::cluster_sim::Storage::Memory), every scenario but one), or in the durable
//! file stores on the host's simulated filesystem ([`Storage::SimulatedDisk`](crate::cluster_sim::Storage::SimulatedDisk): turmoil's
//! `unstable-fs`, through raft-storage's `turmoil` feature), opened by the host's software each
//! time it starts, so that `sim.crash` loses what the stores had not synced. Emptying a node's
//! stores (the catch-up scenario) replaces them with new ones in memory, and removes every file
//! under `/raft` (durably) on the simulated disk, when the host restarts. The disk-crash nemesis
//! ([`Scenario::DiskCrashes`](crate::cluster_sim::Scenario::DiskCrashes)) crashes hosts at random points while clients write
//! heavily and the nodes snapshot every few dozen entries into small log segments, and restarts
//! them on what their disks kept. The stores do their simulated I/O inline on the simulation's
//! thread, so a run stays reproducible from its seed. The log store writes at once and syncs
//! a few simulated milliseconds later, so a crash can fall between a write and its sync: it
//! then keeps a random prefix, in 64-byte blocks, of what was written (a torn write, which
//! recovery must cut off), and loses what a store left unsynced (a snapshot being received
//! chunk by chunk, or anything a store acknowledged without syncing it).

use crate::kv::{Applied, KvCommand, KvResponse, KvStore};
use crate::linearizability::{History, Operation, Response};
use crate::rng::SplitMix64;
use raft_core::node::{
    Ack, Consistency, Error, LogStore, Node, NodeConfig, NodeHandle, SnapshotReader, SnapshotStore,
    StateMachine, Status,
};
use raft_core::{EntryId, LogIndex, NodeId, Payload, Role, Term};
use raft_net::{Spawner, TcpConfig, TcpTransport, TurmoilNet};
use raft_storage::{
    FileLogOptions, FileLogStore, FileSnapshotStore, MemLogStore, MemSnapshotStore,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const PORT: u16 = 7000;
const CLUSTER_ID: u64 = 0x5eed;
/// The nodes run the default protocol configuration; its election timeout bounds transfers.
const ELECTION_TIMEOUT_MIN_MS: u64 = 150;
const ELECTION_TIMEOUT_MAX_MS: u64 = 300;
const HEARTBEAT_INTERVAL_MS: u64 = 30;
/// How long after a transfer started its leader may still refuse writes with
/// `TransferInProgress`: the transfer is abandoned after a minimum election timeout, and this
/// much more covers the time its request and the refused write spent on the way.
const TRANSFER_SLACK_MS: u64 = 100;
/// How long a follower that came back (healed, or restarted with empty stores) may take to
/// serve a read-your-writes read of a write acknowledged after it came back, snapshot included.
pub const CATCH_UP_MS: u64 = 5_000;
/// The least time a catch-up cut lasts (longer than an election timeout: the follower runs
/// pre-votes while it is cut off) and the most, whether or not the others compacted far enough.
const CUT_MIN_MS: u64 = 400;
const CUT_MAX_MS: u64 = 4_000;
/// How long the catch-up scenario's workload goes on after its last step was checked.
const CATCH_UP_TAIL_MS: u64 = 500;

/// What kind of run a seed gets; each kind has its own test in `tests/sim_cluster.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The random nemesis: every fault kind, one at a time.
    Faults,
    /// Five nodes. Again and again the leader can reach only one follower (or none) while
    /// clients keep writing to it, and the others elect a new leader, which gets the same
    /// treatment: logs grow divergent uncommitted tails that later leaders truncate or commit.
    DivergentTails,
    /// A healthy network (no nemesis) with a steady one-way latency of up to a third of the
    /// minimum election timeout, and many clients in tight loops of writes and linearizable
    /// reads: once a leader is elected, no other term may begin.
    Steady,
    /// As [`Scenario::Steady`], plus leadership transfers to random voters the leader heard
    /// from just before. Every transfer must hand over leadership within its timeout, and no
    /// other term may begin.
    SteadyTransfers,
    /// Followers catching up from snapshots, in a random order: one follower is cut off from
    /// every node (both ways) until every other node has compacted its log past the follower's
    /// last entry, a few snapshot periods on, then healed; and a follower (never the leader) is
    /// shut down, its log and snapshot stores replaced by empty ones, and restarted. Each is
    /// done only while a leader is established and the network is healthy, and nothing else
    /// happens until the follower caught up: a write acknowledged after it came back must be
    /// readable on it with `Consistency::AtLeast` within [`CATCH_UP_MS`].
    SnapshotCatchUp,
    /// The durable stores on turmoil's simulated disk ([`Storage::SimulatedDisk`]), under
    /// write-heavy clients, a snapshot every 20–50 entries and small log segments (so that
    /// snapshots are written and segments purged all the time), while hosts are crashed at
    /// random points, losing what they had not synced, and restarted on what their disk kept:
    /// a random host or the leader every few dozen to a couple of hundred milliseconds, a node
    /// right after it took or installed a snapshot, up to a minority at once, and now and then
    /// every host at once (a power loss), sometimes in the very step a write was acknowledged.
    /// Besides the checks of every run, no acknowledged write may be missing from a majority of
    /// the disks at the end.
    DiskCrashes,
    /// Three voters and two spare hosts that start empty, to join (paper §6): every few
    /// hundred milliseconds the leader is asked to add a learner (with its address), remove
    /// one, promote one, remove a voter
    /// (itself, often) or replace a voter with a learner, while the random nemesis of
    /// [`Scenario::Faults`] partitions, slows and crashes hosts. Besides the checks of every
    /// run, every acknowledged write must be on a majority of the final voters' stores.
    MembershipChurn,
    /// As [`Scenario::Faults`], with every connection in mutual TLS: each node presents a
    /// certificate naming `raft-node-<id>` from a throw-away CA and verifies its peers'.
    /// Halfway through the workload every node's certificate is replaced by one from a second
    /// CA (which the bundle trusts from the start) while the nemesis acts, so connections made
    /// after it present the new certificates.
    MutualTls,
}

/// Where a node's log and snapshots live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// [`MemLogStore`] and [`MemSnapshotStore`], kept by the harness across crashes: a disk
    /// that never loses anything.
    Memory,
    /// [`FileLogStore`] in [`LOG_DIR`] and [`FileSnapshotStore`] in [`SNAPSHOT_DIR`] on the
    /// host's simulated filesystem, opened by the host's software each time it starts: a crash
    /// loses what the stores had not synced.
    SimulatedDisk {
        /// The log's [`FileLogOptions::segment_bytes`]: small, so that purges delete segments.
        segment_bytes: u64,
    },
}

/// The granularity at which a simulated crash tears a write that was not synced: finer than a
/// disk sector, because turmoil tears from the start of each write rather than at sector
/// boundaries of the file, and a group of a few small records is shorter than a sector.
const TORN_WRITE_BLOCK_BYTES: u64 = 64;

/// Where a host keeps its log on its simulated disk ([`Storage::SimulatedDisk`]).
pub const LOG_DIR: &str = "/raft/log";
/// Where a host keeps its snapshots on its simulated disk ([`Storage::SimulatedDisk`]).
pub const SNAPSHOT_DIR: &str = "/raft/snapshots";

impl Scenario {
    /// The test of `tests/sim_cluster.rs` that runs this scenario, for the replay command.
    pub fn test_name(self) -> &'static str {
        match self {
            Scenario::Faults => "clusters_under_faults_stay_linearizable",
            Scenario::DivergentTails => "divergent_tails_stay_linearizable",
            Scenario::Steady => "a_healthy_leader_keeps_its_leadership",
            Scenario::SteadyTransfers => "transfers_in_a_healthy_cluster_complete",
            Scenario::SnapshotCatchUp => "lagging_and_emptied_followers_catch_up_from_snapshots",
            Scenario::DiskCrashes => "crashed_hosts_keep_every_acknowledged_write",
            Scenario::MembershipChurn => "membership_churn_stays_linearizable",
            Scenario::MutualTls => "mutual_tls_clusters_under_faults_stay_linearizable",
        }
    }

    /// Mixed into the seed, so that seed 3 of one scenario is not a copy of another's.
    fn tag(self) -> u64 {
        match self {
            Scenario::Faults => 0,
            Scenario::DivergentTails => 0xD1_0000_0000,
            Scenario::Steady => 0x57_0000_0000,
            Scenario::SteadyTransfers => 0x7F_0000_0000,
            Scenario::SnapshotCatchUp => 0x5C_0000_0000,
            Scenario::DiskCrashes => 0xD5_0000_0000,
            Scenario::MembershipChurn => 0x3C_0000_0000,
            Scenario::MutualTls => 0x71_0000_0000,
        }
    }
}

/// What one simulation run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Decides everything else.
    pub seed: u64,
    /// The kind of run.
    pub scenario: Scenario,
    /// Cluster size (3 or 5): the first voters.
    pub nodes: u64,
    /// Hosts that start empty, to be added ([`Scenario::MembershipChurn`]).
    pub spares: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// How long clients run their workload while the nemesis acts ([`Scenario::SnapshotCatchUp`]:
    /// at most; it ends soon after the nemesis' last step).
    pub workload: Duration,
    /// Keys the clients share (few keys, many conflicts).
    pub shared_keys: u64,
    /// The least one message takes on a link, in milliseconds.
    pub min_latency_ms: u64,
    /// The most one message may take on a link, in milliseconds.
    pub max_latency_ms: u64,
    /// How long a node may take to answer a request before it answers `Error::Timeout`.
    pub request_timeout: Duration,
    /// The nodes' [`NodeConfig::snapshot_every`]: small, so the log is compacted often.
    pub snapshot_every: u64,
    /// The nodes' [`NodeConfig::snapshot_keep_entries`]: small, so a follower a little behind
    /// already needs a snapshot.
    pub snapshot_keep_entries: u64,
    /// The nodes' [`NodeConfig::snapshot_chunk_bytes`]: the key-value images are a few hundred
    /// bytes at most, so chunks of a few dozen bytes make most images several chunks.
    pub snapshot_chunk_bytes: usize,
    /// Where the nodes keep their logs and snapshots.
    pub storage: Storage,
}

impl SimConfig {
    /// The run of `scenario` for `seed`: its size and intensity vary with the seed.
    pub fn for_seed(scenario: Scenario, seed: u64) -> SimConfig {
        let mut rng = SplitMix64::new(seed ^ 0xC0FF_EE00 ^ scenario.tag());
        // The snapshot settings come from a stream of their own, so that the rest of a seed's
        // run is drawn as before they existed.
        let mut snapshot_rng = SplitMix64::new(seed ^ 0x5A4B_5407 ^ scenario.tag());
        let snapshot_every = match scenario {
            // Faster, so the catch-up cut lasts several snapshot periods in a couple of seconds.
            Scenario::SnapshotCatchUp => snapshot_rng.range(20, 100),
            // Snapshot writes and purges all the time, for crashes to land in.
            Scenario::DiskCrashes => snapshot_rng.range(20, 51),
            _ => snapshot_rng.range(20, 200),
        };
        let snapshot_keep_entries = snapshot_rng.range(0, 20);
        let snapshot_chunk_bytes = snapshot_rng.range(16, 160) as usize;
        // The snapshot settings; each scenario below sets every other field.
        let base = SimConfig {
            seed,
            scenario,
            nodes: 3,
            spares: 0,
            clients: 1,
            workload: Duration::ZERO,
            shared_keys: 1,
            min_latency_ms: 1,
            max_latency_ms: 1,
            request_timeout: Duration::from_secs(1),
            snapshot_every,
            snapshot_keep_entries,
            snapshot_chunk_bytes,
            storage: Storage::Memory,
        };
        match scenario {
            Scenario::Faults | Scenario::MutualTls => SimConfig {
                seed,
                scenario,
                nodes: if rng.percent(50) { 3 } else { 5 },
                clients: rng.range(2, 5),
                workload: Duration::from_millis(rng.range(3_000, 6_000)),
                shared_keys: rng.range(2, 5),
                min_latency_ms: 1,
                max_latency_ms: rng.range(2, 15),
                request_timeout: Duration::from_secs(1),
                ..base
            },
            Scenario::DivergentTails => SimConfig {
                seed,
                scenario,
                nodes: 5,
                clients: rng.range(5, 10),
                workload: Duration::from_millis(rng.range(4_000, 7_000)),
                shared_keys: rng.range(2, 4),
                min_latency_ms: 1,
                max_latency_ms: rng.range(2, 10),
                // Long enough that a write outlives several changes of leader before its
                // node answers it: that answer is what the history check judges.
                request_timeout: Duration::from_secs(4),
                ..base
            },
            Scenario::Steady | Scenario::SteadyTransfers => {
                // Up to a third of the minimum election timeout one way, and steady: a
                // message takes between two thirds of the maximum and the maximum.
                let max_latency_ms = rng.range(5, ELECTION_TIMEOUT_MIN_MS / 3 + 1);
                SimConfig {
                    seed,
                    scenario,
                    nodes: if rng.percent(50) { 3 } else { 5 },
                    clients: rng.range(8, 17),
                    workload: Duration::from_millis(rng.range(3_000, 5_000)),
                    shared_keys: 8,
                    min_latency_ms: max_latency_ms * 2 / 3,
                    max_latency_ms,
                    request_timeout: Duration::from_secs(1),
                    ..base
                }
            }
            Scenario::SnapshotCatchUp => SimConfig {
                seed,
                scenario,
                nodes: if rng.percent(50) { 3 } else { 5 },
                clients: rng.range(4, 9),
                // At most: the workload ends CATCH_UP_TAIL_MS after the last step's check. Room
                // for both steps even when the cut lasts CUT_MAX_MS.
                workload: Duration::from_secs(15),
                shared_keys: rng.range(2, 5),
                min_latency_ms: 1,
                max_latency_ms: rng.range(2, 10),
                request_timeout: Duration::from_secs(1),
                ..base
            },
            Scenario::MembershipChurn => SimConfig {
                seed,
                scenario,
                nodes: 3,
                spares: 2,
                clients: rng.range(2, 6),
                workload: Duration::from_millis(rng.range(4_000, 7_000)),
                shared_keys: rng.range(2, 5),
                min_latency_ms: 1,
                max_latency_ms: rng.range(2, 10),
                request_timeout: Duration::from_secs(1),
                ..base
            },
            Scenario::DiskCrashes => SimConfig {
                seed,
                scenario,
                nodes: if rng.percent(50) { 3 } else { 5 },
                clients: rng.range(4, 9),
                workload: Duration::from_millis(rng.range(3_000, 5_000)),
                shared_keys: rng.range(2, 5),
                min_latency_ms: 1,
                max_latency_ms: rng.range(2, 10),
                request_timeout: Duration::from_secs(1),
                storage: Storage::SimulatedDisk {
                    // A segment holds a few dozen to a couple of hundred entries.
                    segment_bytes: rng.range(4_096, 16_385),
                },
                ..base
            },
        }
    }
}

/// What a run observed.
#[derive(Debug, Default)]
pub struct SimOutcome {
    /// Every shared-key operation the clients made.
    pub history: History,
    /// Violations found while running (read-your-writes, lease, liveness).
    pub violations: Vec<String>,
    /// A digest of the history and of every fault: equal seeds must give equal digests.
    pub digest: u64,
    /// The faults applied, in order, for the failure report.
    pub faults: Vec<String>,
    /// Operations that completed successfully.
    pub completed: u64,
    /// Lease reads served by a leader.
    pub lease_reads: u64,
    /// Linearizable and lease reads served by a follower (forwarded to its leader for a read
    /// index); they are in the history like every other read.
    pub follower_reads: u64,
    /// Bounded-staleness reads served (each checked against its bound).
    pub bounded_reads: u64,
    /// Elections seen.
    pub elections: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Times a node's latest snapshot ([`Status::snapshot`]) was seen to move forward: snapshots
    /// taken, and snapshots installed from a leader.
    pub snapshots: u64,
    /// Snapshot transfers leaders reported: a follower in a leader's
    /// [`PeerStatus::snapshot_bytes_sent`](raft_core::node::PeerStatus::snapshot_bytes_sent), counted once per unbroken run of
    /// observations.
    pub snapshot_sends: u64,
    /// Snapshots installed, at most one per transfer seen: within 20 ms of a leader being seen
    /// sending a node a snapshot, the node's latest snapshot moved past the last log index it
    /// had reported, to one no later than the leader's latest when the transfer was first
    /// seen. (A node takes snapshots only of entries it holds, and while a leader sends it a
    /// snapshot it gets no entries from it.)
    pub snapshot_installs: u64,
    /// The largest snapshot image a node reported, in bytes.
    pub largest_snapshot_bytes: u64,
    /// The followers checked for catching up ([`Scenario::SnapshotCatchUp`]), in order.
    pub catch_ups: Vec<CatchUp>,
    /// Hosts crashed by the nemesis (`sim.crash`), each losing what it had not synced under
    /// [`Storage::SimulatedDisk`].
    pub crashes: u64,
    /// Of those, hosts crashed in the step their latest snapshot was seen to move forward
    /// ([`Scenario::DiskCrashes`]).
    pub crashes_after_snapshot: u64,
    /// Times every running host was crashed at once ([`Scenario::DiskCrashes`]).
    pub power_losses: u64,
    /// Of those, the ones in the very step a write was acknowledged
    /// ([`Scenario::DiskCrashes`]).
    pub power_losses_after_ack: u64,
    /// Hosts crashed while a leader was seen sending them a snapshot, its image half written
    /// ([`Scenario::DiskCrashes`]).
    pub crashes_during_snapshot_transfer: u64,
    /// Hosts crashed once the run was over, before their stores were read back for the
    /// durability check (one per node).
    pub final_crashes: u64,
    /// Writes acknowledged with `Ack::Quorum`, each found on a majority of the nodes' stores
    /// at the end (or reported missing in `violations`).
    pub acknowledged_writes: u64,
    /// Membership changes completed ([`Scenario::MembershipChurn`]).
    pub membership_changes: u64,
    /// Of those, changes of voters that removed the leader that made them.
    pub leader_removals: u64,
}

/// How a follower came to be behind, in [`Scenario::SnapshotCatchUp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUpKind {
    /// Cut off from every node, then healed.
    Cut,
    /// Shut down and restarted with empty log and snapshot stores.
    Emptied,
}

/// A follower that came back and caught up, in [`Scenario::SnapshotCatchUp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// How it fell behind.
    pub kind: CatchUpKind,
    /// The follower.
    pub follower: NodeId,
    /// When it came back, every other node's log started after the follower's last entry: no
    /// node could send it the entries it lacked, only a snapshot.
    pub needed_snapshot: bool,
    /// How long after it came back a read-your-writes read on it of a write acknowledged after
    /// that was answered, in milliseconds.
    pub took_ms: u64,
}

/// State shared by hosts, clients and the driver of one run (turmoil runs everything on one
/// thread, so a mutex is never contended).
#[derive(Default)]
struct World {
    handles: BTreeMap<NodeId, NodeHandle<KvStore>>,
    /// Membership changes a leader accepted and completed, and of those, changes of voters
    /// that removed the leader that made them ([`Scenario::MembershipChurn`]).
    membership_changes: u64,
    leader_removals: u64,
    /// The voters once the run settled: whose stores must hold every acknowledged write.
    final_voters: Option<BTreeSet<NodeId>>,
    history: History,
    violations: Vec<String>,
    /// (time ms, node, term) of every lease read served.
    lease_reads: Vec<(u64, NodeId, Term)>,
    follower_reads: u64,
    /// Term → (time ms, leader) of the first sighting of that term's leader.
    elections: BTreeMap<Term, (u64, NodeId)>,
    /// Every `Ack::Quorum` write whose acknowledgement reached its client, in time order, with
    /// the highest index acknowledged so far: what a bounded-staleness read must reflect.
    acks: Vec<Acknowledged>,
    /// Bounded-staleness reads served.
    bounded_reads: u64,
    /// Term → (time ms, node) of the first node seen in that term, whatever its role: a term
    /// that never had a leader is an election that failed.
    terms: BTreeMap<Term, (u64, NodeId)>,
    /// Every leadership transfer a leader accepted, in the order the harness learned of it.
    transfers: Vec<TransferRecord>,
    /// (time ms, node) of every write refused with `TransferInProgress`.
    transfer_refusals: Vec<(u64, NodeId)>,
    /// Set once the workload ends: clients stop.
    finished: bool,
    completed: u64,
    digest: u64,
    /// The stores each host starts from: kept across crashes, like a disk, unless the nemesis
    /// replaces them with empty ones.
    stores: BTreeMap<NodeId, (MemLogStore, MemSnapshotStore)>,
    /// Per node, as last observed: its latest snapshot's last index, and its last log index.
    seen: BTreeMap<NodeId, (Option<LogIndex>, LogIndex)>,
    /// (follower, leader) → the transfer of a snapshot the leader was last seen making to the
    /// follower.
    sending: BTreeMap<(NodeId, NodeId), Sending>,
    snapshots: u64,
    snapshot_sends: u64,
    snapshot_installs: u64,
    largest_snapshot_bytes: u64,
    catch_ups: Vec<CatchUp>,
    /// A catch-up check is running ([`check_catch_up`]).
    checking_catch_up: bool,
    /// Nodes whose stores are to be emptied when their host next starts.
    wipe: BTreeSet<NodeId>,
    /// Every command any node applied, by index.
    applied: Applied,
    /// Every write acknowledged with `Ack::Quorum`, in the order the acknowledgements arrived.
    quorum_acks: Vec<QuorumAck>,
    /// Nodes whose latest snapshot was seen to move forward at the latest step.
    just_snapshotted: Vec<NodeId>,
    /// The run is over: a host that starts reads its stores back into `durable` instead of
    /// running its node.
    auditing: bool,
    /// What each node's stores held once the run was over (or why they could not be read).
    durable: BTreeMap<NodeId, Result<Durable, String>>,
}

/// A write acknowledged with `Ack::Quorum`: its command and where the log holds it.
#[derive(Clone, Debug)]
struct QuorumAck {
    index: LogIndex,
    term: Term,
    command: KvCommand,
    at_ms: u64,
}

/// What a node's stores held once the run was over.
#[derive(Clone, Debug, Default)]
struct Durable {
    /// The entry before the first one the log holds.
    log_start: EntryId,
    /// The log's entries: term, and the command (`None` for a blank entry, or a payload that
    /// is not a command).
    entries: BTreeMap<LogIndex, (Term, Option<KvCommand>)>,
    /// The latest snapshot: the last entry it covers, and its image's map.
    snapshot: Option<(EntryId, BTreeMap<String, String>)>,
}

/// A snapshot transfer a leader was seen making.
#[derive(Clone, Copy, Debug)]
struct Sending {
    /// The leader's latest snapshot when the transfer was first seen: the one it sends, or
    /// (when it took another in between) a later one.
    latest: Option<LogIndex>,
    /// When the leader was last seen sending it.
    seen_ms: u64,
    /// A snapshot the follower installed was put down to this transfer.
    installed: bool,
}

/// A leadership transfer a leader accepted.
#[derive(Clone, Copy, Debug)]
struct TransferRecord {
    leader: NodeId,
    /// The leader's term when it answered.
    term: Term,
    target: NodeId,
    /// When the harness asked for it.
    requested_ms: u64,
    /// When the leader's acceptance reached the harness: the transfer started no later.
    started_ms: u64,
    /// The target was reachable and the network healthy when it was asked for: it must
    /// complete, not merely end.
    must_complete: bool,
}

/// A transfer the nemesis asks for.
#[derive(Clone, Copy, Debug)]
struct TransferRequest {
    leader: NodeId,
    target: NodeId,
    must_complete: bool,
}

/// The acknowledgements up to a time, as bounded-staleness reads need them.
#[derive(Clone, Copy, Debug)]
struct Acknowledged {
    /// When the acknowledgement reached the client.
    at_ms: u64,
    /// The highest index of any write acknowledged so far.
    highest: LogIndex,
    /// When the write at `highest` was acknowledged.
    highest_at_ms: u64,
}

impl World {
    /// Records a write acknowledged with `Ack::Quorum` for the durability check.
    fn quorum_ack(&mut self, index: LogIndex, term: Term, command: KvCommand) {
        // Since the simulation started (`now_ms` counts from the client's start).
        let at_ms =
            turmoil::sim_elapsed().map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.quorum_acks.push(QuorumAck {
            index,
            term,
            command,
            at_ms,
        });
    }

    /// Records that a client received the acknowledgement of a write at `index` at `now`.
    fn acknowledged(&mut self, now: u64, index: LogIndex) {
        let ack = match self.acks.last() {
            Some(last) if last.highest >= index => Acknowledged {
                at_ms: now,
                ..*last
            },
            _ => Acknowledged {
                at_ms: now,
                highest: index,
                highest_at_ms: now,
            },
        };
        self.acks.push(ack);
    }
}

fn lock(world: &Arc<Mutex<World>>) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    u64::try_from(turmoil::elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn mix(digest: &mut u64, text: &str) {
    for byte in text.bytes() {
        *digest = (*digest ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
}

fn host(id: NodeId) -> String {
    format!("n{}", id.0)
}

/// The node believed to lead in the highest term, by the nodes' own status.
fn believed_leader(world: &World) -> Option<NodeHandle<KvStore>> {
    world
        .handles
        .values()
        .filter(|h| h.status().role == Role::Leader)
        .max_by_key(|h| h.status().term)
        .cloned()
}

/// What a host's software needs to start its node.
struct NodeSetup {
    id: NodeId,
    seed: u64,
    peers: Vec<(NodeId, String)>,
    voters: Vec<NodeId>,
    request_timeout: Duration,
    snapshot_every: u64,
    snapshot_keep_entries: u64,
    snapshot_chunk_bytes: usize,
    /// The node's transport TLS ([`Scenario::MutualTls`]).
    tls: Option<raft_net::PeerTls>,
}

/// A host's software: runs its node on `store` and `snapshots` until the host is crashed (a
/// node that stops by itself is a violation), or, once the run is over, reads the stores back
/// into [`World::durable`].
async fn start<LS: LogStore, SS: SnapshotStore>(
    setup: &NodeSetup,
    world: &Arc<Mutex<World>>,
    store: LS,
    snapshots: SS,
) -> turmoil::Result {
    let id = setup.id;
    if lock(world).auditing {
        let durable = read_durable(store, snapshots).await;
        lock(world).durable.insert(id, durable);
        return Ok(());
    }
    let (inbox, inbound) = raft_core::node::inbox(4096);
    let mut tcp = TcpConfig::new(
        id,
        CLUSTER_ID,
        format!("0.0.0.0:{PORT}"),
        setup.peers.clone(),
    );
    tcp.seed = setup.seed ^ id.0;
    tcp.tls = setup.tls.clone();
    let transport = TcpTransport::start(TurmoilNet, tcp, inbox, Spawner::local()).await?;
    let mut node = NodeConfig::new(id, setup.voters.clone());
    node.seed = setup.seed.rotate_left(17) ^ id.0 ^ now_ms();
    node.request_timeout = setup.request_timeout;
    node.snapshot_every = setup.snapshot_every;
    node.snapshot_keep_entries = setup.snapshot_keep_entries;
    node.snapshot_chunk_bytes = setup.snapshot_chunk_bytes;
    let applied = lock(world).applied.clone();
    let (handle, task) = Node::create(
        node,
        crate::kv::recording(id, applied),
        store,
        snapshots,
        transport,
        inbound,
    )
    .await
    .map_err(|e| e.to_string())?;
    lock(world).handles.insert(id, handle.clone());
    task.await;
    // Not crashed (that drops this future): the node stopped, after a storage failure.
    let why = handle.read(Consistency::Lease).await.err();
    let mut world = lock(world);
    world.handles.remove(&id);
    let stopped = format!("{id} stopped by itself at {} ms: {why:?}", now_ms());
    world.violations.push(stopped);
    Ok(())
}

/// Reads back what `store` and `snapshots` hold: the log, and the latest snapshot's image.
async fn read_durable<LS: LogStore, SS: SnapshotStore>(
    mut store: LS,
    mut snapshots: SS,
) -> Result<Durable, String> {
    let recovered = store
        .recover()
        .await
        .map_err(|e| format!("recovering the log: {e}"))?;
    let entries = recovered
        .entries
        .into_iter()
        .map(|entry| {
            let command = match &entry.payload {
                Payload::Command(data) => postcard::from_bytes::<KvCommand>(data).ok(),
                _ => None,
            };
            (entry.index, (entry.term, command))
        })
        .collect();
    let snapshot = match snapshots
        .latest()
        .await
        .map_err(|e| format!("reading the latest snapshot: {e}"))?
    {
        None => None,
        Some(meta) => {
            let mut kv = KvStore::default();
            let mut image = SnapshotReader::new(&mut snapshots, meta.clone(), 4096);
            kv.restore(&meta, &mut image)
                .await
                .map_err(|e| format!("reading the snapshot at {}: {e}", meta.last.index))?;
            Some((meta.last, kv.pairs().clone()))
        }
    };
    Ok(Durable {
        log_start: recovered.log_start,
        entries,
        snapshot,
    })
}

/// Empties the current host's simulated disk for good: every file and directory under
/// `/raft` is removed, deepest first, and each removal is made durable by syncing the
/// directory it was in.
fn wipe_disk() -> std::io::Result<()> {
    use turmoil::fs::shim::std::fs;
    fn remove_under(dir: &std::path::Path) -> std::io::Result<()> {
        let mut paths: Vec<std::path::PathBuf> = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        paths.sort();
        for path in paths {
            if fs::metadata(&path)?.is_dir() {
                remove_under(&path)?;
                fs::remove_dir(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        fs::sync_dir(dir)
    }
    let root = std::path::Path::new("/raft");
    if !fs::exists(root) {
        return Ok(());
    }
    remove_under(root)
}

/// Runs one simulation and returns what it observed. Panics only on a harness error (a host
/// failing to start), never on a protocol violation: those are in the outcome.
pub fn run(config: &SimConfig) -> SimOutcome {
    let mut rng = SplitMix64::new(config.seed ^ config.scenario.tag());
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(config.seed ^ config.scenario.tag())
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(config.min_latency_ms))
        .max_message_latency(Duration::from_millis(config.max_latency_ms))
        .simulation_duration(config.workload + Duration::from_secs(60));
    if let Storage::SimulatedDisk { .. } = config.storage {
        // A crash keeps a random prefix, in whole blocks, of each write not yet synced (a
        // torn write), as a power loss in the middle of a multi-block write would.
        builder.fs().block_size(TORN_WRITE_BLOCK_BYTES);
    }
    let mut sim = builder.build();
    // Every host: the first voters, then the spares that start empty.
    let ids: Vec<NodeId> = (1..=config.nodes + config.spares).map(NodeId).collect();
    let first_voters: Vec<NodeId> = (1..=config.nodes).map(NodeId).collect();
    let world = Arc::new(Mutex::new(World {
        digest: 0xcbf2_9ce4_8422_2325,
        stores: ids
            .iter()
            .map(|&id| (id, (MemLogStore::new(), MemSnapshotStore::new())))
            .collect(),
        ..World::default()
    }));

    let mut certificates =
        (config.scenario == Scenario::MutualTls).then(|| SimCertificates::new(&ids));
    for &id in &ids {
        let world = Arc::clone(&world);
        let setup = Arc::new(NodeSetup {
            id,
            seed: config.seed,
            // Every host knows every other's address, as a deployment's configuration lists
            // its hosts: a node whose log fell behind the change that added its new leader
            // must still accept that leader's connection (the transport admits only the
            // peers it knows). Learning an address from the membership is tested on its own.
            peers: ids
                .iter()
                .filter(|&&p| p != id)
                .map(|&p| (p, format!("{}:{PORT}", host(p))))
                .collect(),
            voters: if first_voters.contains(&id) {
                first_voters.clone()
            } else {
                Vec::new()
            },
            request_timeout: config.request_timeout,
            snapshot_every: config.snapshot_every,
            snapshot_keep_entries: config.snapshot_keep_entries,
            snapshot_chunk_bytes: config.snapshot_chunk_bytes,
            tls: certificates.as_ref().map(|c| c.node(id)),
        });
        let storage = config.storage;
        sim.host(host(id), move || {
            let world = Arc::clone(&world);
            let setup = Arc::clone(&setup);
            async move {
                match storage {
                    Storage::Memory => {
                        // The stores as they are at this (re)start.
                        let (store, snapshots) = {
                            let mut world = lock(&world);
                            if world.wipe.remove(&id) {
                                world
                                    .stores
                                    .insert(id, (MemLogStore::new(), MemSnapshotStore::new()));
                            }
                            world.stores[&id].clone()
                        };
                        start(&setup, &world, store, snapshots).await
                    }
                    Storage::SimulatedDisk { segment_bytes } => {
                        if lock(&world).wipe.remove(&id) {
                            wipe_disk()
                                .map_err(|e| format!("{id} could not empty its disk: {e}"))?;
                        }
                        let options = FileLogOptions::new().segment_bytes(segment_bytes);
                        let store = FileLogStore::open_simulated(LOG_DIR, options)
                            .map_err(|e| format!("{id} could not open its log: {e}"))?;
                        let snapshots = FileSnapshotStore::open_simulated(SNAPSHOT_DIR)
                            .map_err(|e| format!("{id} could not open its snapshots: {e}"))?;
                        start(&setup, &world, store, snapshots).await
                    }
                }
            }
        });
    }

    for client in 1..=config.clients {
        let world = Arc::clone(&world);
        let seed = config.seed ^ (client << 32);
        let keys = config.shared_keys;
        let nodes = ids.clone();
        let scenario = config.scenario;
        sim.client(format!("c{client}"), async move {
            run_client(client, seed, scenario, keys, nodes, world).await;
            Ok(())
        });
    }

    let (transfers, transfer_requests) = tokio::sync::mpsc::unbounded_channel();
    {
        let world = Arc::clone(&world);
        sim.client("transfers", async move {
            run_transfers(transfer_requests, world).await;
            Ok(())
        });
    }
    // Dropped when the faults stop, which ends the task that makes the changes.
    let (changes, change_requests) = tokio::sync::mpsc::unbounded_channel();
    let mut changes = Some(changes);
    if config.scenario == Scenario::MembershipChurn {
        let world = Arc::clone(&world);
        let hosts = ids.clone();
        sim.client("membership", async move {
            run_membership_changes(change_requests, hosts, world).await;
            Ok(())
        });
    }
    let mut next_change_at = 300;
    let mut nemesis = Nemesis::new(
        ids.clone(),
        config.scenario,
        config.max_latency_ms,
        transfers,
    );
    if config.scenario == Scenario::SnapshotCatchUp {
        nemesis.plan_catch_up(&mut rng, config.snapshot_every);
    }
    let mut workload_ms = u64::try_from(config.workload.as_millis()).unwrap_or(u64::MAX);
    let mut healed_at = None;
    let mut liveness: Option<u64> = None;
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(error) => {
                lock(&world)
                    .violations
                    .push(format!("simulation error: {error}"));
                break;
            }
        };
        let now = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        observe(&world, now);
        if now < workload_ms {
            match config.scenario {
                Scenario::Faults => nemesis.maybe_act(&mut sim, &mut rng, &world, now),
                Scenario::MutualTls => {
                    nemesis.maybe_act(&mut sim, &mut rng, &world, now);
                    if let Some(certificates) = &mut certificates
                        && now >= workload_ms / 2
                    {
                        certificates.rotate(&mut lock(&world).violations);
                    }
                }
                Scenario::DivergentTails => nemesis.maybe_divide(&mut sim, &mut rng, &world, now),
                Scenario::Steady => {}
                Scenario::SteadyTransfers => {
                    nemesis.maybe_transfer(&mut rng, &world, now);
                }
                Scenario::SnapshotCatchUp => {
                    nemesis.maybe_catch_up(&mut sim, &mut rng, &world, now);
                    if matches!(nemesis.catch_up, CatchUpStage::Done) {
                        workload_ms = workload_ms.min(now + CATCH_UP_TAIL_MS);
                    }
                }
                Scenario::DiskCrashes => nemesis.maybe_crash(&mut sim, &mut rng, &world, now),
                Scenario::MembershipChurn => {
                    nemesis.maybe_act(&mut sim, &mut rng, &world, now);
                    if now >= next_change_at {
                        next_change_at = now + rng.range(100, 500);
                        if let Some(changes) = &changes {
                            let _ = changes.send((rng.next_u64(), rng.next_u64()));
                        }
                    }
                }
            }
        } else if healed_at.is_none() {
            changes = None;
            nemesis.heal_all(&mut sim);
            lock(&world).finished = true;
            healed_at = Some(now);
            let world = Arc::clone(&world);
            sim.client("liveness", async move {
                check_liveness(world).await;
                Ok(())
            });
        }
        if done {
            liveness = healed_at;
            break;
        }
    }
    let final_crashes = read_back_stores(&mut sim, &world, &ids);
    let mut world = lock(&world);
    check_lease_reads(&mut world);
    check_transfer_refusals(&mut world);
    if matches!(
        config.scenario,
        Scenario::Steady | Scenario::SteadyTransfers
    ) {
        check_stability(&mut world, transfer_completion_ms(config));
    }
    if config.scenario == Scenario::SteadyTransfers {
        check_transfers_complete(&mut world, transfer_completion_ms(config));
    }
    if liveness.is_none() {
        world
            .violations
            .push("the run ended before the faults were healed".into());
    }
    if config.scenario == Scenario::SnapshotCatchUp {
        check_catch_ups(&mut world, &nemesis);
    }
    let voters = match world.final_voters.clone() {
        Some(voters) => voters.into_iter().collect(),
        None if config.scenario == Scenario::MembershipChurn => {
            world
                .violations
                .push("the membership never settled after the faults stopped".into());
            Vec::new()
        }
        None => ids.clone(),
    };
    check_durability(&mut world, &voters);
    let faults = nemesis.log;
    let mut digest = world.digest;
    for fault in &faults {
        mix(&mut digest, fault);
    }
    SimOutcome {
        history: std::mem::take(&mut world.history),
        violations: std::mem::take(&mut world.violations),
        digest,
        faults,
        completed: world.completed,
        lease_reads: world.lease_reads.len() as u64,
        follower_reads: world.follower_reads,
        bounded_reads: world.bounded_reads,
        elections: world.elections.len() as u64,
        transfers: world.transfers.len() as u64,
        snapshots: world.snapshots,
        snapshot_sends: world.snapshot_sends,
        snapshot_installs: world.snapshot_installs,
        largest_snapshot_bytes: world.largest_snapshot_bytes,
        catch_ups: std::mem::take(&mut world.catch_ups),
        crashes: nemesis.crashes,
        crashes_after_snapshot: nemesis.crashes_after_snapshot,
        power_losses: nemesis.power_losses,
        power_losses_after_ack: nemesis.power_losses_after_ack,
        crashes_during_snapshot_transfer: nemesis.crashes_during_snapshot_transfer,
        final_crashes,
        acknowledged_writes: world.quorum_acks.len() as u64,
        membership_changes: world.membership_changes,
        leader_removals: world.leader_removals,
    }
}

/// Once the run is over, crashes every host (so that what its stores had not synced is lost)
/// and restarts it to read its stores back into [`World::durable`] instead of running its node.
/// Returns the number of hosts crashed.
fn read_back_stores(sim: &mut turmoil::Sim<'_>, world: &Arc<Mutex<World>>, ids: &[NodeId]) -> u64 {
    {
        let mut world = lock(world);
        world.auditing = true;
        world.handles.clear();
    }
    for &id in ids {
        sim.crash(host(id));
    }
    for &id in ids {
        sim.bounce(host(id));
    }
    for _ in 0..1_000 {
        if lock(world).durable.len() == ids.len() {
            break;
        }
        if let Err(error) = sim.step() {
            lock(world).violations.push(format!(
                "simulation error while reading the stores back: {error}"
            ));
            break;
        }
    }
    let mut world = lock(world);
    for &id in ids {
        world
            .durable
            .entry(id)
            .or_insert_with(|| Err("its stores were not read back".into()));
    }
    ids.len() as u64
}

/// Every write acknowledged with `Ack::Quorum` must be on a majority of the nodes' stores at
/// the end: in the log (same index, term and command), or covered by the latest snapshot,
/// whose image must then be the map the applied commands up to its last index make. And no two
/// nodes may have applied different commands at one index; the command applied at an
/// acknowledged write's index must be that write's.
fn check_durability(world: &mut World, voters: &[NodeId]) {
    let applied = world.applied.take();
    let mut found: Vec<String> = applied
        .conflicts
        .iter()
        .take(5)
        .map(|c| format!("state machine safety: {c}"))
        .collect();
    if applied.conflicts.len() > 5 {
        found.push(format!(
            "state machine safety: {} more conflicting applies",
            applied.conflicts.len() - 5
        ));
    }
    let mut durable = BTreeMap::new();
    for (&id, read) in &world.durable {
        match read {
            Ok(d) => {
                durable.insert(id, d);
            }
            Err(why) => found.push(format!(
                "durability: {id}'s stores could not be read back: {why}"
            )),
        }
    }
    // Which nodes' snapshots hold the map the applied commands make up to their last index:
    // replayed once, in index order.
    let mut by_last: Vec<(LogIndex, NodeId)> = durable
        .iter()
        .filter_map(|(&id, d)| d.snapshot.as_ref().map(|(last, _)| (last.index, id)))
        .collect();
    by_last.sort();
    let mut snapshot_ok = BTreeSet::new();
    let mut replayed = KvStore::default();
    let mut commands = applied.commands.iter().peekable();
    for (last, id) in by_last {
        while let Some((&index, (command, _))) = commands.next_if(|&(&index, _)| index <= last) {
            replayed.execute(index, command.clone());
        }
        let image = durable[&id].snapshot.as_ref().map(|(_, map)| map);
        if image == Some(replayed.pairs()) {
            snapshot_ok.insert(id);
        } else {
            found.push(format!(
                "durability: {id}'s snapshot at {last} is not the map the commands applied up to {last} make: {image:?} against {:?}",
                replayed.pairs()
            ));
        }
    }
    let majority = voters.len() / 2 + 1;
    let mut missing = Vec::new();
    for ack in &world.quorum_acks {
        match applied.commands.get(&ack.index) {
            Some((command, _)) if *command == ack.command => {}
            other => found.push(format!(
                "durability: {:?} was acknowledged at {} ms at {} in {}, but the command applied there is {other:?}",
                ack.command, ack.at_ms, ack.index, ack.term
            )),
        }
        let holders: Vec<NodeId> = durable
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .filter(|(id, d)| {
                let in_log = d.entries.get(&ack.index).is_some_and(|(term, command)| {
                    *term == ack.term && command.as_ref() == Some(&ack.command)
                });
                let in_snapshot = snapshot_ok.contains(id)
                    && d.snapshot
                        .as_ref()
                        .is_some_and(|(last, _)| last.index >= ack.index);
                in_log || in_snapshot
            })
            .map(|(&id, _)| id)
            .collect();
        if holders.len() < majority {
            missing.push(format!(
                "{:?} at {} in {} (acknowledged at {} ms) only on {holders:?}",
                ack.command, ack.index, ack.term, ack.at_ms
            ));
        }
    }
    if !missing.is_empty() {
        let stores: Vec<String> = durable
            .iter()
            .map(|(id, d)| {
                format!(
                    "{id}: log after {:?} to {:?}, snapshot at {:?}",
                    d.log_start,
                    d.entries.keys().next_back(),
                    d.snapshot.as_ref().map(|(last, _)| last)
                )
            })
            .collect();
        found.push(format!(
            "durability: {} of {} acknowledged writes are not on a majority of the stores ({stores:?}); the first: {:?}",
            missing.len(),
            world.quorum_acks.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    world.violations.extend(found);
}

/// Looks at every running node's status once per step: terms and leaders for the election
/// checks, and snapshots taken, sent and installed for the counts.
fn observe(world: &Arc<Mutex<World>>, now: u64) {
    let mut world = lock(world);
    let statuses: Vec<Status> = world.handles.values().map(|h| h.status()).collect();
    for status in &statuses {
        world.terms.entry(status.term).or_insert((now, status.id));
        if status.role != Role::Leader {
            continue;
        }
        world
            .elections
            .entry(status.term)
            .or_insert((now, status.id));
        let latest = status.snapshot.map(|(index, _)| index);
        for peer in status
            .peers
            .iter()
            .filter(|p| p.snapshot_bytes_sent.is_some())
        {
            let key = (peer.id, status.id);
            match world.sending.get_mut(&key) {
                // Seen at the previous step too: the same transfer.
                Some(sending) if sending.seen_ms + 1 >= now => sending.seen_ms = now,
                _ => {
                    let sending = Sending {
                        latest,
                        seen_ms: now,
                        installed: false,
                    };
                    world.sending.insert(key, sending);
                    world.snapshot_sends += 1;
                }
            }
        }
    }
    world.just_snapshotted.clear();
    for status in &statuses {
        let snapshot = status.snapshot.map(|(index, _)| index);
        let size = status.snapshot.map_or(0, |(_, size)| size);
        world.largest_snapshot_bytes = world.largest_snapshot_bytes.max(size);
        let previous = world
            .seen
            .insert(status.id, (snapshot, status.last_log_index));
        let Some((before, last_before)) = previous else {
            continue;
        };
        let Some(index) = snapshot.filter(|&index| before.is_none_or(|b| b < index)) else {
            continue;
        };
        world.snapshots += 1;
        world.just_snapshotted.push(status.id);
        if index <= last_before {
            continue;
        }
        let transfer = world
            .sending
            .range_mut((status.id, NodeId(0))..=(status.id, NodeId(u64::MAX)))
            .map(|(_, sending)| sending)
            .find(|s| !s.installed && s.seen_ms + 20 >= now && s.latest >= Some(index));
        if let Some(transfer) = transfer {
            transfer.installed = true;
            world.snapshot_installs += 1;
        }
    }
}

/// Where a node's log starts: the entries after this index are the ones it holds.
fn log_start(status: &Status) -> LogIndex {
    LogIndex(status.last_log_index.0.saturating_sub(status.log_entries))
}

/// Whether only a snapshot can bring `follower`, whose last entry is `last`, up to date: every
/// other node of `ids` is running and its log starts after `last`. (A log's start only moves
/// forward while its node runs, and a status a little old understates it.)
fn only_a_snapshot_helps(world: &World, ids: &[NodeId], follower: NodeId, last: LogIndex) -> bool {
    ids.iter().filter(|&&id| id != follower).all(|id| {
        world
            .handles
            .get(id)
            .is_some_and(|h| log_start(&h.status()) > last)
    })
}

/// The leader of a healthy cluster: every node of `up` is running and reports the same term and
/// leader, which has led for half a second and heard from every other node of `up` within the
/// last 100 ms.
fn established_leader(world: &World, up: &[NodeId], now: u64) -> Option<NodeId> {
    let statuses: Vec<Status> = up
        .iter()
        .map(|id| world.handles.get(id).map(|h| h.status()))
        .collect::<Option<_>>()?;
    let first = statuses.first()?;
    let (term, leader) = (first.term, first.leader?);
    if statuses
        .iter()
        .any(|s| s.term != term || s.leader != Some(leader))
    {
        return None;
    }
    let &(elected_at, _) = world.elections.get(&term)?;
    let leading = statuses.iter().find(|s| s.id == leader)?;
    let heard_from_all = leading
        .peers
        .iter()
        .filter(|p| up.contains(&p.id))
        .all(|p| p.since_last_ack_ms.is_some_and(|ms| ms <= 100));
    (leading.role == Role::Leader && now >= elected_at + 500 && heard_from_all).then_some(leader)
}

/// How long a transfer may take to complete in a run: the minimum election timeout, the slack,
/// and four one-way trips (the target's catch-up, TimeoutNow, and the vote round).
fn transfer_completion_ms(config: &SimConfig) -> u64 {
    ELECTION_TIMEOUT_MIN_MS + TRANSFER_SLACK_MS + 4 * config.max_latency_ms
}

/// Whether `node`'s membership leaves it out: a leader removed from the voters hands
/// leadership over by a transfer of its own (refusing writes with `TransferInProgress`), which
/// the protocol bounds by stepping down at the transfer's deadline. (Its status is read after
/// the refusal, when it may have stepped down already.)
fn handing_over_after_removal(node: &NodeHandle<KvStore>) -> bool {
    let status = node.status();
    status.membership.is_some_and(|m| !m.is_voter(status.id))
}

/// A leader refuses writes with `TransferInProgress` only while a transfer it started is under
/// way, and a transfer ends or is abandoned within a minimum election timeout (§3.10).
fn check_transfer_refusals(world: &mut World) {
    let mut found = Vec::new();
    for &(at, node) in &world.transfer_refusals {
        let latest = world
            .transfers
            .iter()
            .filter(|t| t.leader == node && t.requested_ms <= at)
            .max_by_key(|t| t.requested_ms);
        match latest {
            Some(t) if at <= t.started_ms + ELECTION_TIMEOUT_MIN_MS + TRANSFER_SLACK_MS => {}
            Some(t) => found.push(format!(
                "transfer: {node} refused a write with TransferInProgress at {at} ms, {} ms after its transfer to {} started ({} at {} ms); a transfer ends within {ELECTION_TIMEOUT_MIN_MS} ms",
                at - t.started_ms,
                t.target,
                t.term,
                t.started_ms
            )),
            None => found.push(format!(
                "transfer: {node} refused a write with TransferInProgress at {at} ms, but no transfer was started on it"
            )),
        }
    }
    world.violations.extend(found);
}

/// On a healthy network, once a leader is elected no other term may begin, except by a
/// transfer the harness asked for, won by its target within `completion_ms`.
fn check_stability(world: &mut World, completion_ms: u64) {
    let Some((&first_term, &(first_at, first_leader))) = world.elections.iter().next() else {
        world
            .violations
            .push("stability: no leader was ever elected".into());
        return;
    };
    let mut found = Vec::new();
    for (&term, &(seen_at, seen_on)) in world.terms.range(Term(first_term.0 + 1)..) {
        let election = world.elections.get(&term).copied();
        let by_transfer = election.is_some_and(|(at, leader)| {
            world.transfers.iter().any(|t| {
                t.target == leader
                    && t.term < term
                    && t.requested_ms <= at
                    && at <= t.started_ms + completion_ms
            })
        });
        if by_transfer {
            continue;
        }
        let what = match election {
            Some((at, leader)) => format!("{leader} became leader of {term} at {at} ms"),
            None => format!("{seen_on} entered {term} at {seen_at} ms and it never had a leader"),
        };
        let failovers: Vec<String> = world
            .handles
            .values()
            .flat_map(|h| {
                let id = h.id();
                h.status()
                    .failovers
                    .into_iter()
                    .filter(|f| f.term == term)
                    .map(move |f| format!("{id} saw {:?} after {:?}", f.trigger, f.old_leader))
            })
            .collect();
        found.push(format!(
            "stability: {what} on a healthy network, not by a transfer (first leader {first_leader} of {first_term} at {first_at} ms) {failovers:?}"
        ));
    }
    world.violations.extend(found);
}

/// A transfer to a healthy target must complete: the target leads a later term within
/// `completion_ms` of the transfer's start.
fn check_transfers_complete(world: &mut World, completion_ms: u64) {
    let mut found = Vec::new();
    for t in world.transfers.iter().filter(|t| t.must_complete) {
        let won = world
            .elections
            .range(Term(t.term.0 + 1)..)
            .any(|(_, &(at, leader))| leader == t.target && at <= t.started_ms + completion_ms);
        if !won {
            let next = world
                .elections
                .range(Term(t.term.0 + 1)..)
                .next()
                .map(|(term, (at, leader))| format!("next leader {leader} of {term} at {at} ms"))
                .unwrap_or_else(|| "no later leader".into());
            found.push(format!(
                "transfer: {} (leader of {}) accepted a transfer to {} at {} ms, which did not become leader within {completion_ms} ms ({next})",
                t.leader, t.term, t.target, t.started_ms
            ));
        }
    }
    world.violations.extend(found);
}

/// Carries out the transfers the nemesis asks for, through the leader's handle, until the
/// nemesis drops its sender.
async fn run_transfers(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<TransferRequest>,
    world: Arc<Mutex<World>>,
) {
    while let Some(request) = requests.recv().await {
        let leader = lock(&world).handles.get(&request.leader).cloned();
        let Some(leader) = leader else { continue };
        let requested_ms = now_ms();
        let result = leader.transfer_leadership(request.target).await;
        let now = now_ms();
        let mut world = lock(&world);
        mix(
            &mut world.digest,
            &format!(
                "transfer {} -> {} {result:?} {now}",
                request.leader, request.target
            ),
        );
        if result.is_ok() {
            world.transfers.push(TransferRecord {
                leader: request.leader,
                term: leader.status().term,
                target: request.target,
                requested_ms,
                started_ms: now,
                must_complete: request.must_complete,
            });
        }
    }
}

/// A lease read is served on the strength of a lease; no later term may have had a leader
/// before it (dissertation §6.4.1).
fn check_lease_reads(world: &mut World) {
    let mut found = Vec::new();
    for &(at, node, term) in &world.lease_reads {
        if let Some((&later, &(elected, leader))) = world
            .elections
            .range(Term(term.0 + 1)..)
            .find(|(_, (t, _))| *t < at)
        {
            found.push(format!(
                "lease read on {node} in {term} at {at} ms, but {leader} was elected leader of {later} at {elected} ms"
            ));
        }
    }
    world.violations.extend(found);
}

/// After healing, some leader must accept and commit a write within ten seconds.
async fn check_liveness(world: Arc<Mutex<World>>) {
    let started = now_ms();
    loop {
        let target = believed_leader(&lock(&world));
        if let Some(leader) = target {
            let command = KvCommand::Put {
                key: "liveness".into(),
                value: "ok".into(),
            };
            if let Ok(written) = leader.propose(command.clone(), Ack::Quorum).await {
                lock(&world).quorum_ack(written.index, written.term, command);
                settle_membership(&world, started).await;
                return;
            }
        }
        if now_ms() - started > 10_000 {
            lock(&world)
                .violations
                .push("liveness: no write committed within 10 s of healing".into());
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (until 10 s after `started`) for a leader whose membership is committed and not
/// joint, and records its voters as the run's final ones.
async fn settle_membership(world: &Arc<Mutex<World>>, started: u64) {
    while now_ms() - started <= 10_000 {
        let leader = believed_leader(&lock(world));
        if let Some(status) = leader.map(|l| l.status())
            && let Some(membership) = &status.membership
            && !membership.is_joint()
            && status.membership_index <= status.commit_index
        {
            lock(world).final_voters = Some(membership.voters().clone());
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Carries out the membership changes the churn nemesis asks for, on the node believed to
/// lead: each request is two random numbers, the kind of change and whom it concerns, judged
/// against the leader's membership when it is made.
async fn run_membership_changes(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    hosts: Vec<NodeId>,
    world: Arc<Mutex<World>>,
) {
    while let Some((kind, who)) = requests.recv().await {
        let leader = believed_leader(&lock(&world));
        let Some(leader) = leader else { continue };
        let Some(membership) = leader.status().membership else {
            continue;
        };
        let pick = |from: Vec<NodeId>| from.get((who as usize) % from.len().max(1)).copied();
        let outside: Vec<NodeId> = hosts
            .iter()
            .copied()
            .filter(|&id| !membership.contains(id))
            .collect();
        let learners: Vec<NodeId> = membership.learners().iter().copied().collect();
        let voters = membership.voters().clone();
        let me = leader.id();
        let (what, result) = match kind % 6 {
            0 | 1 => match pick(outside) {
                Some(id) => (
                    format!("add learner {id}"),
                    leader
                        .add_learner(id, Some(format!("{}:{PORT}", host(id))), None)
                        .await,
                ),
                None => continue,
            },
            2 => match pick(learners) {
                Some(id) => (
                    format!("remove learner {id}"),
                    leader.remove_learner(id).await,
                ),
                None => continue,
            },
            3 => match pick(learners).filter(|_| voters.len() < 5) {
                Some(id) => {
                    let mut next = voters.clone();
                    next.insert(id);
                    (
                        format!("promote {id}"),
                        leader.change_membership(next).await,
                    )
                }
                None => continue,
            },
            4 => {
                // Remove a voter, the leader itself half the time; never below two voters.
                let gone = if who % 2 == 0 {
                    me
                } else {
                    pick(voters.iter().copied().collect()).unwrap_or(me)
                };
                if voters.len() <= 2 {
                    continue;
                }
                let mut next = voters.clone();
                next.remove(&gone);
                (
                    format!("remove voter {gone}"),
                    leader.change_membership(next).await,
                )
            }
            _ => match (pick(voters.iter().copied().collect()), pick(learners)) {
                (Some(out), Some(learner)) => {
                    let mut next = voters.clone();
                    next.remove(&out);
                    next.insert(learner);
                    (
                        format!("replace {out} with {learner}"),
                        leader.change_membership(next).await,
                    )
                }
                _ => continue,
            },
        };
        let now = now_ms();
        let mut world = lock(&world);
        mix(
            &mut world.digest,
            &format!("{now} ms: {me}: {what}: {result:?}"),
        );
        if result.is_ok() {
            world.membership_changes += 1;
            if what == format!("remove voter {me}") || what.starts_with(&format!("replace {me} ")) {
                world.leader_removals += 1;
            }
        }
    }
}

/// Checks that `follower`, which came back at `since` (healed, or restarted with empty stores),
/// caught up: a write acknowledged after that, to a key nobody else writes, must be readable on
/// it with `Consistency::AtLeast` within [`CATCH_UP_MS`] of `since`.
async fn check_catch_up(
    world: Arc<Mutex<World>>,
    probe: u64,
    kind: CatchUpKind,
    follower: NodeId,
    needed_snapshot: bool,
) {
    let since = now_ms();
    let key = format!("catch-up-{probe}");
    let value = format!("{kind:?} {follower} at {since}");
    let mut result = Err("no write was acknowledged".to_string());
    let mut written = None;
    while now_ms() <= since + CATCH_UP_MS {
        let handle = match written {
            None => believed_leader(&lock(&world)),
            Some(_) => lock(&world).handles.get(&follower).cloned(),
        };
        let Some(handle) = handle else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some(index) = written else {
            let command = KvCommand::Put {
                key: key.clone(),
                value: value.clone(),
            };
            // A retry after a timeout writes the same value again: the read must see it either way.
            match handle.propose(command.clone(), Ack::Quorum).await {
                Ok(outcome) => {
                    lock(&world).quorum_ack(outcome.index, outcome.term, command);
                    written = Some(outcome.index);
                    result = Err(format!("not read at {} on {follower}", outcome.index));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            continue;
        };
        match handle.query(Consistency::AtLeast(index), key.clone()).await {
            Ok(read) if read.response.as_deref() == Some(value.as_str()) => {
                result = Ok(now_ms() - since);
                break;
            }
            Ok(read) => {
                result = Err(format!(
                    "{follower} read {:?} at applied {} after {value:?} was written at {index}",
                    read.response, read.applied_index
                ));
                break;
            }
            Err(error) => {
                result = Err(format!("{follower} answered {error} to a read at {index}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let mut world = lock(&world);
    mix(
        &mut world.digest,
        &format!("catch-up {kind:?} {follower} {needed_snapshot} {result:?}"),
    );
    match result {
        Ok(took_ms) => world.catch_ups.push(CatchUp {
            kind,
            follower,
            needed_snapshot,
            took_ms,
        }),
        Err(why) => world.violations.push(format!(
            "catch-up: {follower} ({kind:?}) did not catch up within {CATCH_UP_MS} ms of coming back at {since} ms: {why}"
        )),
    }
    world.checking_catch_up = false;
}

/// The catch-up scenario's plan must have run to its end, and each follower must have needed a
/// snapshot when it came back (else the run did not test what it is for).
fn check_catch_ups(world: &mut World, nemesis: &Nemesis) {
    // The last check ends before the simulation does (it is one of its clients).
    let finished = matches!(
        nemesis.catch_up,
        CatchUpStage::Checking | CatchUpStage::Done
    );
    if !nemesis.catch_up_plan.is_empty() || !finished {
        world.violations.push(format!(
            "catch-up: the run ended at {:?} with {:?} still to do",
            nemesis.catch_up, nemesis.catch_up_plan
        ));
    }
    let unneeded: Vec<String> = world
        .catch_ups
        .iter()
        .filter(|c| !c.needed_snapshot)
        .map(|c| format!("{c:?}"))
        .collect();
    if !unneeded.is_empty() {
        world.violations.push(format!(
            "catch-up: followers caught up without needing a snapshot (the others had not compacted past them): {unneeded:?}"
        ));
    }
}

/// One client: random operations on the shared keys, plus read-your-writes probes on its own
/// key, until the workload ends; then a final linearizable read of every shared key.
async fn run_client(
    client: u64,
    seed: u64,
    scenario: Scenario,
    keys: u64,
    nodes: Vec<NodeId>,
    world: Arc<Mutex<World>>,
) {
    let mut rng = SplitMix64::new(seed);
    let mut counter = 0u64;
    let own_key = format!("own-{client}");
    let mut hint: Option<NodeId> = None;
    loop {
        if lock(&world).finished {
            break;
        }
        // Mostly the believed leader (or the last hint), sometimes any node: stale leaders get
        // requests too, which is where a wrong answer would come from.
        let target = {
            let world = lock(&world);
            let any = rng
                .pick(&nodes)
                .and_then(|id| world.handles.get(&id).cloned());
            let hinted = hint.and_then(|id| world.handles.get(&id).cloned());
            if rng.percent(25) {
                any
            } else {
                hinted.or_else(|| believed_leader(&world)).or(any)
            }
        };
        let Some(node) = target else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let key = format!("k{}", rng.range(0, keys));
        counter += 1;
        let value = format!("c{client}-{counter}");
        let outcome = match Op::pick(scenario, rng.range(0, 100)) {
            Op::Put => write(&world, client, &node, KvCommand::Put { key, value }).await,
            Op::Delete => write(&world, client, &node, KvCommand::Delete { key }).await,
            Op::Cas => {
                let expect = if rng.percent(30) {
                    None
                } else {
                    Some(format!(
                        "c{}-{}",
                        rng.range(1, 5),
                        rng.range(1, counter + 1)
                    ))
                };
                let command = KvCommand::Cas {
                    key,
                    expect,
                    new: value,
                };
                write(&world, client, &node, command).await
            }
            Op::Linearizable => read(&world, client, &node, key, Consistency::Linearizable).await,
            Op::Lease => read(&world, client, &node, key, Consistency::Lease).await,
            Op::Bounded => {
                let reader = {
                    let world = lock(&world);
                    rng.pick(&nodes)
                        .and_then(|id| world.handles.get(&id).cloned())
                };
                let bound = Duration::from_millis(rng.range(100, 1_000));
                match reader {
                    Some(reader) => bounded_read(&world, &reader, key, bound).await,
                    None => Ok(()),
                }
            }
            Op::ReadYourWrite => {
                read_your_write(&world, &mut rng, &node, &own_key, &value, &nodes).await
            }
        };
        match outcome {
            Err(Error::NotLeader { leader_hint }) => {
                hint = leader_hint;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => {
                hint = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(()) => {}
        }
    }
    // Final reads, once the cluster is healed: they pin down every key's last value, so a lost
    // acknowledged write shows up as a violation.
    for k in 0..keys {
        let key = format!("k{k}");
        for _ in 0..200 {
            let leader = believed_leader(&lock(&world));
            if let Some(leader) = leader
                && read(
                    &world,
                    client,
                    &leader,
                    key.clone(),
                    Consistency::Linearizable,
                )
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a client does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Delete,
    Cas,
    Linearizable,
    Lease,
    /// A `Consistency::BoundedStaleness` read from a random node (not in the history: it need
    /// not be linearizable; [`bounded_read`] checks it against its bound instead).
    Bounded,
    /// A write to the client's own key, then an `AtLeast` read of it from a random node.
    ReadYourWrite,
}

impl Op {
    /// The operation a roll of 0..100 gives in `scenario`: divergent tails weigh writes
    /// (many writes pending on a cut-off leader are what diverge).
    fn pick(scenario: Scenario, roll: u64) -> Op {
        let weights: [(u64, Op); 6] = match scenario {
            Scenario::Faults | Scenario::MembershipChurn | Scenario::MutualTls => [
                (28, Op::Put),
                (5, Op::Delete),
                (14, Op::Cas),
                (14, Op::Linearizable),
                (17, Op::Lease),
                (10, Op::Bounded),
            ],
            // Mostly writes: tails to diverge, and a log that grows and is compacted quickly.
            Scenario::DivergentTails | Scenario::SnapshotCatchUp => [
                (40, Op::Put),
                (5, Op::Delete),
                (15, Op::Cas),
                (15, Op::Linearizable),
                (10, Op::Lease),
                (10, Op::Bounded),
            ],
            // Heavier still on writes (the rest are read-your-writes probes, writes too).
            Scenario::DiskCrashes => [
                (45, Op::Put),
                (5, Op::Delete),
                (15, Op::Cas),
                (10, Op::Linearizable),
                (5, Op::Lease),
                (5, Op::Bounded),
            ],
            // Heavy ReadIndex load beside the writes.
            Scenario::Steady | Scenario::SteadyTransfers => [
                (35, Op::Put),
                (0, Op::Delete),
                (5, Op::Cas),
                (40, Op::Linearizable),
                (5, Op::Lease),
                (10, Op::Bounded),
            ],
        };
        let mut below = 0;
        for (weight, op) in weights {
            below += weight;
            if roll < below {
                return op;
            }
        }
        Op::ReadYourWrite
    }
}

/// Whether an error proves the request had no effect, as `raft_core::node::Error` documents
/// each variant: a refusal (not the leader, too few replicas, a transfer under way, too stale,
/// a bad argument) promises nothing happened; a timeout, a shutdown or a storage failure may
/// come after the write took effect.
fn definitely_failed(error: &Error) -> bool {
    match error {
        Error::NotLeader { .. }
        | Error::NotEnoughReplicas { .. }
        | Error::TransferInProgress
        | Error::TooStale { .. }
        | Error::InvalidArgument(_) => true,
        Error::Timeout | Error::Shutdown | Error::Storage { .. } => false,
        // `InvalidConfig` comes only from starting a node; a variant added later counts as
        // "may or may not" until its documentation says otherwise.
        _ => false,
    }
}

async fn write(
    world: &Arc<Mutex<World>>,
    client: u64,
    node: &NodeHandle<KvStore>,
    command: KvCommand,
) -> Result<(), Error> {
    let operation = match &command {
        KvCommand::Put { key, value } => Operation::put(key.clone(), value.clone()),
        KvCommand::Delete { key } => Operation::delete(key.clone()),
        KvCommand::Cas { key, expect, new } => {
            Operation::cas(key.clone(), expect.as_deref(), new.clone())
        }
        other => panic!("the simulation writes only puts, deletes and swaps, not {other:?}"),
    };
    let id = lock(world)
        .history
        .call(client, operation.clone(), now_ms());
    let result = node.propose(command.clone(), Ack::Quorum).await;
    let mut world = lock(world);
    let now = now_ms();
    match result {
        Ok(outcome) => {
            world.quorum_ack(outcome.index, outcome.term, command);
            let response = match outcome.response {
                Some(KvResponse::Cas { swapped, current }) => Response::Cas { swapped, current },
                _ => Response::Done,
            };
            mix(
                &mut world.digest,
                &format!("{client} {operation} {response} {now}"),
            );
            world.history.complete(id, response, now);
            world.completed += 1;
            world.acknowledged(now, outcome.index);
            Ok(())
        }
        Err(error) => {
            mix(
                &mut world.digest,
                &format!("{client} {operation} {error} {now}"),
            );
            if error == Error::TransferInProgress && !handing_over_after_removal(node) {
                world.transfer_refusals.push((now, node.id()));
            }
            if definitely_failed(&error) {
                world.history.fail(id);
            } else {
                // A timeout, or the node died under it: it may or may not have happened.
                world.history.time_out(id);
            }
            Err(error)
        }
    }
}

async fn read(
    world: &Arc<Mutex<World>>,
    client: u64,
    node: &NodeHandle<KvStore>,
    key: String,
    consistency: Consistency,
) -> Result<(), Error> {
    let id = lock(world)
        .history
        .call(client, Operation::get(key.clone()), now_ms());
    let result = node.query(consistency, key.clone()).await;
    let mut world = lock(world);
    let now = now_ms();
    match result {
        Ok(outcome) => {
            mix(
                &mut world.digest,
                &format!("{client} get {key} {:?} {now}", outcome.response),
            );
            world
                .history
                .complete(id, Response::Value(outcome.response), now);
            world.completed += 1;
            let status = node.status();
            if status.role != Role::Leader {
                // Served with a read index its leader confirmed (from its lease, for a lease
                // read): the lease check below is about leaders serving from their own lease.
                world.follower_reads += 1;
            } else if consistency == Consistency::Lease {
                world.lease_reads.push((now, status.id, status.term));
            }
            Ok(())
        }
        Err(error) => {
            mix(
                &mut world.digest,
                &format!("{client} get {key} {error} {now}"),
            );
            if definitely_failed(&error) {
                world.history.fail(id);
            } else {
                world.history.time_out(id);
            }
            Err(error)
        }
    }
}

/// A bounded-staleness read of `key` from `node`. Whatever it returns must reflect every write
/// acknowledged more than `bound` before the answer arrived: its applied index must reach the
/// index of each such write.
async fn bounded_read(
    world: &Arc<Mutex<World>>,
    node: &NodeHandle<KvStore>,
    key: String,
    bound: Duration,
) -> Result<(), Error> {
    let result = node
        .query(Consistency::BoundedStaleness(bound), key.clone())
        .await;
    let mut world = lock(world);
    let now = now_ms();
    let bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(outcome) => {
            mix(
                &mut world.digest,
                &format!(
                    "bounded {} get {key} {:?} {now}",
                    node.id(),
                    outcome.response
                ),
            );
            world.bounded_reads += 1;
            let cutoff = now.saturating_sub(bound_ms);
            let before = world.acks.partition_point(|ack| ack.at_ms < cutoff);
            if let Some(required) = before.checked_sub(1).map(|i| world.acks[i])
                && outcome.applied_index < required.highest
            {
                let violation = format!(
                    "bounded staleness: {} answered a read with a bound of {bound_ms} ms at {now} ms from applied index {}, but {} was acknowledged at {} ms, {} ms before",
                    node.id(),
                    outcome.applied_index,
                    required.highest,
                    required.highest_at_ms,
                    now - required.highest_at_ms
                );
                world.violations.push(violation);
            }
            Ok(())
        }
        Err(error) => {
            mix(
                &mut world.digest,
                &format!("bounded {} get {key} {error} {now}", node.id()),
            );
            Err(error)
        }
    }
}

/// Writes `value` to the client's own key, then reads it back from a random node at the
/// write's index: it must see the write (or, for a timed-out write, nothing is asserted).
async fn read_your_write(
    world: &Arc<Mutex<World>>,
    rng: &mut SplitMix64,
    node: &NodeHandle<KvStore>,
    own_key: &str,
    value: &str,
    nodes: &[NodeId],
) -> Result<(), Error> {
    let command = KvCommand::Put {
        key: own_key.to_string(),
        value: value.to_string(),
    };
    let written = match node.propose(command.clone(), Ack::Quorum).await {
        Ok(written) => {
            lock(world).quorum_ack(written.index, written.term, command);
            written
        }
        Err(error) => {
            if error == Error::TransferInProgress && !handing_over_after_removal(node) {
                lock(world).transfer_refusals.push((now_ms(), node.id()));
            }
            return Err(error);
        }
    };
    lock(world).acknowledged(now_ms(), written.index);
    let reader = {
        let world = lock(world);
        rng.pick(nodes)
            .and_then(|id| world.handles.get(&id).cloned())
    };
    let Some(reader) = reader else { return Ok(()) };
    match reader
        .query(Consistency::AtLeast(written.index), own_key.to_string())
        .await
    {
        Ok(read) if read.response.as_deref() != Some(value) => {
            lock(world).violations.push(format!(
                "read-your-writes: {} wrote {own_key}={value} at {:?}, {} read {:?} at applied {:?}",
                node.id(),
                written.index,
                reader.id(),
                read.response,
                read.applied_index
            ));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The fault injector: one fault at a time, each lasting a random while.
struct Nemesis {
    ids: Vec<NodeId>,
    next_at: u64,
    /// Pairs partitioned (both ways or one way) by the current fault.
    partitioned: BTreeSet<(String, String)>,
    held: BTreeSet<(String, String)>,
    slowed: BTreeSet<(String, String)>,
    lossy: bool,
    crashed: BTreeSet<NodeId>,
    /// Divergent tails: the leader (term, id) the current cut is aimed at.
    aimed_at: Option<(Term, NodeId)>,
    /// Divergent tails: a leader noticed, and when the cut may be aimed at it.
    noticed: Option<((Term, NodeId), u64)>,
    /// Divergent tails: the leader of the previous cut, a likely follower of the next one.
    previous_leader: Option<NodeId>,
    /// Divergent tails: when the current cut ends with a heal.
    cut_ends_at: u64,
    /// Where transfers are asked for; dropped when the faults stop.
    transfers: Option<tokio::sync::mpsc::UnboundedSender<TransferRequest>>,
    /// A transfer (leader, target) to ask for as soon as the current cut is repaired.
    transfer_after_repair: Option<(NodeId, NodeId)>,
    /// The most one message takes, for the healthy transfers' check of the target.
    max_latency_ms: u64,
    /// Catch-up: the steps still to take, in order.
    catch_up_plan: Vec<CatchUpKind>,
    /// Catch-up: where the current step stands.
    catch_up: CatchUpStage,
    /// Catch-up: the nodes' `snapshot_every`, to measure a cut in snapshot periods.
    snapshot_every: u64,
    /// Catch-up checks started (names their clients).
    catch_up_checks: u64,
    /// Disk crashes: when each crashed host is to be restarted.
    restart_at: BTreeMap<NodeId, u64>,
    /// Hosts crashed (`sim.crash`).
    crashes: u64,
    /// Disk crashes: hosts crashed in the step their snapshot was seen to move forward.
    crashes_after_snapshot: u64,
    /// Disk crashes: times every running host was crashed at once.
    power_losses: u64,
    /// Disk crashes: of those, the ones in the step a write was acknowledged.
    power_losses_after_ack: u64,
    /// Disk crashes: acknowledged writes seen so far (to notice a new one).
    acknowledged_seen: usize,
    /// Disk crashes: hosts crashed while a leader was sending them a snapshot.
    crashes_during_snapshot_transfer: u64,
    log: Vec<String>,
}

/// Where a step of the catch-up nemesis stands.
#[derive(Clone, Copy, Debug)]
enum CatchUpStage {
    /// The next step begins at `at`, once a leader is established.
    Waiting { at: u64 },
    /// `follower` is cut off from every node since `since`.
    Cut { follower: NodeId, since: u64 },
    /// `follower` is down, with empty stores, until `restart_at` (or later, until a leader is
    /// established among the others).
    Down { follower: NodeId, restart_at: u64 },
    /// [`check_catch_up`] is running.
    Checking,
    /// Every step was taken.
    Done,
}

/// A catch-up cut is healed once the leader appended this many snapshot periods' worth of
/// entries after the follower's last one, and every other node compacted past that entry (or
/// after [`CUT_MAX_MS`]).
const CUT_SNAPSHOT_PERIODS: u64 = 3;

impl Nemesis {
    fn new(
        ids: Vec<NodeId>,
        scenario: Scenario,
        max_latency_ms: u64,
        transfers: tokio::sync::mpsc::UnboundedSender<TransferRequest>,
    ) -> Nemesis {
        Nemesis {
            ids,
            next_at: match scenario {
                Scenario::Faults
                | Scenario::DiskCrashes
                | Scenario::MembershipChurn
                | Scenario::MutualTls => 500,
                Scenario::DivergentTails | Scenario::Steady | Scenario::SnapshotCatchUp => 0,
                Scenario::SteadyTransfers => 800,
            },
            transfers: Some(transfers),
            transfer_after_repair: None,
            max_latency_ms,
            catch_up_plan: Vec::new(),
            catch_up: CatchUpStage::Done,
            snapshot_every: 0,
            catch_up_checks: 0,
            restart_at: BTreeMap::new(),
            crashes: 0,
            crashes_after_snapshot: 0,
            power_losses: 0,
            power_losses_after_ack: 0,
            acknowledged_seen: 0,
            crashes_during_snapshot_transfer: 0,
            aimed_at: None,
            noticed: None,
            previous_leader: None,
            cut_ends_at: 0,
            partitioned: BTreeSet::new(),
            held: BTreeSet::new(),
            slowed: BTreeSet::new(),
            lossy: false,
            crashed: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    fn maybe_act(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut SplitMix64,
        world: &Arc<Mutex<World>>,
        now: u64,
    ) {
        if now < self.next_at {
            return;
        }
        self.next_at = now + rng.range(150, 1200);
        self.undo(sim, rng.percent(70));
        if let Some((leader, target)) = self.transfer_after_repair.take() {
            self.request_transfer(leader, target, false);
            self.log
                .push(format!("{now} ms: repaired, transfer {leader} -> {target}"));
        }
        let leader = believed_leader(&lock(world)).map(|h| h.id());
        let names: Vec<String> = self.ids.iter().map(|&id| host(id)).collect();
        let target = leader.and_then(|leader| {
            let others: Vec<NodeId> = self.ids.iter().copied().filter(|&o| o != leader).collect();
            rng.pick(&others)
        });
        let fault = match rng.range(0, 11) {
            0 | 1 => {
                // Majority / minority split.
                let mut side: Vec<bool> = names.iter().map(|_| rng.percent(50)).collect();
                if side.iter().all(|&s| s) || side.iter().all(|&s| !s) {
                    side[0] = !side[0];
                }
                for (i, a) in names.iter().enumerate() {
                    for (j, b) in names.iter().enumerate() {
                        if i < j && side[i] != side[j] {
                            sim.partition(a.as_str(), b.as_str());
                            self.partitioned.insert((a.clone(), b.clone()));
                        }
                    }
                }
                format!("partition {side:?}")
            }
            2 => {
                let Some(leader) = leader else { return };
                let a = host(leader);
                for b in names.iter().filter(|b| **b != a) {
                    sim.partition(a.as_str(), b.as_str());
                    self.partitioned.insert((a.clone(), b.clone()));
                }
                format!("isolate leader {a}")
            }
            3 => {
                let (Some(a), Some(b)) = (rng.pick(&names), rng.pick(&names)) else {
                    return;
                };
                if a == b {
                    return;
                }
                sim.partition_oneway(a.as_str(), b.as_str());
                self.partitioned.insert((a.clone(), b.clone()));
                format!("one-way {a} -> {b}")
            }
            4 => {
                let (Some(a), Some(b)) = (rng.pick(&names), rng.pick(&names)) else {
                    return;
                };
                if a == b {
                    return;
                }
                sim.hold(a.as_str(), b.as_str());
                self.held.insert((a.clone(), b.clone()));
                format!("hold {a} <-> {b}")
            }
            5 => {
                let Some(a) = leader.map(host).or_else(|| rng.pick(&names)) else {
                    return;
                };
                let spike = Duration::from_millis(rng.range(50, 400));
                for b in names.iter().filter(|b| **b != a) {
                    sim.set_link_max_message_latency(a.as_str(), b.as_str(), spike);
                    self.slowed.insert((a.clone(), b.clone()));
                }
                format!("latency spike {spike:?} at {a}")
            }
            6 => {
                sim.set_fail_rate(0.05);
                self.lossy = true;
                "5% message loss".to_string()
            }
            7 => {
                let Some(id) = rng.pick(&self.ids) else {
                    return;
                };
                if self.crashed.insert(id) {
                    lock(world).handles.remove(&id);
                    sim.crash(host(id));
                    self.crashes += 1;
                }
                format!("crash {}", host(id))
            }
            9 => {
                let (Some(leader), Some(target)) = (leader, target) else {
                    return;
                };
                self.request_transfer(leader, target, false);
                format!("transfer {leader} -> {target}")
            }
            10 => {
                // Long enough for the target to start a pre-vote; the transfer follows the
                // repair at once.
                let (Some(leader), Some(target)) = (leader, target) else {
                    return;
                };
                sim.partition(host(leader).as_str(), host(target).as_str());
                self.partitioned.insert((host(leader), host(target)));
                self.transfer_after_repair = Some((leader, target));
                self.next_at = now + ELECTION_TIMEOUT_MAX_MS + rng.range(20, 200);
                format!("cut {leader} <-> {target}, then transfer to it")
            }
            _ => {
                let Some(id) = leader.or_else(|| rng.pick(&self.ids)) else {
                    return;
                };
                lock(world).handles.remove(&id);
                sim.bounce(host(id));
                self.crashed.remove(&id);
                format!("restart {}", host(id))
            }
        };
        self.log.push(format!("{now} ms: {fault}"));
    }

    /// The divergent-tails nemesis. Whenever a new leader appears (at once, or after a few
    /// milliseconds in which some of its entries get out), it is cut off from every node but
    /// one follower (often the previous leader; sometimes none), and that follower is, half the
    /// time, cut off from the rest too. Clients keep writing to the cut-off leader, whose entries
    /// reach at most that follower, while the rest elect the next leader, which is cut off in
    /// turn. A cut that lasts long enough for no new leader to appear ends with a heal.
    fn maybe_divide(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut SplitMix64,
        world: &Arc<Mutex<World>>,
        now: u64,
    ) {
        if self.aimed_at.is_some() && now >= self.cut_ends_at {
            self.undo(sim, false);
            self.aimed_at = None;
            self.log.push(format!("{now} ms: heal"));
        }
        let Some(leader) = believed_leader(&lock(world)).map(|h| {
            let status = h.status();
            (status.term, status.id)
        }) else {
            return;
        };
        if self.aimed_at == Some(leader) {
            return;
        }
        match self.noticed {
            Some((noticed, at)) if noticed == leader => {
                if now < at {
                    return;
                }
            }
            _ => {
                let delay = if rng.percent(60) { 0 } else { rng.range(5, 60) };
                self.noticed = Some((leader, now + delay));
                if delay > 0 {
                    return;
                }
            }
        }
        self.undo(sim, false);
        let (term, id) = leader;
        let others: Vec<NodeId> = self.ids.iter().copied().filter(|&o| o != id).collect();
        let follower = match self.previous_leader.filter(|p| others.contains(p)) {
            Some(previous) if rng.percent(40) => Some(previous),
            _ if rng.percent(20) => None,
            _ => rng.pick(&others),
        };
        let mut cut = |sim: &mut turmoil::Sim<'_>, a: NodeId, b: NodeId| {
            sim.partition(host(a).as_str(), host(b).as_str());
            self.partitioned.insert((host(a), host(b)));
        };
        for &other in others.iter().filter(|&&o| Some(o) != follower) {
            cut(sim, id, other);
        }
        let follower_alone = follower.is_some() && rng.percent(50);
        if let Some(follower) = follower.filter(|_| follower_alone) {
            for &other in others.iter().filter(|&&o| o != follower) {
                cut(sim, follower, other);
            }
        }
        self.previous_leader = Some(id);
        self.aimed_at = Some(leader);
        self.cut_ends_at = now + rng.range(300, 900);
        let reach = match follower {
            Some(f) if follower_alone => format!("only {f}, which reaches no one else"),
            Some(f) => format!("only {f}"),
            None => "no one".to_string(),
        };
        self.log
            .push(format!("{now} ms: leader {id} of {term} reaches {reach}"));
    }

    /// Healthy transfers: every second or so the believed leader is asked to hand over to a
    /// random other voter. The leader must have heard from the target within a heartbeat
    /// interval and two trips, so that the transfer has no excuse not to complete.
    fn maybe_transfer(&mut self, rng: &mut SplitMix64, world: &Arc<Mutex<World>>, now: u64) {
        if now < self.next_at {
            return;
        }
        self.next_at = now + 20;
        let Some(leader) = believed_leader(&lock(world)) else {
            return;
        };
        let others: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|&o| o != leader.id())
            .collect();
        let Some(target) = rng.pick(&others) else {
            return;
        };
        let heard_within = HEARTBEAT_INTERVAL_MS + 2 * self.max_latency_ms;
        let target_healthy =
            leader.status().peers.iter().any(|p| {
                p.id == target && p.since_last_ack_ms.is_some_and(|ms| ms <= heard_within)
            });
        if !target_healthy {
            return;
        }
        self.request_transfer(leader.id(), target, true);
        self.log
            .push(format!("{now} ms: transfer {} -> {target}", leader.id()));
        self.next_at = now + rng.range(800, 1_500);
    }

    /// Catch-up: both steps, in a random order, the first a little after the start.
    fn plan_catch_up(&mut self, rng: &mut SplitMix64, snapshot_every: u64) {
        self.catch_up_plan = if rng.percent(50) {
            vec![CatchUpKind::Cut, CatchUpKind::Emptied]
        } else {
            vec![CatchUpKind::Emptied, CatchUpKind::Cut]
        };
        self.catch_up = CatchUpStage::Waiting {
            at: rng.range(400, 1_200),
        };
        self.snapshot_every = snapshot_every;
    }

    /// The catch-up nemesis ([`Scenario::SnapshotCatchUp`]): takes the planned steps one at a
    /// time, each on a healthy cluster with an established leader, and waits for each follower's
    /// catch-up check before the next.
    fn maybe_catch_up(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut SplitMix64,
        world: &Arc<Mutex<World>>,
        now: u64,
    ) {
        match self.catch_up {
            CatchUpStage::Waiting { at } => {
                if now < at {
                    return;
                }
                let mut world = lock(world);
                let Some(leader) = established_leader(&world, &self.ids, now) else {
                    return;
                };
                let followers: Vec<NodeId> =
                    self.ids.iter().copied().filter(|&o| o != leader).collect();
                let (Some(&kind), Some(follower)) =
                    (self.catch_up_plan.first(), rng.pick(&followers))
                else {
                    self.catch_up = CatchUpStage::Done;
                    return;
                };
                self.catch_up_plan.remove(0);
                let last = world.handles[&follower].status().last_log_index;
                match kind {
                    CatchUpKind::Cut => {
                        let name = host(follower);
                        for other in self.ids.iter().filter(|&&o| o != follower) {
                            sim.partition(name.as_str(), host(*other).as_str());
                            self.partitioned.insert((name.clone(), host(*other)));
                        }
                        self.catch_up = CatchUpStage::Cut {
                            follower,
                            since: now,
                        };
                        self.log.push(format!(
                            "{now} ms: cut {follower} off from every node (leader {leader}, its last entry {last})"
                        ));
                    }
                    CatchUpKind::Emptied => {
                        world.handles.remove(&follower);
                        sim.crash(host(follower));
                        self.crashes += 1;
                        self.crashed.insert(follower);
                        // Its host's software empties its stores when it restarts.
                        world.wipe.insert(follower);
                        let restart_at = now + rng.range(50, 500);
                        self.catch_up = CatchUpStage::Down {
                            follower,
                            restart_at,
                        };
                        self.log.push(format!(
                            "{now} ms: shut {follower} down (leader {leader}, its last entry {last}) and empty its stores"
                        ));
                    }
                }
            }
            CatchUpStage::Cut { follower, since } => {
                let (last, leader_last, compacted, starts) = {
                    let state = lock(world);
                    // Cut off, its status no longer changes.
                    let last = state.handles[&follower].status().last_log_index;
                    let leader_last =
                        believed_leader(&state).map_or(LogIndex(0), |h| h.status().last_log_index);
                    let compacted = only_a_snapshot_helps(&state, &self.ids, follower, last);
                    let grown =
                        leader_last.0 >= last.0 + CUT_SNAPSHOT_PERIODS * self.snapshot_every;
                    let long_enough = now >= since + CUT_MIN_MS && compacted && grown;
                    if !long_enough && now < since + CUT_MAX_MS {
                        return;
                    }
                    let starts: Vec<String> = state
                        .handles
                        .values()
                        .map(|h| format!("{}: {}", h.id(), log_start(&h.status())))
                        .collect();
                    (last, leader_last, compacted, starts)
                };
                self.undo(sim, false);
                self.log.push(format!(
                    "{now} ms: heal {follower} (its last entry {last}, the leader's {leader_last}, logs start at {starts:?})"
                ));
                self.start_check(sim, world, CatchUpKind::Cut, follower, compacted);
            }
            CatchUpStage::Down {
                follower,
                restart_at,
            } => {
                if now < restart_at {
                    return;
                }
                let others: Vec<NodeId> = self
                    .ids
                    .iter()
                    .copied()
                    .filter(|&o| o != follower)
                    .collect();
                let needed_snapshot = {
                    let world = lock(world);
                    if established_leader(&world, &others, now).is_none() {
                        return;
                    }
                    only_a_snapshot_helps(&world, &self.ids, follower, LogIndex(0))
                };
                sim.bounce(host(follower));
                self.crashed.remove(&follower);
                self.log
                    .push(format!("{now} ms: restart {follower} with empty stores"));
                self.start_check(sim, world, CatchUpKind::Emptied, follower, needed_snapshot);
            }
            CatchUpStage::Checking => {
                if !lock(world).checking_catch_up {
                    self.catch_up = CatchUpStage::Waiting {
                        at: now + rng.range(200, 800),
                    };
                }
            }
            CatchUpStage::Done => {}
        }
    }

    /// The disk-crash nemesis ([`Scenario::DiskCrashes`]). Every 20–200 ms it crashes a host
    /// (the leader 40% of the time, else a random running one) while fewer than a minority are
    /// down, or, one time in 25, every running host at once; in any step, a host whose latest
    /// snapshot was just seen to move forward (its log's prefix is being purged) is crashed one
    /// time in ten, minority permitting, and in a step where a write was acknowledged, every
    /// running host is, one time in a hundred. A crashed host restarts on its disk at once one time
    /// in four, else 5–300 ms later.
    fn maybe_crash(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut SplitMix64,
        world: &Arc<Mutex<World>>,
        now: u64,
    ) {
        let due: Vec<NodeId> = self
            .restart_at
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.restart_at.remove(&id);
            self.crashed.remove(&id);
            sim.bounce(host(id));
            self.log.push(format!("{now} ms: restart {}", host(id)));
        }
        let max_down = (self.ids.len() - 1) / 2;
        let snapshotted = lock(world).just_snapshotted.clone();
        for id in snapshotted {
            if self.crashed.len() < max_down && !self.crashed.contains(&id) && rng.percent(10) {
                self.crash_host(sim, rng, world, id, now, "just after a snapshot");
                self.crashes_after_snapshot += 1;
            }
        }
        // A power loss in the very step a write was acknowledged: what the nodes answered
        // for must have been synced before they answered, not at some later step.
        let acknowledged = lock(world).quorum_acks.len();
        let just_acknowledged = acknowledged > self.acknowledged_seen;
        self.acknowledged_seen = acknowledged;
        if just_acknowledged && rng.percent(1) {
            self.power_losses_after_ack += 1;
            self.power_loss(sim, rng, world, now);
            return;
        }
        if now < self.next_at {
            return;
        }
        self.next_at = now + rng.range(20, 200);
        if rng.percent(4) {
            self.power_loss(sim, rng, world, now);
            return;
        }
        if self.crashed.len() >= max_down {
            return;
        }
        let leader = believed_leader(&lock(world)).map(|h| h.id());
        let running = self.running();
        let target = match leader {
            Some(leader) if rng.percent(40) && running.contains(&leader) => Some(leader),
            _ => rng.pick(&running),
        };
        if let Some(id) = target {
            let why = if Some(id) == leader {
                "leader"
            } else {
                "random"
            };
            self.crash_host(sim, rng, world, id, now, why);
        }
    }

    /// The hosts not crashed, in id order.
    fn running(&self) -> Vec<NodeId> {
        self.ids
            .iter()
            .copied()
            .filter(|id| !self.crashed.contains(id))
            .collect()
    }

    /// Crashes every running host at once.
    fn power_loss(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut SplitMix64,
        world: &Arc<Mutex<World>>,
        now: u64,
    ) {
        let running = self.running();
        self.power_losses += 1;
        for id in running {
            self.crash_host(sim, rng, world, id, now, "power loss");
        }
    }

    /// Crashes `id`'s host (losing what it had not synced) and schedules its restart.
    fn crash_host(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut SplitMix64,
        world: &Arc<Mutex<World>>,
        id: NodeId,
        now: u64,
        why: &str,
    ) {
        {
            let mut world = lock(world);
            world.handles.remove(&id);
            // A leader was sending it a snapshot at the latest step: the image's chunks it
            // wrote so far are not synced.
            if world
                .sending
                .range((id, NodeId(0))..=(id, NodeId(u64::MAX)))
                .any(|(_, s)| s.seen_ms + 1 >= now)
            {
                self.crashes_during_snapshot_transfer += 1;
            }
        }
        sim.crash(host(id));
        self.crashes += 1;
        let down = if rng.percent(25) {
            0
        } else {
            rng.range(5, 300)
        };
        if down == 0 {
            sim.bounce(host(id));
            self.log
                .push(format!("{now} ms: crash {} ({why}) and restart", host(id)));
        } else {
            self.crashed.insert(id);
            self.restart_at.insert(id, now + down);
            self.log.push(format!(
                "{now} ms: crash {} ({why}) for {down} ms",
                host(id)
            ));
        }
    }

    /// Starts [`check_catch_up`] on a client of its own.
    fn start_check(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        world: &Arc<Mutex<World>>,
        kind: CatchUpKind,
        follower: NodeId,
        needed_snapshot: bool,
    ) {
        self.catch_up_checks += 1;
        let probe = self.catch_up_checks;
        lock(world).checking_catch_up = true;
        let world = Arc::clone(world);
        sim.client(format!("catch-up-{probe}"), async move {
            check_catch_up(world, probe, kind, follower, needed_snapshot).await;
            Ok(())
        });
        self.catch_up = CatchUpStage::Checking;
    }

    fn request_transfer(&mut self, leader: NodeId, target: NodeId, must_complete: bool) {
        if let Some(transfers) = &self.transfers {
            // The receiver outlives the workload; a send can fail only after the run.
            let _ = transfers.send(TransferRequest {
                leader,
                target,
                must_complete,
            });
        }
    }

    /// Ends the current fault: repairs links, releases held messages, restores latency and loss,
    /// and (when `restart` or at the end) restarts crashed nodes.
    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, restart: bool) {
        for (a, b) in std::mem::take(&mut self.partitioned) {
            sim.repair(a.as_str(), b.as_str());
        }
        for (a, b) in std::mem::take(&mut self.held) {
            sim.release(a.as_str(), b.as_str());
        }
        for (a, b) in std::mem::take(&mut self.slowed) {
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), Duration::from_millis(10));
        }
        if self.lossy {
            sim.set_fail_rate(0.0);
            self.lossy = false;
        }
        if restart {
            for id in std::mem::take(&mut self.crashed) {
                sim.bounce(host(id));
            }
            self.restart_at.clear();
        }
    }

    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        self.undo(sim, true);
        // The transfer client ends once it has carried out what was asked.
        self.transfers = None;
        self.log.push("heal".into());
    }
}

/// Runs `seed` of `scenario` and returns what it observed, or a description of everything
/// wrong with it, the seed and the command that replays it.
pub fn check_seed(scenario: Scenario, seed: u64) -> Result<SimOutcome, String> {
    let config = SimConfig::for_seed(scenario, seed);
    let outcome = run(&config);
    let mut problems = outcome.violations.clone();
    match crate::linearizability::check(&outcome.history) {
        crate::linearizability::Verdict::Linearizable => {}
        other => problems.push(format!("history: {other}")),
    }
    if outcome.completed == 0 {
        problems.push("no operation completed".into());
    }
    if problems.is_empty() {
        Ok(outcome)
    } else {
        Err(format!(
            "cluster simulation failed: seed {seed} ({config:?})\n  {}\n  faults: {:?}\n  replay: RAFT_SIM_SEED={seed} cargo test -p raft-tests --test sim_cluster {} -- --nocapture",
            problems.join("\n  "),
            outcome.faults,
            scenario.test_name()
        ))
    }
}

/// Seeds to run: `RAFT_SIM_SEED` alone if set, else `RAFT_SIM_SEEDS` (or `default`) from 0.
pub fn seeds_from_env(default: u64) -> Vec<u64> {
    let parse = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match parse("RAFT_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..parse("RAFT_SIM_SEEDS").unwrap_or(default)).collect(),
    }
}

/// The certificates of a [`Scenario::MutualTls`] run: every node's transport TLS, trusting two
/// CAs; node certificates from the first until [`SimCertificates::rotate`], from the second
/// after.
struct SimCertificates {
    tls: BTreeMap<NodeId, raft_net::PeerTls>,
    next: crate::certs::TestCa,
    bundle: String,
    rotated: bool,
}

impl SimCertificates {
    fn new(ids: &[NodeId]) -> SimCertificates {
        let first = crate::certs::TestCa::new(1);
        let next = crate::certs::TestCa::new(2);
        let bundle = format!("{}{}", first.pem, next.pem);
        let tls = ids
            .iter()
            .map(|&id| (id, first.node(id.0).tls(&bundle)))
            .collect();
        SimCertificates {
            tls,
            next,
            bundle,
            rotated: false,
        }
    }

    /// Node `id`'s settings; a restarted host gets the ones current then.
    fn node(&self, id: NodeId) -> raft_net::PeerTls {
        self.tls[&id].clone()
    }

    /// Replaces every node's certificate with one from the second CA, once.
    fn rotate(&mut self, violations: &mut Vec<String>) {
        if std::mem::replace(&mut self.rotated, true) {
            return;
        }
        for (&id, tls) in &self.tls {
            let signed = self.next.node(id.0);
            if let Err(error) = tls.reload_pem(
                signed.cert.as_bytes(),
                signed.key.as_bytes(),
                self.bundle.as_bytes(),
            ) {
                violations.push(format!("{id}'s certificate could not be replaced: {error}"));
            }
        }
    }
}
