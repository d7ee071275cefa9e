//! A director's scripted faults: they take effect, they are recorded, the run's checks still
//! hold, and the director's own checks fail the run when they find something.

mod support;

use raft_core::NodeId;
use raft_core::node::Consistency;
use raft_sim::{Director, Nemesis, Simulation, Storage, Target};
use std::time::Duration;
use support::{RegisterMachine, RegisterModel, Write, workload};

fn simulation() -> Simulation<RegisterMachine, RegisterModel> {
    workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
    .nemesis(Nemesis::none())
}

/// Each new leader is cut off from the others 200 ms after it is seen: the others elect the
/// next, which gets the same treatment. Every check holds, and each cut shows in the terms.
#[test]
fn every_new_leader_cut_off_by_the_director_is_replaced() {
    let simulation = simulation().director(|director: Director<RegisterMachine>| async move {
        let mut cut = None;
        while director.running() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Some(leader) = director.leader() else {
                continue;
            };
            if cut == Some(leader) {
                continue;
            }
            // Time for a few writes, then the cut.
            tokio::time::sleep(Duration::from_millis(200)).await;
            director.heal().await;
            director.note(format!("leader n{} seen", leader.0));
            director.isolate(leader).await;
            cut = Some(leader);
        }
    });
    for report in simulation.check() {
        let cuts = report
            .faults
            .iter()
            .filter(|f| f.what.starts_with("director: partition"))
            .count() as u64;
        assert!(cuts >= 3, "{report}");
        // Every cut but the last ends in a later term with another leader: the cuts took
        // effect.
        let leaders = report.terms.iter().filter(|t| t.leader.is_some()).count() as u64;
        assert!(leaders >= cuts, "{cuts} cuts, {leaders} leaders\n{report}");
        assert!(report.faults.iter().any(|f| f.what.ends_with("seen")));
    }
}

/// A follower whose stores were emptied starts with an empty log (seen while it is still cut
/// off), and catches up once healed: a write acknowledged after that is read on it with
/// `AtLeast` within 5 s.
fn empty_a_follower(storage: Storage) {
    let simulation = simulation()
        .storage(storage)
        .duration(Duration::from_secs(6))
        .director(|director: Director<RegisterMachine>| async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let Some(leader) = director.leader() else {
                return director.problem("no leader after 1.5 s");
            };
            let Some(follower) = director.nodes().into_iter().find(|&n| n != leader) else {
                return;
            };
            let before = director.status(follower).map(|s| s.last_log_index);
            // Kept away from the others while it restarts, so that what it shows is what its
            // stores held.
            director.isolate(follower).await;
            director.crash_and_empty(follower).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            director.restart(follower).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = director.status(follower).map(|s| s.last_log_index);
            director.note(format!(
                "n{}: last index {before:?} before, {after:?} after",
                follower.0
            ));
            if after.is_none_or(|after| after.0 != 0) || before.is_none_or(|b| b.0 == 0) {
                director.problem(format!("not emptied: {before:?} before, {after:?} after"));
            }
            director.heal().await;
            catch_up(&director, follower).await;
        });
    for report in simulation.check() {
        assert!(
            report
                .faults
                .iter()
                .any(|f| f.what.contains("stores emptied")),
            "{report}"
        );
    }
}

/// Writes through the leader, then reads the write back on `follower` with `AtLeast`; a
/// problem unless it does within 5 s.
async fn catch_up(director: &Director<RegisterMachine>, follower: NodeId) {
    let since = director.now_ms();
    let client = director.client();
    while director.now_ms() < since + 5_000 {
        let Some(written) = client
            .propose(Write::Put {
                key: 9,
                value: since,
            })
            .await
            .ok()
        else {
            continue;
        };
        loop {
            if director.now_ms() >= since + 5_000 {
                break;
            }
            let read = client
                .read_on(
                    Target::Node(follower),
                    9,
                    Consistency::AtLeast(written.index),
                )
                .await;
            if read.is_ok() {
                director.note(format!("n{} caught up", follower.0));
                return;
            }
        }
    }
    director.problem(format!(
        "n{} did not catch up within 5 s of {since} ms",
        follower.0
    ));
}

#[test]
fn an_emptied_follower_catches_up_in_memory() {
    empty_a_follower(Storage::Memory);
}

#[test]
fn an_emptied_follower_catches_up_on_the_simulated_disk() {
    empty_a_follower(Storage::simulated_disk());
}

/// A problem the director reports fails the run, and the report says what it was.
#[test]
fn a_problem_the_director_reports_fails_the_run() {
    let simulation = simulation().director(|director: Director<RegisterMachine>| async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        director.problem("the follower was too slow");
    });
    let report = simulation.run(0);
    assert!(!report.is_ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p == "director at 700 ms: the follower was too slow"),
        "{report}"
    );
}

/// Faults asked for after the faults stopped are not carried out, and are recorded as ignored.
#[test]
fn a_director_late_for_the_faults_is_ignored() {
    let simulation = simulation().duration(Duration::from_secs(1)).director(
        |director: Director<RegisterMachine>| async move {
            while director.running() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            director.crash(NodeId(1)).await;
        },
    );
    let report = simulation.run(3);
    assert!(report.is_ok(), "{report}");
    assert!(
        report
            .faults
            .iter()
            .any(|f| f.what.contains("ignored: the faults stopped")),
        "{report}"
    );
}
