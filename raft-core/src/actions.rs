//! The protocol's output: what the driver must do, and in which order.

use crate::{
    Entry, EntryData, EntryId, HardState, LogIndex, Message, NodeId, ProtocolError, ReadId,
    SnapshotMeta,
};

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

/// A chunk of a snapshot this node receives from its leader, to store (duty 2 of [`Actions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotWrite {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Where `data` starts in the image: 0 starts a new image (abandoning any unfinished image
    /// received before); any other offset continues the image being received, exactly where
    /// the previous chunk ended.
    pub offset: u64,
    /// The bytes.
    pub data: EntryData,
    /// This chunk ends the image: finish it, restore the state machine from it, and report
    /// [`crate::Raft::snapshot_installed`] (duty 7).
    pub last: bool,
}

/// A chunk of this leader's latest snapshot to read for a follower (duty 8 of [`Actions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotRead {
    /// The follower it is for.
    pub to: NodeId,
    /// The snapshot the leader is sending (the store may hold a newer one by now: read that).
    pub snapshot: EntryId,
    /// Where to read from.
    pub offset: u64,
    /// The most bytes to read.
    pub max_bytes: usize,
}

/// A batch of work for the driver, taken with [`crate::Raft::take_actions`].
///
/// The driver's duties, in this order (the numbering is the contract):
///
/// 1. **Send `messages` now.** They depend on nothing in this batch: they are a leader's
///    AppendEntries, heartbeats and TimeoutNow, which may go out while the leader's own
///    write of the same entries is still in progress (dissertation §10.2.1; the leader counts
///    itself toward a commit only once step 3 reports its entries durable).
/// 2. **Make `purge`, `hard_state`, `entries` and `snapshot_writes` durable**, in that order,
///    after every earlier batch's writes. `purge` makes the stored log start after that entry
///    ([`crate::node::LogStore::purge_prefix`]). `entries` are contiguous; every stored entry at
///    or after `entries[0].index` is replaced by them. Each of `snapshot_writes` is stored in
///    order into the snapshot being received (offset 0 starts a new image); one marked `last`
///    is finished (made durable and the store's latest, atomically).
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
/// 7. **Install a received snapshot.** After a `snapshot_writes` chunk marked `last` is
///    finished (and this batch's committed entries are applied), restore the state machine from
///    that image and report [`crate::Raft::snapshot_installed`]. Until then the protocol hands
///    out nothing more to apply.
/// 8. **Read snapshot chunks for followers.** For each of `snapshot_reads`, read up to
///    `max_bytes` of the latest stored snapshot from `offset` and report it with
///    [`crate::Raft::snapshot_read`]; the protocol sends it (take the actions again).
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
    /// Step 2, first: the stored log starts after this entry.
    pub purge: Option<EntryId>,
    /// Step 2, last: chunks of a snapshot received from the leader.
    pub snapshot_writes: Vec<SnapshotWrite>,
    /// Step 8: chunks of the latest snapshot to read for followers.
    pub snapshot_reads: Vec<SnapshotRead>,
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
            && self.purge.is_none()
            && self.snapshot_writes.is_empty()
            && self.snapshot_reads.is_empty()
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
