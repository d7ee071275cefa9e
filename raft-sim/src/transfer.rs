//! Leadership transfers ([`crate::Fault::TransferLeadership`]): a task that, while the other
//! faults act, asks the node that leads to hand leadership to another voter (dissertation
//! §3.10), and records every request with its time, its outcome and whether the target was then
//! seen leading.

use crate::SimStateMachine;
use crate::nemesis::{Fault, FaultRecord, host};
use crate::outcome::Outcome;
use crate::world::{SharedWorld, now_ms};
use raft_core::{NodeId, Role, Term};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

/// The time between two requests, drawn at random from this range, in milliseconds: long
/// enough that most transfers end (in a new leader, or abandoned after a minimum election
/// timeout) and writes get through between them.
pub(crate) const TRANSFER_INTERVAL_MS: (u64, u64) = (300, 1_500);
/// How long after a transfer started the harness watches for its target to lead.
const WATCH_MS: u64 = 1_000;
/// How often it looks while it watches.
const WATCH_EVERY_MS: u64 = 5;
/// Separates the transfers' draws from every other stream of a run, so that turning transfers
/// on does not change which other faults a seed injects.
const STREAM: u64 = 0x7A2F_5E12_0000_0002;

/// From `first_ms` into the run until the faults stop, every 300 to 1,500 ms asks the node that
/// leads in the highest term to hand leadership to another voter of its membership, picked at
/// random. Each request is recorded when it ends, at the time it was made.
pub(crate) async fn run<SM: SimStateMachine>(world: SharedWorld<SM>, first_ms: u64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
    tokio::time::sleep(Duration::from_millis(first_ms)).await;
    loop {
        if world.borrow().finished {
            return;
        }
        let who = rng.random_range(0..u64::MAX);
        let pause = rng.random_range(TRANSFER_INTERVAL_MS.0..=TRANSFER_INTERVAL_MS.1);
        transfer_once(&world, who).await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Asks the leader to hand over to the voter `who` picks (none when it is the only voter),
/// and records the request.
async fn transfer_once<SM: SimStateMachine>(world: &SharedWorld<SM>, who: u64) {
    let leader = world.borrow().leader();
    let Some(leader) = leader else { return };
    let status = leader.status();
    let Some(membership) = status.membership else {
        return;
    };
    let me = leader.id();
    let others: Vec<NodeId> = membership
        .voters()
        .iter()
        .copied()
        .filter(|&id| id != me)
        .collect();
    let Some(target) = u64::try_from(others.len())
        .ok()
        .filter(|&len| len > 0)
        .and_then(|len| usize::try_from(who % len).ok())
        .and_then(|i| others.get(i).copied())
    else {
        return;
    };
    let requested = now_ms();
    let outcome = Outcome::from_result(leader.transfer_leadership(target).await);
    let answered = now_ms();
    let took = answered.saturating_sub(requested);
    let said = match &outcome {
        Outcome::Ok(()) => {
            let (completed, after) = watch(world, target, status.term).await;
            if completed {
                world.borrow_mut().transfers.completed += 1;
            }
            format!("started after {took} ms; {after}")
        }
        Outcome::Failed(error) => format!("refused after {took} ms: {error}"),
        Outcome::Unknown(error) => format!("outcome unknown after {took} ms: {error}"),
    };
    let mut world = world.borrow_mut();
    world.transfers.counts.count(&outcome);
    world.transfers.log.push(FaultRecord {
        at_ms: requested,
        fault: Some(Fault::TransferLeadership),
        what: format!(
            "transfer: {} (term {}) asked to hand leadership to {}: {said}",
            host(me),
            status.term.0,
            host(target)
        ),
    });
}

/// Watches, for up to [`WATCH_MS`], for a leader in a term after `term`: whether it is
/// `target`, and what was seen, for the record. (It goes on watching after the faults stop,
/// which keeps the run going that much longer at most.)
async fn watch<SM: SimStateMachine>(
    world: &SharedWorld<SM>,
    target: NodeId,
    term: Term,
) -> (bool, String) {
    let started = now_ms();
    loop {
        let elapsed = now_ms().saturating_sub(started);
        let newer = world
            .borrow()
            .handles
            .values()
            .map(|handle| handle.status())
            .filter(|status| status.role == Role::Leader && status.term > term)
            .max_by_key(|status| status.term);
        if let Some(status) = newer {
            let completed = status.id == target;
            let instead = if completed { "" } else { " instead" };
            let what = format!(
                "{} leads term {}{instead} {elapsed} ms later",
                host(status.id),
                status.term.0
            );
            return (completed, what);
        }
        if elapsed >= WATCH_MS {
            return (false, format!("no new leader seen within {elapsed} ms"));
        }
        tokio::time::sleep(Duration::from_millis(WATCH_EVERY_MS)).await;
    }
}
