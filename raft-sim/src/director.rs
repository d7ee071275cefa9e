//! Scripted faults: a director, a task of the user's that decides which fault comes next by
//! looking at the cluster ([`crate::Simulation::director`]), for scenarios the random nemesis
//! cannot aim at: cut off the leader the moment it is elected, keep a follower away until the
//! others have compacted past it, empty a node's stores and check that it catches up in time.

use crate::SimStateMachine;
use crate::client::{Client, SimHandle};
use crate::nemesis::FaultRecord;
use crate::world::{SharedWorld, now_ms};
use raft_core::NodeId;
use raft_core::node::Status;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use std::time::Duration;

/// A fault the director asks for, carried out by the harness at the end of the step it was
/// asked in (a host can only be crashed or restarted from outside it).
#[derive(Clone, Debug)]
pub(crate) enum Directive {
    /// Cut every link between a node of `a` and a node of `b`, both ways.
    Partition { a: Vec<NodeId>, b: Vec<NodeId> },
    /// Drop the messages from `from` to `to`.
    OneWay { from: NodeId, to: NodeId },
    /// Undo every partition, held link, latency spike and loss now in force.
    Heal,
    /// Crash the node's host; with `empty`, the node's stores are emptied before it next starts.
    Crash { node: NodeId, empty: bool },
    /// Start the node's host again (a crashed host), or restart its process.
    Restart { node: NodeId },
}

/// What the task given to [`crate::Simulation::director`] gets: the cluster's nodes to look at,
/// the faults to inject, a recording [`Client`] of its own, and a way to report what it finds
/// wrong. Cheap to clone.
///
/// Each fault method returns once the fault is in force: the harness carries it out at the
/// end of the simulation step it was asked in, and the method waits that step (1 ms of
/// simulated time). Faults are recorded in the run's list of faults, with the director's
/// [`Director::note`]s among them. They share the network with the [`crate::Nemesis`]: the
/// nemesis' next fault undoes the partitions in force, the director's too, so a director
/// usually runs with `Nemesis::none()` or only faults that run beside (clock drift, transfers,
/// membership churn). Once the faults stop ([`Director::running`] turns false), every fault
/// is undone, every host started, and later requests are ignored (and recorded as such).
/// The run ends only when the director has returned too: loop while [`Director::running`].
pub struct Director<SM: SimStateMachine> {
    world: SharedWorld<SM>,
    client: Client<SM>,
    seed: u64,
}

impl<SM: SimStateMachine> Clone for Director<SM> {
    fn clone(&self) -> Self {
        Director {
            world: SharedWorld::clone(&self.world),
            client: self.client.clone(),
            seed: self.seed,
        }
    }
}

/// Separates the director's generator from every other stream of a run.
const STREAM: u64 = 0xD1EC_7000_0000_0001;

impl<SM: SimStateMachine> Director<SM> {
    pub(crate) fn new(world: SharedWorld<SM>, client: Client<SM>, seed: u64) -> Self {
        Director {
            world,
            client,
            seed: seed ^ STREAM,
        }
    }

    /// A client that records its requests in the run's history like the workload's (named
    /// `director`): for probes whose answers should be checked too.
    pub fn client(&self) -> &Client<SM> {
        &self.client
    }

    /// A random number generator for the director's choices, seeded from the run's seed: the
    /// same seed makes the same choices. Each call returns a generator in the same initial
    /// state, so take it once.
    pub fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }

    /// Whether the faults are still running (see the type's documentation).
    pub fn running(&self) -> bool {
        !self.world.borrow().finished
    }

    /// Simulated time since the run began, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// Every host of the cluster, up or not: the first voters, then the spares.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.world.borrow().ids.clone()
    }

    /// The handle of `node`'s current start, if it is up.
    pub fn handle(&self, node: NodeId) -> Option<SimHandle<SM>> {
        self.world.borrow().handles.get(&node).cloned()
    }

    /// `node`'s status, if it is up.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.handle(node).map(|handle| handle.status())
    }

    /// The node that leads in the highest term, by the statuses of the nodes that are up (a
    /// stale leader is possible).
    pub fn leader(&self) -> Option<NodeId> {
        self.world.borrow().leader().map(|handle| handle.id())
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub async fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        self.ask(Directive::Partition {
            a: a.to_vec(),
            b: b.to_vec(),
        })
        .await;
    }

    /// Cuts `node` off from every other host, both ways.
    pub async fn isolate(&self, node: NodeId) {
        let others: Vec<NodeId> = self.nodes().into_iter().filter(|&n| n != node).collect();
        self.partition(&[node], &others).await;
    }

    /// Drops the messages from `from` to `to`; the other direction still works.
    pub async fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.ask(Directive::OneWay { from, to }).await;
    }

    /// Undoes every partition, held link, latency spike and message loss in force (the
    /// nemesis' as well as the director's). Crashed hosts stay down: [`Director::restart`]
    /// them.
    pub async fn heal(&self) {
        self.ask(Directive::Heal).await;
    }

    /// Crashes `node`'s host: its tasks die, and with the simulated disk whatever its stores
    /// had not synced is lost. It stays down until [`Director::restart`] (or the faults stop).
    pub async fn crash(&self, node: NodeId) {
        self.ask(Directive::Crash { node, empty: false }).await;
    }

    /// Crashes `node`'s host and empties its stores: when it next starts ([`Director::restart`],
    /// or when the faults stop), its log and snapshots are empty, as on a replacement machine
    /// that kept its identity. It forgets its term and its vote too, which Raft assumes a node
    /// never does: a node that voted in a term and forgot it may vote again in that term, and
    /// two leaders of one term are possible. Empty a follower while a leader is established
    /// and stays so (as an operator replaces a disk); the kit's invariants report what else
    /// it breaks. With
    /// [`crate::Storage::custom`] the harness cannot empty your stores: that is reported as a
    /// problem of the run (your factory, told the start, can hand out empty stores itself).
    pub async fn crash_and_empty(&self, node: NodeId) {
        self.ask(Directive::Crash { node, empty: true }).await;
    }

    /// Starts `node`'s host again if it is down; else restarts its process (its tasks die and
    /// it starts again at once on its stores).
    pub async fn restart(&self, node: NodeId) {
        self.ask(Directive::Restart { node }).await;
    }

    /// Adds a line to the run's list of faults (what the director saw or decided).
    pub fn note(&self, what: impl Into<String>) {
        let record = FaultRecord {
            at_ms: now_ms(),
            fault: None,
            what: what.into(),
        };
        self.world.borrow_mut().directed.push(record);
    }

    /// Reports a problem: the run fails with it (a check of the director's own, such as a
    /// follower that did not catch up in time).
    pub fn problem(&self, what: impl Into<String>) {
        let problem = format!("director at {} ms: {}", now_ms(), what.into());
        self.world.borrow_mut().problems.push(problem);
    }

    /// Queues `directive` for the harness and waits the step in which it is carried out.
    async fn ask(&self, directive: Directive) {
        self.world.borrow_mut().directives.push(directive);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
