//! The protocol's in-memory view of the log: the entries, and how far they are durable,
//! committed and applied.
//!
//! ```text
//!  start | first ...... applied ... applying ... committed ........ last
//!  start | first ......................... persisted ......... last
//! ```
//! `start` is the entry just before the first one held: index 0 for a log never compacted,
//! otherwise the last entry a snapshot covers and compaction discarded (its term is kept, for
//! the consistency check of the entry after it).
//!
//! Invariants (checked by [`RaftLog::check`] in debug builds):
//! `start <= applied <= applying <= committed <= last`, `applying <= persisted <= last`, and
//! entry `k` of `entries` has index `start + 1 + k` with terms that never decrease, none below
//! `start`'s.

use crate::membership::Memberships;
use crate::quorum::JointConfig;
use crate::{Committed, Entry, EntryId, LogIndex, Payload, SharedMembership, Term};
use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    /// The entry just before the first one held (index 0 until the log is compacted).
    pub(crate) start: EntryId,
    /// Entries in index order; the first has index `start.index + 1`.
    entries: VecDeque<Entry>,
    /// The highest index known to be committed (Figure 2 `commitIndex`). Never decreases.
    pub(crate) committed: LogIndex,
    /// The highest index handed to the driver to apply. `applied <= applying <= committed`.
    pub(crate) applying: LogIndex,
    /// The highest index the driver reported applied (Figure 2 `lastApplied`).
    pub(crate) applied: LogIndex,
    /// The highest index durable on this node with the term it has now.
    pub(crate) persisted: LogIndex,
    /// The lowest index changed since the driver last took the log's new entries, if any.
    unsaved_from: Option<LogIndex>,
    /// The memberships the entries bring in, kept in step with every change to the entries.
    memberships: Memberships,
}

/// Where a follower's log stops matching the leader's, found from an AppendEntries rejection.
/// With it the leader skips a whole term per round trip instead of one entry (§5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConflictHint {
    /// The follower's term at the rejected index, or `None` when the follower's log is shorter.
    pub term: Option<Term>,
    /// The first index of that term in the follower's log (after its commit index), or, when
    /// its log is shorter, its last index + 1.
    pub first_index: LogIndex,
}

impl RaftLog {
    /// A log holding `entries` (all durable) after `start`, of which `applied` have been
    /// applied, where `membership` was in force at `membership_at` (at most the first entry's
    /// index, or at most `start`'s if it is none); membership entries up to `membership_at`
    /// are taken as already reflected in it.
    pub(crate) fn restore(
        start: EntryId,
        entries: Vec<Entry>,
        applied: LogIndex,
        membership: Option<SharedMembership>,
        membership_at: LogIndex,
    ) -> RaftLog {
        let mut memberships = Memberships::new(membership, membership_at);
        for entry in &entries {
            if let Payload::Membership(m) = &entry.payload
                && entry.index > membership_at
            {
                memberships.appended(entry.index, m);
            }
        }
        let mut log = RaftLog {
            start,
            entries: entries.into(),
            memberships,
            ..RaftLog::default()
        };
        let last = log.last_index();
        log.persisted = last;
        log.committed = applied;
        log.applying = applied;
        log.applied = applied;
        log
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.start.index.next()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.back().map_or(self.start.index, |e| e.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.start.term, |e| e.term)
    }

    pub(crate) fn last_id(&self) -> EntryId {
        EntryId {
            term: self.last_term(),
            index: self.last_index(),
        }
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.first_index().0)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The term of the entry at `index`: `start`'s term at `start` (term 0 at index 0); `None`
    /// before `start` (compacted) and beyond the log.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Discards the entries up to `up_to`, which a snapshot covers and the state machine has
    /// applied, so the log starts after it. Returns the new start, or `None` when there was
    /// nothing to discard.
    pub(crate) fn compact_to(&mut self, up_to: LogIndex) -> Option<EntryId> {
        debug_assert!(up_to <= self.applied, "compacting entries not applied");
        if up_to <= self.start.index || up_to > self.applied {
            return None;
        }
        let term = self.term_at(up_to)?;
        let drop = usize::try_from(up_to.0 - self.start.index.0).ok()?;
        self.entries.drain(..drop.min(self.entries.len()));
        self.start = EntryId { term, index: up_to };
        self.memberships.compact_to(up_to);
        Some(self.start)
    }

    /// A snapshot covering everything up to `last`, with `membership` in force there, was
    /// installed (§7): the state machine now holds exactly that state. Entries after `last` are
    /// kept if the log holds `last` itself (they follow the same history); otherwise the whole
    /// log is replaced by the snapshot.
    pub(crate) fn install(&mut self, last: EntryId, membership: SharedMembership) {
        let keep = self.matches(last);
        self.memberships.installed(last.index, membership, keep);
        if keep {
            let drop = usize::try_from(last.index.0.saturating_sub(self.start.index.0))
                .unwrap_or(usize::MAX);
            self.entries.drain(..drop.min(self.entries.len()));
            self.persisted = self.persisted.max(last.index);
        } else {
            self.entries.clear();
            self.unsaved_from = None;
            self.persisted = last.index;
        }
        self.start = last;
        self.committed = self.committed.max(last.index);
        self.applying = last.index;
        self.applied = last.index;
        if self.unsaved_from.is_some_and(|from| from <= last.index) {
            self.unsaved_from = Some(last.index.next()).filter(|&from| from <= self.last_index());
        }
    }

    /// True when this log has the entry `id` (§5.3 consistency check).
    pub(crate) fn matches(&self, id: EntryId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// The candidate's log is at least as up to date as this one: a later last term, or the same
    /// last term and at least as long (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last: EntryId) -> bool {
        last.term > self.last_term()
            || (last.term == self.last_term() && last.index >= self.last_index())
    }

    /// Entries `from..=to`, stopping early after `max_entries` or once `max_bytes` of payload are
    /// taken (at least one entry is returned when the range is not empty), and their payload
    /// bytes.
    pub(crate) fn slice(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_entries: usize,
        max_bytes: usize,
    ) -> (Vec<Entry>, usize) {
        let Some(range) = self.positions(from, to) else {
            return (Vec::new(), 0);
        };
        let mut out = Vec::with_capacity(range.len().min(max_entries));
        let mut bytes = 0usize;
        for entry in self.entries.range(range).take(max_entries) {
            let with_entry = bytes.saturating_add(entry.payload_len());
            if !out.is_empty() && with_entry > max_bytes {
                break;
            }
            bytes = with_entry;
            out.push(entry.clone());
        }
        (out, bytes)
    }

    /// The positions in `entries` of the entries `from..=to` this log holds, or `None` when it
    /// holds none of them.
    fn positions(&self, from: LogIndex, to: LogIndex) -> Option<std::ops::Range<usize>> {
        let to = to.min(self.last_index());
        let first = self.first_index();
        if from > to || from < first {
            return None;
        }
        let start = usize::try_from(from.0 - first.0).ok()?;
        let end = usize::try_from(to.0 - first.0).ok()?.checked_add(1)?;
        Some(start..end)
    }

    /// The entries `from..=to` this log holds.
    pub(crate) fn range(&self, from: LogIndex, to: LogIndex) -> impl Iterator<Item = &Entry> {
        let range = self.positions(from, to).unwrap_or(0..0);
        self.entries.range(range)
    }

    /// Appends one entry at the end (a leader's new entry).
    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        debug_assert!(entry.term >= self.last_term());
        self.mark_unsaved(entry.index);
        if let Payload::Membership(membership) = &entry.payload {
            self.memberships.appended(entry.index, membership);
        }
        self.entries.push_back(entry);
    }

    /// The membership in force: brought in by the last membership entry appended, committed or
    /// not (dissertation §4.1); `None` on a node that joins and has not heard of one yet.
    pub(crate) fn membership(&self) -> Option<&SharedMembership> {
        self.memberships.latest()
    }

    /// The index of the entry that brought in the membership in force (or of the snapshot
    /// or start that holds it).
    pub(crate) fn membership_index(&self) -> LogIndex {
        self.memberships.latest_index()
    }

    /// The voters of the membership in force (none while it is unknown, so a node that knows
    /// no membership never counts itself a voter).
    pub(crate) fn voters(&self) -> &JointConfig {
        static NONE: JointConfig = JointConfig {
            incoming: BTreeSet::new(),
            outgoing: BTreeSet::new(),
        };
        self.membership().map_or(&NONE, |m| m.joint())
    }

    /// The membership in force at `index`, when this log still knows it.
    pub(crate) fn membership_at(&self, index: LogIndex) -> Option<&SharedMembership> {
        self.memberships.at(index)
    }

    /// The index of the first of `entries` that this log lacks or holds with another term.
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|e| !self.matches(e.id()))
            .map(|e| e.index)
    }

    /// Follower side of AppendEntries after the consistency check passed: keeps every entry that
    /// already matches, truncates from the first conflict and appends the rest (§5.3, Figure 2
    /// receiver rules 3 and 4). Returns `Err` (and changes nothing) if that would remove a
    /// committed entry, which only a faulty leader can ask for.
    /// The entries are taken by value: the ones kept move into the log without a copy.
    pub(crate) fn append_after_match(&mut self, entries: Vec<Entry>) -> Result<(), LogIndex> {
        let Some(conflict) = self.find_conflict(&entries) else {
            return Ok(());
        };
        if conflict <= self.committed {
            return Err(conflict);
        }
        self.truncate_from(conflict);
        for entry in entries.into_iter().filter(|e| e.index >= conflict) {
            self.push(entry);
        }
        Ok(())
    }

    fn truncate_from(&mut self, index: LogIndex) {
        let keep = index.0.saturating_sub(self.first_index().0);
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        self.memberships.truncate_from(index);
        self.persisted = self.persisted.min(index.prev());
        self.mark_unsaved(index);
    }

    fn mark_unsaved(&mut self, index: LogIndex) {
        self.unsaved_from = Some(self.unsaved_from.map_or(index, |u| u.min(index)));
    }

    /// The entries the driver has not yet been given to store; any stored entry at or after the
    /// first of them is to be replaced.
    pub(crate) fn take_unsaved(&mut self) -> Vec<Entry> {
        match self.unsaved_from.take() {
            Some(from) => self.range(from, self.last_index()).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The driver made everything up to `id` durable. Ignored when the entry at that index has
    /// since been replaced: a driver whose writes complete in the background (duty 2 allows
    /// it) may report a write that a later batch has already overwritten, and that report
    /// says nothing about the entries now at those indexes.
    pub(crate) fn persisted_to(&mut self, id: EntryId) {
        if id.index > self.persisted && self.matches(id) {
            self.persisted = id.index;
        }
    }

    /// Raises the commit index to `index` (never lowers it). Returns whether it moved.
    ///
    /// `index` never passes the last entry: the leader counts only entries it holds, and a
    /// follower caps what a message says at the entries it knows match the leader's (the
    /// message handlers check it where the message enters). Release builds still cap it.
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        debug_assert!(
            index <= self.last_index(),
            "commit {index} beyond the last entry {}",
            self.last_index()
        );
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Committed, durable entries not yet handed out for apply; marks them handed out.
    pub(crate) fn take_committed(&mut self) -> Option<Committed> {
        let to = self.committed.min(self.persisted);
        if to <= self.applying {
            return None;
        }
        let range = Committed {
            first: self.applying.next(),
            last: to,
        };
        self.applying = to;
        Some(range)
    }

    /// The driver applied up to `index`. It reports only what [`RaftLog::take_committed`]
    /// handed out (duty 5 of [`crate::Actions`]); a report beyond that is a driver bug, caught
    /// in debug builds and capped in release builds.
    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        debug_assert!(
            index <= self.applying,
            "applied {index} beyond what was handed out ({})",
            self.applying
        );
        if index > self.applied {
            self.applied = index.min(self.applying);
        }
    }

    /// The rejection hint for an AppendEntries whose previous entry was `prev` (§5.3).
    pub(crate) fn conflict_hint(&self, prev: LogIndex) -> ConflictHint {
        let Some(term) = self.term_at(prev) else {
            return ConflictHint {
                term: None,
                first_index: self.last_index().next(),
            };
        };
        // Entries up to the commit index match the leader's, so the search stops there.
        let floor = self.committed.next();
        let mut first = prev;
        while first > floor && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        ConflictHint {
            term: Some(term),
            first_index: first,
        }
    }

    /// Leader side of a rejection: the index to send next, given the follower's hint.
    pub(crate) fn next_from_hint(&self, rejected: LogIndex, hint: ConflictHint) -> LogIndex {
        let Some(term) = hint.term else {
            return hint.first_index;
        };
        // The last entry of that term at or before the rejected index, if this log has one:
        // everything up to it matches the follower (Log Matching).
        let mut index = rejected.min(self.last_index());
        while index.0 > 0 {
            match self.term_at(index) {
                Some(t) if t == term => return index.next(),
                Some(t) if t < term => break,
                Some(_) => index = index.prev(),
                // Compacted: what the follower holds there is behind a snapshot.
                None => break,
            }
        }
        hint.first_index
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Asserts the invariants in the module documentation.
    pub(crate) fn check(&self) {
        debug_assert!(self.start.index <= self.applied, "start <= applied");
        debug_assert!(
            self.entries
                .front()
                .is_none_or(|e| e.index == self.start.index.next() && e.term >= self.start.term),
            "entries follow start"
        );
        debug_assert!(self.applied <= self.applying, "applied <= applying");
        debug_assert!(self.applying <= self.committed, "applying <= committed");
        debug_assert!(self.committed <= self.last_index(), "committed <= last");
        debug_assert!(self.applying <= self.persisted, "applying <= persisted");
        debug_assert!(self.persisted <= self.last_index(), "persisted <= last");
        debug_assert!(
            self.entries
                .iter()
                .zip(self.entries.iter().skip(1))
                .all(|(a, b)| b.index == a.index.next() && b.term >= a.term),
            "entries contiguous with non-decreasing terms"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    fn log_of(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                term: Term(t),
                index: LogIndex(i as u64 + 1),
                payload: Payload::Blank,
            })
            .collect();
        RaftLog::restore(EntryId::default(), entries, LogIndex(0), None, LogIndex(0))
    }

    fn ents(first: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                term: Term(t),
                index: LogIndex(first + i as u64),
                payload: Payload::Blank,
            })
            .collect()
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of(&[1, 1, 2]);
        let id = |t, i| EntryId {
            term: Term(t),
            index: LogIndex(i),
        };
        for (candidate, want) in [
            (id(2, 3), true),
            (id(2, 9), true),
            (id(3, 1), true),
            (id(2, 2), false),
            (id(1, 9), false),
        ] {
            assert_eq!(log.is_up_to_date(candidate), want, "{candidate:?}");
        }
    }

    #[test]
    fn append_keeps_matches_truncates_conflicts() {
        // (log terms, entries to append from index 2, resulting terms, unsaved from)
        let cases: &[(&[u64], &[u64], &[u64], Option<u64>)] = &[
            (&[1, 1, 1], &[1, 1], &[1, 1, 1], None),
            (&[1, 1, 1], &[1, 1, 2], &[1, 1, 1, 2], Some(4)),
            (&[1, 1, 1], &[2], &[1, 2], Some(2)),
            (&[1, 1, 1, 1], &[1, 3], &[1, 1, 3], Some(3)),
            (&[1], &[1, 2], &[1, 1, 2], Some(2)),
        ];
        for (start, append, want, unsaved) in cases {
            let mut log = log_of(start);
            log.append_after_match(ents(2, append)).unwrap();
            let got: Vec<u64> = log.iter().map(|e| e.term.0).collect();
            assert_eq!(&got, want, "start {start:?} append {append:?}");
            let saved = log.take_unsaved();
            assert_eq!(saved.first().map(|e| e.index.0), *unsaved);
            assert!(log.persisted <= log.last_index());
            log.check();
        }
    }

    #[test]
    fn refuses_to_truncate_committed_entries() {
        let mut log = log_of(&[1, 1, 1]);
        log.commit_to(LogIndex(2));
        assert_eq!(log.append_after_match(ents(2, &[2])), Err(LogIndex(2)));
        assert_eq!(log.last_index(), LogIndex(3));
    }

    #[test]
    fn conflict_hint_and_leader_next() {
        // follower terms, rejected prev index, hint
        let follower = log_of(&[1, 1, 4, 4, 4, 4]);
        assert_eq!(
            follower.conflict_hint(LogIndex(6)),
            ConflictHint {
                term: Some(Term(4)),
                first_index: LogIndex(3)
            }
        );
        assert_eq!(
            follower.conflict_hint(LogIndex(9)),
            ConflictHint {
                term: None,
                first_index: LogIndex(7)
            }
        );
        // The leader has no term 4: it goes back to the start of the follower's term 4.
        let leader = log_of(&[1, 1, 5, 5, 5, 5, 5]);
        let hint = follower.conflict_hint(LogIndex(6));
        assert_eq!(leader.next_from_hint(LogIndex(6), hint), LogIndex(3));
        // The leader has term 4 up to index 4: it resumes right after it.
        let leader = log_of(&[1, 1, 4, 4, 6, 6, 6]);
        assert_eq!(leader.next_from_hint(LogIndex(6), hint), LogIndex(5));
    }

    #[test]
    fn persisted_ack_for_replaced_entries_is_ignored() {
        let mut log = log_of(&[1, 1]);
        log.persisted = LogIndex(0);
        log.append_after_match(ents(2, &[2, 2])).unwrap();
        log.persisted_to(EntryId {
            term: Term(1),
            index: LogIndex(2),
        });
        assert_eq!(log.persisted, LogIndex(0));
        log.persisted_to(EntryId {
            term: Term(2),
            index: LogIndex(3),
        });
        assert_eq!(log.persisted, LogIndex(3));
    }

    #[test]
    fn apply_waits_for_commit_and_durability() {
        let mut log = log_of(&[1, 1, 1]);
        log.persisted = LogIndex(1);
        log.commit_to(LogIndex(3));
        assert_eq!(log.take_committed().map(|c| c.len()), Some(1));
        log.persisted_to(EntryId {
            term: Term(1),
            index: LogIndex(3),
        });
        let rest = log.take_committed();
        assert_eq!(
            rest.map(|c| (c.first, c.last)),
            Some((LogIndex(2), LogIndex(3)))
        );
        assert_eq!(log.take_committed(), None);
        log.applied_to(LogIndex(3));
        assert_eq!(log.applied, LogIndex(3));
        log.check();
    }
}
