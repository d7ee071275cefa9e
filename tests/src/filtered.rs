//! An in-process network that delivers only the messages a rule lets through, so that a test
//! can lose messages by kind (say, AppendEntries to one node while its heartbeats arrive).

use raft_core::Message;
use raft_core::node::{Inbox, Transport};
use raft_net::{ChannelNetwork, ChannelTransport};
use std::sync::{Arc, Mutex};

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
