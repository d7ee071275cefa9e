//! The async node end to end in one process: three nodes over the channel transport with
//! in-memory stores, exercising every acknowledgement level and read consistency, leadership
//! transfer, and failover after the leader stops.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Ack, Consistency, Error, FailoverTrigger, Node};
use raft_core::{LogIndex, NodeId, Role};
use raft_net::ChannelNetwork;
use raft_storage::{MemLogStore, MemSnapshotStore};
use raft_tests::in_process::{Cluster, config, put};
use raft_tests::kv::{KvResponse, KvStore};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_at_every_level() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let written = leader.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    assert_eq!(written.response, Some(KvResponse::Done));
    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        let read = leader.query(consistency, "x".into()).await.unwrap();
        assert_eq!(read.response, Some("1".into()), "{consistency:?}");
        assert!(read.applied_index >= written.index);
    }
    // Read-your-writes on every node with the write's index as the token.
    for handle in cluster.nodes.values() {
        let read = handle
            .query(Consistency::AtLeast(written.index), "x".into())
            .await
            .unwrap();
        assert_eq!(read.response, Some("1".into()), "node {}", handle.id());
    }
    // A follower that hears the leader serves bounded-staleness reads; an impossible bound fails.
    let follower = cluster
        .nodes
        .values()
        .find(|h| h.id() != leader.id())
        .unwrap();
    follower
        .query(
            Consistency::BoundedStaleness(Duration::from_secs(5)),
            "x".into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        follower
            .query(Consistency::BoundedStaleness(Duration::ZERO), "x".into())
            .await,
        Ok(_) | Err(Error::TooStale { .. })
    ));
    // Linearizable and lease reads on a follower: forwarded to the leader for a read index,
    // served by the follower once it has applied it, so they see the write.
    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        let read = follower.query(consistency, "x".into()).await.unwrap();
        assert_eq!(
            read.response,
            Some("1".into()),
            "{consistency:?} on a follower"
        );
        assert!(read.applied_index >= written.index);
    }
    // Writes to a follower are refused with the leader's id.
    match follower.propose(put("y", "2"), Ack::Quorum).await {
        Err(Error::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(leader.id())),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let local = leader.propose(put("z", "3"), Ack::Local).await.unwrap();
    assert_eq!(local.response, None);
    let all = leader.propose(put("w", "4"), Ack::All).await.unwrap();
    assert_eq!(all.response, Some(KvResponse::Done));
    // The status follows within a millisecond; wait for it to show both followers caught up.
    let mut watch = leader.watch_status();
    let status = tokio::time::timeout(
        Duration::from_secs(2),
        watch.wait_for(|s| {
            s.peers.len() == 2
                && s.peers
                    .iter()
                    .all(|p| p.in_sync && p.match_index >= all.index)
        }),
    )
    .await
    .expect("status shows the followers in sync")
    .expect("node running")
    .clone();
    assert!(status.lease_remaining_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_acks_are_refused_without_enough_in_sync_replicas() {
    let network = ChannelNetwork::new();
    let mut handles = Vec::new();
    for id in 1..=3u64 {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        network.register(NodeId(id), inbox);
        let mut config = config(id);
        config.min_in_sync = 3;
        config.max_replication_lag = Duration::from_millis(200);
        handles.push(
            Node::start(
                config,
                KvStore::default(),
                MemLogStore::new(),
                MemSnapshotStore::new(),
                network.transport(NodeId(id)),
                inbound,
            )
            .await
            .unwrap(),
        );
    }
    let mut leader = None;
    for _ in 0..500 {
        leader = handles
            .iter()
            .find(|h| h.status().role == Role::Leader && h.status().commit_index.0 > 0)
            .cloned();
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = leader.expect("a leader");
    leader.propose(put("a", "1"), Ack::All).await.unwrap();
    let lagging = handles.iter().find(|h| h.id() != leader.id()).unwrap().id();
    network.cut(lagging, leader.id());
    network.cut(leader.id(), lagging);
    tokio::time::sleep(Duration::from_millis(400)).await;
    match leader.propose(put("a", "2"), Ack::All).await {
        Err(Error::NotEnoughReplicas { in_sync, required }) => {
            assert_eq!((in_sync, required), (2, 3));
        }
        other => panic!("expected NotEnoughReplicas, got {other:?}"),
    }
    // Quorum writes still work with one follower away.
    leader.propose(put("a", "3"), Ack::Quorum).await.unwrap();
    let lag = leader
        .status()
        .peers
        .into_iter()
        .find(|p| p.id == lagging)
        .unwrap();
    assert!(!lag.in_sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_and_failover_keep_every_acknowledged_write() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let key = format!("k{i}");
        leader.propose(put(&key, "v"), Ack::Quorum).await.unwrap();
        acknowledged.push(key);
    }
    // Hand leadership to a chosen follower.
    let target = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader.id())
        .unwrap();
    leader.transfer_leadership(target).await.unwrap();
    let new_leader = cluster.leader().await;
    let mut waited = 0;
    let new_leader = if new_leader.id() == target {
        new_leader
    } else {
        loop {
            let l = cluster.leader().await;
            if l.id() == target || waited > 100 {
                break l;
            }
            waited += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert_eq!(new_leader.id(), target);
    let failover = new_leader.status().failovers.last().cloned().unwrap();
    assert_eq!(
        (failover.new_leader, failover.trigger),
        (target, FailoverTrigger::Transfer)
    );

    // Stop the leader: the others elect a new one that has every acknowledged write.
    new_leader.shutdown().await;
    cluster.network.unregister(target);
    cluster.nodes.remove(&target);
    assert!(matches!(
        new_leader.propose(put("late", "v"), Ack::Quorum).await,
        Err(Error::Shutdown)
    ));
    let survivor = cluster.leader().await;
    assert_ne!(survivor.id(), target);
    for key in &acknowledged {
        let read = survivor
            .query(Consistency::Linearizable, key.clone())
            .await
            .unwrap();
        assert_eq!(read.response, Some("v".into()), "{key} lost in failover");
    }
    // The old leader restarts from its store and catches up as a follower.
    cluster.start_node(target.0).await;
    let written = survivor
        .propose(put("after", "v"), Ack::Quorum)
        .await
        .unwrap();
    let rejoined = cluster.nodes[&target].clone();
    let read = rejoined
        .query(Consistency::AtLeast(written.index), "after".into())
        .await
        .unwrap();
    assert_eq!(read.response, Some("v".into()));
    assert_eq!(rejoined.status().role, Role::Follower);
    let _ = &cluster.inboxes;
}

/// Snapshots keep the log bounded; a node restarted on its own stores recovers from its
/// snapshot and log, and a node whose stores were lost catches up from the leader's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_bring_back_a_node_that_lost_its_stores() {
    let mut cluster = Cluster::start_with(|c| {
        c.snapshot_every = 50;
        c.snapshot_keep_entries = 10;
        c.snapshot_chunk_bytes = 256;
    })
    .await;
    let leader = cluster.leader().await;
    let mut last = LogIndex(0);
    for i in 0..300 {
        last = leader
            .propose(put(&format!("k{i}"), &format!("v{i}")), Ack::Quorum)
            .await
            .unwrap()
            .index;
    }
    let taken = leader.snapshot().await.unwrap();
    assert!(
        taken.last.index >= last,
        "a manual snapshot covers every applied entry"
    );
    // Every node took snapshots of its own and compacted its log.
    for handle in cluster.nodes.values() {
        let mut watch = handle.watch_status();
        let status = tokio::time::timeout(
            Duration::from_secs(2),
            watch.wait_for(|s| s.applied_index >= last && s.snapshot.is_some()),
        )
        .await
        .expect("snapshot taken")
        .expect("node running")
        .clone();
        assert!(
            status.log_entries <= 120,
            "n{}: {} entries in the log",
            status.id.0,
            status.log_entries
        );
    }
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader.id())
        .unwrap();

    // Restarted on its own stores: its snapshot, then its log.
    cluster.nodes[&follower].shutdown().await;
    cluster.start_node(follower.0).await;
    let read = cluster.nodes[&follower]
        .query(Consistency::AtLeast(last), "k299".into())
        .await
        .unwrap();
    assert_eq!(read.response, Some("v299".into()));

    // Its stores lost: it needs the leader's snapshot, since the leader's log starts after
    // the entries it lacks.
    cluster.nodes[&follower].shutdown().await;
    cluster.stores.insert(follower, MemLogStore::new());
    cluster.snapshots.insert(follower, MemSnapshotStore::new());
    cluster.start_node(follower.0).await;
    for key in ["k0", "k150", "k299"] {
        let read = cluster.nodes[&follower]
            .query(Consistency::AtLeast(last), key.into())
            .await
            .unwrap();
        assert_eq!(read.response, Some(format!("v{}", &key[1..])), "{key}");
    }
    let mut watch = cluster.nodes[&follower].watch_status();
    let status = tokio::time::timeout(
        Duration::from_secs(2),
        watch.wait_for(|s| s.snapshot.is_some()),
    )
    .await
    .expect("the status shows the snapshot")
    .expect("node running")
    .clone();
    let (index, size) = status.snapshot.unwrap();
    assert!(
        index >= taken.last.index && size > 0,
        "{:?}",
        status.snapshot
    );
}
