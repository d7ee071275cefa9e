//! Raft invariants a run can see from the outside, checked on every node's
//! [`raft_core::node::Status`] after every step of the simulation.

use crate::world::{Capped, LeaseRead};
use raft_core::node::Status;
use raft_core::{LogIndex, NodeId, Role, Term};
use std::collections::BTreeMap;

/// What the statuses seen so far establish.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    /// Every term seen, with the leader seen in it (election safety, §5.2: at most one per
    /// term).
    pub(crate) terms: BTreeMap<Term, TermRecord>,
    /// The latest term and commit index of each start of each node.
    latest: BTreeMap<(NodeId, u64), (Term, LogIndex)>,
    pub(crate) violations: Capped,
}

impl Observer {
    /// Checks `status`, seen at `now` on the `start`-th start of its node.
    pub(crate) fn observe(&mut self, start: u64, status: &Status, now: u64) {
        let id = status.id;
        let mut found = Vec::new();
        let record = self.terms.entry(status.term).or_insert(TermRecord {
            term: status.term,
            first_seen_ms: now,
            first_seen_on: id,
            leader: None,
        });
        if status.role == Role::Leader {
            match record.leader {
                None => {
                    record.leader = Some((id, now));
                }
                Some((other, _)) if other != id => found.push(format!(
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

    /// Terms in which some node was seen leading.
    pub(crate) fn elections(&self) -> u64 {
        self.terms.values().filter(|t| t.leader.is_some()).count() as u64
    }

    /// The lease check (dissertation §6.4.1): a read served in a term after a leader of a later
    /// term was elected is stale, whether the node served it on its lease (which must have
    /// expired before that election) or confirmed it with a round of heartbeats (which a
    /// majority in the later term refuses). So no `Lease` read invoked after a leader of a
    /// later term than the one it was served in was seen may be answered. Judged from the
    /// invocation, not the answer: a read confirmed before the election may reach its client
    /// after it. `reads` carry the node's term right after it answered (no earlier than the
    /// term it served in): the check can miss a stale read, and blames only reads that were
    /// wholly after the later term's election.
    pub(crate) fn check_lease_reads(&self, reads: &[LeaseRead]) -> Vec<String> {
        let mut found = Capped::default();
        for read in reads {
            let later = self
                .terms
                .range(Term(read.term.0 + 1)..)
                .find_map(|(term, record)| {
                    let (leader, seen) = record.leader?;
                    (seen < read.invoked_ms).then_some((term, leader, seen))
                });
            if let Some((term, leader, seen)) = later {
                found.push(format!(
                    "{}: a lease read invoked at {} ms was answered by n{} in term {}, but n{} \
                     was seen leading the later term {} at {seen} ms",
                    read.client, read.invoked_ms, read.node.0, read.term.0, leader.0, term.0
                ));
            }
        }
        found.lines("lease reads after a later term's election")
    }
}

/// A term some node was seen in, and its leader if one was seen: the run's terms are in
/// [`crate::Report::terms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TermRecord {
    /// The term.
    pub term: Term,
    /// When a node was first seen in it, in milliseconds of simulated time (statuses are read
    /// after every 1 ms step).
    pub first_seen_ms: u64,
    /// That node.
    pub first_seen_on: NodeId,
    /// The node seen leading it, and when it was first seen leading.
    pub leader: Option<(NodeId, u64)>,
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

    /// A lease read invoked after a later term's leader was seen is reported; one invoked
    /// before (answered after it, perhaps), or served in that later term itself, is not.
    #[test]
    fn a_lease_read_after_a_later_terms_election_is_reported() {
        let mut observer = Observer::default();
        observer.observe(0, &status(1, "Leader", 2, 5, 5), 100);
        observer.observe(0, &status(2, "Leader", 3, 5, 5), 200);
        let read = |term: u64, invoked_ms: u64| LeaseRead {
            client: "c1".to_string(),
            node: NodeId(1),
            term: Term(term),
            invoked_ms,
        };
        let found = observer.check_lease_reads(&[read(2, 201)]);
        assert!(
            found.iter().any(|p| p.contains("later term 3 at 200 ms")),
            "{found:?}"
        );
        let fine = [read(2, 150), read(2, 200), read(3, 250)];
        assert_eq!(observer.check_lease_reads(&fine), Vec::<String>::new());
        // The terms are reported with their leaders and when they were first seen.
        let terms: Vec<_> = observer
            .terms
            .values()
            .map(|t| (t.term.0, t.leader))
            .collect();
        assert_eq!(
            terms,
            vec![(2, Some((NodeId(1), 100))), (3, Some((NodeId(2), 200)))]
        );
    }
}
