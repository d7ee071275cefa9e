//! Membership arithmetic: who votes, who only listens, and how a change moves between the two.
//!
//! A cluster's membership is its voters and its learners. Voters decide: elections and commits
//! need a majority of them. Learners receive the log but count in no majority; the
//! dissertation (§4.2.1) has a new server join this way, as a non-voting member, until it has
//! caught up, so that adding it does not stall commits while it copies the log. The voters
//! change by joint consensus (paper §6, dissertation §4.3): the cluster first moves to a joint
//! configuration in which every decision needs a majority of the old voters *and* a majority of
//! the new ones, and only once that is committed moves to the new voters alone. No two
//! majorities that could decide independently exist at any step, whatever the change.
//!
//! Everything here is a pure function from one [`Membership`] to the next, or to the
//! [`MembershipError`] that says why the change is refused. When each change takes effect (on
//! append, one uncommitted change at a time) is the protocol's business, not this module's.
//!
//! | from          | change                | to                                              | refused when                                                                  |
//! |---------------|-----------------------|-------------------------------------------------|-------------------------------------------------------------------------------|
//! | any           | `add_learner(n)`      | same voters; learners + n                       | n is 0, a voter (either half) or already a learner                            |
//! | any           | `remove_learner(n)`   | same voters; learners − n                       | n is not a learner                                                            |
//! | simple C      | `enter_joint(C')`     | joint C → C'; learners − C'                     | already joint; C' empty; C' names a non-member; C' = C                         |
//! | joint C → C'  | `leave_joint()`       | simple C'; voters of C not in C' are gone       | not joint                                                                     |
//!
//! Invariants (checked by [`Membership::check`], and asserted in debug builds after every
//! change): the incoming voters are never empty; learners are voters of neither half; node id 0
//! is never a member; a joint configuration changes the voters (its halves differ).

use crate::quorum::JointConfig;
use crate::{LogIndex, NodeId, SharedMembership};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

/// The voters and learners of a cluster at one point of its log.
///
/// A membership is held in the log as an entry of its own ([`crate::Payload::Membership`]) and
/// in every snapshot ([`crate::SnapshotMeta::membership`]); a node uses the latest one its log
/// holds, committed or not (dissertation §4.1). Deserializing checks the invariants, so a
/// malformed membership from a peer or a disk is refused rather than adopted.
///
/// ```
/// use raft_core::{Membership, MembershipError, NodeId};
/// let three = Membership::new([NodeId(1), NodeId(2), NodeId(3)])?;
/// let with_learner = three.add_learner(NodeId(4))?;
/// let joint = with_learner.enter_joint([NodeId(1), NodeId(2), NodeId(4)])?;
/// assert!(joint.is_joint());
/// let done = joint.leave_joint()?;
/// assert_eq!(done.voters().len(), 3);
/// assert!(!done.contains(NodeId(3)));
/// # Ok::<(), MembershipError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MembershipFields", into = "MembershipFields")]
pub struct Membership {
    /// Who decides. `incoming` is never empty; `outgoing` is non-empty exactly while a change
    /// of voters is in progress (joint consensus, §6) and then differs from `incoming`.
    voters: JointConfig,
    /// Who receives the log without counting in any majority (diss. §4.2.1). Disjoint from both
    /// halves of `voters`: a node is a voter or a learner, never both.
    learners: BTreeSet<NodeId>,
    /// Where members can be reached, for those whose address was given when they were added
    /// (opaque to the protocol: transports read it). Only members have one.
    addresses: BTreeMap<NodeId, String>,
}

/// The longest address a member may have, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 512;

/// How a membership is written on the wire and on disk: its three sets, checked when read.
#[derive(Clone, Serialize, Deserialize)]
struct MembershipFields {
    voters: BTreeSet<NodeId>,
    outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    addresses: BTreeMap<NodeId, String>,
}

impl TryFrom<MembershipFields> for Membership {
    type Error = String;
    fn try_from(fields: MembershipFields) -> Result<Membership, String> {
        let membership = Membership {
            voters: JointConfig {
                incoming: fields.voters,
                outgoing: fields.outgoing,
            },
            learners: fields.learners,
            addresses: fields.addresses,
        };
        membership.check()?;
        Ok(membership)
    }
}

impl From<Membership> for MembershipFields {
    fn from(membership: Membership) -> MembershipFields {
        MembershipFields {
            voters: membership.voters.incoming,
            outgoing: membership.voters.outgoing,
            learners: membership.learners,
            addresses: membership.addresses,
        }
    }
}

/// Why a membership change is refused. Each names the node at fault, as `n2`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// Node id 0 is reserved (as in [`crate::Config::validate`]).
    #[error("node id 0 is reserved; ids start at 1")]
    ReservedId,
    /// A learner to add is already a voter, in either half of the configuration.
    #[error("{0} is already a voter")]
    AlreadyVoter(NodeId),
    /// A learner to add is already a learner. Refused rather than accepted as a no-op, like
    /// every change that would change nothing, so that a retrying caller can tell that its
    /// earlier attempt took effect.
    #[error("{0} is already a learner")]
    AlreadyLearner(NodeId),
    /// A learner to remove is not a learner (it is a voter, or not a member at all).
    #[error("{0} is not a learner")]
    NotLearner(NodeId),
    /// A change of voters was asked for while one is still in progress: leave the joint
    /// configuration first (§6 allows one transition at a time).
    #[error("a change of voters is in progress: leave the joint configuration first")]
    ChangeInProgress,
    /// The new configuration would have no voter, and so could never elect a leader or commit.
    #[error("the new configuration has no voter; a cluster needs at least one")]
    NoVoters,
    /// A new voter is neither a voter nor a learner. Voters are made from learners, so that a
    /// node counts in a majority only after it has been given the chance to catch up
    /// (diss. §4.2.1); the smallest such id is named.
    #[error("cannot make {0} a voter: it is not a learner; add it as a learner first")]
    NotALearnerToPromote(NodeId),
    /// The new voters are the current voters.
    #[error("the new voters are the current voters: nothing would change")]
    Unchanged,
    /// An address was given for a node that is not a member, or one longer than
    /// [`MAX_ADDRESS_BYTES`].
    #[error("invalid address for {0}: it must belong to a member and be at most 512 bytes")]
    InvalidAddress(NodeId),
    /// `leave_joint` outside a joint configuration.
    #[error("not in a joint configuration: there is nothing to leave")]
    NotJoint,
    /// The leader's previous membership change, or its first entry of its term, is not
    /// committed yet (one change at a time, dissertation §4.1). Nothing changed; retry once it
    /// is (usually within a round trip).
    #[error("the previous membership change is not committed yet; retry once it is")]
    Uncommitted,
}

impl Membership {
    /// A simple (non-joint) configuration of `voters` and no learners: a cluster's first
    /// configuration. Refused when `voters` is empty or contains node id 0.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Result<Membership, MembershipError> {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        if voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if voters.contains(&NodeId(0)) {
            return Err(MembershipError::ReservedId);
        }
        Ok(Membership::checked(
            JointConfig::simple(voters),
            BTreeSet::new(),
            BTreeMap::new(),
        ))
    }

    /// The membership as bytes, for stores that keep it in a format of their own (a snapshot
    /// file's header, a log record); [`Membership::decode`] reads them back.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing sets of integers into a vector cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads what [`Membership::encode`] wrote. Refuses, with a message naming what is wrong,
    /// bytes that are not exactly one valid membership.
    pub fn decode(bytes: &[u8]) -> Result<Membership, String> {
        match postcard::take_from_bytes::<Membership>(bytes) {
            Ok((membership, [])) => Ok(membership),
            Ok((_, rest)) => Err(format!("{} bytes after the membership", rest.len())),
            Err(error) => Err(format!("not a valid membership: {error}")),
        }
    }

    /// Whether a change of voters is in progress: decisions need a majority of both halves.
    pub fn is_joint(&self) -> bool {
        !self.voters.outgoing.is_empty()
    }

    /// The voters, or while a change is in progress the new voters (the incoming half). Never
    /// empty.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters.incoming
    }

    /// While a change of voters is in progress, the voters it started from (the outgoing
    /// half, which still counts); empty otherwise.
    pub fn outgoing_voters(&self) -> &BTreeSet<NodeId> {
        &self.voters.outgoing
    }

    /// Both halves of the voters, as quorums are counted on them with
    /// [`JointConfig::committed`] and [`JointConfig::vote_result`].
    pub(crate) fn joint(&self) -> &JointConfig {
        &self.voters
    }

    /// The non-voting members (diss. §4.2.1).
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Where members can be reached, for those whose address was given (see
    /// [`Membership::with_address`]).
    pub fn addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.addresses
    }

    /// The same membership, with `address` recorded as where the member `id` can be reached
    /// (replacing any it had). The protocol carries addresses with the membership, so that
    /// every node's transport learns of a new member from the change that adds it. Refused
    /// for a node that is not a member, or an address over [`MAX_ADDRESS_BYTES`].
    pub fn with_address(
        &self,
        id: NodeId,
        address: impl Into<String>,
    ) -> Result<Membership, MembershipError> {
        let address = address.into();
        if !self.contains(id) || address.len() > MAX_ADDRESS_BYTES {
            return Err(MembershipError::InvalidAddress(id));
        }
        let mut addresses = self.addresses.clone();
        addresses.insert(id, address);
        Ok(Membership::checked(
            self.voters.clone(),
            self.learners.clone(),
            addresses,
        ))
    }

    /// Every voter of either half, each once in id order.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.ids()
    }

    /// Every member, voter of either half or learner, each once in id order: the nodes a
    /// leader replicates to.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut ids = self.voters.ids();
        ids.extend(&self.learners);
        ids
    }

    /// Whether `id` votes, in either half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    /// Whether `id` is a non-voting member.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a member at all, voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Adds `id` as a learner: it will receive the log and count in no majority, the first
    /// step of adding a server (diss. §4.2.1). Allowed while joint too, since a learner changes
    /// no quorum and so cannot interfere with the change of voters in progress.
    pub fn add_learner(&self, id: NodeId) -> Result<Membership, MembershipError> {
        if id == NodeId(0) {
            return Err(MembershipError::ReservedId);
        }
        if self.is_voter(id) {
            return Err(MembershipError::AlreadyVoter(id));
        }
        if self.is_learner(id) {
            return Err(MembershipError::AlreadyLearner(id));
        }
        let mut learners = self.learners.clone();
        learners.insert(id);
        Ok(Membership::checked(
            self.voters.clone(),
            learners,
            self.addresses.clone(),
        ))
    }

    /// Removes the learner `id` from the membership. Voters leave by a change of voters
    /// ([`Membership::enter_joint`]) instead, which needs the joint majorities.
    pub fn remove_learner(&self, id: NodeId) -> Result<Membership, MembershipError> {
        if !self.is_learner(id) {
            return Err(MembershipError::NotLearner(id));
        }
        let mut learners = self.learners.clone();
        learners.remove(&id);
        Ok(Membership::checked(
            self.voters.clone(),
            learners,
            self.addresses.clone(),
        ))
    }

    /// Starts changing the voters to `new_voters`: the joint configuration old → new of §6
    /// (diss. §4.3), in which the new voters form the incoming half and the current ones the
    /// outgoing half. Any change of voters takes this one path: adding (a learner promoted),
    /// removing, or both at once. Learners promoted to voters stop being learners; voters left
    /// out of `new_voters` stay in the outgoing half, still counting, until
    /// [`Membership::leave_joint`]. A demoted voter leaves the membership there; add it as a
    /// learner afterwards if it should keep the log.
    ///
    /// Refused, in this order: while already joint; when `new_voters` is empty (so the last
    /// voter can never be removed); when a new voter is neither a voter nor a learner; when
    /// `new_voters` are the current voters.
    pub fn enter_joint(
        &self,
        new_voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Membership, MembershipError> {
        let new_voters: BTreeSet<NodeId> = new_voters.into_iter().collect();
        if self.is_joint() {
            return Err(MembershipError::ChangeInProgress);
        }
        if new_voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if let Some(&id) = new_voters.iter().find(|&&id| !self.contains(id)) {
            return Err(MembershipError::NotALearnerToPromote(id));
        }
        if new_voters == self.voters.incoming {
            return Err(MembershipError::Unchanged);
        }
        let learners = self.learners.difference(&new_voters).copied().collect();
        let voters = JointConfig {
            incoming: new_voters,
            outgoing: self.voters.incoming.clone(),
        };
        Ok(Membership::checked(
            voters,
            learners,
            self.addresses.clone(),
        ))
    }

    /// Finishes a change of voters: the new voters alone (§6, the second step of joint
    /// consensus). Voters of the outgoing half only are no longer members. Refused when no
    /// change is in progress.
    pub fn leave_joint(&self) -> Result<Membership, MembershipError> {
        if !self.is_joint() {
            return Err(MembershipError::NotJoint);
        }
        let voters = JointConfig::simple(self.voters.incoming.clone());
        Ok(Membership::checked(
            voters,
            self.learners.clone(),
            self.addresses.clone(),
        ))
    }

    /// Checks the invariants of the module documentation, naming the first one broken.
    pub(crate) fn check(&self) -> Result<(), String> {
        let JointConfig { incoming, outgoing } = &self.voters;
        if incoming.is_empty() {
            return Err("the incoming half has no voter".into());
        }
        if self.members().contains(&NodeId(0)) {
            return Err("node id 0 is a member".into());
        }
        if let Some(id) = self.learners.iter().find(|&&id| self.voters.contains(id)) {
            return Err(format!("{id} is both a learner and a voter"));
        }
        if self.is_joint() && incoming == outgoing {
            return Err("the joint configuration's halves are the same voters".into());
        }
        if let Some((id, _)) = self
            .addresses
            .iter()
            .find(|(id, address)| !self.contains(**id) || address.len() > MAX_ADDRESS_BYTES)
        {
            return Err(format!(
                "{id} has an address but is no member, or it is too long"
            ));
        }
        Ok(())
    }

    /// Builds the result of a change, keeping the addresses of the members only, and asserting
    /// in debug builds that the change kept the invariants (only a bug in this module could
    /// break them).
    fn checked(
        voters: JointConfig,
        learners: BTreeSet<NodeId>,
        mut addresses: BTreeMap<NodeId, String>,
    ) -> Membership {
        addresses.retain(|id, _| voters.contains(*id) || learners.contains(id));
        let membership = Membership {
            voters,
            learners,
            addresses,
        };
        debug_assert_eq!(membership.check(), Ok(()), "{membership:?}");
        membership
    }
}

/// The memberships a log holds, so that the one in force is known at every index the log
/// covers: a membership known as of some index (`base`), and every membership entry after it.
///
/// A membership takes effect when appended (dissertation §4.1), so the one in force is the
/// last of these, committed or not; truncating the log undoes the entries removed
/// ([`Memberships::truncate_from`]). `base` is the snapshot's membership, or the cluster's
/// first one for a log never compacted, or none for a node that joins a running cluster and
/// has heard from no leader yet.
#[derive(Clone, Debug, Default)]
pub(crate) struct Memberships {
    /// The membership in force at `base_index` and after it, up to the first of `changes`, if
    /// known; nothing is known of the memberships before `base_index`.
    base: Option<SharedMembership>,
    base_index: LogIndex,
    /// The index of the entry (or snapshot, or start) that brought `base` in.
    base_from: LogIndex,
    /// The membership entries after `base_index`, in index order.
    changes: VecDeque<(LogIndex, SharedMembership)>,
}

impl Memberships {
    /// `base` in force at `index`, and no entry after it yet.
    pub(crate) fn new(base: Option<SharedMembership>, index: LogIndex) -> Memberships {
        Memberships {
            base,
            base_index: index,
            base_from: index,
            changes: VecDeque::new(),
        }
    }

    /// The membership in force: the last appended, committed or not.
    pub(crate) fn latest(&self) -> Option<&SharedMembership> {
        self.changes.back().map(|(_, m)| m).or(self.base.as_ref())
    }

    /// The index of the entry that brought in the latest membership (or of the snapshot or
    /// start that holds it, for the base).
    pub(crate) fn latest_index(&self) -> LogIndex {
        self.changes.back().map_or(self.base_from, |&(i, _)| i)
    }

    /// The membership in force once the entry at `index` is appended: `None` when unknown
    /// (before `base_index`, or no membership was ever known).
    pub(crate) fn at(&self, index: LogIndex) -> Option<&SharedMembership> {
        if index < self.base_index {
            return None;
        }
        self.changes
            .iter()
            .rev()
            .find(|&&(i, _)| i <= index)
            .map(|(_, m)| m)
            .or(self.base.as_ref())
    }

    /// The entry at `index` appended (after every entry this knows of) carries `membership`.
    pub(crate) fn appended(&mut self, index: LogIndex, membership: &SharedMembership) {
        debug_assert!(
            index > self.latest_index(),
            "membership entries in index order"
        );
        self.changes.push_back((index, membership.clone()));
    }

    /// Entries from `index` on were removed: their memberships no longer count.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        debug_assert!(index > self.base_index, "truncating before the base");
        while self.changes.back().is_some_and(|&(i, _)| i >= index) {
            self.changes.pop_back();
        }
    }

    /// Entries up to `index` were compacted: the membership in force there becomes the base.
    pub(crate) fn compact_to(&mut self, index: LogIndex) {
        if index <= self.base_index {
            return;
        }
        while let Some((from, _)) = self.changes.front().filter(|&&(i, _)| i <= index) {
            self.base_from = *from;
            self.base = self.changes.pop_front().map(|(_, m)| m);
        }
        self.base_index = index;
    }

    /// A snapshot of everything up to `index`, with `membership`, was installed; when
    /// `keep_after` the log kept its entries after `index`, otherwise it holds none.
    pub(crate) fn installed(
        &mut self,
        index: LogIndex,
        membership: SharedMembership,
        keep_after: bool,
    ) {
        if keep_after {
            while self.changes.front().is_some_and(|&(i, _)| i <= index) {
                self.changes.pop_front();
            }
        } else {
            self.changes.clear();
        }
        self.base = Some(membership);
        self.base_index = index;
        self.base_from = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::VoteResult;
    use crate::rng::SplitMix64;
    use std::collections::BTreeMap;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&i| NodeId(i)).collect()
    }

    /// A membership given directly, invariants unchecked: incoming, outgoing, learners.
    fn of(incoming: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: JointConfig {
                incoming: ids(incoming),
                outgoing: ids(outgoing),
            },
            learners: ids(learners),
            addresses: BTreeMap::new(),
        }
    }

    #[derive(Clone, Debug)]
    enum Change {
        AddLearner(u64),
        RemoveLearner(u64),
        EnterJoint(Vec<u64>),
        LeaveJoint,
    }

    fn apply(membership: &Membership, change: &Change) -> Result<Membership, MembershipError> {
        match change {
            Change::AddLearner(id) => membership.add_learner(NodeId(*id)),
            Change::RemoveLearner(id) => membership.remove_learner(NodeId(*id)),
            Change::EnterJoint(voters) => membership.enter_joint(ids(voters)),
            Change::LeaveJoint => membership.leave_joint(),
        }
    }

    type Case = (
        &'static str,
        Membership,
        Change,
        Result<Membership, MembershipError>,
    );

    fn run(cases: Vec<Case>) {
        for (name, from, change, want) in cases {
            assert_eq!(from.check(), Ok(()), "{name}: the starting membership");
            let got = apply(&from, &change);
            assert_eq!(got, want, "{name}: {change:?} on {from:?}");
            if let Ok(to) = got {
                assert_eq!(to.check(), Ok(()), "{name}");
            }
        }
    }

    #[test]
    fn new_needs_a_voter_and_no_reserved_id() {
        assert_eq!(Membership::new(ids(&[])), Err(MembershipError::NoVoters));
        assert_eq!(
            Membership::new(ids(&[0, 1])),
            Err(MembershipError::ReservedId)
        );
        assert_eq!(
            Membership::new(ids(&[1, 2, 3])),
            Ok(of(&[1, 2, 3], &[], &[]))
        );
    }

    #[test]
    fn add_learner_table() {
        use MembershipError::*;
        run(vec![
            (
                "a new node",
                of(&[1, 2, 3], &[], &[]),
                Change::AddLearner(4),
                Ok(of(&[1, 2, 3], &[], &[4])),
            ),
            (
                "a second learner",
                of(&[1, 2, 3], &[], &[4]),
                Change::AddLearner(5),
                Ok(of(&[1, 2, 3], &[], &[4, 5])),
            ),
            (
                "while joint",
                of(&[1, 2, 4], &[1, 2, 3], &[]),
                Change::AddLearner(5),
                Ok(of(&[1, 2, 4], &[1, 2, 3], &[5])),
            ),
            (
                "id 0",
                of(&[1], &[], &[]),
                Change::AddLearner(0),
                Err(ReservedId),
            ),
            (
                "a voter",
                of(&[1, 2, 3], &[], &[]),
                Change::AddLearner(2),
                Err(AlreadyVoter(NodeId(2))),
            ),
            (
                "a voter of the incoming half only",
                of(&[1, 2, 4], &[1, 2, 3], &[]),
                Change::AddLearner(4),
                Err(AlreadyVoter(NodeId(4))),
            ),
            (
                "a voter being removed (outgoing half only)",
                of(&[1, 2, 4], &[1, 2, 3], &[]),
                Change::AddLearner(3),
                Err(AlreadyVoter(NodeId(3))),
            ),
            (
                "a learner",
                of(&[1, 2, 3], &[], &[4]),
                Change::AddLearner(4),
                Err(AlreadyLearner(NodeId(4))),
            ),
        ]);
    }

    #[test]
    fn remove_learner_table() {
        use MembershipError::*;
        run(vec![
            (
                "a learner",
                of(&[1, 2, 3], &[], &[4, 5]),
                Change::RemoveLearner(4),
                Ok(of(&[1, 2, 3], &[], &[5])),
            ),
            (
                "a learner while joint",
                of(&[1, 2, 4], &[1, 2, 3], &[5]),
                Change::RemoveLearner(5),
                Ok(of(&[1, 2, 4], &[1, 2, 3], &[])),
            ),
            (
                "a voter",
                of(&[1, 2, 3], &[], &[4]),
                Change::RemoveLearner(1),
                Err(NotLearner(NodeId(1))),
            ),
            (
                "a voter of the outgoing half",
                of(&[1, 2, 4], &[1, 2, 3], &[]),
                Change::RemoveLearner(3),
                Err(NotLearner(NodeId(3))),
            ),
            (
                "a stranger",
                of(&[1, 2, 3], &[], &[]),
                Change::RemoveLearner(9),
                Err(NotLearner(NodeId(9))),
            ),
        ]);
    }

    #[test]
    fn enter_joint_table() {
        use MembershipError::*;
        run(vec![
            (
                "promote a learner",
                of(&[1, 2, 3], &[], &[4, 5]),
                Change::EnterJoint(vec![1, 2, 3, 4]),
                Ok(of(&[1, 2, 3, 4], &[1, 2, 3], &[5])),
            ),
            (
                "remove a voter: it stays in the outgoing half",
                of(&[1, 2, 3], &[], &[]),
                Change::EnterJoint(vec![1, 2]),
                Ok(of(&[1, 2], &[1, 2, 3], &[])),
            ),
            (
                "replace every voter at once",
                of(&[1, 2, 3], &[], &[4, 5, 6]),
                Change::EnterJoint(vec![4, 5, 6]),
                Ok(of(&[4, 5, 6], &[1, 2, 3], &[])),
            ),
            (
                "shrink to a single voter",
                of(&[1, 2, 3], &[], &[]),
                Change::EnterJoint(vec![2]),
                Ok(of(&[2], &[1, 2, 3], &[])),
            ),
            (
                "already joint",
                of(&[1, 2, 4], &[1, 2, 3], &[5]),
                Change::EnterJoint(vec![1, 2, 5]),
                Err(ChangeInProgress),
            ),
            (
                "no voters: the last voter cannot go",
                of(&[1], &[], &[2]),
                Change::EnterJoint(vec![]),
                Err(NoVoters),
            ),
            (
                "a stranger as voter",
                of(&[1, 2, 3], &[], &[4]),
                Change::EnterJoint(vec![1, 2, 3, 4, 7]),
                Err(NotALearnerToPromote(NodeId(7))),
            ),
            (
                "the smallest stranger is named",
                of(&[1, 2, 3], &[], &[]),
                Change::EnterJoint(vec![1, 8, 9]),
                Err(NotALearnerToPromote(NodeId(8))),
            ),
            (
                "id 0 as voter",
                of(&[1, 2, 3], &[], &[]),
                Change::EnterJoint(vec![0, 1, 2]),
                Err(NotALearnerToPromote(NodeId(0))),
            ),
            (
                "the same voters",
                of(&[1, 2, 3], &[], &[4]),
                Change::EnterJoint(vec![1, 2, 3]),
                Err(Unchanged),
            ),
        ]);
    }

    #[test]
    fn leave_joint_table() {
        use MembershipError::*;
        run(vec![
            (
                "removed voters leave the membership",
                of(&[1, 2], &[1, 2, 3], &[]),
                Change::LeaveJoint,
                Ok(of(&[1, 2], &[], &[])),
            ),
            (
                "learners stay",
                of(&[1, 2, 3, 4], &[1, 2, 3], &[5]),
                Change::LeaveJoint,
                Ok(of(&[1, 2, 3, 4], &[], &[5])),
            ),
            (
                "not joint",
                of(&[1, 2, 3], &[], &[4]),
                Change::LeaveJoint,
                Err(NotJoint),
            ),
        ]);
    }

    /// Runs `changes` from `from`, checking every step, and returns the memberships passed.
    fn walk(from: Membership, changes: &[Change]) -> Vec<Membership> {
        let mut current = from;
        let mut path = vec![current.clone()];
        for change in changes {
            current = match apply(&current, change) {
                Ok(next) => next,
                Err(e) => panic!("{change:?} on {current:?}: {e}"),
            };
            assert_eq!(current.check(), Ok(()), "{change:?}");
            path.push(current.clone());
        }
        path
    }

    #[test]
    fn promote_a_learner_to_voter() {
        let path = walk(
            of(&[1, 2, 3], &[], &[]),
            &[
                Change::AddLearner(4),
                Change::EnterJoint(vec![1, 2, 3, 4]),
                Change::LeaveJoint,
            ],
        );
        assert!(path[1].is_learner(NodeId(4)) && !path[1].is_voter(NodeId(4)));
        assert!(path[2].is_joint() && path[2].is_voter(NodeId(4)));
        assert!(!path[2].is_learner(NodeId(4)));
        assert_eq!(path[3], of(&[1, 2, 3, 4], &[], &[]));
    }

    #[test]
    fn demote_a_voter_by_removing_it() {
        let path = walk(
            of(&[1, 2, 3], &[], &[]),
            &[
                Change::EnterJoint(vec![1, 2]),
                Change::LeaveJoint,
                Change::AddLearner(3),
            ],
        );
        // Until the joint configuration is left, n3 still counts in the outgoing half.
        assert!(path[1].is_voter(NodeId(3)) && path[1].contains(NodeId(3)));
        assert!(!path[2].contains(NodeId(3)));
        assert_eq!(path[3], of(&[1, 2], &[], &[3]));
    }

    #[test]
    fn replace_a_dead_node() {
        let path = walk(
            of(&[1, 2, 3], &[], &[]),
            &[
                Change::AddLearner(4),
                Change::EnterJoint(vec![1, 2, 4]),
                Change::LeaveJoint,
            ],
        );
        let joint = &path[2];
        assert_eq!(joint, &of(&[1, 2, 4], &[1, 2, 3], &[]));
        assert_eq!(joint.members(), ids(&[1, 2, 3, 4]));
        // n3 is dead: n1 and n2 are a majority of both halves, so the change can commit.
        let acked = |id: NodeId| if id == NodeId(3) { 0 } else { 7 };
        assert_eq!(joint.joint().committed(acked), 7);
        assert_eq!(path[3], of(&[1, 2, 4], &[], &[]));
        assert_eq!(path[3].members(), ids(&[1, 2, 4]));
    }

    #[test]
    fn the_last_voter_cannot_be_removed() {
        let one = of(&[1], &[], &[]);
        assert_eq!(one.enter_joint(ids(&[])), Err(MembershipError::NoVoters));
        // Nor can it be turned into a learner: it is a voter, not a learner.
        assert_eq!(
            one.add_learner(NodeId(1)),
            Err(MembershipError::AlreadyVoter(NodeId(1)))
        );
        assert_eq!(
            one.remove_learner(NodeId(1)),
            Err(MembershipError::NotLearner(NodeId(1)))
        );
        // It can be replaced, through a learner.
        let path = walk(
            one,
            &[
                Change::AddLearner(2),
                Change::EnterJoint(vec![2]),
                Change::LeaveJoint,
            ],
        );
        assert_eq!(path[3], of(&[2], &[], &[]));
    }

    #[test]
    fn joint_quorums_need_a_majority_of_both_halves() {
        // {1,2,3} → {3,4,5}, with n4 and n5 caught up as learners first.
        let path = walk(
            of(&[1, 2, 3], &[], &[]),
            &[
                Change::AddLearner(4),
                Change::AddLearner(5),
                Change::EnterJoint(vec![3, 4, 5]),
            ],
        );
        let voters = path[3].joint();
        let acked_by =
            |list: &'static [u64]| move |id: NodeId| if list.contains(&id.0) { 9 } else { 0 };
        // Commit: a majority of the old half alone, or of the new half alone, is not enough.
        assert_eq!(voters.committed(acked_by(&[1, 2])), 0);
        assert_eq!(voters.committed(acked_by(&[4, 5])), 0);
        assert_eq!(voters.committed(acked_by(&[1, 2, 4])), 0);
        assert_eq!(voters.committed(acked_by(&[1, 3, 4])), 9);
        assert_eq!(voters.committed(acked_by(&[1, 2, 4, 5])), 9);
        // Learners count in no majority: before the change, n4 and n5 acknowledging is nothing.
        assert_eq!(path[2].joint().committed(acked_by(&[3, 4, 5])), 0);

        let votes = |granted: &[u64], refused: &[u64]| -> BTreeMap<NodeId, bool> {
            let yes = granted.iter().map(|&i| (NodeId(i), true));
            let no = refused.iter().map(|&i| (NodeId(i), false));
            yes.chain(no).collect()
        };
        // Election: won only with both majorities, lost as soon as either half is lost.
        assert_eq!(
            voters.vote_result(&votes(&[1, 2], &[])),
            VoteResult::Pending
        );
        assert_eq!(
            voters.vote_result(&votes(&[4, 5], &[])),
            VoteResult::Pending
        );
        assert_eq!(voters.vote_result(&votes(&[2, 3, 4], &[])), VoteResult::Won);
        assert_eq!(
            voters.vote_result(&votes(&[1, 2, 3], &[4, 5])),
            VoteResult::Lost
        );
        assert_eq!(
            voters.vote_result(&votes(&[3, 4, 5], &[1, 2])),
            VoteResult::Lost
        );
    }

    #[test]
    fn the_memberships_of_a_log_follow_its_appends_truncations_and_compactions() {
        let shared = |m: Membership| SharedMembership::new(m);
        let first = shared(of(&[1, 2, 3], &[], &[]));
        let with_4 = shared(of(&[1, 2, 3], &[], &[4]));
        let joint = shared(of(&[1, 2, 4], &[1, 2, 3], &[]));
        let mut log = Memberships::new(Some(first.clone()), LogIndex(0));
        log.appended(LogIndex(5), &with_4);
        log.appended(LogIndex(9), &joint);
        assert_eq!(log.latest(), Some(&joint));
        assert_eq!(log.latest_index(), LogIndex(9));
        assert_eq!(log.at(LogIndex(4)), Some(&first));
        assert_eq!(log.at(LogIndex(5)), Some(&with_4));
        assert_eq!(log.at(LogIndex(8)), Some(&with_4));
        // Truncating from 9 undoes the joint membership, not the one before it.
        log.truncate_from(LogIndex(9));
        assert_eq!(
            (log.latest(), log.latest_index()),
            (Some(&with_4), LogIndex(5))
        );
        // Compacting to 7 keeps what is in force there, and forgets what came before.
        log.compact_to(LogIndex(7));
        assert_eq!(
            (log.latest(), log.latest_index()),
            (Some(&with_4), LogIndex(5))
        );
        assert_eq!(log.at(LogIndex(6)), None);
        assert_eq!(log.at(LogIndex(7)), Some(&with_4));
        // A snapshot installed at 20 replaces everything up to it.
        log.appended(LogIndex(12), &joint);
        log.installed(LogIndex(20), first.clone(), false);
        assert_eq!(
            (log.latest(), log.latest_index()),
            (Some(&first), LogIndex(20))
        );
        // One whose log is kept after it keeps the entries after it.
        log.appended(LogIndex(25), &with_4);
        log.installed(LogIndex(22), joint.clone(), true);
        assert_eq!(
            (log.latest(), log.latest_index()),
            (Some(&with_4), LogIndex(25))
        );
        assert_eq!(log.at(LogIndex(23)), Some(&joint));
        // A joining node knows none until its log brings one.
        let mut joining = Memberships::default();
        assert_eq!(joining.latest(), None);
        joining.appended(LogIndex(3), &first);
        assert_eq!(joining.at(LogIndex(2)), None);
        assert_eq!(joining.at(LogIndex(3)), Some(&first));
    }

    #[test]
    fn addresses_belong_to_members_and_leave_with_them() {
        let m = Membership::new(ids(&[1, 2, 3]))
            .and_then(|m| m.add_learner(NodeId(4)))
            .and_then(|m| m.with_address(NodeId(4), "10.0.0.4:7000"))
            .and_then(|m| m.with_address(NodeId(3), "10.0.0.3:7000"))
            .unwrap();
        assert_eq!(m.addresses().len(), 2);
        assert_eq!(
            m.with_address(NodeId(9), "x"),
            Err(MembershipError::InvalidAddress(NodeId(9)))
        );
        assert_eq!(
            m.with_address(NodeId(4), "x".repeat(MAX_ADDRESS_BYTES + 1)),
            Err(MembershipError::InvalidAddress(NodeId(4)))
        );
        // Promoted, the learner keeps its address; a voter dropped loses its own at the end.
        let joint = m.enter_joint(ids(&[1, 2, 4])).unwrap();
        assert_eq!(joint.addresses().len(), 2);
        let done = joint.leave_joint().unwrap();
        assert_eq!(
            done.addresses().keys().copied().collect::<Vec<_>>(),
            [NodeId(4)]
        );
        assert_eq!(
            done.remove_learner(NodeId(4)),
            Err(MembershipError::NotLearner(NodeId(4)))
        );
        let learner_gone = m.remove_learner(NodeId(4)).unwrap();
        assert!(!learner_gone.addresses().contains_key(&NodeId(4)));
        // Encoded and read back whole; bytes claiming an address for a non-member are refused.
        assert_eq!(Membership::decode(&m.encode()), Ok(m.clone()));
        let mut forged = MembershipFields::from(m.clone());
        forged.addresses.insert(NodeId(9), "x".into());
        let bytes = postcard::to_stdvec(&forged).unwrap();
        assert!(Membership::decode(&bytes).is_err());
        assert!(Membership::decode(&m.encode()[1..]).is_err());
    }

    #[test]
    fn check_names_each_broken_invariant() {
        let cases: &[(Membership, &str)] = &[
            (of(&[], &[], &[1]), "the incoming half has no voter"),
            (of(&[], &[1, 2], &[]), "the incoming half has no voter"),
            (of(&[0, 1], &[], &[]), "node id 0 is a member"),
            (of(&[1], &[], &[0]), "node id 0 is a member"),
            (of(&[1, 2], &[], &[2]), "n2 is both a learner and a voter"),
            (
                of(&[1, 2], &[1, 3], &[3]),
                "n3 is both a learner and a voter",
            ),
            (
                of(&[1, 2], &[1, 2], &[]),
                "the joint configuration's halves are the same voters",
            ),
        ];
        for (membership, want) in cases {
            assert_eq!(membership.check(), Err(want.to_string()), "{membership:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_name_the_node() {
        use MembershipError::*;
        let cases = [
            (ReservedId, "node id 0 is reserved; ids start at 1"),
            (AlreadyVoter(NodeId(2)), "n2 is already a voter"),
            (AlreadyLearner(NodeId(4)), "n4 is already a learner"),
            (NotLearner(NodeId(3)), "n3 is not a learner"),
            (
                ChangeInProgress,
                "a change of voters is in progress: leave the joint configuration first",
            ),
            (
                NoVoters,
                "the new configuration has no voter; a cluster needs at least one",
            ),
            (
                NotALearnerToPromote(NodeId(7)),
                "cannot make n7 a voter: it is not a learner; add it as a learner first",
            ),
            (
                Unchanged,
                "the new voters are the current voters: nothing would change",
            ),
            (
                NotJoint,
                "not in a joint configuration: there is nothing to leave",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    /// The rules restated on plain sets and a flag, checked the long way round.
    #[derive(Clone, Debug)]
    struct Model {
        voters: Vec<u64>,
        old_voters: Vec<u64>,
        joint: bool,
        learners: Vec<u64>,
    }

    impl Model {
        fn apply(&mut self, change: &Change) -> Result<(), MembershipError> {
            use MembershipError::*;
            let voter = |m: &Model, id: u64| {
                m.voters.contains(&id) || (m.joint && m.old_voters.contains(&id))
            };
            match change {
                Change::AddLearner(id) => {
                    let id = *id;
                    if id == 0 {
                        Err(ReservedId)
                    } else if voter(self, id) {
                        Err(AlreadyVoter(NodeId(id)))
                    } else if self.learners.contains(&id) {
                        Err(AlreadyLearner(NodeId(id)))
                    } else {
                        self.learners.push(id);
                        Ok(())
                    }
                }
                Change::RemoveLearner(id) => {
                    if !self.learners.contains(id) {
                        return Err(NotLearner(NodeId(*id)));
                    }
                    self.learners.retain(|l| l != id);
                    Ok(())
                }
                Change::EnterJoint(new) => {
                    if self.joint {
                        return Err(ChangeInProgress);
                    }
                    if new.is_empty() {
                        return Err(NoVoters);
                    }
                    let mut strangers: Vec<u64> = new
                        .iter()
                        .copied()
                        .filter(|id| !self.voters.contains(id) && !self.learners.contains(id))
                        .collect();
                    strangers.sort_unstable();
                    if let Some(&first) = strangers.first() {
                        return Err(NotALearnerToPromote(NodeId(first)));
                    }
                    let same = new.len() == self.voters.len()
                        && new.iter().all(|id| self.voters.contains(id));
                    if same {
                        return Err(Unchanged);
                    }
                    self.old_voters = std::mem::replace(&mut self.voters, new.clone());
                    self.learners.retain(|l| !new.contains(l));
                    self.joint = true;
                    Ok(())
                }
                Change::LeaveJoint => {
                    if !self.joint {
                        return Err(NotJoint);
                    }
                    self.old_voters.clear();
                    self.joint = false;
                    Ok(())
                }
            }
        }

        fn agrees_with(&self, m: &Membership) -> Result<(), String> {
            let set = |list: &[u64]| ids(list);
            let outgoing = if self.joint {
                set(&self.old_voters)
            } else {
                BTreeSet::new()
            };
            if m.joint().incoming != set(&self.voters)
                || m.joint().outgoing != outgoing
                || m.learners() != &set(&self.learners)
                || m.is_joint() != self.joint
            {
                return Err(format!("model {self:?} membership {m:?}"));
            }
            for id in 0..=8 {
                let node = NodeId(id);
                let voter = self.voters.contains(&id) || outgoing.contains(&node);
                let learner = self.learners.contains(&id);
                if m.is_voter(node) != voter
                    || m.is_learner(node) != learner
                    || m.contains(node) != (voter || learner)
                    || m.members().contains(&node) != (voter || learner)
                {
                    return Err(format!("{node}: model {self:?} membership {m:?}"));
                }
            }
            Ok(())
        }
    }

    /// A random change, biased towards ones that can succeed so that every kind is exercised
    /// from every state: ids 0..=6, new voters drawn mostly from the current members.
    fn random_change(rng: &mut SplitMix64, m: &Membership) -> Change {
        match rng.range(0, 8) {
            0 | 1 => Change::AddLearner(rng.range(0, 7)),
            2 | 3 => Change::RemoveLearner(rng.range(1, 7)),
            4..=6 => {
                let pool: Vec<u64> = if rng.range(0, 4) == 0 {
                    (0..=6).collect()
                } else {
                    m.members().iter().map(|id| id.0).collect()
                };
                let voters = pool.into_iter().filter(|_| rng.range(0, 2) == 0).collect();
                Change::EnterJoint(voters)
            }
            _ => Change::LeaveJoint,
        }
    }

    #[test]
    fn quick_check_against_a_naive_model() {
        let mut applied: BTreeMap<&str, usize> = BTreeMap::new();
        let mut refused: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 1..=4u64 {
            let mut rng = SplitMix64::new(seed);
            let mut membership = of(&[1, 2, 3], &[], &[]);
            let mut model = Model {
                voters: vec![1, 2, 3],
                old_voters: vec![],
                joint: false,
                learners: vec![],
            };
            for step in 0..2_500 {
                let change = random_change(&mut rng, &membership);
                let got = apply(&membership, &change);
                let want = model.apply(&change);
                let at = format!("seed {seed} step {step}: {change:?} on {membership:?}");
                assert_eq!(got.as_ref().map(|_| ()), want.as_ref().map(|_| ()), "{at}");
                match got {
                    Ok(next) => {
                        let kind = match change {
                            Change::AddLearner(_) => "add_learner",
                            Change::RemoveLearner(_) => "remove_learner",
                            Change::EnterJoint(_) => "enter_joint",
                            Change::LeaveJoint => "leave_joint",
                        };
                        *applied.entry(kind).or_default() += 1;
                        membership = next;
                    }
                    Err(e) => {
                        let variant = format!("{e:?}");
                        let variant = variant.split('(').next().unwrap_or_default();
                        *refused.entry(variant.to_string()).or_default() += 1;
                    }
                }
                if let Err(broken) = membership.check() {
                    panic!("{at}: {broken}");
                }
                if let Err(diff) = model.agrees_with(&membership) {
                    panic!("{at}: {diff}");
                }
            }
        }
        // The walk is only worth something if it went everywhere.
        for kind in [
            "add_learner",
            "remove_learner",
            "enter_joint",
            "leave_joint",
        ] {
            let n = applied.get(kind).copied().unwrap_or(0);
            assert!(n >= 100, "{kind} succeeded only {n} times: {applied:?}");
        }
        assert_eq!(refused.len(), 9, "every refusal seen: {refused:?}");
    }
}
