//! `Consistency::BoundedStaleness(d)`: the data served reflects every write acknowledged more
//! than `d` before the read is answered. Three in-process nodes with paused tokio time and a
//! network that loses messages by kind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Ack, Consistency, Error, Node, NodeConfig, NodeHandle};
use raft_core::{MessageBody, NodeId, Role};
use raft_storage::MemLogStore;
use raft_tests::filtered::FilteredNetwork;
use raft_tests::kv::{KvCommand, KvStore};
use std::collections::BTreeMap;
use std::time::Duration;

async fn cluster(network: &FilteredNetwork) -> BTreeMap<NodeId, NodeHandle<KvStore>> {
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let mut nodes = BTreeMap::new();
    for id in voters {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        network.register(id, inbox);
        let mut config = NodeConfig::new(id, voters);
        config.seed = id.0;
        config.request_timeout = Duration::from_secs(30);
        let transport = network.transport(id);
        let node = Node::start(
            config,
            KvStore::default(),
            MemLogStore::new(),
            transport,
            inbound,
        );
        nodes.insert(id, node.await.unwrap());
    }
    nodes
}

async fn leader(nodes: &BTreeMap<NodeId, NodeHandle<KvStore>>) -> NodeHandle<KvStore> {
    loop {
        let found = nodes.values().find(|n| {
            let s = n.status();
            s.role == Role::Leader && s.commit_index.0 > 0
        });
        if let Some(node) = found {
            return node.clone();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

/// A follower whose appends are lost still hears its leader's heartbeats. It must not serve a
/// value overwritten two seconds ago to a read that asks for data at most 500 ms old: hearing
/// from a leader is not the same as holding what it committed.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_bounded_staleness_read_reflects_every_write_older_than_its_bound() {
    let network = FilteredNetwork::new();
    let nodes = cluster(&network).await;
    let leader = leader(&nodes).await;
    leader.propose(put("x", "old"), Ack::Quorum).await.unwrap();
    let follower = nodes
        .values()
        .find(|n| n.id() != leader.id())
        .unwrap()
        .clone();
    let lagging = follower.id();
    // Let the follower apply "old", then lose every AppendEntries to it.
    loop {
        let read = follower
            .query(Consistency::Stale, "x".into())
            .await
            .unwrap();
        if read.response.as_deref() == Some("old") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    network
        .only(move |m| !(m.to == lagging && matches!(m.body, MessageBody::AppendEntries { .. })));
    let written = leader.propose(put("x", "new"), Ack::Quorum).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        follower.status().leader,
        Some(leader.id()),
        "it still hears the leader"
    );
    assert!(
        follower.status().applied_index < written.index,
        "it lacks the write"
    );

    let read = follower
        .query(
            Consistency::BoundedStaleness(Duration::from_millis(500)),
            "x".into(),
        )
        .await;
    assert!(
        matches!(read, Err(Error::TooStale { .. })),
        "the follower lacks a write acknowledged 2 s ago: {read:?}"
    );
    assert_eq!(
        follower.status().staleness_ms,
        None,
        "it cannot vouch for its data"
    );

    // Once its appends flow again it catches up and serves such reads.
    network.heal();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = follower
        .query(
            Consistency::BoundedStaleness(Duration::from_millis(500)),
            "x".into(),
        )
        .await
        .unwrap();
    assert_eq!(read.response.as_deref(), Some("new"));
    let staleness = follower.status().staleness_ms.expect("it vouches again");
    assert!(staleness < 500, "{staleness} ms");
    // The leader serves them too.
    let read = leader
        .query(
            Consistency::BoundedStaleness(Duration::from_millis(500)),
            "x".into(),
        )
        .await
        .unwrap();
    assert_eq!(read.response.as_deref(), Some("new"));
}
