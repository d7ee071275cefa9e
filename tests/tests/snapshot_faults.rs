//! The async node's side of snapshot transfers when something goes wrong: a newer, smaller
//! snapshot replacing the one being sent, a follower that overstates what it received, and a
//! chunk that claims another image's metadata. None of them may stop a node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Ack, Consistency, Inbox, Node, NodeConfig, NodeHandle};
use raft_core::{EntryId, LogIndex, Message, MessageBody, NodeId, Role, SnapshotMeta};
use raft_storage::{MemLogStore, MemSnapshotStore};
use raft_tests::filtered::FilteredNetwork;
use raft_tests::kv::{KvCommand, KvStore};
use std::collections::BTreeMap;
use std::time::Duration;

type Nodes = BTreeMap<NodeId, NodeHandle<KvStore>>;

/// Three nodes that snapshot only when asked, in small chunks.
async fn start(net: &FilteredNetwork) -> (Nodes, BTreeMap<NodeId, Inbox>) {
    let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let (mut nodes, mut inboxes) = (BTreeMap::new(), BTreeMap::new());
    for &id in &voters {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        net.register(id, inbox.clone());
        inboxes.insert(id, inbox);
        let mut config = NodeConfig::new(id, voters.iter().copied());
        config.seed = id.0;
        config.request_timeout = Duration::from_secs(3);
        config.snapshot_every = 0;
        config.snapshot_keep_entries = 0;
        config.snapshot_chunk_bytes = 256;
        config.raft.max_bytes_per_append = 256;
        config.raft.max_inflight_bytes = 512;
        let (log, snapshots) = (MemLogStore::new(), MemSnapshotStore::new());
        let node = Node::start(
            config,
            KvStore::default(),
            log,
            snapshots,
            net.transport(id),
            inbound,
        );
        nodes.insert(id, node.await.unwrap());
    }
    (nodes, inboxes)
}

async fn leader(nodes: &Nodes) -> NodeHandle<KvStore> {
    loop {
        if let Some(node) = nodes.values().find(|n| {
            let status = n.status();
            status.role == Role::Leader && status.commit_index.0 > 0
        }) {
            return node.clone();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn put(key: String, value: &str) -> KvCommand {
    KvCommand::Put {
        key,
        value: value.into(),
    }
}

/// A follower cut off from everyone while `writes` large values are written and snapshotted:
/// returns the leader and the follower.
async fn lagging_follower(
    net: &FilteredNetwork,
    nodes: &Nodes,
    writes: usize,
) -> (NodeHandle<KvStore>, NodeId) {
    let leader = leader(nodes).await;
    let lagging = *nodes.keys().find(|&&id| id != leader.id()).unwrap();
    net.only(move |m| m.to != lagging && m.from != lagging);
    let big = "x".repeat(1000);
    for i in 0..writes {
        leader
            .propose(put(format!("k{i}"), &big), Ack::Quorum)
            .await
            .unwrap();
    }
    leader.snapshot().await.unwrap();
    (leader, lagging)
}

/// The leader sends a large snapshot; a newer snapshot, smaller than the offset the transfer
/// reached, replaces it. The leader starts the transfer over with the newer image (it does not
/// ask the store for bytes past its end, which once stopped the leader), and the follower
/// catches up from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_smaller_snapshot_mid_transfer_restarts_the_transfer() {
    let net = FilteredNetwork::new();
    let (nodes, _) = start(&net).await;
    let (leader, lagging) = lagging_follower(&net, &nodes, 50).await;
    // The follower gets the first 8 KiB of the image, no more.
    net.only(|m| !matches!(m.body, MessageBody::InstallSnapshot { offset, .. } if offset >= 8192));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The state shrinks to nothing: the next snapshot is an empty image.
    for i in 0..50 {
        let delete = KvCommand::Delete {
            key: format!("k{i}"),
        };
        leader.propose(delete, Ack::Quorum).await.unwrap();
    }
    let second = leader.snapshot().await.unwrap();
    net.heal();
    let read = nodes[&lagging]
        .query(Consistency::AtLeast(second.last.index), "k1".into())
        .await
        .unwrap();
    assert_eq!(read.response, None);
    let after = leader.propose(put("after".into(), "v"), Ack::All).await;
    assert!(after.is_ok(), "the leader still serves: {after:?}");
}

/// A follower's answer claiming more of the image than was sent does not make the leader read
/// past the image's end (which once stopped it): the leader keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overstated_next_offset_does_not_stop_the_leader() {
    let net = FilteredNetwork::new();
    let (nodes, inboxes) = start(&net).await;
    let (leader, lagging) = lagging_follower(&net, &nodes, 20).await;
    // The transfer runs, but chunks past 4 KiB are lost.
    net.only(|m| !matches!(m.body, MessageBody::InstallSnapshot { offset, .. } if offset >= 4096));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snapshot = leader.snapshot().await.unwrap();
    let overstated = Message {
        from: lagging,
        to: leader.id(),
        term: leader.status().term,
        body: MessageBody::InstallSnapshotResponse {
            snapshot: snapshot.last,
            offset: 0,
            next_offset: 1 << 40,
        },
    };
    assert!(inboxes[&leader.id()].deliver(overstated));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = leader.propose(put("after".into(), "v"), Ack::Quorum).await;
    assert!(after.is_ok(), "the leader still serves: {after:?}");
}

/// A chunk that continues the image being received at the right offset, but with other
/// metadata than the image's first chunk, is not taken (it once reached the store, which
/// refused it, and the follower stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_of_another_image_does_not_stop_the_follower() {
    let net = FilteredNetwork::new();
    let (nodes, inboxes) = start(&net).await;
    let leader = leader(&nodes).await;
    let follower = *nodes.keys().find(|&&id| id != leader.id()).unwrap();
    let term = leader.status().term;
    let commit = nodes[&follower].status().commit_index;
    let last = EntryId {
        term,
        index: LogIndex(commit.0 + 1000),
    };
    let chunk = |voters: &[u64], offset: u64| Message {
        from: leader.id(),
        to: follower,
        term,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta::new(
                last,
                raft_core::Membership::new(voters.iter().map(|&v| NodeId(v))).unwrap(),
            ),
            offset,
            data: vec![7u8; 10].into(),
            done: false,
        },
    };
    assert!(inboxes[&follower].deliver(chunk(&[1, 2, 3], 0)));
    assert!(inboxes[&follower].deliver(chunk(&[1, 2], 10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = nodes[&follower].read(Consistency::Stale).await;
    assert!(read.is_ok(), "the follower still serves: {read:?}");
}
