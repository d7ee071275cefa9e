//! Quorum arithmetic: which index a majority has reached, and whether an election is won.
//!
//! Everything here is a pure function of a set of voters and what each voter reported. A joint
//! configuration (§6) needs a majority of both halves; an empty half agrees to everything, so a
//! joint configuration with an empty outgoing half behaves as a simple majority.

use crate::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority can no longer grant: enough voters refused.
    Lost,
    /// Neither yet.
    Pending,
}

/// How many of `n` voters make a majority.
pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The largest value that a majority of `voters` has reached, where `acked` reports each
/// voter's value (a voter that reported nothing counts as 0). For match indexes this is the
/// commit candidate; for heartbeat rounds it is the latest round a majority acknowledged.
///
/// An empty set of voters returns `u64::MAX`, so that it never limits a joint configuration.
pub(crate) fn committed(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // This runs on every replication response, so small clusters count on the stack.
    const ON_STACK: usize = 9;
    let n = voters.len();
    let mut stack = [0u64; ON_STACK];
    let mut heap = Vec::new();
    let values: &mut [u64] = if n <= ON_STACK {
        &mut stack[..n]
    } else {
        heap.resize(n, 0);
        &mut heap
    };
    for (slot, &id) in values.iter_mut().zip(voters) {
        *slot = acked(id);
    }
    // Ordered descending, the value at position majority-1 is held by at least a majority.
    let (_, value, _) = values.select_nth_unstable_by(majority(n) - 1, |a, b| b.cmp(a));
    *value
}

/// Counts `votes` (true = granted) among `voters`; votes from non-voters are ignored.
/// An empty set of voters wins, the joint-configuration convention of [`committed`].
pub(crate) fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let need = majority(voters.len());
    if granted >= need {
        VoteResult::Won
    } else if granted + missing >= need {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The voters of the cluster: `incoming` always; `outgoing` only during a joint-consensus change
/// (§6), when decisions need a majority of both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct JointConfig {
    pub(crate) incoming: BTreeSet<NodeId>,
    pub(crate) outgoing: BTreeSet<NodeId>,
}

impl JointConfig {
    pub(crate) fn simple(voters: BTreeSet<NodeId>) -> JointConfig {
        JointConfig {
            incoming: voters,
            outgoing: BTreeSet::new(),
        }
    }

    /// Every voter of either half, each once, in id order.
    pub(crate) fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// The value both halves have reached by majority; 0 when there is no voter at all (a
    /// node that knows no membership yet decides nothing).
    pub(crate) fn committed(&self, acked: impl Fn(NodeId) -> u64) -> u64 {
        if self.incoming.is_empty() {
            return 0;
        }
        committed(&self.incoming, &acked).min(committed(&self.outgoing, &acked))
    }

    /// Won when both halves won, lost when either lost; lost when there is no voter at all.
    pub(crate) fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        if self.incoming.is_empty() {
            return VoteResult::Lost;
        }
        match (
            vote_result(&self.incoming, votes),
            vote_result(&self.outgoing, votes),
        ) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn majority_table() {
        for (n, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            assert_eq!(majority(n), want, "n = {n}");
        }
    }

    #[test]
    fn committed_table() {
        // (voters, acked values in voter order, expected)
        let cases: &[(&[u64], &[u64], u64)] = &[
            (&[], &[], u64::MAX),
            (&[1], &[5], 5),
            (&[1, 2], &[5, 3], 3),
            (&[1, 2, 3], &[5, 3, 0], 3),
            (&[1, 2, 3], &[5, 0, 0], 0),
            (&[1, 2, 3], &[7, 7, 7], 7),
            (&[1, 2, 3, 4], &[9, 8, 2, 1], 2),
            (&[1, 2, 3, 4, 5], &[9, 8, 7, 1, 1], 7),
            (&[1, 2, 3, 4, 5], &[9, 8, 1, 1, 1], 1),
        ];
        for (voters, acked, want) in cases {
            let set = ids(voters);
            let map: BTreeMap<NodeId, u64> = voters
                .iter()
                .zip(acked.iter())
                .map(|(&v, &a)| (NodeId(v), a))
                .collect();
            let got = committed(&set, |id| map.get(&id).copied().unwrap_or(0));
            assert_eq!(got, *want, "voters {voters:?} acked {acked:?}");
        }
    }

    #[test]
    fn vote_result_table() {
        use VoteResult::*;
        // (voters, votes as (id, granted), expected)
        let cases: &[(&[u64], &[(u64, bool)], VoteResult)] = &[
            (&[], &[], Won),
            (&[1], &[], Pending),
            (&[1], &[(1, true)], Won),
            (&[1], &[(1, false)], Lost),
            (&[1, 2, 3], &[(1, true)], Pending),
            (&[1, 2, 3], &[(1, true), (2, true)], Won),
            (&[1, 2, 3], &[(1, true), (2, false)], Pending),
            (&[1, 2, 3], &[(1, false), (2, false)], Lost),
            (&[1, 2, 3, 4], &[(1, true), (2, true)], Pending),
            (&[1, 2, 3, 4], &[(1, true), (2, false), (3, false)], Lost),
            (&[1, 2, 3], &[(1, true), (9, true)], Pending),
        ];
        for (voters, votes, want) in cases {
            let map: BTreeMap<NodeId, bool> = votes.iter().map(|&(i, g)| (NodeId(i), g)).collect();
            assert_eq!(
                vote_result(&ids(voters), &map),
                *want,
                "{voters:?} {votes:?}"
            );
        }
    }

    #[test]
    fn joint_needs_both_halves() {
        let joint = JointConfig {
            incoming: ids(&[1, 2, 3]),
            outgoing: ids(&[3, 4, 5]),
        };
        let acked: BTreeMap<NodeId, u64> = [(1, 9), (2, 9), (3, 4), (4, 2), (5, 1)]
            .iter()
            .map(|&(i, a)| (NodeId(i), a))
            .collect();
        assert_eq!(joint.committed(|id| acked[&id]), 2);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true)]
            .iter()
            .map(|&(i, g)| (NodeId(i), g))
            .collect();
        assert_eq!(joint.vote_result(&votes), VoteResult::Pending);
        let mut votes = votes;
        votes.insert(NodeId(4), false);
        votes.insert(NodeId(5), false);
        assert_eq!(joint.vote_result(&votes), VoteResult::Lost);
        assert_eq!(JointConfig::simple(ids(&[1, 2, 3])).committed(|_| 4), 4);
    }

    /// The obvious definition: the largest value v such that at least a majority reached v.
    fn naive_committed(values: &[u64]) -> u64 {
        if values.is_empty() {
            return u64::MAX;
        }
        let mut best = 0;
        for &candidate in values {
            let reached = values.iter().filter(|&&v| v >= candidate).count();
            if reached * 2 > values.len() {
                best = best.max(candidate);
            }
        }
        best
    }

    /// Counts every way the missing votes could still go.
    fn naive_vote(n: usize, granted: usize, refused: usize) -> VoteResult {
        if n == 0 {
            return VoteResult::Won;
        }
        let missing = n - granted - refused;
        let can_win = (granted + missing) * 2 > n;
        if granted * 2 > n {
            VoteResult::Won
        } else if can_win {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }

    #[test]
    fn quick_check_against_naive_versions() {
        let mut rng = SplitMix64::new(0x5eed);
        for _ in 0..20_000 {
            let n = rng.range(0, 8) as usize;
            let voters: BTreeSet<NodeId> = (1..=n as u64).map(NodeId).collect();
            let values: Vec<u64> = (0..n).map(|_| rng.range(0, 6)).collect();
            let got = committed(&voters, |id| values[(id.0 - 1) as usize]);
            assert_eq!(got, naive_committed(&values), "values {values:?}");

            let mut votes = BTreeMap::new();
            let (mut granted, mut refused) = (0, 0);
            for &id in &voters {
                match rng.range(0, 3) {
                    0 => {
                        votes.insert(id, true);
                        granted += 1;
                    }
                    1 => {
                        votes.insert(id, false);
                        refused += 1;
                    }
                    _ => {}
                }
            }
            assert_eq!(
                vote_result(&voters, &votes),
                naive_vote(n, granted, refused),
                "{votes:?} of {n}"
            );
        }
    }
}
