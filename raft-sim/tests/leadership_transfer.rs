//! Leadership transfers beside the other faults: the leader is asked, again and again, to hand
//! leadership to another voter (dissertation §3.10), which may be down or cut off, while the
//! default nemesis partitions, delays, drops, crashes and restarts. A correct state machine
//! still passes every check, and every request is in the report with its outcome.

mod support;

use raft_sim::{Fault, Nemesis, Report, Simulation, Storage};
use support::{RegisterMachine, RegisterModel, workload};

fn simulation(nemesis: Nemesis) -> Simulation<RegisterMachine, RegisterModel> {
    workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
    .nemesis(nemesis.with(Fault::TransferLeadership))
}

/// Every request is recorded, with a record for each outcome counted.
fn assert_recorded<Op, Ret>(report: &Report<Op, Ret>) {
    let recorded = report
        .faults
        .iter()
        .filter(|f| f.fault == Some(Fault::TransferLeadership))
        .count() as u64;
    let counts = report.leadership_transfers;
    assert_eq!(recorded, counts.ok + counts.failed + counts.unknown);
    assert!(report.transfers_completed <= counts.ok);
}

#[test]
fn leadership_transfers_under_faults_pass_every_check() {
    let reports = simulation(Nemesis::default()).check();
    for report in &reports {
        assert_recorded(report);
    }
    let started: u64 = reports.iter().map(|r| r.leadership_transfers.ok).sum();
    let completed: u64 = reports.iter().map(|r| r.transfers_completed).sum();
    eprintln!(
        "{} seeds: {started} transfers started, {completed} completed",
        reports.len()
    );
    assert!(completed > 0, "no transfer completed in any seed");
}

/// On a healthy network every transfer the leader starts hands over leadership: its target is
/// up and reachable.
#[test]
fn leadership_transfers_on_a_healthy_network_complete() {
    for report in simulation(Nemesis::none()).check() {
        assert_recorded(&report);
        let transfers = report.leadership_transfers;
        assert!(transfers.ok > 0, "{report}");
        assert_eq!(report.transfers_completed, transfers.ok, "{report}");
        // A term for each transfer, besides the first election.
        assert!(report.elections > transfers.ok, "{report}");
    }
}

#[test]
fn leadership_transfers_pass_on_the_simulated_disk_with_membership_churn() {
    simulation(Nemesis::default().with(Fault::MembershipChange))
        .spares(2)
        .storage(Storage::simulated_disk())
        .check();
}
