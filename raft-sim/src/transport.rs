//! The seams for a transport of the user's own: a wrapper around the TCP transport
//! ([`crate::Simulation::transport`], told [`NodeStart`]), or a transport that replaces it on
//! both sides ([`crate::Simulation::own_transport`], given a [`TransportStart`]); and the box
//! the harness keeps whatever they return in.

use raft_core::node::{Inbox, PeerConnection, Transport};
use raft_core::{Membership, Message, NodeId};
use raft_net::{TcpTransport, TurmoilNet};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

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

/// What the factory given to [`crate::Simulation::own_transport`] gets at every start of every
/// node: everything a transport of its own needs to send the node's messages and to receive
/// its peers'.
#[derive(Debug)]
#[non_exhaustive]
pub struct TransportStart {
    /// Which node, which start of it, and a seed for the transport's own random choices.
    pub node: NodeStart,
    /// Where to listen on the node's host (`0.0.0.0:<port>`): bind it with turmoil's
    /// `turmoil::net::TcpListener` (or `UdpSocket`), as the node's peers dial `<host>:<port>`.
    pub listen: String,
    /// Every other host and its address (`n2:<port>`, ...), spares included. A node that
    /// joins later is also announced, with its address, in the memberships the node passes to
    /// `Transport::membership_changed`.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the node takes its messages: hand every message received for it to
    /// [`Inbox::deliver`].
    pub inbox: Inbox,
}

/// How the harness gives each node its transport.
#[derive(Clone)]
pub(crate) enum TransportSeam {
    /// The TCP transport, passed through the user's wrapper.
    Wrap(Rc<dyn Fn(NodeStart, TcpTransport<TurmoilNet>) -> Box<dyn Transport>>),
    /// The user's transport, on both sides.
    Own(Rc<dyn Fn(TransportStart) -> OwnStart>),
}

/// A transport of the user's starting: the transport, or why it could not start.
pub(crate) type OwnStart = Pin<Box<dyn Future<Output = Result<Box<dyn Transport>, String>>>>;

impl Default for TransportSeam {
    fn default() -> Self {
        TransportSeam::Wrap(Rc::new(|_, tcp| Box::new(tcp)))
    }
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
