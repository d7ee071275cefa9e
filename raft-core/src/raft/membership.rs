//! Membership changes (paper §6, dissertation chapter 4): learners, joint consensus, and a
//! leader that removes itself.
//!
//! A change is a log entry ([`crate::Payload::Membership`]) that takes effect on each node as
//! soon as the node appends it (dissertation §4.1): from then on the node counts quorums,
//! replicates and campaigns by the new membership, committed or not, and goes back to the
//! previous one if the entry is truncated away (the log keeps the memberships in step with its
//! entries). A leader proposes one change at a time: the next waits until the last is
//! committed, and until the leader has committed an entry of its own term (the fix of
//! dissertation §4.1's single-server bug: a leader that has not must not start a change on top
//! of one a previous leader may have left uncommitted).
//!
//! A change of voters goes through joint consensus: the leader appends the joint membership
//! (old and new voters, both majorities needed), and once that is committed appends the new
//! voters alone on its own. A leader that is not among the new voters keeps leading (counting
//! only others in the new majority) until the entry that removes it commits, then hands over
//! to the most up-to-date new voter: as in a leadership transfer (dissertation §3.10) it takes
//! no more proposals, brings that voter up to date, sends it TimeoutNow, so that the next
//! election starts at once rather than after an election timeout, and steps down (after a
//! minimum election timeout at the latest, if the hand-over cannot complete).

use super::{Raft, RoleState};
use crate::progress::Progress;
use crate::{
    Entry, EntryId, Membership, MembershipError, NodeId, Payload, ProtocolError, SharedMembership,
};
use std::collections::BTreeSet;

/// A change of membership a leader can propose ([`Raft::change_membership`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Adds a node that receives the log but does not vote (dissertation §4.2.1): the first
    /// step of adding a server, and the way to set up a read replica. `address`, if given, is
    /// recorded in the membership (see [`Membership::with_address`]) so that every node's
    /// transport learns where the new node is.
    AddLearner {
        /// The node to add.
        id: NodeId,
        /// Where it can be reached, for transports that learn addresses from the membership.
        address: Option<String>,
    },
    /// Removes a learner.
    RemoveLearner(NodeId),
    /// Makes these the voters, through joint consensus (§6): any mix of promoting learners and
    /// removing voters, the leader included. The leader leaves the joint configuration on its
    /// own once it is committed.
    ChangeVoters(BTreeSet<NodeId>),
}

impl Raft {
    /// Proposes a change of membership and returns the id of its entry. The change takes effect
    /// on this leader at once (dissertation §4.1); it is done when that entry commits, or, for
    /// [`MembershipChange::ChangeVoters`], when the entry that leaves the joint configuration
    /// (which this leader appends on its own) commits.
    ///
    /// Refused, with nothing changed: on a node that is not the leader
    /// ([`ProtocolError::NotLeader`]); during a leadership transfer; while an earlier change,
    /// or the leader's first entry of its term, is not committed
    /// ([`MembershipError::Uncommitted`]); and when the change itself is unsafe or changes
    /// nothing ([`ProtocolError::Membership`], see [`Membership`]'s rules).
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<EntryId, ProtocolError> {
        let term_committed = self.term_committed();
        let change_committed = self.log.membership_index() <= self.log.committed;
        let leader = self.leader_state()?;
        if leader.transfer.is_some() {
            return Err(ProtocolError::TransferInProgress);
        }
        if !term_committed || !change_committed {
            return Err(ProtocolError::Membership(MembershipError::Uncommitted));
        }
        let Some(current) = self.log.membership() else {
            // A leader always knows its membership: it won an election by it.
            return Err(ProtocolError::Membership(MembershipError::Uncommitted));
        };
        let next = match change {
            MembershipChange::AddLearner { id, address } => {
                current.add_learner(id).and_then(|m| match address {
                    Some(address) => m.with_address(id, address),
                    None => Ok(m),
                })
            }
            MembershipChange::RemoveLearner(id) => current.remove_learner(id),
            MembershipChange::ChangeVoters(voters) => current.enter_joint(voters),
        }
        .map_err(ProtocolError::Membership)?;
        Ok(self.append_membership(next))
    }

    /// Appends `membership` as the leader's next entry; it takes effect now.
    fn append_membership(&mut self, membership: Membership) -> EntryId {
        let entry = Entry {
            term: self.term,
            index: self.log.last_index().next(),
            payload: Payload::Membership(SharedMembership::new(membership)),
        };
        let id = entry.id();
        self.log.push(entry);
        self.track_members();
        id
    }

    /// Keeps the leader's followers in step with the membership: progress for every member
    /// but itself, none for anyone else. A new member is probed from the leader's last entry.
    pub(super) fn track_members(&mut self) {
        let members = self.other_members();
        let next = self.log.last_index();
        let voters = self.log.voters().clone();
        let (window, window_bytes) = (
            self.config.max_inflight_appends,
            self.config.max_inflight_bytes,
        );
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.progress.retain(|id, _| members.contains(id));
        for id in members {
            leader
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, window, window_bytes));
        }
        if leader.transfer.is_some_and(|t| !voters.contains(t.target)) {
            leader.transfer = None;
        }
    }

    /// Called when the commit index moves on a leader: the second step of joint consensus, and
    /// the step-down of a leader the committed membership leaves out.
    pub(super) fn membership_committed(&mut self) {
        if !self.is_leader() || self.log.membership_index() > self.log.committed {
            return;
        }
        let Some(current) = self.log.membership().cloned() else {
            return;
        };
        if current.is_joint() {
            // §6: the joint configuration is committed, so the new voters alone may decide.
            if let Ok(next) = current.leave_joint() {
                self.append_membership(next);
            }
            return;
        }
        if !current.is_voter(self.config.id) {
            self.step_down_removed();
        }
    }

    /// This leader is no longer a voter and the membership that says so is committed: it hands
    /// over to the new voter whose log is the most complete, by a leadership transfer
    /// (TimeoutNow lets that voter past the others' stickiness, so the next election starts at
    /// once). It steps down when it sends TimeoutNow, or when the transfer's deadline passes.
    fn step_down_removed(&mut self) {
        let voters = self.log.voters().clone();
        let successor = match &self.role {
            RoleState::Leader(leader) => leader
                .progress
                .iter()
                .filter(|(id, _)| voters.contains(**id))
                .max_by_key(|(id, pr)| (pr.match_index, std::cmp::Reverse(**id)))
                .map(|(&id, _)| id),
            _ => return,
        };
        let handed_over =
            successor.is_some_and(|to| self.transfer_leadership(self.now, to).is_ok());
        if !handed_over {
            self.become_follower(self.term, None);
        }
    }

    /// Whether this node leads without being a voter of a committed membership: its removal
    /// is done, and it only hands over.
    pub(crate) fn removal_committed(&self) -> bool {
        self.is_leader() && !self.is_voter() && self.log.membership_index() <= self.log.committed
    }
}
