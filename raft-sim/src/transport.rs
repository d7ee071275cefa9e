//! The seam for a transport of the user's own ([`crate::Simulation::transport`]): what the
//! factory is told about the node it wraps a transport for ([`NodeStart`]), and the box the
//! harness keeps whatever it returns in.

use raft_core::node::{PeerConnection, Transport};
use raft_core::{Membership, Message, NodeId};

/// Which node, and which start of it, a transport is made for: what the factory given to
/// [`crate::Simulation::transport`] receives with the node's TCP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStart {
    /// The node.
    pub node: NodeId,
    /// Which start of the node this is, from 0 (a crash or a restart starts it again).
    pub start: u64,
    /// A seed for the transport's own random choices, drawn from the run's seed, the node and
    /// the start: seed a generator with it (not with the clock or the thread's generator) so
    /// that a run's seed replays it.
    pub seed: u64,
}

/// The user's transport, as the harness gives it to the node: every method is passed through.
pub(crate) struct BoxedTransport(pub(crate) Box<dyn Transport>);

impl Transport for BoxedTransport {
    fn send(&self, message: Message) {
        self.0.send(message);
    }

    fn send_batch(&self, messages: Vec<Message>) {
        self.0.send_batch(messages);
    }

    fn membership_changed(&self, membership: &Membership) {
        self.0.membership_changed(membership);
    }

    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        self.0.peer_connections()
    }
}
