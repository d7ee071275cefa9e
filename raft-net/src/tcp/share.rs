//! Each peer's share of what the transport hands the node.
//!
//! The node's inbox (`raft_core::node::inbox`) bounds what waits in it, in messages and in
//! decoded bytes, but tells a sender only whether it took a message, not when the node takes it
//! out; so, to share it among peers, the transport bounds what it hands over in every window
//! of [`WINDOW`]:
//!
//! * **Bytes, as decoded.** A message is charged what it occupies in memory decoded (an upper
//!   bound read from its header before it is decoded: entries cost far more decoded than on the
//!   wire), and each peer may be handed `max_inbound_bytes / peers` per window. A frame over
//!   its sender's share is dropped without being decoded at all.
//! * **Messages, fairly.** While the inbox is refusing messages (it refused one in the last
//!   window), a peer that already had more than an equal part of this window's deliveries is
//!   refused first, so a flooding peer cannot take the places that free up from the others.
//!
//! `peers` is the number of peers heard from in this window or the last, at least one.

use raft_core::NodeId;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The accounting window.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// Messages a peer may receive beyond its equal part while the inbox is congested, so that
/// peers at about the same rate are not refused in turn by rounding.
const FAIR_SLACK: u64 = 8;

/// Why a message was not handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The peer used its share of decoded bytes in this window (or the message alone exceeds
    /// the share).
    Bytes,
    /// The inbox is congested and the peer had more than its part of the deliveries.
    Fairness,
}

impl Denied {
    pub(crate) fn cause(self) -> &'static str {
        match self {
            Denied::Bytes => "over its share of inbound bytes",
            Denied::Fairness => "over its share of a congested inbox",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shares {
    state: Mutex<State>,
    max_bytes: usize,
}

#[derive(Debug)]
struct State {
    window_start: Instant,
    /// What each peer was handed in this window.
    used: BTreeMap<NodeId, Used>,
    /// Messages handed over in this window, over all peers.
    total_messages: u64,
    /// Peers heard from in the previous window.
    previous_peers: usize,
    /// The inbox refused a message recently: until then, fairness applies.
    congested_until: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Used {
    messages: u64,
    bytes: usize,
}

impl Shares {
    pub(crate) fn new(max_bytes: usize) -> Shares {
        Shares {
            state: Mutex::new(State {
                window_start: Instant::now(),
                used: BTreeMap::new(),
                total_messages: 0,
                previous_peers: 0,
                congested_until: None,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few field writes that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Charges a message of `decoded_bytes` from `peer` to its shares if they allow it, before
    /// it is decoded (decoding happens outside this lock). Then the caller hands it to the
    /// inbox and reports with [`Shares::refused`] if the inbox did not take it.
    pub(crate) fn admit(&self, peer: NodeId, decoded_bytes: usize) -> Result<(), Denied> {
        let now = Instant::now();
        let mut state = self.lock();
        if now.duration_since(state.window_start) >= WINDOW {
            state.previous_peers = state.used.len();
            state.used.clear();
            state.total_messages = 0;
            state.window_start = now;
        }
        let known = state.used.contains_key(&peer);
        let heard = state.used.len() + usize::from(!known);
        let peers = heard.max(state.previous_peers).max(1);
        let used = state.used.get(&peer).copied().unwrap_or_default();
        if used.bytes.saturating_add(decoded_bytes) > self.max_bytes / peers {
            return Err(Denied::Bytes);
        }
        let congested = state.congested_until.is_some_and(|until| now < until);
        if congested && used.messages >= state.total_messages / peers as u64 + FAIR_SLACK {
            return Err(Denied::Fairness);
        }
        let entry = state.used.entry(peer).or_default();
        entry.messages += 1;
        entry.bytes = entry.bytes.saturating_add(decoded_bytes);
        state.total_messages += 1;
        Ok(())
    }

    /// The inbox refused an admitted message: it is congested for the next window.
    pub(crate) fn refused(&self) {
        let now = Instant::now();
        self.lock().congested_until = Some(now + WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_are_shared_per_window_between_the_peers_heard_from() {
        let shares = Shares::new(1000);
        assert_eq!(shares.admit(NodeId(2), 600), Ok(()));
        assert_eq!(shares.admit(NodeId(2), 600), Err(Denied::Bytes));
        // A second peer halves the share: node 3 gets 500.
        assert_eq!(shares.admit(NodeId(3), 501), Err(Denied::Bytes));
        assert_eq!(shares.admit(NodeId(3), 500), Ok(()));
        tokio::time::advance(WINDOW).await;
        // Both were heard from in the last window: still half each.
        assert_eq!(shares.admit(NodeId(2), 500), Ok(()));
        assert_eq!(shares.admit(NodeId(2), 1), Err(Denied::Bytes));
    }

    #[tokio::test(start_paused = true)]
    async fn a_congested_inbox_refuses_the_heaviest_sender_first() {
        let shares = Shares::new(usize::MAX);
        assert_eq!(shares.admit(NodeId(2), 1), Ok(()));
        for _ in 0..100 {
            assert_eq!(shares.admit(NodeId(3), 1), Ok(()));
        }
        // Not congested yet: node 3 may take more, until the inbox refuses one.
        assert_eq!(shares.admit(NodeId(3), 1), Ok(()));
        shares.refused();
        // Congested now: node 3 is far over half of the deliveries, node 2 is not.
        assert_eq!(shares.admit(NodeId(3), 1), Err(Denied::Fairness));
        assert_eq!(shares.admit(NodeId(2), 1), Ok(()));
        tokio::time::advance(WINDOW * 2).await;
        assert_eq!(shares.admit(NodeId(3), 1), Ok(()));
    }
}
