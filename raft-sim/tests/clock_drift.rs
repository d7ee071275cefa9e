//! Clock drift ([`Fault::ClockDrift`]): within the nodes' `clock_drift_bound_ms` every check
//! holds, lease reads included; far beyond it, a leader whose clock runs slow keeps serving
//! lease reads after the others, whose clocks run fast, elected a new leader and wrote, and
//! the kit sees those reads go stale.

mod support;

use raft_core::NodeId;
use raft_core::node::Consistency;
use raft_sim::{Fault, Nemesis, Simulation, Target, Verdict};
use rand::RngExt;
use std::time::Duration;
use support::{RegisterMachine, RegisterModel, Write, random_write};

/// Three clients: each overwrites one of two registers with values no other write uses
/// (through the leader), and reads with `Consistency::Lease` from the node it read from last
/// while that node answers, so that a deposed leader still gets reads.
fn lease_readers(nemesis: Nemesis) -> Simulation<RegisterMachine, RegisterModel> {
    Simulation::new(|_| RegisterMachine::default(), RegisterModel)
        .nemesis(nemesis)
        .clients(3, |client| async move {
            let mut rng = client.rng();
            let mut node: Option<NodeId> = None;
            let mut written = 0;
            while client.running() {
                if rng.random_ratio(1, 2) {
                    written += 1;
                    let value = (client.index() + 1) * 1_000_000 + written;
                    let key = rng.random_range(0..2);
                    client.propose(Write::Put { key, value }).await;
                    continue;
                }
                let id = match node {
                    Some(id) if client.handle(Target::Node(id)).is_some() => id,
                    _ => match client.handle(Target::Leader) {
                        Some(leader) => leader.id(),
                        None => {
                            client.sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    },
                };
                let key = rng.random_range(0..2);
                let read = client
                    .read_on(Target::Node(id), key, Consistency::Lease)
                    .await;
                node = read.is_ok().then_some(id);
            }
        })
}

/// Whether clock rates were drawn in the run (and not all of them 1).
fn clocks_drifted(
    report: &raft_sim::Report<raft_sim::OpOf<RegisterMachine>, raft_sim::RetOf<RegisterMachine>>,
) -> bool {
    report
        .faults
        .iter()
        .any(|fault| fault.fault == Some(Fault::ClockDrift) && !fault.what.contains("×1.0000 "))
}

#[test]
fn lease_reads_stay_linearizable_when_clocks_drift_within_the_bound() {
    // The default nemesis: clock drift within the bound beside every other fault.
    let reports = lease_readers(Nemesis::default()).check();
    assert!(reports.iter().all(clocks_drifted));
}

/// Leaders isolated again and again while clocks run at `1 ± max_deviation` times real time:
/// with 0.9, a leader at 0.2 holds its 120 ms lease for 600 ms, while followers at 1.5 time out
/// after 100 to 200 ms.
fn far_beyond_the_bound(max_deviation: f64) -> Simulation<RegisterMachine, RegisterModel> {
    let nemesis = Nemesis::only([Fault::IsolateLeader, Fault::ClockDrift])
        .interval(Duration::from_millis(300), Duration::from_millis(600))
        .clock_drift(max_deviation);
    // Requests time out after 50 ms: a write sent to the deposed leader, which cannot commit
    // it, soon gives way to one sent to the new leader.
    lease_readers(nemesis)
        .duration(Duration::from_secs(6))
        .configure(|config| config.request_timeout = Duration::from_millis(50))
}

#[test]
fn clocks_drifting_far_beyond_the_bound_make_lease_reads_stale() {
    let simulation = far_beyond_the_bound(0.9);
    // Only some isolations find the leader's clock slow and the others' fast enough: twelve
    // fixed seeds rather than the default four (four of them catch it), and not the
    // environment's (a seed that catches nothing would fail the test).
    let reports: Vec<_> = (0..12).map(|seed| simulation.run(seed)).collect();
    for report in &reports {
        eprintln!("{}", report.summary());
    }
    let failed: Vec<_> = reports.iter().filter(|r| !r.is_ok()).collect();
    let caught: Vec<u64> = failed.iter().map(|r| r.seed).collect();
    eprintln!("caught by seeds {caught:?}");
    assert!(
        !failed.is_empty(),
        "drift beyond the bound went unnoticed in every seed"
    );
    let mut by_lease_check = 0;
    for report in &failed {
        // Stale reads: refuted by the history, or seen served after a later term's election
        // (the lease check), or both; nothing else.
        let lease = |p: &String| p.contains("lease read");
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.starts_with("linearizability") || lease(p)),
            "only stale reads should fail:\n{report}"
        );
        assert!(
            matches!(report.linearizability, Verdict::NotLinearizable(_))
                || report.problems.iter().any(lease),
            "{report}"
        );
        if report.problems.iter().any(lease) {
            by_lease_check += 1;
        }
    }
    eprintln!("{by_lease_check} of them by the lease check");
    assert!(by_lease_check > 0, "the lease check caught nothing");
}

/// The same runs with the clocks within the bound (±4%) pass: what fails above is the drift.
#[test]
fn the_same_runs_pass_with_drift_within_the_bound() {
    let reports = far_beyond_the_bound(0.04).default_seeds(12).check();
    assert!(reports.iter().all(clocks_drifted));
}

/// A node measures a bounded-staleness read's age on its own clock, so a partitioned follower
/// whose clock runs slow serves data a little older, in real time, than the bound: correct, as
/// `Consistency::BoundedStaleness` documents, and judged so (bounds of 1 to 3 s, partitions
/// lasting seconds, clocks within the drift bound).
#[test]
fn bounded_staleness_is_judged_on_the_serving_nodes_clock() {
    Simulation::new(|_| RegisterMachine::default(), RegisterModel)
        .nemesis(
            Nemesis::only([Fault::Partition, Fault::ClockDrift])
                .interval(Duration::from_millis(2_500), Duration::from_millis(4_000)),
        )
        .duration(Duration::from_secs(10))
        .clients(3, |client| async move {
            let mut rng = client.rng();
            while client.running() {
                if rng.random_ratio(1, 2) {
                    client.propose(random_write(&mut rng, 3)).await;
                } else {
                    let bound = Duration::from_millis(rng.random_range(1_000..3_000));
                    let key = rng.random_range(0..3);
                    client
                        .read_on(Target::Any, key, Consistency::BoundedStaleness(bound))
                        .await;
                }
            }
        })
        .check();
}
