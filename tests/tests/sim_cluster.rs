//! Turmoil simulations of 3- and 5-node clusters, one test per [`Scenario`]: every client
//! history must be linearizable, read-your-writes must hold, no lease read may follow a later
//! term's election, and a write must succeed soon after the faults stop. The nodes take
//! snapshots and compact their logs every few dozen to a couple of hundred entries throughout,
//! and lagging followers catch up from snapshots sent in small chunks. After every run each
//! host is crashed and its stores read back: every write acknowledged with `Ack::Quorum` must be
//! on a majority of them, and no two nodes may have applied different commands at one index.
//! [`Scenario::MutualTls`] runs the random nemesis with the transport in mutual TLS.
//! [`Scenario::DiskCrashes`] runs the nodes on the durable file stores on turmoil's simulated
//! disk and crashes hosts at random points, each crash losing what was not synced. A failure
//! prints its seed and the command that replays it (`RAFT_SIM_SEED=<seed>`, which also prints
//! the run's digest, snapshot counts and faults); `RAFT_SIM_SEEDS=<n>` runs more seeds of every
//! scenario.

use raft_tests::cluster_sim::{CatchUpKind, Scenario, check_seed, seeds_from_env};

/// What the seeds of one scenario did, summed.
#[derive(Debug, Default)]
struct Totals {
    completed: u64,
    lease_reads: u64,
    follower_reads: u64,
    bounded_reads: u64,
    elections: u64,
    transfers: u64,
    snapshots: u64,
    snapshot_sends: u64,
    snapshot_installs: u64,
    largest_snapshot_bytes: u64,
    /// Followers that came back (cut off, emptied) and caught up when only a snapshot could
    /// bring them up to date.
    cut_catch_ups: u64,
    emptied_catch_ups: u64,
    /// The longest any of those took, in milliseconds.
    slowest_catch_up_ms: u64,
    /// Hosts crashed by the nemesis, and of those: right after a snapshot, while being sent
    /// one; and the times every host was crashed at once.
    crashes: u64,
    crashes_after_snapshot: u64,
    crashes_during_snapshot_transfer: u64,
    power_losses: u64,
    power_losses_after_ack: u64,
    /// Hosts crashed after the runs, before their stores were read back.
    final_crashes: u64,
    /// Writes acknowledged with `Ack::Quorum`, each found on a majority of the stores.
    acknowledged_writes: u64,
    /// Membership changes completed, and of those, the ones that removed the leader.
    membership_changes: u64,
    leader_removals: u64,
}

/// Runs the seeds of `scenario` (`default` of them unless the environment says otherwise) and
/// fails with the list of seeds that broke a check. Returns what they did.
fn run_seeds(scenario: Scenario, default: u64) -> Totals {
    let seeds = seeds_from_env(default);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut t = Totals::default();
    for &seed in &seeds {
        match check_seed(scenario, seed) {
            Ok(outcome) => {
                if seeds.len() == 1 {
                    eprintln!(
                        "seed {seed}: digest {:016x}; {} snapshots taken or installed, {} sent, {} installed; caught up: {:?}; faults: {:?}",
                        outcome.digest,
                        outcome.snapshots,
                        outcome.snapshot_sends,
                        outcome.snapshot_installs,
                        outcome.catch_ups,
                        outcome.faults
                    );
                }
                t.completed += outcome.completed;
                t.lease_reads += outcome.lease_reads;
                t.follower_reads += outcome.follower_reads;
                t.bounded_reads += outcome.bounded_reads;
                t.elections += outcome.elections;
                t.transfers += outcome.transfers;
                t.snapshots += outcome.snapshots;
                t.snapshot_sends += outcome.snapshot_sends;
                t.snapshot_installs += outcome.snapshot_installs;
                t.largest_snapshot_bytes =
                    t.largest_snapshot_bytes.max(outcome.largest_snapshot_bytes);
                t.crashes += outcome.crashes;
                t.crashes_after_snapshot += outcome.crashes_after_snapshot;
                t.crashes_during_snapshot_transfer += outcome.crashes_during_snapshot_transfer;
                t.power_losses += outcome.power_losses;
                t.power_losses_after_ack += outcome.power_losses_after_ack;
                t.final_crashes += outcome.final_crashes;
                t.acknowledged_writes += outcome.acknowledged_writes;
                t.membership_changes += outcome.membership_changes;
                t.leader_removals += outcome.leader_removals;
                for catch_up in outcome.catch_ups.iter().filter(|c| c.needed_snapshot) {
                    match catch_up.kind {
                        CatchUpKind::Cut => t.cut_catch_ups += 1,
                        CatchUpKind::Emptied => t.emptied_catch_ups += 1,
                    }
                    t.slowest_catch_up_ms = t.slowest_catch_up_ms.max(catch_up.took_ms);
                }
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(seed);
            }
        }
    }
    let catch_ups = if scenario == Scenario::SnapshotCatchUp {
        format!(
            "; caught up from a snapshot: {} cut-off and {} emptied followers (slowest {} ms)",
            t.cut_catch_ups, t.emptied_catch_ups, t.slowest_catch_up_ms
        )
    } else {
        String::new()
    };
    let crashes = if scenario == Scenario::DiskCrashes {
        format!(
            "; {} crash points on the simulated disks ({} right after a snapshot, {} during a snapshot transfer, {} power losses of every host, {} of them in the step a write was acknowledged; and {} final crashes before the stores were read back)",
            t.crashes,
            t.crashes_after_snapshot,
            t.crashes_during_snapshot_transfer,
            t.power_losses,
            t.power_losses_after_ack,
            t.final_crashes
        )
    } else {
        format!("; {} crashes", t.crashes)
    };
    let crashes = if scenario == Scenario::MembershipChurn {
        format!(
            "{crashes}; {} membership changes completed, {} of them removing the leader",
            t.membership_changes, t.leader_removals
        )
    } else {
        crashes
    };
    eprintln!(
        "{scenario:?}: {} seeds in {:.1?}: {} failed {failures:?}; {} operations completed, {} lease reads, {} follower reads, {} bounded-staleness reads, {} elections, {} transfers; {} snapshots taken or installed, {} sent, {} installed (images up to {} bytes){catch_ups}{crashes}; {} acknowledged writes each on a majority of the stores",
        seeds.len(),
        started.elapsed(),
        failures.len(),
        t.completed,
        t.lease_reads,
        t.follower_reads,
        t.bounded_reads,
        t.elections,
        t.transfers,
        t.snapshots,
        t.snapshot_sends,
        t.snapshot_installs,
        t.largest_snapshot_bytes,
        t.acknowledged_writes,
    );
    assert!(
        failures.is_empty(),
        "{scenario:?}: failing seeds: {failures:?}"
    );
    assert!(
        t.completed > 0 && t.elections > 0 && t.snapshots > 0,
        "the runs exercised nothing"
    );
    t
}

#[test]
fn clusters_under_faults_stay_linearizable() {
    let totals = run_seeds(Scenario::Faults, 24);
    assert!(
        totals.follower_reads > 0,
        "no read was served by a follower"
    );
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
fn lagging_and_emptied_followers_catch_up_from_snapshots() {
    let totals = run_seeds(Scenario::SnapshotCatchUp, 24);
    assert!(
        totals.cut_catch_ups > 0 && totals.emptied_catch_ups > 0 && totals.snapshot_installs > 0,
        "no follower caught up from a snapshot: {totals:?}"
    );
}

/// Durable stores on the simulated disk, hosts crashed at random points during heavy writes and
/// snapshots (about 35 crash points a seed, torn writes among them), restarted on what their
/// disk kept. The default 200 seeds (about 7,000 crash points) take about 35 s in a test build
/// on two cores.
#[test]
fn crashed_hosts_keep_every_acknowledged_write() {
    let totals = run_seeds(Scenario::DiskCrashes, DISK_CRASH_SEEDS);
    assert!(
        totals.crashes > 0 && totals.power_losses > 0 && totals.acknowledged_writes > 0,
        "no host was crashed, or no write acknowledged: {totals:?}"
    );
}

/// Seeds of [`Scenario::DiskCrashes`] run by default.
const DISK_CRASH_SEEDS: u64 = 200;

/// Learners added, promoted and removed, voters removed (the leader among them) and replaced,
/// under the random nemesis; every acknowledged write must be on a majority of the final
/// voters.
#[test]
fn membership_churn_stays_linearizable() {
    let totals = run_seeds(Scenario::MembershipChurn, 24);
    assert!(
        totals.membership_changes > 0 && totals.leader_removals > 0,
        "no membership change completed, or none removed the leader: {totals:?}"
    );
}

/// The random nemesis with every connection in mutual TLS, and every certificate replaced
/// halfway through.
#[test]
fn mutual_tls_clusters_under_faults_stay_linearizable() {
    let totals = run_seeds(Scenario::MutualTls, 12);
    assert!(totals.elections > 0, "{totals:?}");
}

#[test]
fn a_seed_replays_the_same_run() {
    for scenario in [
        Scenario::Faults,
        Scenario::DivergentTails,
        Scenario::SteadyTransfers,
        Scenario::SnapshotCatchUp,
        Scenario::DiskCrashes,
        Scenario::MembershipChurn,
        Scenario::MutualTls,
    ] {
        let first = check_seed(scenario, 7).map(|o| (o.digest, o.completed, o.snapshots));
        let second = check_seed(scenario, 7).map(|o| (o.digest, o.completed, o.snapshots));
        assert_eq!(first, second, "{scenario:?}");
    }
}
