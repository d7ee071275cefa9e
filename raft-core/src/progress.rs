//! What a leader knows about each follower's log (Figure 2, "volatile state on leaders"), and
//! the bounded window of AppendEntries in flight to it.

use crate::{EntryId, LogIndex};
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
    /// The follower needs entries the leader has compacted away: the leader streams its latest
    /// snapshot in chunks (§7), within the same window, then resumes with the log.
    Snapshot,
}

/// A snapshot being streamed to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSend {
    /// The last entry the snapshot covers.
    pub(crate) last: EntryId,
    /// Where the next chunk to read starts.
    pub(crate) next_read: u64,
    /// A chunk was asked of the driver and not yet reported.
    pub(crate) reading: bool,
    /// The chunk that ends the image has been sent.
    pub(crate) all_read: bool,
    /// How many bytes the follower holds durably, as far as the leader has heard.
    pub(crate) acked: u64,
    /// The leader's latest heartbeat round when it last sent a chunk: a later round answered
    /// while chunks are unacknowledged means they were lost.
    pub(crate) sent_round: u64,
}

/// The AppendEntries in flight to one follower, oldest first: each one's last index and payload
/// bytes. The window is a count and a byte budget; a full window pauses replication until
/// acknowledgements free it.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    messages: VecDeque<(LogIndex, usize)>,
    capacity: usize,
    /// The payload bytes of `messages`.
    bytes: usize,
    max_bytes: usize,
}

impl Inflights {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Inflights {
        Inflights {
            messages: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.messages.len() >= self.capacity || self.bytes >= self.max_bytes
    }

    /// How many payload bytes the next message may carry: what is left of the byte budget, or
    /// the whole budget when nothing is in flight (a message always carries at least one entry,
    /// so an entry larger than the budget goes alone).
    pub(crate) fn bytes_left(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// True when nothing is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether a message whose first entry carries `first_bytes` of payload (`None`: a message
    /// without entries) may be sent now: the window is not full, and the entry fits in what is
    /// left of the byte budget or nothing is in flight.
    pub(crate) fn admits(&self, first_bytes: Option<usize>) -> bool {
        !self.full() && (self.is_empty() || first_bytes.is_none_or(|b| b <= self.bytes_left()))
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Records a message whose last entry is `last`, carrying `bytes` of payload. Messages are
    /// sent in index order.
    pub(crate) fn add(&mut self, last: LogIndex, bytes: usize) {
        debug_assert!(!self.full(), "inflight window overflow");
        debug_assert!(
            self.is_empty() || bytes <= self.bytes_left(),
            "byte budget overflow"
        );
        debug_assert!(self.messages.back().is_none_or(|&(b, _)| b < last));
        self.messages.push_back((last, bytes));
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Forgets every message whose last entry is at or below `index`: it has been acknowledged.
    pub(crate) fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.messages.front()
            && last <= index
        {
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Forgets the oldest message, so that one more can be sent after the follower proved it is
    /// alive but some acknowledgement was lost.
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }
}

/// The leader's view of one follower.
///
/// Invariant: `match_index < next_index`. `match_index` only grows within a term, unless the
/// follower restarted (see [`Progress::heard_session`]).
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
    /// In `Snapshot` state: the snapshot being sent.
    pub(crate) snapshot: Option<SnapshotSend>,
    /// The session of the follower's latest answer (a random number per run).
    last_session: Option<u64>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, window: usize, window_bytes: usize) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflights: Inflights::new(window, window_bytes),
            acked_round: 0,
            acked_session: 0,
            sent_commit: LogIndex(0),
            last_ack_at: None,
            snapshot: None,
            last_session: None,
        }
    }

    /// An answer came from the follower's run `session`. When it is another run than the
    /// previous answer's, the follower restarted: what it holds is found again by probing,
    /// from no match at all. A follower with a durable log answers the first probe at once; one
    /// that lost its log (Raft's safety assumes it never does; only a node that rejoins empty
    /// does) would otherwise never be sent what it lacks, since every rejection at or below its
    /// old match index looks stale. Returns whether it restarted.
    pub(crate) fn heard_session(&mut self, session: u64) -> bool {
        let restarted = self.last_session.is_some_and(|last| last != session);
        self.last_session = Some(session);
        if restarted {
            self.match_index = LogIndex(0);
            self.become_probe();
        }
        restarted
    }

    /// True when nothing more may be sent now.
    pub(crate) fn paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflights.full(),
            ReplicationState::Snapshot => self
                .snapshot
                .is_none_or(|s| s.reading || s.all_read || self.inflights.full()),
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
        self.next_index = self.next_index.max(self.match_index.next());
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
        self.next_index = self.match_index.next();
    }

    /// Starts streaming the snapshot that ends at `last` (from its first byte).
    pub(crate) fn become_snapshot(&mut self, last: EntryId, round: u64) {
        self.state = ReplicationState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(SnapshotSend {
            last,
            next_read: 0,
            reading: false,
            all_read: false,
            acked: 0,
            sent_round: round,
        });
    }

    /// The chunks in flight were lost (or the follower holds less than was sent): continue
    /// from what the follower holds.
    pub(crate) fn rewind_snapshot(&mut self, to: u64) {
        if let Some(send) = self.snapshot.as_mut() {
            send.next_read = to;
            send.acked = to;
            send.all_read = false;
            self.inflights.reset();
        }
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
            // Answers to appends sent before the snapshot began.
            ReplicationState::Snapshot => false,
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

    /// Records that a message ending at `last` was sent, carrying `bytes` of payload.
    pub(crate) fn sent(&mut self, last: LogIndex, carried_entries: bool, bytes: usize) {
        match self.state {
            ReplicationState::Replicate => {
                if carried_entries {
                    self.next_index = last.next();
                    self.inflights.add(last, bytes);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_fills_and_frees() {
        let mut w = Inflights::new(3, 1000);
        for i in [2, 4, 6] {
            assert!(!w.full());
            w.add(LogIndex(i), 10);
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
        let mut p = Progress::new(LogIndex(5), 4, 1000);
        assert!(!p.paused());
        p.sent(LogIndex(4), false, 0);
        assert!(p.paused());
        // A rejection of a different message than the outstanding probe is stale.
        assert!(!p.maybe_decrease_to(LogIndex(2), LogIndex(2)));
        assert!(p.maybe_decrease_to(LogIndex(4), LogIndex(3)));
        assert_eq!(p.next_index, LogIndex(3));
        assert!(!p.paused());
    }

    #[test]
    fn replicate_streams_within_window_and_ignores_stale_rejections() {
        let mut p = Progress::new(LogIndex(1), 2, 1000);
        assert!(p.maybe_update(LogIndex(3)));
        p.become_replicate();
        assert_eq!(p.next_index, LogIndex(4));
        p.sent(LogIndex(5), true, 0);
        p.sent(LogIndex(7), true, 0);
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

    #[test]
    fn the_byte_budget_fills_and_frees_with_the_messages() {
        let mut w = Inflights::new(10, 100);
        assert_eq!(w.bytes_left(), 100);
        w.add(LogIndex(1), 60);
        assert_eq!((w.bytes(), w.bytes_left()), (60, 40));
        assert!(!w.full());
        w.add(LogIndex(2), 40);
        assert!(w.full(), "a spent byte budget closes the window");
        w.free_to(LogIndex(1));
        assert_eq!((w.bytes(), w.bytes_left()), (40, 60));
        w.free_first();
        assert!(w.is_empty());
        assert_eq!(w.bytes(), 0);
        w.add(LogIndex(3), 500);
        assert!(w.full(), "one entry above the budget fills it alone");
        w.reset();
        assert_eq!((w.bytes(), w.len()), (0, 0));
    }
}
