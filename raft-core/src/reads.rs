//! The queue of reads a leader is serving (§6.4 of the dissertation): each waits until
//! leadership is confirmed for it and, for the leader's own reads, the state machine has applied
//! up to its read index. Followers' reads wait here too, as one request per follower batch:
//! they are answered with the index as soon as it is confirmed, and the follower waits for its
//! own apply.

use crate::{LogIndex, NodeId, Time};
use std::collections::{BTreeMap, VecDeque};

/// A caller-chosen tag that identifies a read request in the outcome the protocol returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// Whose read a leader is confirming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reader {
    /// One of the leader's own reads, answered once its index is applied here.
    Local(ReadId),
    /// A follower's request for a read index, answered as soon as the index is confirmed.
    Remote {
        /// The follower.
        from: NodeId,
        /// Its number for the request.
        request: u64,
    },
}

#[derive(Clone, Debug)]
struct PendingRead {
    reader: Reader,
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
    pub(crate) fn push(&mut self, reader: Reader, index: Option<LogIndex>, round: u64) {
        self.pending.push_back(PendingRead {
            reader,
            index,
            round,
        });
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
    /// and, for local ones, whose index is applied.
    pub(crate) fn take_ready(
        &mut self,
        confirmed_round: u64,
        applied: LogIndex,
    ) -> Vec<(Reader, LogIndex)> {
        let mut ready = Vec::new();
        self.pending.retain(|read| match read.index {
            Some(index)
                if read.round <= confirmed_round
                    && (index <= applied || matches!(read.reader, Reader::Remote { .. })) =>
            {
                ready.push((read.reader, index));
                false
            }
            _ => true,
        });
        ready
    }

    /// Removes every pending read (the node is no longer leader).
    pub(crate) fn drain(&mut self) -> Vec<Reader> {
        self.pending.drain(..).map(|r| r.reader).collect()
    }
}

/// Reads a follower serves itself with a read index from its leader: those taken since the
/// last batch, and the requests sent and not yet answered.
#[derive(Debug, Default)]
pub(crate) struct ForwardedReads {
    /// Taken since the last batch: `[linearizable, lease]`.
    unsent: [Vec<ReadId>; 2],
    /// Requests sent, by number: their reads, and when they are given up unanswered.
    sent: BTreeMap<u64, (Vec<ReadId>, Time)>,
}

impl ForwardedReads {
    pub(crate) fn push(&mut self, id: ReadId, lease: bool) {
        self.unsent[usize::from(lease)].push(id);
    }

    /// The batches to send now, as `(lease, reads)`; `number` gives each its request number,
    /// and it is given up at `deadline`.
    pub(crate) fn take_unsent(
        &mut self,
        deadline: Time,
        mut number: impl FnMut() -> u64,
    ) -> Vec<(u64, bool)> {
        let mut requests = Vec::new();
        for (slot, lease) in [(0, false), (1, true)] {
            let reads = std::mem::take(&mut self.unsent[slot]);
            if !reads.is_empty() {
                let request = number();
                self.sent.insert(request, (reads, deadline));
                requests.push((request, lease));
            }
        }
        requests
    }

    /// The reads of an answered request (none if it is unknown or was given up).
    pub(crate) fn answered(&mut self, request: u64) -> Vec<ReadId> {
        self.sent
            .remove(&request)
            .map(|(reads, _)| reads)
            .unwrap_or_default()
    }

    /// Removes the reads of requests whose deadline is at or before `now`.
    pub(crate) fn expire(&mut self, now: Time) -> Vec<ReadId> {
        let mut expired = Vec::new();
        self.sent.retain(|_, (reads, deadline)| {
            if *deadline <= now {
                expired.append(reads);
                false
            } else {
                true
            }
        });
        expired
    }

    /// The earliest deadline of a request sent.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.sent.values().map(|&(_, deadline)| deadline).min()
    }

    pub(crate) fn has_unsent(&self) -> bool {
        self.unsent.iter().any(|reads| !reads.is_empty())
    }

    /// Removes every read, sent or not (the node stopped following this leader).
    pub(crate) fn drain(&mut self) -> Vec<ReadId> {
        let mut all: Vec<ReadId> = self.unsent.iter_mut().flat_map(std::mem::take).collect();
        for (_, (reads, _)) in std::mem::take(&mut self.sent) {
            all.extend(reads);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_index_round_and_apply() {
        let local = |id| Reader::Local(ReadId(id));
        let mut q = ReadQueue::default();
        q.push(local(1), None, 3);
        q.push(local(2), Some(LogIndex(5)), 0);
        q.push(local(3), Some(LogIndex(5)), 4);
        assert!(q.needs_round(3));
        assert!(!q.needs_round(4));
        // (confirmed round, applied, ids ready)
        assert!(
            q.take_ready(9, LogIndex(4)).is_empty(),
            "nothing applied far enough"
        );
        assert_eq!(q.take_ready(3, LogIndex(5)), vec![(local(2), LogIndex(5))]);
        q.assign_index(LogIndex(6));
        assert_eq!(q.take_ready(3, LogIndex(6)), vec![(local(1), LogIndex(6))]);
        assert!(
            q.take_ready(3, LogIndex(9)).is_empty(),
            "round 4 not yet confirmed"
        );
        assert_eq!(q.take_ready(4, LogIndex(9)), vec![(local(3), LogIndex(5))]);
        assert_eq!(q.len(), 0);
        q.push(local(4), None, 1);
        assert_eq!(q.drain(), vec![local(4)]);
    }

    #[test]
    fn a_followers_request_is_ready_once_confirmed_whatever_the_leader_applied() {
        let remote = Reader::Remote {
            from: NodeId(2),
            request: 7,
        };
        let mut q = ReadQueue::default();
        q.push(remote, Some(LogIndex(5)), 2);
        assert!(
            q.take_ready(1, LogIndex(9)).is_empty(),
            "round 2 not confirmed"
        );
        assert_eq!(q.take_ready(2, LogIndex(0)), vec![(remote, LogIndex(5))]);
    }
}
