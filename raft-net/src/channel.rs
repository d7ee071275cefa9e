//! The in-process transport: a registry of node inboxes shared by every node of a cluster.

use raft_core::node::{Inbox, Transport};
use raft_core::{Message, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct Registry {
    inboxes: BTreeMap<NodeId, Inbox>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The nodes of one in-process cluster. Cheap to clone; clones share the registry.
#[derive(Clone, Debug, Default)]
pub struct ChannelNetwork {
    registry: Arc<RwLock<Registry>>,
}

impl ChannelNetwork {
    /// An empty network.
    pub fn new() -> ChannelNetwork {
        ChannelNetwork::default()
    }

    /// Makes `id` reachable through `inbox` (replacing an earlier inbox, as after a restart).
    pub fn register(&self, id: NodeId, inbox: Inbox) {
        if let Ok(mut registry) = self.registry.write() {
            registry.inboxes.insert(id, inbox);
        }
    }

    /// Makes `id` unreachable (as when its process dies).
    pub fn unregister(&self, id: NodeId) {
        if let Ok(mut registry) = self.registry.write() {
            registry.inboxes.remove(&id);
        }
    }

    /// The transport node `id` sends through.
    pub fn transport(&self, id: NodeId) -> ChannelTransport {
        ChannelTransport {
            from: id,
            network: self.clone(),
        }
    }

    /// Drops every message from `from` to `to` until [`ChannelNetwork::heal`].
    pub fn cut(&self, from: NodeId, to: NodeId) {
        if let Ok(mut registry) = self.registry.write() {
            registry.cut.insert((from, to));
        }
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        if let Ok(mut registry) = self.registry.write() {
            let others: Vec<NodeId> = registry.inboxes.keys().copied().collect();
            for other in others.into_iter().filter(|&o| o != id) {
                registry.cut.insert((id, other));
                registry.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Ok(mut registry) = self.registry.write() {
            registry.cut.clear();
        }
    }
}

/// Sends one node's messages over a [`ChannelNetwork`].
#[derive(Clone, Debug)]
pub struct ChannelTransport {
    from: NodeId,
    network: ChannelNetwork,
}

impl Transport for ChannelTransport {
    fn send(&self, message: Message) {
        let Ok(registry) = self.network.registry.read() else {
            return;
        };
        if message.from != self.from || registry.cut.contains(&(message.from, message.to)) {
            return;
        }
        if let Some(inbox) = registry.inboxes.get(&message.to) {
            // A full inbox drops the message: to Raft, a lost message like any other.
            let _ = inbox.deliver(message);
        }
    }

    fn send_batch(&self, messages: Vec<Message>) {
        let Ok(registry) = self.network.registry.read() else {
            return;
        };
        for message in messages {
            if message.from == self.from
                && !registry.cut.contains(&(message.from, message.to))
                && let Some(inbox) = registry.inboxes.get(&message.to)
            {
                let _ = inbox.deliver(message);
            }
        }
    }
}
