//! Counters of what the transport sent, received and dropped: what an operator graphs and a
//! test waits on instead of sleeping.

use raft_core::NodeId;
use raft_core::node::PeerConnection;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// A snapshot of a transport's counters, from [`crate::TcpTransport::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Outbound, per configured peer.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Inbound, over all connections.
    pub inbound: InboundStats,
}

/// The outbound side of one peer. Counts are totals since the peer was added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's address.
    pub addr: String,
    /// Whether a connection is established now (`connection` is `Connected`).
    pub connected: bool,
    /// How the link stands: connected, refused by the peer and why, or unreachable since when.
    pub connection: PeerConnection,
    /// Messages waiting in the queue now.
    pub queued: usize,
    /// Their estimated size in bytes, framed (bounded by `queue_capacity_bytes`).
    pub queued_bytes: usize,
    /// Messages written to a connection (and flushed).
    pub sent: u64,
    /// Messages dropped because the queue was full (in messages or in bytes).
    pub dropped_queue_full: u64,
    /// Messages dropped because the connection failed while writing them.
    pub dropped_connection_lost: u64,
    /// Messages dropped because their frame would exceed `max_frame_bytes`.
    pub dropped_too_large: u64,
    /// Connections established (handshake completed).
    pub connections_opened: u64,
}

/// The inbound side of a transport. Counts are totals since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundStats {
    /// Connections whose handshake was accepted.
    pub connections_accepted: u64,
    /// Connections closed as soon as accepted, before any handshake: too many from one
    /// address, unknown addresses holding their share of the slots, or all slots taken.
    pub connections_refused: u64,
    /// Connections refused at the handshake: bad magic or version, another cluster, an unknown
    /// node, a live connection from that node already, or no handshake within the handshake
    /// timeout; over TLS also a failed TLS handshake (not TLS at all, no certificate, an
    /// unknown CA, an expired or not yet valid certificate) or a certificate that does not
    /// name the node the hello claims.
    pub handshakes_refused: u64,
    /// `handshakes_refused` by cause, as the log lines word it (for example `"cluster"`,
    /// `"unknown CA"`, `"certificate for another node"`).
    pub handshakes_refused_by_cause: BTreeMap<&'static str, u64>,
    /// Accepted connections closed because a peer sent invalid input: bytes that were not a
    /// valid frame (oversized, truncated) or not a valid message (see `messages_rejected`).
    pub connections_closed_on_error: u64,
    /// Messages handed to the node's inbox.
    pub messages_delivered: u64,
    /// Payloads refused as invalid, each of which closed its connection: undecodable, a
    /// sender other than the handshake's node, another recipient than this node, or failing
    /// `Message::validate`.
    pub messages_rejected: u64,
    /// Messages dropped because the node's inbox was full or closed.
    pub messages_dropped_inbox_full: u64,
    /// Valid messages dropped because their sender was over its share of the inbox (in
    /// decoded bytes, or in messages while the inbox is congested).
    pub messages_dropped_over_share: u64,
    /// Warnings counted but not logged, because the same peer or address logged the same
    /// cause within the last ten seconds.
    pub warnings_suppressed: u64,
}

/// The live counters behind [`InboundStats`].
#[derive(Debug, Default)]
pub(crate) struct InboundCounters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) refused_by_cause: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) connections_closed_on_error: AtomicU64,
    pub(crate) messages_delivered: AtomicU64,
    pub(crate) messages_rejected: AtomicU64,
    pub(crate) messages_dropped_inbox_full: AtomicU64,
    pub(crate) messages_dropped_over_share: AtomicU64,
}

impl InboundCounters {
    /// Counts a connection refused at its handshake, for `cause`.
    pub(crate) fn refused(&self, cause: &'static str) {
        bump(&self.handshakes_refused);
        // A handful of fixed causes: the map stays small.
        *self
            .refused_by_cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(cause)
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self, warnings_suppressed: u64) -> InboundStats {
        InboundStats {
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            handshakes_refused: self.handshakes_refused.load(Ordering::Relaxed),
            handshakes_refused_by_cause: self
                .refused_by_cause
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            connections_closed_on_error: self.connections_closed_on_error.load(Ordering::Relaxed),
            messages_delivered: self.messages_delivered.load(Ordering::Relaxed),
            messages_rejected: self.messages_rejected.load(Ordering::Relaxed),
            messages_dropped_inbox_full: self.messages_dropped_inbox_full.load(Ordering::Relaxed),
            messages_dropped_over_share: self.messages_dropped_over_share.load(Ordering::Relaxed),
            warnings_suppressed,
        }
    }
}

/// Adds one to a counter. Counters are statistics, never used to synchronise anything.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
