//! An in-process network that delivers only the messages a rule lets through, so that a test
//! can lose messages by kind (say, AppendEntries to one node while its heartbeats arrive).

use crate::kv::KvStore;
use raft_core::node::{Inbox, Node, NodeConfig, NodeHandle, Transport};
use raft_core::{Message, NodeId, Role};
use raft_net::{ChannelNetwork, ChannelTransport};
use raft_storage::{MemLogStore, MemSnapshotStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Decides whether a message is delivered.
pub type Rule = Box<dyn Fn(&Message) -> bool + Send>;

/// A [`ChannelNetwork`] behind a rule that the test changes as it goes.
#[derive(Clone)]
pub struct FilteredNetwork {
    network: ChannelNetwork,
    rule: Arc<Mutex<Rule>>,
}

impl Default for FilteredNetwork {
    fn default() -> Self {
        FilteredNetwork {
            network: ChannelNetwork::new(),
            rule: Arc::new(Mutex::new(Box::new(|_| true))),
        }
    }
}

impl FilteredNetwork {
    /// A network that delivers everything until told otherwise.
    pub fn new() -> FilteredNetwork {
        FilteredNetwork::default()
    }

    /// Makes `inbox` the destination of messages to `id`.
    pub fn register(&self, id: raft_core::NodeId, inbox: Inbox) {
        self.network.register(id, inbox);
    }

    /// The transport of node `id`.
    pub fn transport(&self, id: raft_core::NodeId) -> FilteredTransport {
        FilteredTransport {
            inner: self.network.transport(id),
            rule: self.rule.clone(),
        }
    }

    /// From now on, delivers only the messages `rule` accepts.
    pub fn only(&self, rule: impl Fn(&Message) -> bool + Send + 'static) {
        if let Ok(mut current) = self.rule.lock() {
            *current = Box::new(rule);
        }
    }

    /// Delivers everything again.
    pub fn heal(&self) {
        self.only(|_| true);
    }

    /// Starts one key-value node per voter `1..=size` on this network, with in-memory stores,
    /// seed = id and the given request timeout. Panics if a node fails to start (test support).
    pub async fn start_cluster(
        &self,
        size: u64,
        request_timeout: Duration,
    ) -> BTreeMap<NodeId, NodeHandle<KvStore>> {
        let voters: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let (inbox, inbound) = raft_core::node::inbox(1024);
            self.register(id, inbox);
            let mut config = NodeConfig::new(id, voters.iter().copied());
            config.seed = id.0;
            config.request_timeout = request_timeout;
            let store = MemLogStore::new();
            let node = Node::start(
                config,
                KvStore::default(),
                store,
                MemSnapshotStore::new(),
                self.transport(id),
                inbound,
            );
            match node.await {
                Ok(handle) => nodes.insert(id, handle),
                Err(error) => panic!("{id} failed to start: {error}"),
            };
        }
        nodes
    }
}

/// Waits until some node leads and has committed an entry of its term; returns it.
pub async fn committed_leader(
    nodes: &BTreeMap<NodeId, NodeHandle<KvStore>>,
) -> NodeHandle<KvStore> {
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

/// One node's transport on a [`FilteredNetwork`].
pub struct FilteredTransport {
    inner: ChannelTransport,
    rule: Arc<Mutex<Rule>>,
}

impl Transport for FilteredTransport {
    fn send(&self, message: Message) {
        let keep = self.rule.lock().map(|rule| rule(&message)).unwrap_or(false);
        if keep {
            self.inner.send(message);
        }
    }
}
