//! A 3-node cluster of `raft-kv serve` processes loses a node to SIGKILL while four clients
//! put, read, swap and delete on five keys, and the node restarts from its data directory.
//! Proves that the clients' history stays linearizable across the failover and the restart
//! (so no acknowledged write is lost), that a killed leader is replaced and comes back as a
//! follower, and that the restarted node catches up (from a snapshot when the others compacted
//! their logs past it) and holds every key as the cluster does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};
use support::{Cluster, Load, LoadOptions, Recorder, assert_holds, read_back};

const ALL: [u64; 3] = [1, 2, 3];

/// A 3-node cluster with `extra` flags, a leader elected and every node registered.
async fn cluster(extra: &[&str]) -> Cluster {
    let mut cluster = Cluster::start(3, extra);
    for id in ALL {
        cluster.wait_up(id, Duration::from_secs(10)).await;
    }
    let leader = cluster.wait_leader(&ALL, Duration::from_secs(10)).await;
    cluster
        .wait_registered(leader, Duration::from_secs(10))
        .await;
    cluster
}

/// The number of writes acknowledged so far.
fn writes(recorder: &Recorder) -> u64 {
    recorder.counted("put ok") + recorder.counted("cas ok") + recorder.counted("delete ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut cluster = cluster(&[]).await;
    let recorder = Recorder::new();
    let options = LoadOptions::new(4, 5);
    let load = Load::start(cluster.endpoints(), options.clone(), recorder.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // SIGKILL the leader (whichever node leads now).
    let victim = cluster.wait_leader(&ALL, Duration::from_secs(5)).await;
    cluster.node(victim).kill();
    let killed_at = Instant::now();
    let others: Vec<u64> = ALL.into_iter().filter(|&id| id != victim).collect();
    let successor = cluster.wait_leader(&others, Duration::from_secs(5)).await;
    let term = cluster.status(successor).await.expect("status")["term"]
        .as_u64()
        .expect("term");
    eprintln!(
        "killed node {victim}; node {successor} leads term {term} {:?} later",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // It restarts with the same command line and data directory, and follows.
    let writes_before_restart = writes(&recorder);
    cluster.node(victim).start();
    cluster.wait_up(victim, Duration::from_secs(10)).await;
    cluster
        .wait_follower(victim, term, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    load.stop().await;
    assert!(
        writes(&recorder) > writes_before_restart,
        "no write was acknowledged after the restart"
    );

    let values = read_back(&cluster.client(), &options.key_names(), &recorder).await;
    recorder.assert_linearizable();
    assert!(
        recorder.counted("put ok") >= 20,
        "too few puts were acknowledged for the test to mean much"
    );

    // The restarted node caught up and holds what the others hold.
    let commit = cluster.leader_commit(&ALL).await;
    cluster
        .wait_applied(victim, commit, Duration::from_secs(10))
        .await;
    assert_holds(&cluster, victim, &values).await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_catches_up_from_a_snapshot() {
    let started = Instant::now();
    // Snapshots every 100 entries, keeping 10 behind: a node down for a second misses entries
    // the others no longer hold, and must be sent a snapshot.
    let flags = ["--snapshot-every", "100", "--snapshot-keep-entries", "10"];
    let mut cluster = cluster(&flags).await;
    let recorder = Recorder::new();
    let options = LoadOptions::new(4, 5);
    let load = Load::start(cluster.endpoints(), options.clone(), recorder.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let leader = cluster.wait_leader(&ALL, Duration::from_secs(5)).await;
    let victim = ALL
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.node(victim).kill();
    let others: Vec<u64> = ALL.into_iter().filter(|&id| id != victim).collect();
    // Wait until the others have compacted past what the victim holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = cluster.leader_commit(&others).await;
    loop {
        let leader = cluster.wait_leader(&others, Duration::from_secs(5)).await;
        let status = cluster.status(leader).await.expect("leader status");
        let snapshot = status["snapshot"][0].as_u64().unwrap_or(0);
        if snapshot > before + 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader took no snapshot past index {before}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.node(victim).start();
    cluster.wait_up(victim, Duration::from_secs(10)).await;
    let commit = cluster.leader_commit(&ALL).await;
    let status = cluster
        .wait_applied(victim, commit, Duration::from_secs(10))
        .await;
    let log = cluster.node(victim).log_of_this_run();
    assert!(
        log.contains("snapshot installed"),
        "node {victim} caught up without a snapshot: {status}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    load.stop().await;

    let values = read_back(&cluster.client(), &options.key_names(), &recorder).await;
    recorder.assert_linearizable();
    let commit = cluster.leader_commit(&ALL).await;
    for id in ALL {
        cluster
            .wait_applied(id, commit, Duration::from_secs(10))
            .await;
        assert_holds(&cluster, id, &values).await;
    }
    // The directory of addresses came with the snapshot: the restarted node lists them all.
    cluster
        .wait_registered(victim, Duration::from_secs(5))
        .await;
    eprintln!("took {:?}", started.elapsed());
}
