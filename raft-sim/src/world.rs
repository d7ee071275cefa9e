//! The state one run shares between its hosts, its clients and the loop that steps it (turmoil
//! runs them all on one thread, so a `RefCell` is enough; no borrow is held across an await).

use crate::SimStateMachine;
use crate::audit::StoreImage;
use crate::client::SimHandle;
use crate::history::History;
use crate::model::{OpOf, RetOf};
use crate::outcome::Outcome;
use raft_core::{LogIndex, NodeId, Term};
use raft_storage::{MemLogStore, MemSnapshotStore};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

pub(crate) type SharedWorld<SM> = Rc<RefCell<World<SM>>>;

pub(crate) struct World<SM: SimStateMachine> {
    /// Every host of the cluster: the first voters, then the spares
    /// ([`crate::Simulation::spares`]).
    pub(crate) ids: Vec<NodeId>,
    /// The nodes that are up, by the handle of their current start.
    pub(crate) handles: BTreeMap<NodeId, SimHandle<SM>>,
    /// How many times each node has started: its current start is this minus one.
    pub(crate) starts: BTreeMap<NodeId, u64>,
    pub(crate) history: History<OpOf<SM>, RetOf<SM>>,
    /// Every answer that names a log index, for the check against the model.
    pub(crate) observations: Vec<Observation<SM>>,
    /// Problems found while running (a node that could not start, or stopped by itself).
    pub(crate) problems: Vec<String>,
    /// The faults are over: [`crate::Client::running`] turns false.
    pub(crate) finished: bool,
    /// The in-memory stores of [`crate::Storage::Memory`]: kept across crashes, like a disk.
    pub(crate) stores: BTreeMap<NodeId, (MemLogStore, MemSnapshotStore)>,
    pub(crate) counts: Counts,
    /// How many of the user's clients have returned: the faults stop when all have.
    pub(crate) clients_finished: usize,
    /// The membership changes asked for ([`crate::Fault::MembershipChange`]).
    pub(crate) churn: ChurnLog,
    /// The leadership transfers asked for ([`crate::Fault::TransferLeadership`]).
    pub(crate) transfers: TransferLog,
    /// The clock rates drawn ([`crate::Fault::ClockDrift`]).
    pub(crate) clock_rates: Vec<crate::nemesis::FaultRecord>,
    /// Every write acknowledged at `Ack::Quorum` or `Ack::All`, in the order the
    /// acknowledgements reached their clients: for the store audit and the bounded-staleness
    /// check.
    pub(crate) acknowledged: Vec<Acknowledged>,
    /// Every `Consistency::BoundedStaleness` read that was answered, for the check of its bound.
    pub(crate) bounded_reads: Vec<BoundedRead>,
    /// The run is over: a host that starts reads its stores back into `images` instead of
    /// running its node.
    pub(crate) auditing: bool,
    /// What each node's stores held once the run was over, or why they could not be read.
    pub(crate) images: BTreeMap<NodeId, Result<StoreImage, String>>,
    /// Faults the director asked for, to be carried out at the end of the step
    /// ([`crate::Director`]).
    pub(crate) directives: Vec<crate::director::Directive>,
    /// The director's notes, for the list of faults.
    pub(crate) directed: Vec<crate::nemesis::FaultRecord>,
    /// Nodes whose stores are to be emptied before they next start
    /// ([`crate::Director::crash_and_empty`], on the simulated disk).
    pub(crate) emptied: BTreeSet<NodeId>,
    /// Every `Consistency::Lease` read answered, for the lease check.
    pub(crate) lease_reads: Vec<LeaseRead>,
}

/// A `Consistency::Lease` read that was answered: by which node, in which term (the node's
/// term right after it answered), and when it was invoked.
#[derive(Clone, Debug)]
pub(crate) struct LeaseRead {
    pub(crate) client: String,
    pub(crate) node: NodeId,
    pub(crate) term: Term,
    pub(crate) invoked_ms: u64,
}

/// The leadership transfers of a run: each request with its time and outcome, and counts.
#[derive(Debug, Default)]
pub(crate) struct TransferLog {
    pub(crate) log: Vec<crate::nemesis::FaultRecord>,
    /// Requests by outcome: `ok` when the leader started the transfer.
    pub(crate) counts: OperationCounts,
    /// Transfers whose target was then seen leading in a later term.
    pub(crate) completed: u64,
}

/// A write acknowledged at `Ack::Quorum` or `Ack::All` (committed and applied): where the log
/// holds it, and when its acknowledgement reached its client.
#[derive(Clone, Debug)]
pub(crate) struct Acknowledged {
    pub(crate) client: String,
    /// When the acknowledgement reached the client: no earlier than the node acknowledged it.
    pub(crate) at_ms: u64,
    pub(crate) index: LogIndex,
    /// The term the write was made in, as the acknowledgement says.
    pub(crate) term: Term,
    /// The command as the log holds it (postcard).
    pub(crate) encoded: Vec<u8>,
    /// The command as `Debug` prints it, for the report.
    pub(crate) command: String,
}

/// A `Consistency::BoundedStaleness` read that was answered.
#[derive(Clone, Debug)]
pub(crate) struct BoundedRead {
    pub(crate) client: String,
    /// The node that answered.
    pub(crate) node: NodeId,
    /// The read's bound, in whole milliseconds (as the node measures ages).
    pub(crate) bound_ms: u64,
    pub(crate) invoked_ms: u64,
    /// When the answer reached the client: no earlier than the node answered.
    pub(crate) answered_ms: u64,
    /// The applied index the node served it at.
    pub(crate) applied_index: LogIndex,
}

/// The membership changes of a run: each request with its time and outcome, and counts.
#[derive(Debug, Default)]
pub(crate) struct ChurnLog {
    pub(crate) log: Vec<crate::nemesis::FaultRecord>,
    pub(crate) counts: OperationCounts,
    /// Changes that took effect and removed from the voters the leader that made them.
    pub(crate) leader_removals: u64,
}

impl<SM: SimStateMachine> World<SM> {
    pub(crate) fn new(ids: Vec<NodeId>) -> World<SM> {
        World {
            stores: ids
                .iter()
                .map(|&id| (id, (MemLogStore::new(), MemSnapshotStore::new())))
                .collect(),
            ids,
            handles: BTreeMap::new(),
            starts: BTreeMap::new(),
            history: History::new(),
            observations: Vec::new(),
            problems: Vec::new(),
            finished: false,
            counts: Counts::default(),
            clients_finished: 0,
            churn: ChurnLog::default(),
            transfers: TransferLog::default(),
            clock_rates: Vec::new(),
            acknowledged: Vec::new(),
            bounded_reads: Vec::new(),
            auditing: false,
            images: BTreeMap::new(),
            directives: Vec::new(),
            directed: Vec::new(),
            emptied: BTreeSet::new(),
            lease_reads: Vec::new(),
        }
    }
}

impl<SM: SimStateMachine> World<SM> {
    /// The handle of the node that leads in the highest term, by the nodes' own statuses (a
    /// stale leader is possible).
    pub(crate) fn leader(&self) -> Option<SimHandle<SM>> {
        self.handles
            .values()
            .filter(|handle| handle.status().role == raft_core::Role::Leader)
            .max_by_key(|handle| handle.status().term)
            .cloned()
    }
}

/// An answer that names a log index: a write's (where its command sits) or a read's (the
/// index its node had applied when it answered).
pub(crate) struct Observation<SM: SimStateMachine> {
    pub(crate) client: String,
    pub(crate) at_ms: u64,
    pub(crate) op: OpOf<SM>,
    pub(crate) ret: RetOf<SM>,
    pub(crate) index: LogIndex,
    pub(crate) write: bool,
    /// For an `AtLeast(token)` read, its token.
    pub(crate) at_least: Option<LogIndex>,
}

/// How many requests ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Took effect.
    pub ok: u64,
    /// Refused, with no effect.
    pub failed: u64,
    /// Of unknown outcome.
    pub unknown: u64,
}

impl OperationCounts {
    pub(crate) fn count<R>(&mut self, outcome: &Outcome<R>) {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Unknown(_) => self.unknown += 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) writes: OperationCounts,
    pub(crate) reads: OperationCounts,
    /// Reads answered by a node that was not leading when the answer came.
    pub(crate) follower_reads: u64,
}

impl Counts {
    /// The counts `op` goes into.
    pub(crate) fn of<C, Q>(&mut self, op: &crate::model::ClusterOp<C, Q>) -> &mut OperationCounts {
        match op {
            crate::model::ClusterOp::Write(_) => &mut self.writes,
            crate::model::ClusterOp::Read(_) => &mut self.reads,
        }
    }
}

/// Simulated time since the run began, in milliseconds.
pub(crate) fn now_ms() -> u64 {
    // Outside a host (never, for the harness's callers) there is no time to read: 0.
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Problems of one kind as a report lists them: the first few in full, then how many more.
#[derive(Clone, Debug, Default)]
pub(crate) struct Capped {
    shown: Vec<String>,
    more: u64,
}

/// How many problems of one kind a report shows in full.
const SHOWN: usize = 8;

impl Capped {
    pub(crate) fn push(&mut self, problem: String) {
        if self.shown.len() < SHOWN {
            self.shown.push(problem);
        } else {
            self.more += 1;
        }
    }

    /// The lines of the report; `kind` names the problems in the closing count.
    pub(crate) fn lines(&self, kind: &str) -> Vec<String> {
        let mut lines = self.shown.clone();
        if self.more > 0 {
            lines.push(format!("... and {} more {kind}", self.more));
        }
        lines
    }
}
