//! Read waiters: reads waiting for the barrier of their [`Consistency`] level (a round of
//! heartbeats or a lease for leader reads, the state machine reaching an index for the others),
//! and bounded-staleness reads, judged again when they are answered.

use super::deadlines::Deadlines;
use super::{Consistency, Error, ReadOutcome, StateMachine};
use crate::{LogIndex, Raft, ReadId, ReadMode, Time};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

pub(super) type ReadReply<Q> = oneshot::Sender<Result<ReadOutcome<Option<Q>>, Error>>;

/// A read waiting for its barrier.
pub(super) struct PendingRead<SM: StateMachine> {
    /// `None` for a read that only asks for the barrier (no query to run).
    pub(super) query: Option<SM::Query>,
    /// Where the answer goes.
    pub(super) reply: ReadReply<SM::QueryResponse>,
    /// When the caller is answered [`Error::Timeout`] if the barrier was not reached first.
    pub(super) deadline: tokio::time::Instant,
    /// A bounded-staleness read: the data served must reflect every write acknowledged more
    /// than this many milliseconds before it is answered (checked again when it is).
    pub(super) max_age_ms: Option<u64>,
}

/// Every read this node has taken and not yet answered.
pub(super) struct Reads<SM: StateMachine> {
    /// Leader reads by the id given to the protocol (ids, and so deadlines, in arrival order).
    leader_reads: BTreeMap<ReadId, PendingRead<SM>>,
    /// The leader reads whose deadline is earlier than that of one started before them. (A
    /// leader read leaves `leader_reads` when it expires, so its first entry is always the
    /// next deadline in arrival order: no cursor is needed.)
    deadlines: Deadlines<ReadId>,
    /// The id the next leader read gets, so that ids rise in arrival order.
    next_id: u64,
    /// `AtLeast`, bounded-staleness and stale reads waiting for the state machine to reach
    /// their index, by index.
    waiting_for_apply: BTreeMap<LogIndex, Vec<PendingRead<SM>>>,
    /// The earliest deadline among `waiting_for_apply` (or later: it is only lowered on
    /// insert), so that finding the next deadline does not walk them.
    waiting_deadline: Option<tokio::time::Instant>,
}

impl<SM: StateMachine> Default for Reads<SM> {
    fn default() -> Self {
        Reads {
            leader_reads: BTreeMap::new(),
            deadlines: Deadlines::default(),
            next_id: 1,
            waiting_for_apply: BTreeMap::new(),
            waiting_deadline: None,
        }
    }
}

/// The committed index a bounded-staleness read may be served at, at `now`: one this node can
/// vouch covers every write acknowledged more than `max_age_ms` ago. The age is compared
/// strictly in whole milliseconds, which keeps the true age under the bound whatever the
/// rounding of either instant.
fn fresh_index(raft: &Raft, now: Time, max_age_ms: u64) -> Option<LogIndex> {
    raft.fresh_commit()
        .filter(|fresh| now.ms_since(fresh.as_of) < max_age_ms)
        .map(|fresh| fresh.index)
}

impl<SM: StateMachine> Reads<SM> {
    /// Starts a read at `consistency`, taken at `now`: a leader read goes to the protocol, any
    /// other waits for the state machine to reach the index its level asks for.
    pub(super) fn read(
        &mut self,
        raft: &mut Raft,
        now: Time,
        consistency: Consistency,
        pending: PendingRead<SM>,
    ) {
        match consistency {
            Consistency::Linearizable | Consistency::Lease => {
                let mode = if consistency == Consistency::Lease {
                    ReadMode::Lease
                } else {
                    ReadMode::Linearizable
                };
                let id = ReadId(self.next_id);
                self.next_id += 1;
                match raft.read(now, id, mode) {
                    Ok(()) => {
                        let previous = self
                            .leader_reads
                            .last_key_value()
                            .map(|(&id, r)| (id, r.deadline));
                        self.deadlines.insert(id, pending.deadline, previous);
                        self.leader_reads.insert(id, pending);
                    }
                    Err(error) => {
                        let _ = pending.reply.send(Err(error.into()));
                    }
                }
            }
            Consistency::AtLeast(index) => self.wait_for_apply(index, pending),
            Consistency::BoundedStaleness(bound) => {
                let max_age_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
                match fresh_index(raft, now, max_age_ms) {
                    Some(index) => self.wait_for_apply(
                        index,
                        PendingRead {
                            max_age_ms: Some(max_age_ms),
                            ..pending
                        },
                    ),
                    None => {
                        let _ = pending.reply.send(Err(Error::TooStale {
                            leader_hint: raft.leader(),
                        }));
                    }
                }
            }
            Consistency::Stale => self.wait_for_apply(LogIndex(0), pending),
        }
    }

    fn wait_for_apply(&mut self, index: LogIndex, read: PendingRead<SM>) {
        let deadline = self
            .waiting_deadline
            .map_or(read.deadline, |d| d.min(read.deadline));
        self.waiting_deadline = Some(deadline);
        self.waiting_for_apply.entry(index).or_default().push(read);
    }

    /// The protocol released the leader read `id`: it is answered, or failed with `result`'s
    /// error. `clock` reads the protocol's clock afresh. (The state machine is borrowed
    /// mutably only because it is `Send` and not necessarily `Sync`: a shared borrow could not
    /// be held across the query's await in a task that moves between threads.)
    pub(super) async fn complete(
        &mut self,
        raft: &Raft,
        state_machine: &mut SM,
        clock: impl Fn() -> Time,
        id: ReadId,
        result: Result<LogIndex, crate::ProtocolError>,
    ) {
        let Some(read) = self.leader_reads.remove(&id) else {
            return;
        };
        match result {
            Ok(_) => self.answer(raft, state_machine, &clock, read).await,
            Err(error) => {
                let _ = read.reply.send(Err(error.into()));
            }
        }
    }

    /// Answers the reads waiting for an index the state machine has now applied.
    pub(super) async fn answer_waiting(
        &mut self,
        raft: &Raft,
        state_machine: &mut SM,
        clock: impl Fn() -> Time,
    ) {
        let applied = raft.applied_index();
        let ready: Vec<LogIndex> = self
            .waiting_for_apply
            .range(..=applied)
            .map(|(&index, _)| index)
            .collect();
        for index in ready {
            for read in self.waiting_for_apply.remove(&index).unwrap_or_default() {
                self.answer(raft, state_machine, &clock, read).await;
            }
        }
        // Forget reads whose callers gave up.
        self.waiting_for_apply.retain(|_, reads| {
            reads.retain(|r| !r.reply.is_closed());
            !reads.is_empty()
        });
    }

    async fn answer(
        &mut self,
        raft: &Raft,
        state_machine: &mut SM,
        clock: &impl Fn() -> Time,
        read: PendingRead<SM>,
    ) {
        if let Some(max_age_ms) = read.max_age_ms {
            // Judged again now that it is about to be answered (applying took time), on a
            // fresh clock: the bound is on the data's age when the read is answered.
            match fresh_index(raft, clock(), max_age_ms) {
                Some(index) if index <= raft.applied_index() => {}
                Some(index) => {
                    self.wait_for_apply(index, read);
                    return;
                }
                None => {
                    let _ = read.reply.send(Err(Error::TooStale {
                        leader_hint: raft.leader(),
                    }));
                    return;
                }
            }
        }
        let response = match read.query {
            Some(query) => Some(state_machine.query(query).await),
            None => None,
        };
        let _ = read.reply.send(Ok(ReadOutcome {
            applied_index: raft.applied_index(),
            response,
        }));
    }

    /// The earliest deadline of a read not yet answered (for reads waiting on apply, possibly
    /// an earlier one that has been answered since).
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        [
            self.leader_reads.first_key_value().map(|(_, r)| r.deadline),
            self.deadlines.next_out_of_order(),
            self.waiting_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Answers [`Error::Timeout`] to every read whose deadline has passed.
    pub(super) fn expire(&mut self, now: tokio::time::Instant) {
        while let Some(entry) = self.leader_reads.first_entry()
            && entry.get().deadline <= now
        {
            let _ = entry.remove().reply.send(Err(Error::Timeout));
        }
        while let Some((deadline, id)) = self.deadlines.pop_out_of_order(now) {
            // Only the read with this very deadline is timed out (it may have been answered).
            if self
                .leader_reads
                .get(&id)
                .is_some_and(|r| r.deadline == deadline)
                && let Some(read) = self.leader_reads.remove(&id)
            {
                let _ = read.reply.send(Err(Error::Timeout));
            }
        }
        if self.waiting_deadline.is_some_and(|d| d <= now) {
            let mut earliest = None::<tokio::time::Instant>;
            self.waiting_for_apply.retain(|_, reads| {
                for read in std::mem::take(reads) {
                    if read.deadline <= now {
                        let _ = read.reply.send(Err(Error::Timeout));
                    } else {
                        earliest = Some(earliest.map_or(read.deadline, |e| e.min(read.deadline)));
                        reads.push(read);
                    }
                }
                !reads.is_empty()
            });
            self.waiting_deadline = earliest;
        }
    }

    /// Answers `error` to every read (the node is stopping).
    pub(super) fn fail_all(&mut self, error: &Error) {
        self.deadlines.clear();
        for (_, read) in std::mem::take(&mut self.leader_reads) {
            let _ = read.reply.send(Err(error.clone()));
        }
        for (_, reads) in std::mem::take(&mut self.waiting_for_apply) {
            for read in reads {
                let _ = read.reply.send(Err(error.clone()));
            }
        }
    }
}
