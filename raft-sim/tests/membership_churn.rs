//! Membership churn beside the other faults: the leader is asked, again and again, to add a
//! spare host as a learner, promote it, remove a voter (often itself) or replace one, while
//! the default nemesis partitions, delays, drops, crashes and restarts. A correct state machine
//! still passes every check, liveness judged over the final voters.

mod support;

use raft_sim::{Fault, Nemesis, Simulation};
use support::{RegisterMachine, RegisterModel, workload};

fn simulation() -> Simulation<RegisterMachine, RegisterModel> {
    workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
    .spares(2)
    .nemesis(Nemesis::default().with(Fault::MembershipChange))
}

#[test]
fn membership_churn_under_faults_stays_linearizable_and_live() {
    let reports = simulation().check();
    let completed: u64 = reports.iter().map(|r| r.membership_changes.ok).sum();
    let leader_removals: u64 = reports.iter().map(|r| r.leader_removals).sum();
    eprintln!(
        "{} seeds: {completed} membership changes completed, {leader_removals} of them removed \
         the leader",
        reports.len()
    );
    for report in &reports {
        assert!(report.linearizability.is_linearizable(), "{report}");
        assert!(!report.final_voters.is_empty(), "{report}");
        // Every change is in the report, with its time and outcome.
        let recorded = report
            .faults
            .iter()
            .filter(|f| f.fault == Some(Fault::MembershipChange))
            .count() as u64;
        let counts = report.membership_changes;
        assert_eq!(recorded, counts.ok + counts.failed + counts.unknown);
    }
    // A seed may see every request refused or cut short (a leader partitioned away each
    // time); the seeds together must complete changes.
    assert!(completed > 0, "no membership change completed in any seed");
    assert!(
        leader_removals > 0,
        "no seed removed the leader from the voters"
    );
}

#[test]
fn membership_churn_passes_on_the_simulated_disk() {
    simulation()
        .storage(raft_sim::Storage::simulated_disk())
        .check();
}
