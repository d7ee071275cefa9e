//! What a leader knows about each follower's log (Figure 2, "volatile state on leaders"), and
//! the bounded window of AppendEntries in flight to it.

use crate::LogIndex;
use std::collections::VecDeque;

/// How the leader is replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// The leader does not know where the follower's log matches its own: it sends one
    /// AppendEntries at a time and waits for the answer before the next (§5.3).
    Probe,
    /// The follower's log is known to match up to `match_index`: the leader streams entries
    /// optimistically, several messages in flight, within the inflight window.
    Replicate,
}

/// The last indexes of AppendEntries in flight to one follower, oldest first. Its capacity is
/// the window: a full window pauses replication until acknowledgements free it.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    last_indexes: VecDeque<LogIndex>,
    capacity: usize,
}

impl Inflights {
    pub(crate) fn new(capacity: usize) -> Inflights {
        Inflights {
            last_indexes: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.last_indexes.len()
    }

    /// Records a message whose last entry is `last`. Messages are sent in index order.
    pub(crate) fn add(&mut self, last: LogIndex) {
        debug_assert!(!self.full(), "inflight window overflow");
        debug_assert!(self.last_indexes.back().is_none_or(|&b| b < last));
        self.last_indexes.push_back(last);
    }

    /// Forgets every message whose last entry is at or below `index`: it has been acknowledged.
    pub(crate) fn free_to(&mut self, index: LogIndex) {
        while self.last_indexes.front().is_some_and(|&f| f <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Forgets the oldest message, so that one more can be sent after the follower proved it is
    /// alive but some acknowledgement was lost.
    pub(crate) fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// The leader's view of one follower.
///
/// Invariant: `match_index < next_index`. `match_index` only grows within a term.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be replicated on the follower (Figure 2 `matchIndex`).
    pub(crate) match_index: LogIndex,
    /// The index of the next entry to send (Figure 2 `nextIndex`).
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In Probe: a probe is outstanding; wait for its answer (or a heartbeat answer).
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// The latest heartbeat round this follower acknowledged in this term.
    pub(crate) acked_round: u64,
    /// The session of the follower's answer that first reported `acked_round`.
    pub(crate) acked_session: u64,
    /// The commit index most recently sent to it, so an advance is sent once.
    pub(crate) sent_commit: LogIndex,
    /// When the leader last heard any answer from it (replication-lag monitoring).
    pub(crate) last_ack_at: Option<crate::Time>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, window: usize) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflights: Inflights::new(window),
            acked_round: 0,
            acked_session: 0,
            sent_commit: LogIndex(0),
            last_ack_at: None,
        }
    }

    /// True when nothing more may be sent now.
    pub(crate) fn paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflights.full(),
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.next_index = self.next_index.max(self.match_index.next());
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.probe_sent = false;
        self.inflights.reset();
        self.next_index = self.match_index.next();
    }

    /// The follower answered `round` in `session` at `now`. The first answer to report a
    /// higher round sets the session that round is credited to.
    pub(crate) fn acked(&mut self, round: u64, session: u64, now: crate::Time) {
        if round > self.acked_round {
            self.acked_round = round;
            self.acked_session = session;
        }
        self.last_ack_at = Some(now);
    }

    /// Records that the follower holds everything up to `index`. Returns whether that was news.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        updated
    }

    /// Handles a rejection of the AppendEntries whose previous entry was `rejected`, moving
    /// `next_index` back to `hint_next`. Returns false when the rejection is stale (an answer to
    /// an older message than the one that now matters) and was ignored.
    pub(crate) fn maybe_decrease_to(&mut self, rejected: LogIndex, hint_next: LogIndex) -> bool {
        match self.state {
            ReplicationState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.next_index = hint_next.min(rejected).max(self.match_index.next());
                true
            }
            ReplicationState::Probe => {
                if rejected != self.next_index.prev() {
                    return false;
                }
                self.next_index = hint_next.min(rejected).max(self.match_index.next());
                self.probe_sent = false;
                true
            }
        }
    }

    /// Records that a message ending at `last` was sent.
    pub(crate) fn sent(&mut self, last: LogIndex, carried_entries: bool) {
        match self.state {
            ReplicationState::Replicate => {
                if carried_entries {
                    self.next_index = last.next();
                    self.inflights.add(last);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_fills_and_frees() {
        let mut w = Inflights::new(3);
        for i in [2, 4, 6] {
            assert!(!w.full());
            w.add(LogIndex(i));
        }
        assert!(w.full());
        w.free_to(LogIndex(3));
        assert_eq!(w.len(), 2);
        assert!(!w.full());
        w.free_to(LogIndex(1));
        assert_eq!(w.len(), 2, "freeing below the oldest frees nothing");
        w.free_first();
        assert_eq!(w.len(), 1);
        w.free_to(LogIndex(100));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(LogIndex(5), 4);
        assert!(!p.paused());
        p.sent(LogIndex(4), false);
        assert!(p.paused());
        // A rejection of a different message than the outstanding probe is stale.
        assert!(!p.maybe_decrease_to(LogIndex(2), LogIndex(2)));
        assert!(p.maybe_decrease_to(LogIndex(4), LogIndex(3)));
        assert_eq!(p.next_index, LogIndex(3));
        assert!(!p.paused());
    }

    #[test]
    fn replicate_streams_within_window_and_ignores_stale_rejections() {
        let mut p = Progress::new(LogIndex(1), 2);
        assert!(p.maybe_update(LogIndex(3)));
        p.become_replicate();
        assert_eq!(p.next_index, LogIndex(4));
        p.sent(LogIndex(5), true);
        p.sent(LogIndex(7), true);
        assert!(p.paused());
        assert_eq!(p.next_index, LogIndex(8));
        assert!(p.maybe_update(LogIndex(5)));
        p.inflights.free_to(LogIndex(5));
        assert!(!p.paused());
        assert!(
            !p.maybe_update(LogIndex(4)),
            "an older acknowledgement is not news"
        );
        assert!(
            !p.maybe_decrease_to(LogIndex(5), LogIndex(2)),
            "at or below match: stale"
        );
        assert!(p.maybe_decrease_to(LogIndex(7), LogIndex(2)));
        assert_eq!(p.next_index, LogIndex(6), "never below match + 1");
    }
}
