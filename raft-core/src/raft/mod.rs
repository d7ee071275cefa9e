//! One node's Raft state machine: inputs in, [`Actions`] out, no I/O.
//!
//! Inputs are [`Raft::tick`] (time passes), [`Raft::step`] (a message arrives),
//! [`Raft::propose`], [`Raft::read`], [`Raft::transfer_leadership`], and the driver's reports
//! [`Raft::persisted`] and [`Raft::applied`]. After any of them the driver calls
//! [`Raft::take_actions`] and carries out the batch as [`Actions`] documents.
//!
//! `step` resolves the message's term first (§5.1: a higher term makes this node a follower, a
//! lower term is stale), then hands the message to the handler of the current role.
//!
//! Each role's state is a variant of [`RoleState`]: what only a leader knows (the progress of
//! every follower, the lease clock, the read queue, a transfer in progress) lives in
//! [`LeaderState`], so it exists exactly while the node leads. The protocol is split by concept,
//! one `impl Raft` block per file:
//!
//! * this file — the inputs, stepping down, and the helpers;
//! * `view` — what the driver and observers may read;
//! * `election` — elections, votes and PreVote (§5.2, §5.4.1, dissertation §9.6);
//! * `replication` — proposals, AppendEntries, heartbeats and commit (§5.3, §5.4.2);
//! * `reads` — the lease, ReadIndex, bounded-staleness freshness and leadership transfer
//!   (dissertation §3.10, §6.2, §6.4);
//! * `snapshot` — log compaction and InstallSnapshot (§7);
//! * `membership` — membership changes: joint consensus, learners, and the hand-over of a
//!   leader that removed itself (§6, dissertation chapter 4).

mod election;
mod membership;
mod reads;
mod replication;
mod snapshot;
mod view;

pub use membership::MembershipChange;
pub use reads::FreshCommit;

use crate::lease::LeaseClock;
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::reads::{ForwardedReads, ReadQueue, Reader};
use crate::rng::SplitMix64;
use crate::{
    Actions, Config, Entry, EntryId, HardState, LogIndex, Membership, Message, MessageBody, NodeId,
    ProtocolError, ReadId, SharedMembership, SnapshotMeta, Term, Time,
};
use reads::Transfer;
use std::collections::{BTreeMap, VecDeque};

/// The role a node plays in its current term (§5.1, plus the pre-vote phase of §9.6).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// Answers leaders and candidates.
    Follower,
    /// Asks whether it could win an election, without changing any term.
    PreCandidate,
    /// Campaigns for leadership in a new term.
    Candidate,
    /// Handles client requests and replicates the log.
    Leader,
}

/// How a read must be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: confirm leadership with a heartbeat round before serving.
    Linearizable,
    /// Serve without a round trip while the leader's lease holds; otherwise as `Linearizable`.
    Lease,
}

/// What a node recovered from stable storage when it starts (or its empty state on first boot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitialState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// Every durable log entry after `log_start`, in order.
    pub entries: Vec<Entry>,
    /// The last index the state machine has applied (0 when it starts empty): at least
    /// `log_start`'s index, since entries before it are gone.
    pub applied: LogIndex,
    /// The cluster's first membership, saved when it was formed (see
    /// [`crate::node::LogStore::save_voters`]); `None` on a node started to join a running
    /// cluster, which waits for a leader to send it the log or a snapshot. A snapshot's
    /// membership and membership entries in `entries` supersede it.
    pub membership: Option<Membership>,
    /// The entry just before the first of `entries` (the last one purged; index 0 when none
    /// was).
    pub log_start: EntryId,
    /// The latest snapshot held durably, if any. When the log does not hold its last entry
    /// (a snapshot from the leader was installed and the log not yet purged), the log is
    /// replaced by the snapshot, as its install would have done.
    pub snapshot: Option<SnapshotMeta>,
    /// Why the voters given to [`InitialState::new`] are no membership, if they are not (for
    /// [`Raft::new`] to refuse).
    pub(crate) invalid_voters: Option<crate::MembershipError>,
}

impl InitialState {
    /// The state of a node's first start in a cluster of `voters`: no term, no vote, no log;
    /// set the other fields to what the node recovered. (The type may gain fields that default
    /// to "none".) [`Raft::new`] refuses voters that are no membership (none, or node id 0);
    /// a node that joins a running cluster starts from [`InitialState::joining`] instead.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> InitialState {
        match Membership::new(voters) {
            Ok(membership) => InitialState {
                membership: Some(membership),
                ..InitialState::default()
            },
            Err(error) => InitialState {
                invalid_voters: Some(error),
                ..InitialState::default()
            },
        }
    }

    /// The state of a node's first start as a new member of a running cluster: it knows no
    /// membership, never campaigns, and waits for a leader to send it the log or a snapshot
    /// once it has been added (as a learner).
    pub fn joining() -> InitialState {
        InitialState::default()
    }
}

/// What a leader knows of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerProgress {
    /// The follower.
    pub id: NodeId,
    /// The highest index known replicated on it.
    pub match_index: LogIndex,
    /// The next index the leader will send it.
    pub next_index: LogIndex,
    /// When the leader last heard any answer from it, on the leader's clock.
    pub last_ack_at: Option<Time>,
    /// True when the leader streams entries to it; false while it probes for a match or sends
    /// it a snapshot.
    pub replicating: bool,
    /// While the leader sends it a snapshot: the bytes of the image it holds so far.
    pub snapshot_bytes: Option<u64>,
}

/// What the node's role holds: one variant per role, each with the state only it needs.
#[derive(Debug)]
enum RoleState {
    Follower {
        /// The leader of the current term, once known.
        leader: Option<NodeId>,
        /// Reads waiting for a read index from that leader.
        forwarded: ForwardedReads,
    },
    PreCandidate(Campaign),
    Candidate(Campaign),
    Leader(Box<LeaderState>),
}

impl RoleState {
    fn follower(leader: Option<NodeId>) -> RoleState {
        RoleState::Follower {
            leader,
            forwarded: ForwardedReads::default(),
        }
    }
}

/// A pre-vote round or an election in progress.
#[derive(Debug)]
struct Campaign {
    /// Answers received (true = granted), this node's own vote among them.
    votes: BTreeMap<NodeId, bool>,
    /// The election was started by a TimeoutNow (dissertation §3.10); never for a pre-vote.
    by_transfer: bool,
}

/// What only a leader knows.
#[derive(Debug)]
struct LeaderState {
    /// One entry per other member (voters of either half, and learners), in id order.
    progress: BTreeMap<NodeId, Progress>,
    /// Heartbeat rounds, their acknowledgement, and the lease.
    lease: LeaseClock,
    /// When it took office (the CheckQuorum clock starts there).
    took_office_at: Time,
    /// When to send the next heartbeat round.
    heartbeat_deadline: Time,
    /// Reads waiting for confirmation or apply.
    reads: ReadQueue,
    transfer: Option<Transfer>,
    /// It won an election started by a TimeoutNow.
    by_transfer: bool,
    /// What the entries proposed in this term and not yet committed cost (see
    /// [`Config::max_uncommitted_bytes`]); the blank entry of the term costs nothing.
    uncommitted_bytes: usize,
}

/// Freshness statements a follower keeps (see [`crate::Freshness`]), bounded.
const MAX_FRESHNESS: usize = 64;
/// Rounds whose first answer time a follower remembers, bounded.
const MAX_ANSWERED_ROUNDS: usize = 1024;

/// The Raft protocol for one node. See the [crate documentation](crate) for how to drive it.
#[derive(Debug)]
pub struct Raft {
    config: Config,
    /// Persistent (Figure 2): the latest term seen.
    term: Term,
    /// Persistent (Figure 2): the candidate voted for in `term`.
    vote: Option<NodeId>,
    role: RoleState,
    log: RaftLog,
    rng: SplitMix64,
    /// The latest time any input carried. Never goes back.
    now: Time,
    /// Followers and candidates: when to start an election.
    election_deadline: Time,
    /// The latest snapshot held durably (what a leader sends to followers that need it).
    snapshot: Option<SnapshotMeta>,
    /// A snapshot being received from the leader.
    incoming: Option<snapshot::Incoming>,
    /// When this node last heard from a current leader. While less than a minimum election
    /// timeout ago, it neither campaigns nor grants (pre)votes (dissertation §4.2.3, §6.4.1).
    /// A restarting node sets it to its start time: it may have acknowledged a lease before the
    /// crash and cannot remember.
    leader_heard_at: Option<Time>,
    /// Counts the campaigns (pre-vote rounds and elections) this node started, from a random
    /// start drawn when it started; vote requests carry it and answers echo it, so an answer to
    /// an earlier campaign, even one of a previous run, is never counted.
    campaign: u64,
    /// A random number drawn when this node started, carried by its answers to the leader's
    /// rounds (see [`crate::Freshness`]).
    session: u64,
    /// The first time this node answered each recent heartbeat round of `answered_term`'s
    /// leader, oldest first (rounds and times increase). Kept through changes of role within
    /// the term, since the leader may have heard any of these answers; a new term has a new
    /// leader, which numbers its own rounds. Used for bounded-staleness reads (see `reads`).
    answered_rounds: VecDeque<(u64, Time)>,
    answered_term: Term,
    /// What leaders said of their commit index, as `FreshCommit`s with `as_of` and `index` both
    /// increasing; the newest one whose index this node has committed is the freshness of its
    /// data while it follows (bounded-staleness reads).
    freshness: VecDeque<FreshCommit>,
    /// The number of this node's next read-index request (see `MessageBody::ReadIndex`), from
    /// a random start drawn when it started, so that an answer to a request of its previous
    /// run is never taken for an answer to one of this run.
    read_request: u64,
    /// Reads whose index is confirmed and which wait for the state machine to apply it, by
    /// index: a follower's, once its leader answered (they survive a change of role, since the
    /// index stays a valid read index).
    reads_to_apply: BTreeMap<LogIndex, Vec<ReadId>>,
    /// The hard state changed since the last batch.
    hard_state_changed: bool,
    /// The batch being built.
    out: Actions,
}

impl Raft {
    /// Starts a node from what it recovered from storage.
    ///
    /// `seed` feeds the only randomness the protocol uses (election timeouts); `now` is the
    /// current time on the node's clock. Fails when the configuration breaks a rule of
    /// [`Config::validate`] or the recovered state is inconsistent.
    pub fn new(
        config: Config,
        state: InitialState,
        seed: u64,
        now: Time,
    ) -> Result<Raft, ProtocolError> {
        config.validate()?;
        let recovered_start = state.log_start;
        let state = reconcile_with_snapshot(state);
        validate_initial_state(&state)?;
        // A crash came between storing a received snapshot and purging the log: the first
        // batch finishes the purge, so the store never keeps a log the snapshot replaced.
        let purge = (state.log_start != recovered_start).then_some(state.log_start);
        let mut rng = SplitMix64::new(seed ^ config.id.0.rotate_left(32));
        let campaign = rng.next_u64() >> 1;
        let session = rng.next_u64();
        let read_request = rng.next_u64() >> 1;
        // The membership in force at the start of the log: the snapshot's, or the first one.
        let (base, base_index) = match &state.snapshot {
            Some(snapshot) => (Some(snapshot.membership.clone()), snapshot.last.index),
            None => (state.membership.map(SharedMembership::new), LogIndex(0)),
        };
        let log = RaftLog::restore(
            state.log_start,
            state.entries,
            state.applied,
            base,
            base_index,
        );
        let mut raft = Raft {
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            role: RoleState::follower(None),
            log,
            snapshot: state.snapshot,
            incoming: None,
            rng,
            now,
            election_deadline: now,
            leader_heard_at: Some(now),
            campaign,
            session,
            answered_rounds: VecDeque::new(),
            answered_term: Term(0),
            freshness: VecDeque::new(),
            read_request,
            reads_to_apply: BTreeMap::new(),
            hard_state_changed: false,
            out: Actions::default(),
            config,
        };
        raft.out.purge = purge;
        raft.reset_election_deadline();
        Ok(raft)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Time has passed: start an election, send heartbeats, step down without a quorum, or
    /// abandon a transfer, as due. Call it at [`Raft::next_deadline`] (calling it more often is
    /// harmless).
    pub fn tick(&mut self, now: Time) {
        self.advance_clock(now);
        let election_timeout_min_ms = self.config.election_timeout_min_ms;
        let check_quorum = self.config.check_quorum;
        self.expire_forwarded_reads();
        let transfer_expired = matches!(
            &self.role,
            RoleState::Leader(leader) if leader.transfer.is_some_and(|t| now >= t.deadline)
        );
        if transfer_expired && self.removal_committed() {
            // A removed leader's hand-over did not happen in time: step down all the same; the
            // new voters elect a leader when their timers expire.
            self.become_follower(self.term, None);
            return;
        }
        if let RoleState::Leader(leader) = &mut self.role {
            if transfer_expired {
                leader.transfer = None;
            }
            if check_quorum && now >= leader.check_quorum_deadline(election_timeout_min_ms) {
                // Dissertation §6.2: no majority heard from in an election timeout.
                self.become_follower(self.term, None);
                return;
            }
            if now >= leader.heartbeat_deadline {
                self.broadcast_heartbeat();
            }
        } else if now >= self.election_deadline {
            if self.may_campaign() {
                self.start_election();
            } else {
                // A non-voter never campaigns; keep its deadline ahead of the clock so that a
                // driver sleeping until it does not spin.
                self.reset_election_deadline();
            }
        }
    }

    /// A message arrived. A malformed message, one misaddressed, or one from a node outside
    /// the cluster is refused with [`ProtocolError::RejectedMessage`] and changes nothing.
    ///
    /// "Outside the cluster" means not a member of the membership this node's log holds, except
    /// for what only a leader sends (AppendEntries, heartbeats, InstallSnapshot, TimeoutNow) and
    /// vote requests: a node whose log is behind may not know its leader, or a candidate, yet
    /// (a learner promoted while this node was cut off, whose vote the candidate's membership
    /// counts), and a node joining a running cluster knows no member at all. A removed node's
    /// vote requests are ignored while a leader is known (stickiness) and cannot win (its log
    /// lacks the entry that removed it, which a majority of the new voters holds). The
    /// transport authenticates peers; the protocol only refuses what it knows to be wrong.
    pub fn step(&mut self, now: Time, msg: Message) -> Result<(), ProtocolError> {
        msg.validate().map_err(ProtocolError::RejectedMessage)?;
        if msg.to != self.config.id {
            return Err(ProtocolError::RejectedMessage(format!(
                "addressed to {}, this is {}",
                msg.to, self.config.id
            )));
        }
        let from_anyone = matches!(
            msg.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow
                | MessageBody::RequestVote { .. }
        );
        if !from_anyone && !self.log.membership().is_some_and(|m| m.contains(msg.from)) {
            return Err(ProtocolError::RejectedMessage(format!(
                "{} is not a member of this cluster",
                msg.from
            )));
        }
        self.advance_clock(now);

        // §5.1: the term first.
        if msg.term > self.term {
            match &msg.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    if self.is_sticky_against(*transfer) {
                        // Stickiness (dissertation §4.2.3): a live leader is known, so this
                        // candidate is disruptive; ignore it without adopting its term.
                        return Ok(());
                    }
                    if !pre_vote {
                        self.become_follower(msg.term, None);
                    }
                }
                // A granted pre-vote carries the term the candidate would campaign in; it only
                // counts for the pre-vote this node is running now (checked by the role).
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                    ..
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(msg.term, Some(msg.from)),
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            self.answer_stale(msg);
            return Ok(());
        }

        // Then the role.
        match msg.body {
            MessageBody::RequestVote { .. } => {
                self.handle_request_vote(msg);
                return Ok(());
            }
            MessageBody::ReadIndex { request, lease } => {
                self.handle_read_index(msg.from, request, lease);
                return Ok(());
            }
            MessageBody::ReadIndexResponse { request, index } => {
                self.handle_read_index_response(msg.from, request, index);
                return Ok(());
            }
            MessageBody::InstallSnapshotResponse {
                snapshot,
                offset,
                next_offset,
            } => {
                self.handle_install_snapshot_response(msg.from, snapshot, offset, next_offset);
                return Ok(());
            }
            _ => {}
        }
        match self.role {
            RoleState::Leader(_) => self.step_leader(msg),
            RoleState::PreCandidate(_) | RoleState::Candidate(_) => self.step_candidate(msg),
            RoleState::Follower { .. } => self.step_follower(msg),
        }
        Ok(())
    }

    /// Answers a message of an older term (§5.1): it changes nothing here.
    fn answer_stale(&mut self, msg: Message) {
        match msg.body {
            // Tell a stale leader about the newer term so it steps down: its followers are
            // sticky and ignore this node's vote requests, so without this reply a node whose
            // term ran ahead (say, after a partition) could never rejoin (dissertation §9.6).
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                let session = self.session;
                self.send(
                    msg.from,
                    MessageBody::HeartbeatResponse { round: 0, session },
                );
            }
            MessageBody::RequestVote {
                pre_vote, campaign, ..
            } => {
                self.send(
                    msg.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote,
                        granted: false,
                        campaign,
                    },
                );
            }
            // Dissertation §3.10: the leader of the previous term asked this node to take over,
            // but it had already started an election of its own (its timer fired first). That
            // election lacks the transfer's right to override stickiness, so campaign again as
            // the transfer asked; once, not for every duplicate.
            MessageBody::TimeoutNow
                if matches!(&self.role, RoleState::Candidate(c) if !c.by_transfer)
                    && msg.term.next() == self.term =>
            {
                self.become_candidate(true);
            }
            _ => {}
        }
    }

    /// The driver made the log durable up to `last` (duty 3 of [`Actions`]).
    pub fn persisted(&mut self, last: EntryId) {
        self.log.persisted_to(last);
        if self.is_leader() {
            // The leader counts itself toward a commit only now (dissertation §10.2.1).
            self.maybe_commit();
        }
    }

    /// The state machine applied every entry up to `index` (duty 5 of [`Actions`]).
    pub fn applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        self.resolve_reads();
    }

    /// Takes the work the driver must do now; see [`Actions`] for the order.
    pub fn take_actions(&mut self) -> Actions {
        match &self.role {
            RoleState::Leader(_) => self.flush_leader(),
            RoleState::Follower { .. } => self.flush_forwarded_reads(),
            _ => {}
        }
        let mut out = std::mem::take(&mut self.out);
        if self.hard_state_changed {
            self.hard_state_changed = false;
            out.hard_state = Some(self.hard_state());
        }
        out.entries = self.log.take_unsaved();
        if !self.installing() {
            out.committed = self.log.take_committed();
        }
        self.check_invariants();
        out
    }

    // ----- stepping down (§5.1) ------------------------------------------------------------

    /// Becomes a follower of `leader` (if known) in `term`, which may be the current one. What
    /// the previous role held goes with it (see [`Raft::change_role`]).
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        // The reads the previous role held are refused in the term they were taken in.
        self.change_role(RoleState::follower(leader));
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.hard_state_changed = true;
        }
        if leader.is_some() {
            self.leader_heard_at = Some(self.now);
        }
        self.reset_election_deadline();
    }

    /// Takes up `role`. The reads the previous role held fail with
    /// [`ProtocolError::NotLeader`]: a leader's own reads, and a follower's waiting for a read
    /// index; a leader refuses its followers' requests, so that they need not wait for their
    /// deadline.
    fn change_role(&mut self, role: RoleState) {
        let leader_hint = match &role {
            RoleState::Follower { leader, .. } => *leader,
            _ => None,
        };
        let failed = ProtocolError::NotLeader { leader_hint };
        match std::mem::replace(&mut self.role, role) {
            RoleState::Leader(mut was_leading) => {
                for reader in was_leading.reads.drain() {
                    match reader {
                        Reader::Local(id) => self.out.reads.push((id, Err(failed.clone()))),
                        Reader::Remote { from, request } => {
                            let body = MessageBody::ReadIndexResponse {
                                request,
                                index: None,
                            };
                            self.send(from, body);
                        }
                    }
                }
            }
            RoleState::Follower { mut forwarded, .. } => {
                for id in forwarded.drain() {
                    self.out.reads.push((id, Err(failed.clone())));
                }
            }
            RoleState::PreCandidate(_) | RoleState::Candidate(_) => {}
        }
    }

    // ----- helpers ------------------------------------------------------------------------------

    fn advance_clock(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }

    /// The leader's state, or the error a caller gets from any other role.
    fn leader_state(&mut self) -> Result<&mut LeaderState, ProtocolError> {
        let hint = self.leader();
        match &mut self.role {
            RoleState::Leader(leader) => Ok(leader),
            _ => Err(ProtocolError::NotLeader { leader_hint: hint }),
        }
    }

    fn term_committed(&self) -> bool {
        self.log.term_at(self.log.committed) == Some(self.term)
    }

    fn is_voter(&self) -> bool {
        self.log.voters().contains(self.config.id)
    }

    /// Whether this node may start elections: it is a voter, or it was one until a membership
    /// change that is not committed yet, and so may still be needed to elect a leader
    /// (dissertation §4.2.2: its own vote does not count in the new membership, but without
    /// it campaigning, a cluster whose only up-to-date nodes are such nodes could never elect
    /// one).
    fn may_campaign(&self) -> bool {
        if self.is_voter() {
            return true;
        }
        let index = self.log.membership_index();
        index > self.log.committed
            && self
                .log
                .membership_at(index.prev())
                .is_some_and(|m| m.is_voter(self.config.id))
    }

    /// The voters of either half but this node, in id order: whom a candidate asks.
    fn other_voters(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.log
            .voters()
            .ids()
            .into_iter()
            .filter(|&id| id != me)
            .collect()
    }

    /// Every member but this node, in id order: whom a leader replicates to.
    fn other_members(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.log
            .membership()
            .map(|m| m.members().into_iter().filter(|&id| id != me).collect())
            .unwrap_or_default()
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    /// A leader's messages depend on nothing unpersisted (duty 1 of [`Actions`]); everything a
    /// follower or candidate says may promise state it has not written yet (duty 4).
    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let msg = Message {
            from: self.config.id,
            to,
            term,
            body,
        };
        if self.is_leader() {
            self.out.messages.push(msg);
        } else {
            self.out.persisted_messages.push(msg);
        }
    }

    /// Asserts this node's own invariants (debug builds). What the role types rule out (a
    /// follower tracking progress or holding reads) needs no check.
    pub(crate) fn check_invariants(&self) {
        self.log.check();
        if let RoleState::Leader(leader) = &self.role {
            debug_assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
            for pr in leader.progress.values() {
                debug_assert!(pr.match_index < pr.next_index, "match < next");
                debug_assert!(pr.match_index <= self.log.last_index(), "match <= last");
                debug_assert!(
                    pr.inflights.bytes() <= self.config.max_inflight_bytes
                        || pr.inflights.len() == 1,
                    "bytes in flight within the budget, or one message alone"
                );
            }
        }
    }

    /// The number of the campaign this node is running (or ran last).
    #[cfg(test)]
    pub(crate) fn campaign(&self) -> u64 {
        self.campaign
    }

    /// The random number this run of the node answers rounds with.
    #[cfg(test)]
    pub(crate) fn session(&self) -> u64 {
        self.session
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &RaftLog {
        &self.log
    }
}

impl LeaderState {
    /// When CheckQuorum steps this leader down: one minimum election timeout after the later of
    /// taking office and the send time of the latest round a majority acknowledged.
    fn check_quorum_deadline(&self, election_timeout_min_ms: u64) -> Time {
        let heard = self
            .lease
            .confirmed_sent_at()
            .map_or(self.took_office_at, |t| t.max(self.took_office_at));
        heard.plus_ms(election_timeout_min_ms)
    }
}

/// A leader's message (duty 1 of [`Actions`]: it promises nothing unpersisted), built from the
/// fields it needs so that leader code can send while it holds its own state.
fn leader_message(out: &mut Actions, from: NodeId, term: Term, to: NodeId, body: MessageBody) {
    out.messages.push(Message {
        from,
        to,
        term,
        body,
    });
}

/// A leader tracks one `Progress` per other member, starting at `next`, with the flow-control
/// window of `config`.
fn fresh_progress(
    peers: Vec<NodeId>,
    next: LogIndex,
    config: &Config,
) -> BTreeMap<NodeId, Progress> {
    let (window, window_bytes) = (config.max_inflight_appends, config.max_inflight_bytes);
    peers
        .into_iter()
        .map(|peer| (peer, Progress::new(next, window, window_bytes)))
        .collect()
}

/// A snapshot whose last entry the log does not hold was installed after the log was last
/// purged (a crash between the two): the snapshot replaces the log, as the install would have.
fn reconcile_with_snapshot(mut state: InitialState) -> InitialState {
    let Some(last) = state.snapshot.as_ref().map(|s| s.last) else {
        return state;
    };
    if last.index <= state.log_start.index {
        return state;
    }
    let held = state
        .entries
        .iter()
        .find(|e| e.index == last.index)
        .is_some_and(|e| e.term == last.term);
    if !held {
        state.entries.clear();
        state.log_start = last;
    }
    state
}

fn validate_initial_state(state: &InitialState) -> Result<(), ProtocolError> {
    let bad = |why: String| Err(ProtocolError::InvalidState(why));
    if let Some(error) = &state.invalid_voters {
        return bad(format!("the first voters are no membership: {error}"));
    }
    if state.hard_state.term.0 >= 1 << 62 {
        return bad(format!("term {} is out of range", state.hard_state.term));
    }
    if state.hard_state.vote == Some(NodeId(0)) {
        return bad("node id 0 is reserved".into());
    }
    if state.log_start.term > state.hard_state.term {
        return bad(format!(
            "log start of term {}, beyond term {}",
            state.log_start.term, state.hard_state.term
        ));
    }
    if state.log_start.index.0 > 0
        && state
            .snapshot
            .as_ref()
            .is_none_or(|s| s.last.index < state.log_start.index)
    {
        return bad(format!(
            "the log starts after {} but no snapshot covers it",
            state.log_start.index
        ));
    }
    if state.applied < state.log_start.index {
        return bad(format!(
            "applied index {} before the log start {}: the state machine lacks purged entries",
            state.applied, state.log_start.index
        ));
    }
    let mut expected = state.log_start.index.next();
    let mut term = state.log_start.term;
    for entry in &state.entries {
        if entry.index != expected {
            return bad(format!(
                "entry {} where {} was expected",
                entry.index, expected
            ));
        }
        if entry.term < term || entry.term > state.hard_state.term {
            return bad(format!(
                "entry {} has term {}, outside {}..={}",
                entry.index, entry.term, term, state.hard_state.term
            ));
        }
        term = entry.term;
        expected = expected.next();
    }
    if state.applied > expected.prev() {
        return bad(format!(
            "applied index {} beyond the last entry {}",
            state.applied,
            expected.prev()
        ));
    }
    Ok(())
}
