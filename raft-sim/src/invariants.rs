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

#[cfg(test)]
mod tests {
    use super::*;

    /// A status of node `id` in `role` at `term`, with commit and applied indexes.
    fn status(id: u64, role: &str, term: u64, commit: u64, applied: u64) -> Status {
        let json = serde_json::json!({
            "id": id, "role": role, "term": term, "leader": null,
            "commit_index": commit, "applied_index": applied, "last_log_index": commit,
            "log_entries": commit, "snapshot": null, "lease_remaining_ms": null,
            "staleness_ms": null, "membership": null, "membership_index": 0,
            "peers": [], "failovers": [], "connections": [],
        });
        match serde_json::from_value(json) {
            Ok(status) => status,
            Err(e) => panic!("not a Status: {e}"),
        }
    }

    fn violations(seen: &[(u64, Status)]) -> Vec<String> {
        let mut observer = Observer::default();
        for (now, (start, status)) in seen.iter().enumerate() {
            observer.observe(*start, status, now as u64);
        }
        observer.violations.lines("violations")
    }

    /// One broken rule per row, and a word its report must carry; then what is allowed.
    #[test]
    fn each_invariant_is_reported_when_broken_and_only_then() {
        let broken: [(&str, Vec<(u64, Status)>); 4] = [
            (
                "election safety",
                vec![
                    (0, status(1, "Leader", 2, 1, 1)),
                    (0, status(2, "Leader", 2, 1, 1)),
                ],
            ),
            (
                "term went back",
                vec![
                    (0, status(1, "Follower", 3, 1, 1)),
                    (0, status(1, "Follower", 2, 1, 1)),
                ],
            ),
            (
                "commit index went back",
                vec![
                    (0, status(1, "Follower", 3, 5, 5)),
                    (0, status(1, "Follower", 3, 4, 4)),
                ],
            ),
            (
                "beyond its commit index",
                vec![(0, status(1, "Follower", 3, 4, 5))],
            ),
        ];
        for (words, seen) in broken {
            let found = violations(&seen);
            assert!(
                found.iter().any(|v| v.contains(words)),
                "{words}: {found:?}"
            );
        }
        // A restart may come back with a lower commit index; leaders of different terms, and
        // one leader seen twice in its term, are fine.
        let fine = vec![
            (0, status(1, "Leader", 2, 5, 5)),
            (0, status(1, "Leader", 2, 6, 6)),
            (1, status(1, "Follower", 2, 0, 0)),
            (0, status(2, "Leader", 3, 6, 6)),
        ];
        assert_eq!(violations(&fine), Vec::<String>::new());
    }
}
