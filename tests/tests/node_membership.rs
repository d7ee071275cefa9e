//! Membership changes on running nodes: a cluster grows from three voters to five and shrinks
//! back to three (removing its leader, perhaps) under continuous writes, and a dead node is
//! replaced by a new, empty one that catches up from a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Ack, Consistency, Error, FailoverTrigger, NodeHandle, Status};
use raft_core::{LogIndex, NodeId, Role};
use raft_tests::in_process::{Cluster, put};
use raft_tests::kv::KvStore;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ids(list: &[u64]) -> BTreeSet<NodeId> {
    list.iter().copied().map(NodeId).collect()
}

/// Runs `call` on the current leader until it is not refused for want of one (no leader yet,
/// a leader that just lost office, a change still in progress), for up to 10 s.
async fn on_leader<T, F, Fut>(cluster: &Cluster, call: F) -> Result<T, Error>
where
    F: Fn(NodeHandle<KvStore>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut last = Err(Error::Timeout);
    for _ in 0..200 {
        let leader = cluster.leader().await;
        last = call(leader).await;
        match &last {
            Err(Error::NotLeader { .. })
            | Err(Error::TransferInProgress)
            | Err(Error::Membership(raft_core::MembershipError::Uncommitted)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return last,
        }
    }
    last
}

/// `node`'s status once `ready` holds for it (a status is published within a millisecond of
/// a change), or its last after 2 s.
async fn status_when(node: &NodeHandle<KvStore>, ready: impl Fn(&Status) -> bool) -> Status {
    let mut status = node.status();
    for _ in 0..200 {
        if ready(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = node.status();
    }
    status
}

/// Writers that keep proposing unique keys to whichever node leads, recording the ones
/// acknowledged at `Ack::Quorum`.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: Arc<Mutex<Vec<NodeHandle<KvStore>>>>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..writers)
            .map(|w| {
                let (stop, acknowledged, nodes) =
                    (stop.clone(), acknowledged.clone(), nodes.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let leader = nodes
                            .lock()
                            .unwrap()
                            .iter()
                            .find(|h| h.status().role == Role::Leader)
                            .cloned();
                        let Some(leader) = leader else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        };
                        let key = format!("w{w}-{i}");
                        match leader.propose(put(&key, "v"), Ack::Quorum).await {
                            Ok(_) => {
                                acknowledged.lock().unwrap().push(key);
                                i += 1;
                            }
                            // Unknown outcome: the key is not counted, and not written again.
                            Err(Error::Timeout) => i += 1,
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            tasks,
        }
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_to_five_and_shrinks_back_to_three_under_load() {
    let mut cluster = Cluster::start().await;
    cluster.start_joining(4).await;
    cluster.start_joining(5).await;
    let nodes = Arc::new(Mutex::new(cluster.nodes.values().cloned().collect()));
    let load = Load::start(nodes, 4);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Grow: two learners that catch up, then promoted together.
    for id in [4, 5] {
        let added = on_leader(&cluster, |l| async move {
            l.add_learner(NodeId(id), None, Some(50)).await
        })
        .await;
        assert!(added.is_ok(), "adding n{id}: {added:?}");
    }
    let leader = cluster.leader().await;
    let learners = |s: &Status| s.membership.as_ref().map(|m| m.learners().clone());
    let status = status_when(&leader, |s| learners(s) == Some(ids(&[4, 5]))).await;
    let membership = status.membership.unwrap();
    assert_eq!(membership.learners(), &ids(&[4, 5]));
    assert!(status.peers.iter().any(|p| p.id == NodeId(4) && !p.voter));
    let grown = on_leader(&cluster, |l| async move {
        l.change_membership(ids(&[1, 2, 3, 4, 5])).await
    })
    .await;
    let grown = grown.unwrap();
    let leader = cluster.leader().await;
    let status = status_when(&leader, |s| s.commit_index >= grown).await;
    assert_eq!(status.membership.unwrap().voters(), &ids(&[1, 2, 3, 4, 5]));
    assert!(status.peers.iter().all(|p| p.voter));

    // Shrink to {3, 4, 5}: nodes 1 and 2 leave, the leader among them.
    let mut leader_before = cluster.leader().await.id();
    while leader_before != NodeId(1) {
        let _ = cluster.leader().await.transfer_leadership(NodeId(1)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader_before = cluster.leader().await.id();
    }
    let shrunk = on_leader(&cluster, |l| async move {
        l.change_membership(ids(&[3, 4, 5])).await
    })
    .await;
    assert!(shrunk.is_ok(), "{shrunk:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acknowledged = load.stop().await;
    assert!(
        acknowledged.len() > 20,
        "the load ran: {}",
        acknowledged.len()
    );

    let leader = cluster.leader().await;
    assert!([3, 4, 5].contains(&leader.id().0), "a voter leads");
    let status = status_when(&leader, |s| s.commit_index >= s.membership_index).await;
    let membership = status.membership.clone().unwrap();
    assert_eq!(membership.voters(), &ids(&[3, 4, 5]));
    assert!(!membership.is_joint() && membership.learners().is_empty());
    {
        let handed_over = status.failovers.iter().any(|f| {
            f.old_leader == Some(leader_before) && f.trigger == FailoverTrigger::MembershipChange
        });
        let new_leader = &cluster.nodes[&leader.id()];
        let seen_by_new = new_leader.status().failovers.iter().any(|f| {
            f.old_leader == Some(leader_before) && f.trigger == FailoverTrigger::MembershipChange
        });
        assert!(
            handed_over || seen_by_new,
            "the removed leader's hand-over is in the failover history: {:?}",
            status.failovers
        );
    }
    for id in [1, 2] {
        cluster.stop(NodeId(id), false).await;
    }
    // Every acknowledged write is there, on the remaining three.
    let read_at = leader.read(Consistency::Linearizable).await.unwrap();
    for id in [3, 4, 5] {
        let node = &cluster.nodes[&NodeId(id)];
        for key in &acknowledged {
            let read = node
                .query(Consistency::AtLeast(read_at), key.clone())
                .await
                .unwrap();
            assert_eq!(read.response, Some("v".into()), "{key} lost on n{id}");
        }
    }
    let after = leader.propose(put("after", "v"), Ack::All).await;
    assert!(after.is_ok(), "the three commit on their own: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_an_empty_one_that_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start_with(|config| {
        config.snapshot_every = 50;
        config.snapshot_keep_entries = 10;
    })
    .await;
    let leader = cluster.leader().await;
    let mut last = LogIndex(0);
    for i in 0..200 {
        last = leader
            .propose(put(&format!("k{i}"), "v"), Ack::Quorum)
            .await
            .unwrap()
            .index;
    }
    let dead = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader.id())
        .unwrap();
    cluster.stop(dead, true).await;
    let survivors: BTreeSet<NodeId> = (1..=3).map(NodeId).filter(|&id| id != dead).collect();

    // The replacement starts empty, is added as a learner and made a voter in the dead node's
    // place, in one change of voters.
    cluster.start_joining(4).await;
    let added = on_leader(&cluster, |l| async move {
        l.add_learner(NodeId(4), None, Some(5)).await
    })
    .await;
    assert!(added.is_ok(), "{added:?}");
    let mut voters = survivors.clone();
    voters.insert(NodeId(4));
    let replaced = on_leader(&cluster, |l| {
        let voters = voters.clone();
        async move { l.change_membership(voters).await }
    })
    .await;
    assert!(replaced.is_ok(), "{replaced:?}");
    // Its status is published within a millisecond of a change: wait for it to show the change.
    let new = cluster.nodes[&NodeId(4)].clone();
    let done = replaced.unwrap();
    let status = status_when(&new, |s| s.applied_index >= done).await;
    assert!(
        status.snapshot.is_some_and(|(index, _)| index.0 > 0),
        "it caught up from a snapshot: {:?}",
        status.snapshot
    );
    assert_eq!(status.membership.clone().unwrap().voters(), &voters);
    for i in 0..200 {
        let read = new
            .query(Consistency::AtLeast(last), format!("k{i}"))
            .await
            .unwrap();
        assert_eq!(read.response, Some("v".into()), "k{i}");
    }
    // The new three commit without the dead node, even with one of the old ones gone.
    let other = *survivors.iter().find(|&&id| id != leader.id()).unwrap();
    cluster.stop(other, false).await;
    let written = on_leader(&cluster, |l| async move {
        l.propose(put("after", "v"), Ack::Quorum).await
    })
    .await;
    assert!(written.is_ok(), "{written:?}");
}

/// Learners are never part of the in-sync set: with `min_in_sync` at three of three voters, one
/// voter down and a learner up, an `Ack::All` write is refused as it would be without the
/// learner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_do_not_count_as_in_sync_replicas() {
    let mut cluster = Cluster::start_with(|config| {
        config.min_in_sync = 3;
        config.max_replication_lag = Duration::from_millis(200);
    })
    .await;
    cluster.start_joining(4).await;
    let added = on_leader(&cluster, |l| async move {
        l.add_learner(NodeId(4), None, Some(0)).await
    })
    .await;
    assert!(added.is_ok(), "{added:?}");
    let leader = cluster.leader().await;
    assert!(leader.propose(put("all", "1"), Ack::All).await.is_ok());
    let voter = *cluster
        .nodes
        .keys()
        .find(|&&id| id != leader.id() && id != NodeId(4))
        .unwrap();
    cluster.stop(voter, false).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = leader.status();
    assert!(
        status
            .peers
            .iter()
            .any(|p| p.id == NodeId(4) && p.in_sync && !p.voter),
        "the learner is in sync: {:?}",
        status.peers
    );
    let refused = leader.propose(put("all", "2"), Ack::All).await;
    assert!(
        matches!(
            refused,
            Err(Error::NotEnoughReplicas {
                in_sync: 2,
                required: 3
            })
        ),
        "{refused:?}"
    );
}
