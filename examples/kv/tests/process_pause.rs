//! The leader of a 3-node cluster of `raft-kv serve` processes is frozen with SIGSTOP for
//! 1.5 s (well past its 200 ms lease and the 300–600 ms election timeout) and then resumed with SIGCONT,
//! while clients put, read and swap, and send `?consistency=lease` reads straight to every
//! node. Proves that the others elect a leader while it is frozen, that the resumed node steps
//! down to follower, and that the history stays linearizable: in particular no lease read is
//! served from the frozen leader's stale state after it wakes up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};
use support::{Cluster, Load, LoadOptions, Recorder, read_back};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_serves_no_stale_lease_read() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let all = [1, 2, 3];
    for id in all {
        cluster.wait_up(id, Duration::from_secs(10)).await;
    }
    let first = cluster.wait_leader(&all, Duration::from_secs(10)).await;
    cluster
        .wait_registered(first, Duration::from_secs(10))
        .await;

    let recorder = Recorder::new();
    let mut options = LoadOptions::new(4, 5);
    options.lease_targets = cluster.endpoints();
    let load = Load::start(cluster.endpoints(), options.clone(), recorder.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let paused = cluster.wait_leader(&all, Duration::from_secs(5)).await;
    let term_before = cluster.status(paused).await.expect("status")["term"]
        .as_u64()
        .expect("term");
    cluster.node(paused).proc().signal("STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let others: Vec<u64> = all.into_iter().filter(|&id| id != paused).collect();
    let successor = cluster.wait_leader(&others, Duration::from_secs(3)).await;
    let successor_term = cluster.status(successor).await.expect("status")["term"]
        .as_u64()
        .expect("term");
    assert!(
        successor_term > term_before,
        "no new term while node {paused} was frozen"
    );
    let lease_reads_while_paused = recorder.counted("lease get ok");
    cluster.node(paused).proc().signal("CONT");
    eprintln!("froze node {paused} for 1.5 s; node {successor} leads term {successor_term}");
    // The resumed node learns of the new term and follows.
    cluster
        .wait_follower(paused, successor_term, Duration::from_secs(3))
        .await;

    tokio::time::sleep(Duration::from_millis(2000)).await;
    load.stop().await;
    read_back(&cluster.client(), &options.key_names(), &recorder).await;
    recorder.assert_linearizable();
    assert!(
        recorder.counted("lease get ok") > lease_reads_while_paused,
        "no lease read was served after the pause: the lease path went untested"
    );
    let commit = cluster.leader_commit(&all).await;
    cluster
        .wait_applied(paused, commit, Duration::from_secs(5))
        .await;
    eprintln!("took {:?}", started.elapsed());
}
