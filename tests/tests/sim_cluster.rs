//! Turmoil simulations of 3- and 5-node clusters under a nemesis: every client history must be
//! linearizable, read-your-writes must hold, no lease read may follow a later term's election,
//! and a write must succeed soon after the faults stop. A failure prints its seed;
//! `RAFT_SIM_SEED=<seed>` replays it and `RAFT_SIM_SEEDS=<n>` runs more seeds.

use raft_tests::cluster_sim::{check_seed, seeds_from_env};

#[test]
fn clusters_under_faults_stay_linearizable() {
    let seeds = seeds_from_env(24);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let (mut completed, mut lease_reads, mut elections) = (0, 0, 0);
    for &seed in &seeds {
        match check_seed(seed) {
            Ok(outcome) => {
                if seeds.len() == 1 {
                    eprintln!("seed {seed}: digest {:016x}", outcome.digest);
                }
                completed += outcome.completed;
                lease_reads += outcome.lease_reads;
                elections += outcome.elections;
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{} seeds in {:.1?}: {} failed {failures:?}; {completed} operations completed, {lease_reads} lease reads, {elections} elections",
        seeds.len(),
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    assert!(completed > 0 && elections > 0, "the runs exercised nothing");
}

#[test]
fn a_seed_replays_the_same_run() {
    let first = check_seed(7).map(|o| (o.digest, o.completed));
    let second = check_seed(7).map(|o| (o.digest, o.completed));
    assert_eq!(first, second);
}
