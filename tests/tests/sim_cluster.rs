//! Turmoil simulations of 3- and 5-node clusters, one test per [`Scenario`]: every client
//! history must be linearizable, read-your-writes must hold, no lease read may follow a later
//! term's election, and a write must succeed soon after the faults stop. A failure prints its
//! seed and the command that replays it (`RAFT_SIM_SEED=<seed>`); `RAFT_SIM_SEEDS=<n>` runs
//! more seeds of every scenario.

use raft_tests::cluster_sim::{Scenario, check_seed, seeds_from_env};

/// Runs the seeds of `scenario` (`default` of them unless the environment says otherwise) and
/// fails with the list of seeds that broke a check. Returns how many reads followers served.
fn run_seeds(scenario: Scenario, default: u64) -> u64 {
    let seeds = seeds_from_env(default);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let (mut completed, mut lease_reads, mut bounded_reads, mut elections, mut transfers) =
        (0, 0, 0, 0, 0);
    let mut follower_reads = 0;
    for &seed in &seeds {
        match check_seed(scenario, seed) {
            Ok(outcome) => {
                if seeds.len() == 1 {
                    eprintln!("seed {seed}: digest {:016x}", outcome.digest);
                }
                completed += outcome.completed;
                lease_reads += outcome.lease_reads;
                follower_reads += outcome.follower_reads;
                bounded_reads += outcome.bounded_reads;
                elections += outcome.elections;
                transfers += outcome.transfers;
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{scenario:?}: {} seeds in {:.1?}: {} failed {failures:?}; {completed} operations completed, {lease_reads} lease reads, {follower_reads} follower reads, {bounded_reads} bounded-staleness reads, {elections} elections, {transfers} transfers",
        seeds.len(),
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{scenario:?}: failing seeds: {failures:?}"
    );
    assert!(completed > 0 && elections > 0, "the runs exercised nothing");
    follower_reads
}

#[test]
fn clusters_under_faults_stay_linearizable() {
    let follower_reads = run_seeds(Scenario::Faults, 24);
    assert!(follower_reads > 0, "no read was served by a follower");
}

#[test]
fn divergent_tails_stay_linearizable() {
    run_seeds(Scenario::DivergentTails, 24);
}

#[test]
fn a_healthy_leader_keeps_its_leadership() {
    run_seeds(Scenario::Steady, 8);
}

#[test]
fn transfers_in_a_healthy_cluster_complete() {
    run_seeds(Scenario::SteadyTransfers, 8);
}

#[test]
fn a_seed_replays_the_same_run() {
    for scenario in [
        Scenario::Faults,
        Scenario::DivergentTails,
        Scenario::SteadyTransfers,
    ] {
        let first = check_seed(scenario, 7).map(|o| (o.digest, o.completed));
        let second = check_seed(scenario, 7).map(|o| (o.digest, o.completed));
        assert_eq!(first, second, "{scenario:?}");
    }
}
