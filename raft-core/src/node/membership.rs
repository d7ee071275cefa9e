//! Membership changes asked of the node, from proposal to answer.
//!
//! A change is answered once it is done: its entry committed, and for a change of voters the
//! entry that leaves the joint configuration committed too (the leader appends it on its own);
//! for a learner added with a catch-up bound, once the learner's log is within that many
//! entries of the leader's. A change whose entry another entry replaced fails `NotLeader` (it
//! never takes effect); one still unsettled at its deadline fails `Timeout` (unknown: it may
//! still take effect).

use super::Error;
use crate::{EntryId, LogIndex, MembershipChange, NodeId, Payload, Raft, Role};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

/// Where a change's answer goes.
pub(super) type ChangeReply = oneshot::Sender<Result<LogIndex, Error>>;

/// The membership changes this node proposed and has not answered yet.
#[derive(Default)]
pub(super) struct PendingChanges {
    pending: Vec<PendingChange>,
}

struct PendingChange {
    /// The change's entry.
    entry: EntryId,
    /// What else it waits for once its entry commits.
    then: Then,
    reply: ChangeReply,
    deadline: Instant,
}

enum Then {
    /// Nothing more.
    Done,
    /// The joint configuration it entered is left, and that is committed: the first membership
    /// entry after the change's own. `scanned` is how far the log was searched for it.
    LeaveJoint { scanned: LogIndex },
    /// The learner `id` holds every entry but the last `within` of the leader's log.
    CatchUp { id: NodeId, within: u64 },
}

impl PendingChanges {
    /// Proposes `change` on `raft`; a refusal is answered at once.
    pub(super) fn propose(
        &mut self,
        raft: &mut Raft,
        change: MembershipChange,
        catch_up_within: Option<u64>,
        reply: ChangeReply,
        deadline: Instant,
    ) {
        let then = match (&change, catch_up_within) {
            (MembershipChange::ChangeVoters(_), _) => Then::LeaveJoint {
                scanned: LogIndex(0),
            },
            (MembershipChange::AddLearner { id, .. }, Some(within)) => {
                Then::CatchUp { id: *id, within }
            }
            _ => Then::Done,
        };
        let described = format!("{change:?}");
        match raft.change_membership(change) {
            Ok(entry) => {
                info!(change = %described, index = entry.index.0, "membership change proposed");
                self.pending.push(PendingChange {
                    entry,
                    then,
                    reply,
                    deadline,
                });
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    /// Answers every change that is done, lost or out of time.
    pub(super) fn progress(&mut self, raft: &Raft, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let mut waiting = Vec::with_capacity(self.pending.len());
        for mut change in self.pending.drain(..) {
            match outcome(raft, &mut change) {
                Some(result) => {
                    if result.is_ok() {
                        info!(index = change.entry.index.0, "membership change done");
                    }
                    let _ = change.reply.send(result);
                }
                None if now >= change.deadline || change.reply.is_closed() => {
                    let _ = change.reply.send(Err(Error::Timeout));
                }
                None => waiting.push(change),
            }
        }
        self.pending = waiting;
    }

    /// The earliest deadline of a change not yet answered.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|c| c.deadline).min()
    }

    /// Answers every pending change with `error`.
    pub(super) fn fail_all(&mut self, error: &Error) {
        for change in self.pending.drain(..) {
            let _ = change.reply.send(Err(error.clone()));
        }
    }
}

/// The answer a change has now, if any.
fn outcome(raft: &Raft, change: &mut PendingChange) -> Option<Result<LogIndex, Error>> {
    let index = change.entry.index;
    let commit = raft.commit_index();
    if commit < index {
        return None;
    }
    let start = raft.log_start();
    let term = match raft.entry(index) {
        Some(entry) => Some(entry.term),
        None if index == start.index => Some(start.term),
        None => None,
    };
    match term {
        Some(term) if term != change.entry.term => {
            // Another entry committed at its index: the change never takes effect.
            return Some(Err(Error::NotLeader {
                leader_hint: raft.leader(),
            }));
        }
        Some(_) => {}
        // Compacted away (or replaced by a snapshot) before this node looked: whether it was
        // this change that committed there is unknown.
        None => return Some(Err(Error::Timeout)),
    }
    match &mut change.then {
        Then::Done => Some(Ok(index)),
        Then::LeaveJoint { scanned } => {
            // The entry that leaves the joint configuration is the next membership entry after
            // the change's own (a leader appends nothing else while joint but commands).
            let mut at = (*scanned).max(index).next();
            while at <= commit {
                match raft.entry(at).map(|e| &e.payload) {
                    Some(Payload::Membership(_)) => return Some(Ok(at)),
                    Some(_) => at = at.next(),
                    None => return Some(Err(Error::Timeout)),
                }
            }
            *scanned = commit;
            None
        }
        &mut Then::CatchUp { id, within } => {
            if raft.role() != Role::Leader {
                return None; // committed; the catch-up cannot be seen from here
            }
            let last = raft.last_log_id().index;
            let caught_up = raft
                .peers()
                .iter()
                .any(|p| p.id == id && p.match_index.0.saturating_add(within) >= last.0);
            caught_up.then_some(Ok(index))
        }
    }
}
