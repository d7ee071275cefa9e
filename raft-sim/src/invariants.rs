//! Raft invariants a run can see from the outside, checked on every node's
//! [`raft_core::node::Status`] after every step of the simulation.

use crate::world::Capped;
use raft_core::node::Status;
use raft_core::{LogIndex, NodeId, Role, Term};
use std::collections::BTreeMap;

/// What the statuses seen so far establish.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    /// The leader seen in each term (election safety, §5.2: at most one per term).
    leaders: BTreeMap<Term, NodeId>,
    /// The latest term and commit index of each start of each node.
    latest: BTreeMap<(NodeId, u64), (Term, LogIndex)>,
    pub(crate) violations: Capped,
    /// Terms in which some node was seen leading.
    pub(crate) elections: u64,
}

impl Observer {
    /// Checks `status`, seen at `now` on the `start`-th start of its node.
    pub(crate) fn observe(&mut self, start: u64, status: &Status, now: u64) {
        let id = status.id;
        let mut found = Vec::new();
        if status.role == Role::Leader {
            match self.leaders.get(&status.term) {
                None => {
                    self.leaders.insert(status.term, id);
                    self.elections += 1;
                }
                Some(&other) if other != id => found.push(format!(
                    "election safety (§5.2): n{} and n{} both led term {} (seen at {now} ms)",
                    other.0, id.0, status.term.0
                )),
                Some(_) => {}
            }
        }
        if let Some(&(term, commit)) = self.latest.get(&(id, start)) {
            if status.term < term {
                found.push(format!(
                    "n{}'s term went back from {} to {} at {now} ms without a restart",
                    id.0, term.0, status.term.0
                ));
            }
            if status.commit_index < commit {
                found.push(format!(
                    "n{}'s commit index went back from {} to {} at {now} ms without a restart",
                    id.0, commit.0, status.commit_index.0
                ));
            }
        }
        if status.applied_index > status.commit_index {
            found.push(format!(
                "n{} applied index {} beyond its commit index {} at {now} ms",
                id.0, status.applied_index.0, status.commit_index.0
            ));
        }
        self.latest
            .insert((id, start), (status.term, status.commit_index));
        for violation in found {
            self.violations.push(violation);
        }
    }
}
