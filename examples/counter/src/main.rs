//! A replicated counter: a custom state machine on three Raft nodes in one process.
//! Run with `cargo run --release -p raft-example-counter`.

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{
    Ack, Consistency, Node, NodeConfig, NodeHandle, SnapshotReader, SnapshotSource, StateMachine,
};
use raft_core::{LogIndex, NodeId, Role, SnapshotMeta};
use std::time::Duration;

/// The state machine: a number that commands add to.
#[derive(Default)]
struct Counter(i64);

#[async_trait]
impl StateMachine for Counter {
    type Command = i64; // how much to add
    type Response = i64; // the value after adding
    type Query = ();
    type QueryResponse = i64;

    async fn apply(&mut self, _index: LogIndex, delta: i64) -> i64 {
        self.0 += delta;
        self.0
    }
    async fn query(&self, _: ()) -> i64 {
        self.0
    }
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        Ok(Box::new(Bytes::copy_from_slice(&self.0.to_be_bytes())))
    }
    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        let image = image.read_to_end().await?;
        let bytes = image
            .as_slice()
            .try_into()
            .map_err(|_| "expected 8 bytes")?;
        self.0 = i64::from_be_bytes(bytes);
        Ok(())
    }
}

async fn leader(nodes: &[NodeHandle<Counter>]) -> NodeHandle<Counter> {
    loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            return n.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), raft_core::node::Error> {
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let network = raft_net::ChannelNetwork::new();
    let mut nodes = Vec::new();
    for &id in &ids {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        network.register(id, inbox);
        let config = NodeConfig::new(id, ids.iter().copied());
        let store = raft_storage::MemLogStore::new();
        nodes.push(
            Node::start(
                config,
                Counter::default(),
                store,
                raft_storage::MemSnapshotStore::new(),
                network.transport(id),
                inbound,
            )
            .await?,
        );
    }

    let first = leader(&nodes).await;
    println!("leader: node {}", first.id().0);
    for delta in [5, 10, -3] {
        let written = first.propose(delta, Ack::Quorum).await?;
        let (value, index) = (written.response, written.index.0);
        println!("add {delta:>3} -> {value:?} (log index {index})");
    }

    // Stop the leader; the other two elect a new one and keep counting.
    first.shutdown().await;
    network.unregister(first.id());
    nodes.retain(|n| n.id() != first.id());
    let second = leader(&nodes).await;
    let (old, new) = (first.id().0, second.id().0);
    println!("node {old} stopped; new leader: node {new}");
    let written = second.propose(100, Ack::Quorum).await?;
    let (value, index) = (written.response, written.index.0);
    println!("add 100 -> {value:?} (log index {index})");

    // Every remaining node has applied the same value once it reaches the write's index.
    for node in &nodes {
        let read = node.query(Consistency::AtLeast(written.index), ()).await?;
        println!("node {}: counter = {}", node.id().0, read.response);
    }
    Ok(())
}
