//! A correct state machine passes under every fault, on every store, and a seed replays the
//! same run.

mod support;

use raft_core::node::Consistency;
use raft_sim::{Fault, Nemesis, Simulation, Storage, Target};
use rand::RngExt;
use std::time::Duration;
use support::{RegisterMachine, RegisterModel, random_write};

fn simulation() -> Simulation<RegisterMachine, RegisterModel> {
    Simulation::new(|_| RegisterMachine::default(), RegisterModel).clients(3, |client| async move {
        let mut rng = client.rng();
        while client.running() {
            match rng.random_range(0..10) {
                0..5 => {
                    client.propose(random_write(&mut rng, 3)).await;
                }
                5..7 => {
                    client
                        .read(rng.random_range(0..3), Consistency::Linearizable)
                        .await;
                }
                7..9 => {
                    client
                        .read(rng.random_range(0..3), Consistency::Lease)
                        .await;
                }
                _ => {
                    // Read-your-writes on any node.
                    let written = client.propose(random_write(&mut rng, 3)).await;
                    if let Some(written) = written.ok() {
                        let key = rng.random_range(0..3);
                        let consistency = Consistency::AtLeast(written.index);
                        client.read_on(Target::Any, key, consistency).await;
                    }
                }
            }
        }
        for key in 0..3 {
            client.read(key, Consistency::Linearizable).await;
        }
    })
}

#[test]
fn a_correct_state_machine_passes_under_the_default_nemesis() {
    let reports = simulation().check();
    assert!(reports.iter().all(|r| r.writes.ok > 0 && r.reads.ok > 0));
}

#[test]
fn a_correct_state_machine_passes_on_the_simulated_disk() {
    simulation().storage(Storage::simulated_disk()).check();
}

#[test]
fn a_seed_replays_the_same_run() {
    let plain = simulation().nemesis(Nemesis::default());
    // With spare hosts and membership churn, whose requests and outcomes are in the faults.
    let churn = simulation()
        .spares(2)
        .nemesis(Nemesis::default().with(Fault::MembershipChange));
    // With leadership transfers, recorded the same way.
    let transfers = simulation().nemesis(Nemesis::default().with(Fault::TransferLeadership));
    for simulation in [plain, churn, transfers] {
        let first = simulation.run(7);
        let second = simulation.run(7);
        assert!(first.is_ok(), "{first}");
        assert_eq!(first.digest, second.digest);
        assert_eq!(first.history.len(), second.history.len());
        assert_eq!(first.faults, second.faults);
        assert_eq!(first.final_voters, second.final_voters);
        assert_eq!(first.audited_writes, second.audited_writes);
    }
}

/// Bounded-staleness reads of every node, with bounds from 0 to 500 ms, beside writes: each
/// read is checked against its bound, and against the model at the applied index it was served
/// at; every acknowledged write is then found on a majority of the stores.
#[test]
fn bounded_staleness_reads_stay_within_their_bound() {
    let simulation = Simulation::new(|_| RegisterMachine::default(), RegisterModel).clients(
        3,
        |client| async move {
            let mut rng = client.rng();
            while client.running() {
                if rng.random_ratio(1, 2) {
                    client.propose(random_write(&mut rng, 3)).await;
                } else {
                    let bound = Duration::from_millis(rng.random_range(0..500));
                    let key = rng.random_range(0..3);
                    let consistency = Consistency::BoundedStaleness(bound);
                    client.read_on(Target::Any, key, consistency).await;
                }
            }
        },
    );
    for report in simulation.check() {
        assert!(report.bounded_reads > 0, "{report}");
        assert_eq!(report.audited_writes, Some(report.writes.ok), "{report}");
    }
}

#[test]
fn five_nodes_pass_too() {
    simulation().nodes(5).default_seeds(2).check();
}

#[test]
fn latencies_that_make_leadership_flap_are_warned_about() {
    let calm = simulation().nemesis(Nemesis::none()).run(1);
    assert!(calm.warnings.is_empty(), "{calm}");
    // turmoil's own default: up to 100 ms a message, against a 150 ms minimum election timeout.
    let slow = simulation()
        .nemesis(Nemesis::none())
        .latency(Duration::from_millis(1), Duration::from_millis(100))
        .run(1);
    assert!(
        slow.warnings.iter().any(|w| w.contains("election timeout")),
        "{slow}"
    );
}

/// A latency spike lower than the links' own latency slows nothing down and never hands turmoil
/// a maximum below a link's minimum (which aborted the whole test process).
#[test]
fn a_latency_spike_below_the_link_latency_is_harmless() {
    let nemesis = Nemesis::only([Fault::LatencySpike])
        .latency_spike(Duration::from_millis(5), Duration::from_millis(10));
    let report = simulation()
        .latency(Duration::from_millis(20), Duration::from_millis(30))
        .configure(|config| {
            config.raft.election_timeout_min_ms = 300;
            config.raft.election_timeout_max_ms = 600;
        })
        .nemesis(nemesis)
        .run(0);
    let spiked = report
        .faults
        .iter()
        .any(|f| f.what.contains("latency spike"));
    assert!(spiked, "{:?}", report.faults);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
