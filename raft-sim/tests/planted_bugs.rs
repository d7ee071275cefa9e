//! The kit catches planted bugs, each within the default seeds: a state machine that is not
//! deterministic, a log store that acknowledges writes before they are durable (under crashes,
//! and, without any crash in the run, by the store audit alone), and reads served locally by a
//! node that holds no lease while claiming to be linearizable.

mod support;

use async_trait::async_trait;
use raft_core::node::{Consistency, LogStore, Recovered, StorageError};
use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId};
use raft_sim::{
    ClusterOp, ClusterRet, DEFAULT_SEEDS, Fault, Nemesis, Outcome, Report, SimStateMachine,
    Simulation, Storage, Target, seeds,
};
use raft_storage::{MemLogStore, MemSnapshotStore};
use rand::RngExt;
use std::collections::{BTreeMap, BTreeSet};
use support::{RegisterMachine, RegisterModel, random_write, workload};

/// Runs the default seeds (or the environment's) and returns the problems found; panics if
/// none fails, or if none fails for the reason `expected` names.
fn caught<SM, M>(simulation: &Simulation<SM, M>, expected: &[&str]) -> Vec<String>
where
    SM: SimStateMachine,
    M: raft_sim::Model<Op = raft_sim::OpOf<SM>, Ret = raft_sim::RetOf<SM>>,
{
    let reports: Vec<Report<_, _>> = seeds(DEFAULT_SEEDS)
        .into_iter()
        .map(|seed| simulation.run(seed))
        .collect();
    let failed: Vec<&Report<_, _>> = reports.iter().filter(|r| !r.is_ok()).collect();
    for report in &reports {
        eprintln!("{}", report.summary());
    }
    let Some(first) = failed.first() else {
        panic!("the planted bug went unnoticed in every seed");
    };
    let seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
    eprintln!("caught by seeds {seeds:?}; the first failing run:\n{first}");
    let problems: Vec<String> = failed.iter().flat_map(|r| r.problems.clone()).collect();
    assert!(
        problems
            .iter()
            .any(|p| expected.iter().any(|e| p.contains(e))),
        "caught, but not for the expected reason ({expected:?}):\n{problems:#?}"
    );
    for report in &failed {
        assert!(
            report
                .replay
                .starts_with(&format!("RAFT_SIM_SEED={} cargo test", report.seed))
        );
    }
    problems
}

#[test]
fn a_state_machine_that_is_not_deterministic_is_caught() {
    // Each replica mixes a draw of its own generator into what it stores and answers.
    let simulation = workload(Simulation::new(
        |node: NodeId| RegisterMachine {
            noise: Some(node.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ..RegisterMachine::default()
        },
        RegisterModel,
    ));
    caught(
        &simulation,
        &["determinism", "disagrees with the model", "linearizability"],
    );
}

/// How many write calls a [`LyingLog`] acknowledges before it makes them durable.
const FLUSH_EVERY: u64 = 32;

/// A log store that acknowledges every write at once and makes it durable only every
/// [`FLUSH_EVERY`] writes: a crash loses the acknowledged writes since the last flush. (A store
/// on a real disk that forgot its fsync behaves so.) The durable part is a [`MemLogStore`] the
/// harness keeps across crashes; what this incarnation wrote since is in `volatile` and
/// `unflushed`, lost with the host.
struct LyingLog {
    durable: MemLogStore,
    volatile: MemLogStore,
    unflushed: Vec<Change>,
    writes: u64,
}

/// A change not yet made durable.
enum Change {
    Write(Option<HardState>, Vec<Entry>),
    Truncate(LogIndex),
    Purge(EntryId),
    Voters(BTreeSet<NodeId>),
}

impl LyingLog {
    async fn change(&mut self, change: Change) -> Result<(), StorageError> {
        self.unflushed.push(change);
        self.writes += 1;
        if self.writes.is_multiple_of(FLUSH_EVERY) {
            for change in std::mem::take(&mut self.unflushed) {
                match change {
                    Change::Write(hard_state, entries) => {
                        self.durable.write(hard_state, entries).await?
                    }
                    Change::Truncate(from) => self.durable.truncate_suffix(from).await?,
                    Change::Purge(up_to) => self.durable.purge_prefix(up_to).await?,
                    Change::Voters(voters) => self.durable.save_voters(&voters).await?,
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LogStore for LyingLog {
    async fn recover(&mut self) -> Result<Recovered, StorageError> {
        // Start from what is durable (no snapshots in this test, so the log starts at 1).
        let durable = self.durable.recover().await?;
        self.volatile = MemLogStore::new();
        self.volatile
            .write(Some(durable.hard_state), durable.entries)
            .await?;
        if let Some(voters) = &durable.voters {
            self.volatile.save_voters(voters).await?;
        }
        self.volatile.recover().await
    }
    async fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> Result<(), StorageError> {
        self.volatile.write(hard_state, entries.clone()).await?;
        self.change(Change::Write(hard_state, entries)).await
    }
    async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.volatile.truncate_suffix(from).await?;
        self.change(Change::Truncate(from)).await
    }
    async fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError> {
        self.volatile.purge_prefix(up_to).await?;
        self.change(Change::Purge(up_to)).await
    }
    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.volatile.read(from, to).await
    }
    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
        self.volatile.save_voters(voters).await?;
        self.change(Change::Voters(voters.clone())).await
    }
}

/// [`LyingLog`]s kept across crashes, like disks (fresh for every run).
fn lying_logs() -> Storage {
    Storage::custom(|| {
        // The durable halves, kept across crashes like disks (fresh for every run).
        let mut disks: BTreeMap<NodeId, MemLogStore> = BTreeMap::new();
        move |node, _start| {
            let log = LyingLog {
                durable: disks.entry(node).or_default().clone(),
                volatile: MemLogStore::new(),
                unflushed: Vec::new(),
                writes: 0,
            };
            (log, MemSnapshotStore::new())
        }
    })
}

#[test]
fn a_log_store_that_acknowledges_before_it_is_durable_is_caught() {
    let simulation = workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
    .storage(lying_logs())
    .configure(|config| config.snapshot_every = 0);
    caught(
        &simulation,
        &[
            "an acknowledged write was lost",
            "state machine safety",
            "linearizability",
        ],
    );
}

/// The same store, in runs without a crash or restart: while the run lasts no node loses
/// anything, so every answer is right and every replica agrees. Only the store audit, which
/// crashes every host once the run is over and reads the stores back, finds acknowledged writes
/// that no majority made durable.
#[test]
fn a_log_store_that_acknowledges_before_it_is_durable_is_caught_by_the_store_audit_alone() {
    let nemesis = Nemesis::default()
        .without(Fault::Crash)
        .without(Fault::Restart)
        .without(Fault::PowerLoss);
    let simulation = workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
    .nemesis(nemesis)
    .storage(lying_logs())
    .configure(|config| config.snapshot_every = 0);
    let problems = caught(
        &simulation,
        &["not on a majority of the final voters' stores"],
    );
    // (A report lists the first few missing writes, then how many more.)
    let audit = |p: &String| p.starts_with("store audit") || p.contains("missing from a majority");
    assert!(
        problems.iter().all(audit),
        "only the store audit should see this bug: {problems:#?}"
    );
}

#[test]
fn reads_served_locally_without_a_lease_are_caught() {
    // Each client talks to one node (until it goes down), like a client behind a load balancer;
    // writes are forwarded to the leader, but reads are answered by that node from its own
    // state, with no lease and no read index (`Stale`), and claimed linearizable.
    let simulation = Simulation::new(|_| RegisterMachine::default(), RegisterModel).clients(
        3,
        |client| async move {
            let mut rng = client.rng();
            let mut node: Option<NodeId> = None;
            while client.running() {
                let Some(handle) = node
                    .and_then(|id| client.handle(Target::Node(id)))
                    .or_else(|| client.handle(Target::Any))
                else {
                    client.sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                node = Some(handle.id());
                if rng.random_ratio(1, 2) {
                    client.propose(random_write(&mut rng, 2)).await;
                } else {
                    let key = rng.random_range(0..2);
                    client
                        .record(ClusterOp::Read(key), async move {
                            // The bug: no lease, no read index, whatever the node's role.
                            Outcome::from_result(handle.query(Consistency::Stale, key).await)
                                .map(|read| ClusterRet::Read(read.response))
                        })
                        .await;
                }
            }
        },
    );
    caught(&simulation, &["linearizability"]);
}
