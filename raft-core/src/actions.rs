//! The protocol's output: what the driver must do, and in which order.

use crate::{Entry, HardState, LogIndex, Message, ProtocolError, ReadId};

/// Committed entries to apply: `first..=last`, all held by the protocol's log. The driver reads
/// them in place with [`crate::Raft::entry`] (no copy, no reference-count traffic), or copies
/// them out with [`crate::Raft::committed_entries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The first entry to apply (the one after the last handed out).
    pub first: LogIndex,
    /// The last entry to apply.
    pub last: LogIndex,
}

impl Committed {
    /// How many entries the range holds.
    pub fn len(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.last.0 - self.first.0 + 1
        }
    }

    /// True when `first > last` (the protocol never hands out such a range: nothing to apply
    /// is `None` in [`Actions::committed`]).
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// The indexes of the range, in order.
    pub fn indexes(&self) -> impl Iterator<Item = LogIndex> + use<> {
        (self.first.0..=self.last.0).map(LogIndex)
    }
}

/// A batch of work for the driver, taken with [`crate::Raft::take_actions`].
///
/// The driver's duties, in this order (the numbering is the contract):
///
/// 1. **Send `messages` now.** They depend on nothing in this batch: they are a leader's
///    AppendEntries, heartbeats and TimeoutNow, which may go out while the leader's own
///    write of the same entries is still in progress (dissertation §10.2.1; the leader counts
///    itself toward a commit only once step 3 reports its entries durable).
/// 2. **Make `hard_state` and `entries` durable**, in that order, after every earlier batch's
///    writes. `entries` are contiguous; every stored entry at or after `entries[0].index` is
///    replaced by them.
/// 3. **Report durability** with [`crate::Raft::persisted`], passing the id of the last entry of
///    `entries` (skip when `entries` is empty).
/// 4. **Only then send `persisted_messages`.** They promise what step 2 made durable: a vote,
///    a term, stored entries (Figure 2: "respond to RPCs only after updating stable storage").
/// 5. **Apply the `committed` range** to the state machine in order, reading each entry with
///    [`crate::Raft::entry`], then report the last one with [`crate::Raft::applied`]. They are
///    committed and durable locally, and the log keeps them at least until then.
/// 6. **Answer `reads`.** Each resolved read's index is already applied (as of the last
///    `applied` report), so a query of the state machine now is linearizable; a failed read
///    carries the error for its caller.
///
/// A crash may interrupt the batch anywhere; on restart the driver hands
/// [`crate::Raft::new`] only what step 2 made durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "the driver must carry out every action in order"]
#[non_exhaustive]
pub struct Actions {
    /// Step 1.
    pub messages: Vec<Message>,
    /// Step 2: the new hard state, when it changed.
    pub hard_state: Option<HardState>,
    /// Step 2: entries to store.
    pub entries: Vec<Entry>,
    /// Step 4.
    pub persisted_messages: Vec<Message>,
    /// Step 5.
    pub committed: Option<Committed>,
    /// Step 6: (read, index it is served at, or why it failed).
    pub reads: Vec<(ReadId, Result<LogIndex, ProtocolError>)>,
}

impl Actions {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed.is_none()
            && self.reads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_range_counts_and_lists_its_indexes() {
        let range = Committed {
            first: LogIndex(3),
            last: LogIndex(5),
        };
        assert_eq!(range.len(), 3);
        assert!(!range.is_empty());
        let indexes: Vec<LogIndex> = range.indexes().collect();
        assert_eq!(indexes, [LogIndex(3), LogIndex(4), LogIndex(5)]);
        let empty = Committed {
            first: LogIndex(5),
            last: LogIndex(4),
        };
        assert_eq!(empty.len(), 0);
        assert!(empty.is_empty());
        assert_eq!(empty.indexes().count(), 0);
    }
}
