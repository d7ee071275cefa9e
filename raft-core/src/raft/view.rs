//! What the driver and observers may read of a node: its identity, role, term and leader, the
//! log's marks and entries, its deadlines, and a leader's view of its followers.

use super::{PeerProgress, Raft, RoleState};
use crate::progress::ReplicationState;
use crate::{
    Committed, Config, Entry, EntryId, HardState, LogIndex, Membership, NodeId, Role, Term, Time,
};
use std::collections::BTreeSet;

impl Raft {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower { .. } => Role::Follower,
            RoleState::PreCandidate(_) => Role::PreCandidate,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            RoleState::Follower { leader, .. } => leader,
            RoleState::Leader(_) => Some(self.config.id),
            RoleState::PreCandidate(_) | RoleState::Candidate(_) => None,
        }
    }

    /// The hard state as it is now (not necessarily durable yet).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    /// The highest index the driver reported applied.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    /// The id of the last entry in the log.
    pub fn last_log_id(&self) -> EntryId {
        self.log.last_id()
    }

    /// The entry at `index`, if the log holds it.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Copies of the entries of a [`Committed`] range (for drivers and tests that want to own
    /// them; [`Raft::entry`] reads them in place).
    pub fn committed_entries(&self, range: Committed) -> Vec<Entry> {
        range
            .indexes()
            .map_while(|index| self.log.entry(index).cloned())
            .collect()
    }

    /// The voting members, of both halves while a change of voters is in progress (empty on
    /// a joining node that knows no membership yet).
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.log.voters().ids()
    }

    /// The membership in force: the latest this node's log holds, committed or not
    /// (dissertation §4.1); `None` on a joining node that has heard of none yet.
    pub fn membership(&self) -> Option<&Membership> {
        self.log.membership().map(|m| &**m)
    }

    /// The membership in force, shared: the same allocation while it stays in force, so that
    /// a driver can notice a change by comparing pointers.
    pub(crate) fn shared_membership(&self) -> Option<&crate::SharedMembership> {
        self.log.membership()
    }

    /// The index of the entry that brought in the membership in force (or of the snapshot
    /// that holds it; 0 for the cluster's first). The change is committed once the commit
    /// index reaches it.
    pub fn membership_index(&self) -> LogIndex {
        self.log.membership_index()
    }

    /// The entry just before the first one the log holds: index 0 until the log is compacted,
    /// then the last entry a snapshot covers and compaction discarded.
    pub fn log_start(&self) -> EntryId {
        self.log.start
    }

    /// The next instant at which [`Raft::tick`] has something to do.
    pub fn next_deadline(&self) -> Time {
        match &self.role {
            RoleState::Leader(leader) => {
                let mut at = leader.heartbeat_deadline;
                if self.config.check_quorum {
                    at = at.min(leader.check_quorum_deadline(self.config.election_timeout_min_ms));
                }
                if let Some(t) = leader.transfer {
                    at = at.min(t.deadline);
                }
                at
            }
            RoleState::Follower { forwarded, .. } => forwarded
                .next_deadline()
                .map_or(self.election_deadline, |d| d.min(self.election_deadline)),
            _ => self.election_deadline,
        }
    }

    /// The leader's view of a follower's log: its match index, if this node leads and `peer` is
    /// a follower.
    #[cfg(test)]
    pub(crate) fn match_index(&self, peer: NodeId) -> Option<LogIndex> {
        match &self.role {
            RoleState::Leader(leader) => leader.progress.get(&peer).map(|p| p.match_index),
            _ => None,
        }
    }

    /// The leader's view of every follower, in id order (empty unless this node leads).
    pub fn peers(&self) -> Vec<PeerProgress> {
        let RoleState::Leader(leader) = &self.role else {
            return Vec::new();
        };
        leader
            .progress
            .iter()
            .map(|(&id, p)| PeerProgress {
                id,
                match_index: p.match_index,
                next_index: p.next_index,
                last_ack_at: p.last_ack_at,
                replicating: p.state == ReplicationState::Replicate,
                snapshot_bytes: p.snapshot.map(|s| s.acked),
            })
            .collect()
    }

    /// True when this node won (or is running) an election it started because the previous
    /// leader handed over leadership (TimeoutNow).
    pub fn elected_by_transfer(&self) -> bool {
        match &self.role {
            RoleState::Candidate(campaign) => campaign.by_transfer,
            RoleState::Leader(leader) => leader.by_transfer,
            _ => false,
        }
    }
}
