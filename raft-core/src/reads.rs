//! The queue of reads a leader is serving (§6.4 of the dissertation): each waits until
//! leadership is confirmed for it and the state machine has applied up to its read index.

use crate::LogIndex;
use std::collections::VecDeque;

/// A caller-chosen tag that identifies a read request in the outcome the protocol returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

#[derive(Clone, Debug)]
struct PendingRead {
    id: ReadId,
    /// The commit index recorded for the read; `None` until the leader has committed an entry of
    /// its own term (before that its commit index may lag what earlier leaders committed).
    index: Option<LogIndex>,
    /// The heartbeat round a majority must acknowledge; 0 when none is needed (lease read).
    round: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ReadQueue {
    pending: VecDeque<PendingRead>,
}

impl ReadQueue {
    pub(crate) fn push(&mut self, id: ReadId, index: Option<LogIndex>, round: u64) {
        self.pending.push_back(PendingRead { id, index, round });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when some read waits for a round that has not been sent yet.
    pub(crate) fn needs_round(&self, latest_sent: u64) -> bool {
        self.pending.iter().any(|r| r.round > latest_sent)
    }

    /// The leader has just committed an entry of its term: reads without an index get the
    /// commit index now.
    pub(crate) fn assign_index(&mut self, committed: LogIndex) {
        for read in self.pending.iter_mut().filter(|r| r.index.is_none()) {
            read.index = Some(committed);
        }
    }

    /// Removes and returns, in arrival order, the reads that are confirmed by `confirmed_round`
    /// and whose index is applied.
    pub(crate) fn take_ready(
        &mut self,
        confirmed_round: u64,
        applied: LogIndex,
    ) -> Vec<(ReadId, LogIndex)> {
        let mut ready = Vec::new();
        self.pending.retain(|read| match read.index {
            Some(index) if read.round <= confirmed_round && index <= applied => {
                ready.push((read.id, index));
                false
            }
            _ => true,
        });
        ready
    }

    /// Removes every pending read (the node is no longer leader).
    pub(crate) fn drain(&mut self) -> Vec<ReadId> {
        self.pending.drain(..).map(|r| r.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_index_round_and_apply() {
        let mut q = ReadQueue::default();
        q.push(ReadId(1), None, 3);
        q.push(ReadId(2), Some(LogIndex(5)), 0);
        q.push(ReadId(3), Some(LogIndex(5)), 4);
        assert!(q.needs_round(3));
        assert!(!q.needs_round(4));
        // (confirmed round, applied, ids ready)
        assert!(
            q.take_ready(9, LogIndex(4)).is_empty(),
            "nothing applied far enough"
        );
        assert_eq!(q.take_ready(3, LogIndex(5)), vec![(ReadId(2), LogIndex(5))]);
        q.assign_index(LogIndex(6));
        assert_eq!(q.take_ready(3, LogIndex(6)), vec![(ReadId(1), LogIndex(6))]);
        assert!(
            q.take_ready(3, LogIndex(9)).is_empty(),
            "round 4 not yet confirmed"
        );
        assert_eq!(q.take_ready(4, LogIndex(9)), vec![(ReadId(3), LogIndex(5))]);
        assert_eq!(q.len(), 0);
        q.push(ReadId(4), None, 1);
        assert_eq!(q.drain(), vec![ReadId(4)]);
    }
}
