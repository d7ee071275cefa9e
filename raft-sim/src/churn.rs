//! Membership churn ([`crate::Fault::MembershipChange`]): a task that, while the other faults
//! act, asks the node that leads to change the cluster's membership (paper §6, dissertation
//! chapter 4), and records every request with its time and outcome.

use crate::SimStateMachine;
use crate::nemesis::{Fault, FaultRecord, host};
use crate::outcome::Outcome;
use crate::world::{SharedWorld, now_ms};
use raft_core::node::Error;
use raft_core::{LogIndex, NodeId};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

/// The time between two requests, drawn at random from this range, in milliseconds.
pub(crate) const CHANGE_INTERVAL_MS: (u64, u64) = (100, 500);
/// Separates the churn's draws from every other stream of a run, so that turning churn on does
/// not change which other faults a seed injects.
const STREAM: u64 = 0x3C4B_11A5_0000_0001;
/// Never fewer voters than this after a removal (a cluster that started with fewer keeps its
/// number).
const MIN_VOTERS: usize = 2;

/// What the churn task needs to know about the cluster.
pub(crate) struct ChurnPlan {
    /// Every host: the first voters, then the spares.
    pub(crate) hosts: Vec<NodeId>,
    /// Promotions stop at this many voters.
    pub(crate) max_voters: usize,
    /// Removals stop at this many voters.
    pub(crate) min_voters: usize,
    /// The first request is made this long into the run (with the nemesis' first fault).
    pub(crate) first_ms: u64,
    /// The port nodes listen on: a new learner's address is `<host>:<port>`.
    pub(crate) port: u16,
}

impl ChurnPlan {
    pub(crate) fn new(hosts: Vec<NodeId>, voters: usize, first_ms: u64, port: u16) -> ChurnPlan {
        ChurnPlan {
            max_voters: (voters + 2).min(hosts.len()).max(voters),
            min_voters: MIN_VOTERS.min(voters),
            hosts,
            first_ms,
            port,
        }
    }
}

/// Until the faults stop, every 100 to 500 ms asks the node that leads in the highest term
/// for one change, judged against that node's membership: add a node outside the membership as
/// a learner (with its address), remove a learner, promote one, remove a voter (the leader
/// itself half the time), or replace a voter with a learner. Each request is recorded when it
/// ends, at the time it was made.
pub(crate) async fn run<SM: SimStateMachine>(world: SharedWorld<SM>, plan: ChurnPlan, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
    tokio::time::sleep(Duration::from_millis(plan.first_ms)).await;
    loop {
        if world.borrow().finished {
            return;
        }
        let kind = rng.random_range(0..6_u32);
        let who = rng.random_range(0..u64::MAX);
        let pause = rng.random_range(CHANGE_INTERVAL_MS.0..=CHANGE_INTERVAL_MS.1);
        change_once(&world, &plan, kind, who).await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Makes the change `kind` draws, about the node `who` picks, if it applies now.
async fn change_once<SM: SimStateMachine>(
    world: &SharedWorld<SM>,
    plan: &ChurnPlan,
    kind: u32,
    who: u64,
) {
    let leader = world.borrow().leader();
    let Some(leader) = leader else { return };
    let Some(membership) = leader.status().membership else {
        return;
    };
    let me = leader.id();
    let pick = |from: &[NodeId]| -> Option<NodeId> {
        let len = u64::try_from(from.len()).ok().filter(|&len| len > 0)?;
        usize::try_from(who % len)
            .ok()
            .and_then(|i| from.get(i).copied())
    };
    let outside: Vec<NodeId> = plan
        .hosts
        .iter()
        .copied()
        .filter(|&id| !membership.contains(id))
        .collect();
    let learners: Vec<NodeId> = membership.learners().iter().copied().collect();
    let voters = membership.voters().clone();
    let voter_list: Vec<NodeId> = voters.iter().copied().collect();
    let requested = now_ms();
    let (what, removes_leader, result): (String, bool, Result<LogIndex, Error>) = match kind {
        0 | 1 => {
            let Some(id) = pick(&outside) else { return };
            let address = format!("{}:{}", host(id), plan.port);
            let what = format!("add learner {} ({address})", host(id));
            (
                what,
                false,
                leader.add_learner(id, Some(address), None).await,
            )
        }
        2 => {
            let Some(id) = pick(&learners) else { return };
            let what = format!("remove learner {}", host(id));
            (what, false, leader.remove_learner(id).await)
        }
        3 => {
            let Some(id) = pick(&learners) else { return };
            if voters.len() >= plan.max_voters {
                return;
            }
            let mut next = voters.clone();
            next.insert(id);
            let what = format!("promote learner {}", host(id));
            (what, false, leader.change_membership(next).await)
        }
        4 => {
            // The leader itself half the time: it must hand over once its removal commits.
            let gone = if who.is_multiple_of(2) {
                me
            } else {
                pick(&voter_list).unwrap_or(me)
            };
            if voters.len() <= plan.min_voters {
                return;
            }
            let mut next = voters.clone();
            next.remove(&gone);
            let what = format!("remove voter {}", host(gone));
            (what, gone == me, leader.change_membership(next).await)
        }
        _ => {
            let (Some(out), Some(learner)) = (pick(&voter_list), pick(&learners)) else {
                return;
            };
            let mut next = voters.clone();
            next.remove(&out);
            next.insert(learner);
            let what = format!("replace voter {} with learner {}", host(out), host(learner));
            (what, out == me, leader.change_membership(next).await)
        }
    };
    let ended = now_ms();
    let took = ended.saturating_sub(requested);
    let outcome = Outcome::from_result(result);
    let said = match &outcome {
        Outcome::Ok(index) => format!("done at index {} in {took} ms", index.0),
        Outcome::Failed(error) => format!("refused after {took} ms: {error}"),
        Outcome::Unknown(error) => format!("outcome unknown after {took} ms: {error}"),
    };
    let mut world = world.borrow_mut();
    world.churn.counts.count(&outcome);
    if outcome.is_ok() && removes_leader {
        world.churn.leader_removals += 1;
    }
    world.churn.log.push(FaultRecord {
        at_ms: requested,
        fault: Some(Fault::MembershipChange),
        what: format!("membership: {} asked to {what}: {said}", host(me)),
    });
}
