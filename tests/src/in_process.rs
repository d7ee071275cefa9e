//! A cluster of async nodes in one process: the channel transport and in-memory stores, with
//! nodes that can be stopped, restarted on their stores or on empty ones, and added later.

use crate::kv::{KvCommand, KvStore};
use raft_core::node::{Inbox, Node, NodeConfig, NodeHandle};
use raft_core::{NodeId, Role};
use raft_net::ChannelNetwork;
use raft_storage::{MemLogStore, MemSnapshotStore};
use std::collections::BTreeMap;
use std::time::Duration;

/// The nodes of one in-process cluster, and the stores they run on (kept across restarts).
pub struct Cluster {
    /// The network every node's transport sends through.
    pub network: ChannelNetwork,
    /// The running nodes.
    pub nodes: BTreeMap<NodeId, NodeHandle<KvStore>>,
    /// Every node's log store, running or not.
    pub stores: BTreeMap<NodeId, MemLogStore>,
    /// Every node's snapshot store, running or not.
    pub snapshots: BTreeMap<NodeId, MemSnapshotStore>,
    /// Adjusts every node's configuration.
    pub tweak: fn(&mut NodeConfig),
    /// Every node's inbox, for tests that deliver messages of their own.
    pub inboxes: BTreeMap<NodeId, Inbox>,
    restarts: u32,
}

/// The configuration of node `id` of the cluster's first three voters.
pub fn config(id: u64) -> NodeConfig {
    let mut config = NodeConfig::new(NodeId(id), (1..=3).map(NodeId));
    config.seed = id;
    config.request_timeout = Duration::from_secs(3);
    config
}

impl Cluster {
    /// Nodes 1, 2 and 3, started.
    pub async fn start() -> Cluster {
        Cluster::start_with(|_| {}).await
    }

    /// Nodes 1, 2 and 3, started with their configurations adjusted by `tweak`.
    pub async fn start_with(tweak: fn(&mut NodeConfig)) -> Cluster {
        let mut cluster = Cluster {
            tweak,
            network: ChannelNetwork::new(),
            nodes: BTreeMap::new(),
            stores: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            restarts: 0,
            inboxes: BTreeMap::new(),
        };
        for id in 1..=3 {
            cluster.start_node(id).await;
        }
        cluster
    }

    /// Starts (or restarts) node `id` of the first three voters on its stores.
    pub async fn start_node(&mut self, id: u64) {
        self.start_with_config(config(id)).await;
    }

    /// Starts node `id` to join the running cluster: it waits for the leader to add it.
    pub async fn start_joining(&mut self, id: u64) {
        let mut config = NodeConfig::joining(NodeId(id));
        config.seed = id;
        config.request_timeout = Duration::from_secs(3);
        self.start_with_config(config).await;
    }

    async fn start_with_config(&mut self, mut config: NodeConfig) {
        let node = config.raft.id;
        let store = self.stores.entry(node).or_default().clone();
        let snapshots = self.snapshots.entry(node).or_default().clone();
        let (inbox, inbound) = raft_core::node::inbox(1024);
        self.network.register(node, inbox.clone());
        (self.tweak)(&mut config);
        // A restart is another run: another seed.
        config.seed ^= (self.restarts as u64) << 32;
        self.restarts += 1;
        let handle = Node::start(
            config,
            KvStore::default(),
            store,
            snapshots,
            self.network.transport(node),
            inbound,
        )
        .await
        .unwrap_or_else(|error| panic!("{node} does not start: {error}"));
        self.nodes.insert(node, handle);
        self.inboxes.insert(node, inbox);
    }

    /// Stops node `id`, makes it unreachable and, with `wipe`, loses its stores.
    pub async fn stop(&mut self, id: NodeId, wipe: bool) {
        if let Some(handle) = self.nodes.remove(&id) {
            handle.shutdown().await;
        }
        self.network.unregister(id);
        if wipe {
            self.stores.remove(&id);
            self.snapshots.remove(&id);
        }
    }

    /// The leader, once one has committed an entry of its term (panics after 5 s without).
    pub async fn leader(&self) -> NodeHandle<KvStore> {
        for _ in 0..500 {
            for handle in self.nodes.values() {
                let status = handle.status();
                if status.role == Role::Leader && status.commit_index.0 > 0 {
                    return handle.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected");
    }
}

/// A put of `value` at `key`.
pub fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}
