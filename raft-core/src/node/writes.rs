//! Write waiters: proposals waiting for the acknowledgement their caller asked for
//! ([`Ack::Local`] once durable here, [`Ack::Quorum`] once applied, [`Ack::All`] once every
//! in-sync voter also holds them), and writes whose index a newer write reused.

use super::deadlines::{Deadlines, Timed};
use super::{Ack, Error, WriteOutcome};
use crate::{EntryId, LogIndex, NodeId, Raft, Role, Term};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tokio::sync::oneshot;

pub(super) type WriteReply<R> = oneshot::Sender<Result<WriteOutcome<R>, Error>>;

/// A write waiting for its acknowledgement.
struct PendingWrite<R> {
    /// Where the protocol appended the write; its apply is matched by index.
    index: LogIndex,
    /// The term it was appended in: only an entry of this term at `index` is this write.
    term: Term,
    /// What the caller waits for, which decides when it is answered.
    ack: Ack,
    /// Taken when the write is answered; the record stays until its entry is applied.
    reply: Option<WriteReply<R>>,
    /// `Ack::All` writes keep the response here while they wait for the in-sync followers.
    response: Option<R>,
    /// When the caller is answered [`Error::Timeout`] if nothing else answered it first.
    deadline: tokio::time::Instant,
}

impl<R> Timed for PendingWrite<R> {
    type Key = (LogIndex, Term);
    fn key(&self) -> (LogIndex, Term) {
        (self.index, self.term)
    }
    fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }
}

impl<R> PendingWrite<R> {
    /// Sends `result` unless the write was answered already.
    fn answer(&mut self, result: Result<WriteOutcome<R>, Error>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

/// Every write this node has proposed and not yet finished with.
pub(super) struct Writes<R> {
    /// Writes waiting for durability or apply, in index order (nearly always the order of
    /// their deadlines, since every request gets the same timeout and writes are proposed as
    /// they arrive).
    pending: VecDeque<PendingWrite<R>>,
    /// Where the deadlines of `pending` have been checked, and which are out of order.
    deadlines: Deadlines<(LogIndex, Term)>,
    /// `Ack::Local` writes not yet acknowledged, by index, so that a durable batch finds them
    /// without walking every pending write.
    local_pending: BTreeSet<LogIndex>,
    /// Writes whose entries this node's log no longer holds (a later leader replaced them) and
    /// whose index a newer write now uses, by (index, term). Their fate is unknown until their
    /// index commits: another node may still hold the entry and win an election with it. With
    /// their own term they took effect; with another, they were lost.
    superseded: BTreeMap<(LogIndex, Term), PendingWrite<R>>,
    /// `Ack::All` writes applied and waiting for the in-sync followers, by index.
    all_ready: BTreeMap<LogIndex, PendingWrite<R>>,
}

impl<R> Default for Writes<R> {
    fn default() -> Self {
        Writes {
            pending: VecDeque::new(),
            deadlines: Deadlines::default(),
            local_pending: BTreeSet::new(),
            superseded: BTreeMap::new(),
            all_ready: BTreeMap::new(),
        }
    }
}

impl<R> Writes<R> {
    /// Keeps the write the protocol just appended as `id` until it is acknowledged.
    pub(super) fn proposed(
        &mut self,
        id: EntryId,
        ack: Ack,
        reply: WriteReply<R>,
        deadline: tokio::time::Instant,
    ) {
        // Writes still waiting at or after this index were proposed in an earlier term and
        // this log no longer holds their entries. They are not necessarily lost: another node
        // may hold them and win a later election. They wait, apart, for their index to commit
        // (or for their deadline).
        while self.pending.back().is_some_and(|w| w.index >= id.index) {
            let Some(replaced) = self.pending.pop_back() else {
                break;
            };
            self.local_pending.remove(&replaced.index);
            self.superseded
                .insert((replaced.index, replaced.term), replaced);
        }
        let previous = self.pending.back().map(|w| (w.key(), w.deadline));
        self.deadlines
            .insert((id.index, id.term), deadline, previous);
        if ack == Ack::Local {
            self.local_pending.insert(id.index);
        }
        self.pending.push_back(PendingWrite {
            index: id.index,
            term: id.term,
            ack,
            reply: Some(reply),
            response: None,
            deadline,
        });
    }

    /// `Ack::Local` writes are acknowledged once the leader's own log holds them durably: the
    /// batch ending at `last` wrote every entry up to it. `stored_term` says which term the
    /// log now holds at an index.
    pub(super) fn durable(
        &mut self,
        last: EntryId,
        stored_term: impl Fn(LogIndex) -> Option<Term>,
    ) {
        if self.local_pending.is_empty() {
            return;
        }
        let durable: Vec<LogIndex> = self.local_pending.range(..=last.index).copied().collect();
        for index in durable {
            self.local_pending.remove(&index);
            // The write at `index` is durable if the log still holds it with its own term.
            let stored = stored_term(index);
            let Some(write) = self.write_at(index) else {
                continue;
            };
            if stored == Some(write.term) {
                let term = write.term;
                write.answer(Ok(WriteOutcome {
                    index,
                    term,
                    response: None,
                }));
            }
        }
        // The write stays in `pending` (its reply taken) so that its apply is still matched.
    }

    /// The entry at `index` with `term` was applied, with `response` (`None` for an entry
    /// without a command): the write waiting for it, if any, is answered, and every other
    /// write waiting at or before `index` learns that it can never take effect.
    pub(super) fn applied(
        &mut self,
        index: LogIndex,
        term: Term,
        response: Option<Result<R, Error>>,
        leader_hint: Option<NodeId>,
    ) {
        // Entries are applied in order and writes are kept in order, so a write waiting for
        // this entry is at the front (or among the superseded ones, rarely).
        if self.pending.front().is_none_or(|w| w.index > index)
            && self
                .superseded
                .first_key_value()
                .is_none_or(|(k, _)| k.0 > index)
        {
            return;
        }
        // Every write waiting for this index: at most one has the committed entry's term. (No
        // collection: this runs for every applied write.)
        let mut committed = None;
        let mut settle = |mut write: PendingWrite<R>| {
            if write.index == index && write.term == term {
                committed = Some(write);
            } else {
                // Another entry committed at this index: this write can never take effect.
                write.answer(Err(Error::NotLeader { leader_hint }));
            }
        };
        if self.pending.front().is_some_and(|w| w.index <= index)
            && let Some(write) = self.pending.pop_front()
        {
            debug_assert_eq!(write.index, index, "a write was skipped by apply");
            self.local_pending.remove(&write.index);
            settle(write);
        }
        while let Some(entry) = self.superseded.first_entry()
            && entry.key().0 <= index
        {
            settle(entry.remove());
        }
        let Some(mut write) = committed else {
            return;
        };
        match response {
            // (One whose reply was taken timed out; it needs no more tracking.)
            Some(Ok(response)) if write.ack == Ack::All && write.reply.is_some() => {
                write.response = Some(response);
                self.all_ready.insert(index, write);
            }
            Some(Ok(_)) if write.ack == Ack::All => {}
            Some(Ok(response)) => write.answer(Ok(WriteOutcome {
                index,
                term,
                response: Some(response),
            })),
            Some(Err(error)) => write.answer(Err(error)),
            None => {}
        }
    }

    /// `Ack::All` writes that are applied complete once every in-sync voter holds them;
    /// `in_sync` says whether a follower last acknowledged at that time is in sync.
    pub(super) fn complete_all_acks(
        &mut self,
        raft: &Raft,
        in_sync: impl Fn(Option<crate::Time>) -> bool,
    ) {
        if self.all_ready.is_empty() {
            return;
        }
        if raft.role() != Role::Leader {
            // Committed, but this node can no longer see which replicas hold it, so the
            // `Ack::All` promise cannot be confirmed: the caller learns it timed out (the write
            // may or may not be on every in-sync voter; it is committed).
            for (_, mut write) in std::mem::take(&mut self.all_ready) {
                write.answer(Err(Error::Timeout));
            }
            return;
        }
        let voters = raft.voters();
        let holders: Vec<(NodeId, LogIndex)> = raft
            .peers()
            .iter()
            .filter(|p| voters.contains(&p.id) && in_sync(p.last_ack_at))
            .map(|p| (p.id, p.match_index))
            .collect();
        let ready: Vec<LogIndex> = self
            .all_ready
            .keys()
            .copied()
            .filter(|index| holders.iter().all(|(_, matched)| matched >= index))
            .collect();
        for index in ready {
            if let Some(mut write) = self.all_ready.remove(&index) {
                let (term, response) = (write.term, write.response.take());
                write.answer(Ok(WriteOutcome {
                    index,
                    term,
                    response,
                }));
            }
        }
    }

    /// The earliest deadline of a write not yet answered (from the writes in order, the
    /// out-of-order ones, those waiting for every in-sync voter and the superseded ones).
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        [
            self.deadlines.next(&self.pending),
            self.all_ready.values().map(|w| w.deadline).min(),
            self.superseded
                .values()
                .filter(|w| w.reply.is_some())
                .map(|w| w.deadline)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Answers [`Error::Timeout`] to every write whose deadline has passed. A write that timed
    /// out keeps its record, so that its entry is still recognised when applied.
    pub(super) fn expire(&mut self, now: tokio::time::Instant) {
        self.deadlines
            .expire_in_order(now, &mut self.pending, |write| {
                write.answer(Err(Error::Timeout));
            });
        self.all_ready.retain(|_, write| {
            if write.deadline > now {
                return true;
            }
            write.answer(Err(Error::Timeout));
            false
        });
        // A superseded write keeps its record (its fate is decided when its index commits).
        for write in self.superseded.values_mut() {
            if write.deadline <= now {
                write.answer(Err(Error::Timeout));
            }
        }
        while let Some((deadline, (index, term))) = self.deadlines.pop_out_of_order(now) {
            // Only the write with this very deadline is timed out: the index may have been
            // reused since.
            if let Some(write) = self.write_at(index)
                && write.term == term
                && write.deadline == deadline
            {
                write.answer(Err(Error::Timeout));
            }
        }
    }

    /// A snapshot covering everything up to `index` was installed: the writes waiting at or
    /// before it will never see their entry applied one by one, and this node cannot tell
    /// whether their entries are the ones the snapshot holds. They are answered
    /// [`Error::Timeout`] (outcome unknown), as at their deadline.
    pub(super) fn skipped_to(&mut self, index: LogIndex) {
        while self.pending.front().is_some_and(|w| w.index <= index) {
            if let Some(mut write) = self.pending.pop_front() {
                self.local_pending.remove(&write.index);
                write.answer(Err(Error::Timeout));
            }
        }
        while let Some(entry) = self.superseded.first_entry()
            && entry.key().0 <= index
        {
            entry.remove().answer(Err(Error::Timeout));
        }
    }

    /// Answers `error` to every write (the node is stopping).
    pub(super) fn fail_all(&mut self, error: &Error) {
        self.local_pending.clear();
        self.deadlines.clear();
        let pending = std::mem::take(&mut self.pending);
        let all_ready = std::mem::take(&mut self.all_ready);
        let superseded = std::mem::take(&mut self.superseded);
        for mut write in pending
            .into_iter()
            .chain(all_ready.into_values())
            .chain(superseded.into_values())
        {
            write.answer(Err(error.clone()));
        }
    }

    /// The pending write at `index`, if any.
    fn write_at(&mut self, index: LogIndex) -> Option<&mut PendingWrite<R>> {
        let position = self
            .pending
            .binary_search_by_key(&index, |w| w.index)
            .ok()?;
        self.pending.get_mut(position)
    }
}
