//! Three nodes on the durable stores, in one process: they replicate, take snapshots and purge
//! their logs, are all stopped, and start again from their directories with every
//! acknowledged write and their failover history in place, and keep serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{
    Ack, Consistency, Node, NodeConfig, NodeHandle, SnapshotReader, SnapshotSource, StateMachine,
};
use raft_core::{LogIndex, NodeId, Role, SnapshotMeta};
use raft_storage::{FileLogStore, FileSnapshotStore};
use std::path::Path;
use std::time::Duration;

/// A sum of every command, and how many were applied.
#[derive(Default)]
struct Sum {
    total: u64,
    count: u64,
}

#[async_trait]
impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;
    type Query = ();
    type QueryResponse = (u64, u64);

    async fn apply(&mut self, _index: LogIndex, add: u64) -> u64 {
        self.total += add;
        self.count += 1;
        self.total
    }
    async fn query(&self, _: ()) -> (u64, u64) {
        (self.total, self.count)
    }
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        let mut image = self.total.to_le_bytes().to_vec();
        image.extend_from_slice(&self.count.to_le_bytes());
        Ok(Box::new(Bytes::from(image)))
    }
    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        let image = image.read_to_end().await?;
        let word = |at: usize| -> Result<u64, String> {
            let bytes = image.get(at..at + 8).ok_or("short image")?;
            Ok(u64::from_le_bytes(
                bytes.try_into().map_err(|_| "short image")?,
            ))
        };
        self.total = word(0)?;
        self.count = word(8)?;
        Ok(())
    }
}

async fn start(root: &Path) -> Vec<NodeHandle<Sum>> {
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let network = raft_net::ChannelNetwork::new();
    let mut nodes = Vec::new();
    for &id in &ids {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        network.register(id, inbox);
        let mut config = NodeConfig::new(id, ids.iter().copied());
        config.snapshot_every = 40;
        config.snapshot_keep_entries = 10;
        let dir = root.join(format!("n{}", id.0));
        let log = FileLogStore::open(dir.join("log")).await.unwrap();
        let snapshots = FileSnapshotStore::open(dir.join("snapshots"))
            .await
            .unwrap();
        let node = Node::start(
            config,
            Sum::default(),
            log,
            snapshots,
            network.transport(id),
            inbound,
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    nodes
}

async fn leader(nodes: &[NodeHandle<Sum>]) -> NodeHandle<Sum> {
    for _ in 0..1000 {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            return n.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_file_stores_restarts_with_every_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let nodes = start(root.path()).await;
    let first = leader(&nodes).await;
    let mut expected = 0;
    for add in 1..=300u64 {
        first.propose(add, Ack::Quorum).await.unwrap();
        expected += add;
    }
    let status = first.status();
    assert!(
        status.snapshot.is_some_and(|(index, _)| index.0 > 200),
        "snapshots were taken: {:?}",
        status.snapshot
    );
    for node in nodes {
        node.shutdown().await;
    }

    let nodes = start(root.path()).await;
    let second = leader(&nodes).await;
    // The failover history of the first run was kept, and is told apart from this run's.
    for node in &nodes {
        let history = node.status().failovers;
        assert!(
            history
                .iter()
                .any(|f| f.earlier_run && f.new_leader == first.id()),
            "{}: {history:?}",
            node.id()
        );
    }
    let read = second.query(Consistency::Linearizable, ()).await.unwrap();
    let (total, count) = read.response;
    assert_eq!(
        (total, count),
        (expected, 300),
        "every acknowledged write is there"
    );
    let after = second.propose(1000, Ack::All).await.unwrap();
    assert_eq!(after.response, Some(expected + 1000));
    // The log was purged behind the snapshots: it holds far fewer entries than were written.
    assert!(
        second.status().log_entries < 100,
        "{} entries held",
        second.status().log_entries
    );
    for node in nodes {
        node.shutdown().await;
    }
}
