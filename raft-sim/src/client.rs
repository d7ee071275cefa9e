//! The workload's side: a [`Client`] the user's async code drives, which sends requests to the
//! simulated nodes and records each in the history.

use crate::SimStateMachine;
use crate::history::OpId;
use crate::model::{ClusterOp, ClusterRet, OpOf, RetOf};
use crate::outcome::Outcome;
use crate::world::{Acknowledged, BoundedRead, LeaseRead, Observation, SharedWorld, now_ms};
use raft_core::node::{Ack, Consistency, Error, NodeHandle, ReadOutcome, WriteOutcome};
use raft_core::{LogIndex, NodeId};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

/// A simulated node's client API: the node's own [`NodeHandle`] over the harness's recording
/// wrapper ([`crate::Recording`]) of your state machine.
pub type SimHandle<SM> = NodeHandle<crate::Recording<SM>>;

/// Which node a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The node that leads in the highest term, as the nodes' statuses say; else the leader a
    /// refusal last named to this client; else any node that is up. A stale leader is possible:
    /// that is part of the test.
    Leader,
    /// This node, if it is up.
    Node(NodeId),
    /// A node that is up, at random.
    Any,
}

/// A client of the simulated cluster, handed to the workload closure of
/// [`crate::Simulation::client`]. Cheap to clone (clones are the same client).
///
/// Every request is recorded in the run's history with its invocation and completion times
/// and its outcome ([`Outcome`]): the answer, a refusal with no effect, or unknown. Writes at
/// `Ack::Quorum` or `Ack::All` and reads at `Consistency::Linearizable` or `Lease` are checked
/// for linearizability; every answer that names a log index (a write's index, a read's applied
/// index) is also checked against the model at that index, and an `AtLeast(token)` read must be
/// served at or after its token (read-your-writes). A `BoundedStaleness(bound)` read must
/// reflect every write acknowledged more than `bound` before it was answered, and every write
/// acknowledged at `Ack::Quorum` or `Ack::All` must be on a majority of the final voters' stores
/// once the run is over (see [`crate::Simulation`]).
///
/// A request that fails returns after a pause of 10 ms, and one that took no simulated time
/// (a read served locally) after 1 ms, so a loop of requests always lets time pass.
pub struct Client<SM: SimStateMachine> {
    shared: Rc<Shared<SM>>,
}

impl<SM: SimStateMachine> Clone for Client<SM> {
    fn clone(&self) -> Self {
        Client {
            shared: Rc::clone(&self.shared),
        }
    }
}

struct Shared<SM: SimStateMachine> {
    name: String,
    index: u64,
    seed: u64,
    world: SharedWorld<SM>,
    /// The harness's own choices for this client (which node `Any` picks).
    rng: RefCell<ChaCha8Rng>,
    /// The leader the last `NotLeader` refusal named.
    hint: RefCell<Option<NodeId>>,
}

/// A pause after a request that failed, so that a retry loop lets time pass.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

impl<SM: SimStateMachine> Client<SM> {
    pub(crate) fn new(name: String, index: u64, seed: u64, world: SharedWorld<SM>) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC11E_u64.rotate_left(40));
        Client {
            shared: Rc::new(Shared {
                name,
                index,
                seed,
                world,
                rng: RefCell::new(rng),
                hint: RefCell::new(None),
            }),
        }
    }

    /// The client's name, as given to [`crate::Simulation::client`] (or `c1`, `c2`, ... from
    /// [`crate::Simulation::clients`]).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The client's number among the run's clients, from 0.
    pub fn index(&self) -> u64 {
        self.shared.index
    }

    /// A random number generator for the workload's choices, seeded from the run's seed and
    /// this client: the same seed makes the same choices. Each call returns a generator in the
    /// same initial state, so take it once.
    pub fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.shared.seed)
    }

    /// Whether the faults are still running. Loop while this holds, then make the final
    /// requests and return: the run ends when every client has returned. The faults are
    /// healed by then, but the cluster may still be electing a leader: a final request may be
    /// refused (`NotLeader`), so retry it if your test needs its answer.
    pub fn running(&self) -> bool {
        !self.shared.world.borrow().finished
    }

    /// Simulated time since the run began, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// Every node of the cluster, up or not: the first voters, then the spare hosts
    /// ([`crate::Simulation::spares`]), whether or not they have been added.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.shared.world.borrow().ids.clone()
    }

    /// The handle of the node `target` names, if one is up; for requests you do not want
    /// recorded (record them yourself with [`Client::record`] if they should be).
    pub fn handle(&self, target: Target) -> Option<SimHandle<SM>> {
        let world = self.shared.world.borrow();
        match target {
            Target::Node(id) => world.handles.get(&id).cloned(),
            Target::Leader => {
                let leader = world.leader().map(|h| h.id());
                let hint = self
                    .shared
                    .hint
                    .borrow()
                    .filter(|id| world.handles.contains_key(id));
                match leader.or(hint).and_then(|id| world.handles.get(&id)) {
                    Some(handle) => Some(handle.clone()),
                    None => {
                        drop(world);
                        self.handle(Target::Any)
                    }
                }
            }
            Target::Any => {
                let up: Vec<&SimHandle<SM>> = world.handles.values().collect();
                if up.is_empty() {
                    return None;
                }
                let pick = self.shared.rng.borrow_mut().random_range(0..up.len());
                Some(up[pick].clone())
            }
        }
    }

    /// Proposes `command` to the leader at `Ack::Quorum`.
    pub async fn propose(&self, command: SM::Command) -> Outcome<WriteOutcome<SM::Response>> {
        self.propose_on(Target::Leader, command, Ack::Quorum).await
    }

    /// Proposes `command` to `target` at acknowledgement level `ack`. A write acknowledged at
    /// `Ack::Local` is recorded as of unknown outcome: it may be lost in a failover, as
    /// documented. Each such write may take effect at any point after its call, or never, so
    /// many of them on one key (hundreds in a run) can make the check exceed its step budget
    /// and report the run undecided: keep `Ack::Local` to a small share of the writes.
    pub async fn propose_on(
        &self,
        target: Target,
        command: SM::Command,
        ack: Ack,
    ) -> Outcome<WriteOutcome<SM::Response>> {
        let op = ClusterOp::Write(command.clone());
        let (invoked, id) = self.invoke(Some(op.clone()));
        let sent = command.clone();
        let (_, outcome) = self
            .send(target, |node| async move { node.propose(sent, ack).await })
            .await;
        let answer = match (&outcome, ack) {
            (Outcome::Ok(written), Ack::Quorum | Ack::All) => written
                .response
                .clone()
                .map(|response| (ClusterRet::Write(response), written.index)),
            _ => None,
        };
        if let (Outcome::Ok(written), Some(_)) = (&outcome, &answer) {
            // Committed and applied: for the store audit and the bounded-staleness check.
            let acknowledged = Acknowledged {
                client: self.shared.name.clone(),
                at_ms: now_ms(),
                index: written.index,
                term: written.term,
                encoded: postcard::to_allocvec(&command).unwrap_or_default(),
                command: format!("{command:?}"),
            };
            self.shared
                .world
                .borrow_mut()
                .acknowledged
                .push(acknowledged);
        }
        self.settle(id, &outcome, op, answer, None);
        self.after(invoked, &outcome).await;
        outcome
    }

    /// Reads `query` from the leader at `consistency`.
    pub async fn read(
        &self,
        query: SM::Query,
        consistency: Consistency,
    ) -> Outcome<ReadOutcome<SM::QueryResponse>> {
        self.read_on(Target::Leader, query, consistency).await
    }

    /// Reads `query` from `target` at `consistency`. `Linearizable` and `Lease` reads go into
    /// the history checked for linearizability. Every read that answers is checked against the
    /// model at the applied index it reports, an `AtLeast(token)` read must report at least
    /// its token, and a `BoundedStaleness(bound)` read an applied index that reaches every
    /// write acknowledged more than `bound` before its answer.
    pub async fn read_on(
        &self,
        target: Target,
        query: SM::Query,
        consistency: Consistency,
    ) -> Outcome<ReadOutcome<SM::QueryResponse>> {
        let op = ClusterOp::Read(query.clone());
        let linearizable = matches!(consistency, Consistency::Linearizable | Consistency::Lease);
        let (invoked, id) = self.invoke(linearizable.then(|| op.clone()));
        let (node, outcome) = self
            .send(target, |node| async move {
                node.query(consistency, query).await
            })
            .await;
        if let (Consistency::BoundedStaleness(bound), Outcome::Ok(read), Some(node)) =
            (consistency, &outcome, node)
        {
            let read = BoundedRead {
                client: self.shared.name.clone(),
                node,
                bound_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                invoked_ms: invoked,
                answered_ms: now_ms(),
                applied_index: read.applied_index,
            };
            self.shared.world.borrow_mut().bounded_reads.push(read);
        }
        let answered_by = match (&outcome, node) {
            (Outcome::Ok(_), Some(node)) => self.handle(Target::Node(node)).map(|h| h.status()),
            _ => None,
        };
        if answered_by
            .as_ref()
            .is_some_and(|status| status.role != raft_core::Role::Leader)
        {
            self.shared.world.borrow_mut().counts.follower_reads += 1;
        }
        if let (Consistency::Lease, Outcome::Ok(_), Some(node)) = (consistency, &outcome, node) {
            // The node's term now, no earlier than the term it served the read in: the lease
            // check asks whether a later term had a leader before the read was invoked.
            if let Some(term) = answered_by.as_ref().map(|status| status.term) {
                let read = LeaseRead {
                    client: self.shared.name.clone(),
                    node,
                    term,
                    invoked_ms: invoked,
                };
                self.shared.world.borrow_mut().lease_reads.push(read);
            }
        }
        let answer = match &outcome {
            Outcome::Ok(read) => {
                Some((ClusterRet::Read(read.response.clone()), read.applied_index))
            }
            _ => None,
        };
        let at_least = match consistency {
            Consistency::AtLeast(token) => Some(token),
            _ => None,
        };
        self.settle(id, &outcome, op, answer, at_least);
        self.after(invoked, &outcome).await;
        outcome
    }

    /// Records an operation made some other way (your own client path, a request through a
    /// service built on the node): `op` is invoked now, `call` makes it, and its outcome goes
    /// into the history checked for linearizability, as a claim that the operation is
    /// linearizable.
    pub async fn record<F>(&self, op: OpOf<SM>, call: F) -> Outcome<RetOf<SM>>
    where
        F: Future<Output = Outcome<RetOf<SM>>>,
    {
        let (invoked, id) = self.invoke(Some(op.clone()));
        let outcome = call.await;
        {
            let mut world = self.shared.world.borrow_mut();
            if let Some(id) = id {
                match &outcome {
                    Outcome::Ok(ret) => world.history.ok(id, ret.clone(), now_ms()),
                    Outcome::Failed(_) => world.history.failed(id),
                    Outcome::Unknown(_) => world.history.unknown(id),
                }
            }
            world.counts.of(&op).count(&outcome);
        }
        self.after(invoked, &outcome).await;
        outcome
    }

    /// Records the invocation of `op` in the history, when it goes there; returns the time.
    fn invoke(&self, op: Option<OpOf<SM>>) -> (u64, Option<OpId>) {
        let invoked = now_ms();
        let id = op.map(|op| {
            let client = self.shared.name.clone();
            self.shared
                .world
                .borrow_mut()
                .history
                .invoke(client, op, invoked)
        });
        (invoked, id)
    }

    /// Sends a request to the node `target` names; returns that node and the outcome. No node
    /// up is a refusal (nothing was sent).
    async fn send<R, Fut>(
        &self,
        target: Target,
        call: impl FnOnce(SimHandle<SM>) -> Fut,
    ) -> (Option<NodeId>, Outcome<R>)
    where
        Fut: Future<Output = Result<R, Error>>,
    {
        match self.handle(target) {
            Some(node) => (Some(node.id()), Outcome::from_result(call(node).await)),
            None => (
                None,
                Outcome::Failed(Error::NotLeader { leader_hint: None }),
            ),
        }
    }

    /// Records how a request ended: in the history (when it is there), as an answer to check at
    /// its log index (when it has one), and in the counts. A request that took effect without
    /// an answer to check is of unknown outcome in the history.
    fn settle<R>(
        &self,
        id: Option<OpId>,
        outcome: &Outcome<R>,
        op: OpOf<SM>,
        answer: Option<(RetOf<SM>, LogIndex)>,
        at_least: Option<LogIndex>,
    ) {
        let mut world = self.shared.world.borrow_mut();
        let now = now_ms();
        world.counts.of(&op).count(outcome);
        if let Some(id) = id {
            match (outcome, &answer) {
                (Outcome::Ok(_), Some((ret, _))) => world.history.ok(id, ret.clone(), now),
                (Outcome::Failed(_), _) => world.history.failed(id),
                _ => world.history.unknown(id),
            }
        }
        if let Some((ret, index)) = answer {
            let write = matches!(op, ClusterOp::Write(_));
            world.observations.push(Observation {
                client: self.shared.name.clone(),
                at_ms: now,
                op,
                ret,
                index,
                write,
                at_least,
            });
        }
    }

    /// Waits `duration` of simulated time.
    pub async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Follows a refusal's leader hint, and paces the loop (see the type's documentation).
    async fn after<R>(&self, invoked: u64, outcome: &Outcome<R>) {
        match outcome {
            Outcome::Ok(_) => {
                if now_ms() == invoked {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            _ => {
                *self.shared.hint.borrow_mut() = outcome.leader_hint();
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
    }
}
