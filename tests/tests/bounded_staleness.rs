//! `Consistency::BoundedStaleness(d)`: the data served reflects every write acknowledged more
//! than `d` before the read is answered. Three in-process nodes with paused tokio time and a
//! network that loses messages by kind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::MessageBody;
use raft_core::node::{Ack, Consistency, Error, NodeHandle};
use raft_tests::filtered::{FilteredNetwork, committed_leader};
use raft_tests::kv::{KvCommand, KvStore};
use std::time::Duration;

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
    let nodes = network.start_cluster(3, Duration::from_secs(30)).await;
    let leader = committed_leader(&nodes).await;
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
    assert_eq!(
        bounded_read(&follower).await.unwrap().as_deref(),
        Some("new")
    );
    let staleness = follower.status().staleness_ms.expect("it vouches again");
    assert!(staleness < 500, "{staleness} ms");
    // The leader serves them too.
    assert_eq!(bounded_read(&leader).await.unwrap().as_deref(), Some("new"));
}

/// Reads `x` with data at most 500 ms old.
async fn bounded_read(node: &NodeHandle<KvStore>) -> Result<Option<String>, Error> {
    let bound = Consistency::BoundedStaleness(Duration::from_millis(500));
    Ok(node.query(bound, "x".into()).await?.response)
}
