//! One node's Raft state machine: inputs in, [`Actions`] out, no I/O.
//!
//! Inputs are [`Raft::tick`] (time passes), [`Raft::step`] (a message arrives),
//! [`Raft::propose`], [`Raft::read`], [`Raft::transfer_leadership`], and the driver's reports
//! [`Raft::persisted`] and [`Raft::applied`]. After any of them the driver calls
//! [`Raft::take_actions`] and carries out the batch as [`Actions`] documents.
//!
//! `step` resolves the message's term first (§5.1: a higher term makes this node a follower, a
//! lower term is stale), then hands the message to the handler of the current role.

use crate::lease::LeaseClock;
use crate::log::RaftLog;
use crate::progress::{Progress, ReplicationState};
use crate::quorum::{JointConfig, VoteResult};
use crate::reads::ReadQueue;
use crate::rng::SplitMix64;
use crate::{
    Actions, AppendOutcome, Committed, Config, Entry, EntryData, EntryId, Error, Freshness,
    HardState, Instant, LogIndex, Message, MessageBody, NodeId, Payload, ReadId, Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

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
pub struct InitialState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// Every durable log entry, from index 1, in order.
    pub entries: Vec<Entry>,
    /// The last index the state machine has applied (0 when it starts empty).
    pub applied: LogIndex,
    /// The voting members of the cluster, this node normally among them.
    pub voters: BTreeSet<NodeId>,
}

/// What a leader knows of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The follower.
    pub id: NodeId,
    /// The highest index known replicated on it.
    pub match_index: LogIndex,
    /// The next index the leader will send it.
    pub next_index: LogIndex,
    /// When the leader last heard any answer from it, on the leader's clock.
    pub last_ack_at: Option<Instant>,
    /// True when the leader streams entries to it; false while it probes for a match.
    pub replicating: bool,
}

/// How fresh the data a node holds is: every write acknowledged anywhere before `as_of` (on
/// this node's clock) is at or below `index`, which this node holds committed. A node that has
/// applied `index` may serve a read that must reflect every write acknowledged more than
/// `now - as_of` ago (a bounded-staleness read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreshCommit {
    /// A committed index this node holds.
    pub index: LogIndex,
    /// Every write acknowledged before this instant is at or below `index`.
    pub as_of: Instant,
}

/// Freshness statements a follower keeps (see [`Freshness`]), bounded.
const MAX_FRESHNESS: usize = 64;
/// Rounds whose first answer time a follower remembers, bounded.
const MAX_ANSWERED_ROUNDS: usize = 1024;

/// A leadership transfer under way (dissertation §3.10).
#[derive(Clone, Copy, Debug)]
struct Transfer {
    target: NodeId,
    /// The transfer is abandoned if the target has not taken over by then.
    deadline: Instant,
    /// The latest heartbeat round when TimeoutNow was last sent; it is sent again if the target
    /// answers a later round (the first was lost, or reached a node that could not act on it).
    timeout_now_round: Option<u64>,
}

/// The Raft protocol for one node. See the [crate documentation](crate) for how to drive it.
#[derive(Debug)]
pub struct Raft {
    config: Config,
    voters: JointConfig,
    /// Persistent (Figure 2): the latest term seen.
    term: Term,
    /// Persistent (Figure 2): the candidate voted for in `term`.
    vote: Option<NodeId>,
    role: Role,
    /// The leader of `term`, once known.
    leader: Option<NodeId>,
    log: RaftLog,
    rng: SplitMix64,
    /// The latest time any input carried. Never goes back.
    now: Instant,
    /// Follower and candidates: when to start an election.
    election_deadline: Instant,
    /// Leader: when to send the next heartbeat round.
    heartbeat_deadline: Instant,
    /// When this node last heard from a current leader. While less than a minimum election
    /// timeout ago, it neither campaigns nor grants (pre)votes (dissertation §4.2.3, §6.4.1).
    /// A restarting node sets it to its start time: it may have acknowledged a lease before the
    /// crash and cannot remember.
    leader_heard_at: Option<Instant>,
    /// Candidates: votes received in this election (true = granted).
    votes: BTreeMap<NodeId, bool>,
    /// Leader: one entry per other voter, in id order.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: heartbeat rounds, their acknowledgement, and the lease.
    lease: LeaseClock,
    /// Leader: when it took office (the CheckQuorum clock starts there).
    became_leader_at: Instant,
    /// Leader: reads waiting for confirmation or apply.
    reads: ReadQueue,
    transfer: Option<Transfer>,
    /// The current candidacy (or leadership) began with a TimeoutNow.
    campaign_by_transfer: bool,
    /// Campaigns (pre-vote rounds and elections) started by this incarnation; vote requests
    /// carry it and answers echo it, so an answer to an earlier campaign is never counted.
    campaign: u64,
    /// Follower: the first time it answered each recent heartbeat round of the current leader,
    /// oldest first (rounds increase). Cleared when the term or the leader changes, since each
    /// leader numbers its own rounds.
    answered_rounds: VecDeque<(u64, Instant)>,
    /// Follower: what its leaders said of their commit index, as `FreshCommit`s with `as_of`
    /// and `index` both increasing; the newest one whose index this node has committed is the
    /// freshness of its data (bounded-staleness reads).
    freshness: VecDeque<FreshCommit>,
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
        now: Instant,
    ) -> Result<Raft, Error> {
        config.validate()?;
        validate_initial_state(&state)?;
        let mut raft = Raft {
            voters: JointConfig::simple(state.voters),
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::restore(state.entries, state.applied),
            rng: SplitMix64::new(seed ^ config.id.0.rotate_left(32)),
            now,
            election_deadline: now,
            heartbeat_deadline: now,
            leader_heard_at: Some(now),
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            lease: LeaseClock::default(),
            became_leader_at: now,
            reads: ReadQueue::default(),
            transfer: None,
            campaign_by_transfer: false,
            campaign: 0,
            answered_rounds: VecDeque::new(),
            freshness: VecDeque::new(),
            hard_state_changed: false,
            out: Actions::default(),
            config,
        };
        raft.reset_election_deadline();
        Ok(raft)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Time has passed: start an election, send heartbeats, step down without a quorum, or
    /// abandon a transfer, as due. Call it at [`Raft::next_deadline`] (calling it more often is
    /// harmless).
    pub fn tick(&mut self, now: Instant) {
        self.advance_clock(now);
        match self.role {
            Role::Leader => {
                if self.transfer.is_some_and(|t| now >= t.deadline) {
                    self.transfer = None;
                }
                if self.config.check_quorum && now >= self.check_quorum_deadline() {
                    // Dissertation §6.2: no majority heard from in an election timeout.
                    self.become_follower(self.term, None);
                    return;
                }
                if now >= self.heartbeat_deadline {
                    self.broadcast_heartbeat();
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if now >= self.election_deadline {
                    if self.is_voter() {
                        self.start_election();
                    } else {
                        // A non-voter never campaigns; keep its deadline ahead of the clock so
                        // that a driver sleeping until it does not spin.
                        self.reset_election_deadline();
                    }
                }
            }
        }
    }

    /// A message arrived. A malformed message, one misaddressed, or one from a node outside
    /// the cluster is refused with [`Error::RejectedMessage`] and changes nothing.
    pub fn step(&mut self, now: Instant, msg: Message) -> Result<(), Error> {
        msg.validate().map_err(Error::RejectedMessage)?;
        if msg.to != self.config.id {
            return Err(Error::RejectedMessage(format!(
                "addressed to {}, this is {}",
                msg.to, self.config.id
            )));
        }
        if !self.voters.contains(msg.from) {
            return Err(Error::RejectedMessage(format!(
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
                | MessageBody::TimeoutNow => self.become_follower(msg.term, Some(msg.from)),
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            match &msg.body {
                // Tell a stale leader about the newer term so it steps down: its followers are
                // sticky and ignore this node's vote requests, so without this reply a node whose
                // term ran ahead (say, after a partition) could never rejoin (dissertation §9.6).
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(msg.from, MessageBody::HeartbeatResponse { round: 0 });
                }
                MessageBody::RequestVote {
                    pre_vote, campaign, ..
                } => {
                    let (pre_vote, campaign) = (*pre_vote, *campaign);
                    self.send(
                        msg.from,
                        MessageBody::RequestVoteResponse {
                            pre_vote,
                            granted: false,
                            campaign,
                        },
                    );
                }
                // Dissertation §3.10: the leader of the previous term asked this node to take
                // over, but it had already started an election of its own (its timer fired
                // first). That election lacks the transfer's right to override stickiness, so
                // campaign again as the transfer asked; once, not for every duplicate.
                MessageBody::TimeoutNow
                    if self.role == Role::Candidate
                        && !self.campaign_by_transfer
                        && msg.term.next() == self.term =>
                {
                    self.become_candidate(true);
                }
                _ => {}
            }
            return Ok(());
        }

        // Then the role.
        if let MessageBody::RequestVote { .. } = msg.body {
            self.handle_request_vote(msg);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(msg),
            Role::PreCandidate | Role::Candidate => self.step_candidate(msg),
            Role::Follower => self.step_follower(msg),
        }
        Ok(())
    }

    /// Appends a command to the leader's log and returns its id: once an applied entry has this
    /// index and term, the command is committed; if the index is applied with another term,
    /// the command was lost in a change of leader.
    pub fn propose(&mut self, command: impl Into<EntryData>) -> Result<EntryId, Error> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if self.transfer.is_some() {
            return Err(Error::TransferInProgress);
        }
        let entry = Entry {
            term: self.term,
            index: self.log.last_index().next(),
            payload: Payload::Command(command.into()),
        };
        let id = entry.id();
        self.log.push(entry);
        Ok(id)
    }

    /// Queues a read on the leader. Its outcome comes back in [`Actions::reads`] once leadership
    /// is confirmed for it (dissertation §6.4) and the state machine has applied up to its index.
    pub fn read(&mut self, now: Instant, id: ReadId, mode: ReadMode) -> Result<(), Error> {
        self.advance_clock(now);
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        let committed = self.log.committed;
        if mode == ReadMode::Lease && self.lease_holds() {
            if committed <= self.log.applied {
                // Nothing to wait for: the common case of a lease read, answered without
                // touching the queue.
                self.out.reads.push((id, Ok(committed)));
            } else {
                self.reads.push(id, Some(committed), 0);
            }
        } else {
            // Until an entry of this term commits, the commit index may be behind what earlier
            // leaders committed; the read gets its index when that entry commits. Either way it
            // waits for a round not sent yet, so it cannot be ready now.
            let index = self.term_committed().then_some(committed);
            self.reads.push(id, index, self.lease.latest_round() + 1);
        }
        Ok(())
    }

    /// Hands leadership to `to` (dissertation §3.10): brings it up to date, then tells it to
    /// start an election at once. The lease is given up for the rest of this term, and new
    /// proposals are refused until the transfer ends or is abandoned after a minimum election
    /// timeout.
    pub fn transfer_leadership(&mut self, now: Instant, to: NodeId) -> Result<(), Error> {
        self.advance_clock(now);
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if to == self.config.id {
            return Err(Error::InvalidArgument(format!(
                "{to} is already the leader"
            )));
        }
        if !self.voters.contains(to) {
            return Err(Error::InvalidArgument(format!("{to} is not a voter")));
        }
        if self.transfer.is_some_and(|t| t.target == to) {
            return Ok(());
        }
        self.transfer = Some(Transfer {
            target: to,
            deadline: now.plus_ms(self.config.election_timeout_min_ms),
            timeout_now_round: None,
        });
        // Once the target may win, this leader must not serve from its lease any more; a
        // delayed TimeoutNow could start that election at any time in this term.
        self.lease.void();
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// The driver made the log durable up to `last` (duty 3 of [`Actions`]).
    pub fn persisted(&mut self, last: EntryId) {
        self.log.persisted_to(last);
        if self.role == Role::Leader {
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
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let mut out = std::mem::take(&mut self.out);
        if self.hard_state_changed {
            self.hard_state_changed = false;
            out.hard_state = Some(self.hard_state());
        }
        out.entries = self.log.take_unsaved();
        out.committed = self.log.take_committed();
        self.check_invariants();
        out
    }

    // ----- what the driver and observers may read --------------------------------------------

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
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
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

    /// The voting members.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.voters.ids()
    }

    /// True while this node is leader, has committed an entry of its term, and its lease holds
    /// at the latest time it was given: it may serve a read without a round trip.
    pub fn lease_holds(&self) -> bool {
        self.role == Role::Leader
            && self.term_committed()
            && self.lease.holds(self.now, self.config.lease_duration_ms)
    }

    /// When the current lease ends, if this node is a leader that holds one.
    pub fn lease_valid_until(&self) -> Option<Instant> {
        if self.lease_holds() {
            self.lease.valid_until(self.config.lease_duration_ms)
        } else {
            None
        }
    }

    /// The next instant at which [`Raft::tick`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        match self.role {
            Role::Leader => {
                let mut at = self.heartbeat_deadline;
                if self.config.check_quorum {
                    at = at.min(self.check_quorum_deadline());
                }
                if let Some(t) = self.transfer {
                    at = at.min(t.deadline);
                }
                at
            }
            _ => self.election_deadline,
        }
    }

    /// The leader's view of a follower's log: its match index, if this node leads and `peer` is
    /// a follower.
    #[cfg(test)]
    pub(crate) fn match_index(&self, peer: NodeId) -> Option<LogIndex> {
        self.progress.get(&peer).map(|p| p.match_index)
    }

    /// The leader's view of every follower, in id order (empty unless this node leads).
    pub fn peers(&self) -> Vec<PeerProgress> {
        self.progress
            .iter()
            .map(|(&id, p)| PeerProgress {
                id,
                match_index: p.match_index,
                next_index: p.next_index,
                last_ack_at: p.last_ack_at,
                replicating: p.state == ReplicationState::Replicate,
            })
            .collect()
    }

    /// How fresh this node's committed data is, for bounded-staleness reads: the newest
    /// [`FreshCommit`] it can vouch for, or `None`.
    ///
    /// A leader that has committed an entry of its term vouches for its commit index as of the
    /// send time of its latest heartbeat round a majority acknowledged: no later leader can have
    /// been elected before that round reached the majority, so every write acknowledged before
    /// it was sent is committed, and so in this leader's log. This needs no clock assumption.
    ///
    /// A follower vouches for what its leader stated in a [`Freshness`] (sent only while the
    /// leader's lease holds, so it rests on the lease's bounded clock drift), as of the first
    /// time the follower answered the round the statement names, and only for an index it has
    /// itself committed.
    pub fn fresh_commit(&self) -> Option<FreshCommit> {
        match self.role {
            Role::Leader if self.term_committed() => {
                self.lease.confirmed_sent_at().map(|as_of| FreshCommit {
                    index: self.log.committed,
                    as_of,
                })
            }
            Role::Leader => None,
            _ => self
                .freshness
                .iter()
                .rev()
                .find(|f| f.index <= self.log.committed)
                .copied(),
        }
    }

    /// True when this node won (or is running) an election it started because the previous
    /// leader handed over leadership (TimeoutNow).
    pub fn elected_by_transfer(&self) -> bool {
        self.campaign_by_transfer
    }

    // ----- roles (§5.1, §5.2) ----------------------------------------------------------------

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.campaign_by_transfer = false;
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.hard_state_changed = true;
        }
        self.role = Role::Follower;
        self.leader = leader;
        if leader.is_some() {
            self.leader_heard_at = Some(self.now);
        }
        self.answered_rounds.clear();
        self.votes.clear();
        self.progress.clear();
        self.lease = LeaseClock::default();
        self.transfer = None;
        let hint = self.leader;
        for id in self.reads.drain() {
            self.out
                .reads
                .push((id, Err(Error::NotLeader { leader_hint: hint })));
        }
        self.reset_election_deadline();
    }

    fn start_election(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Dissertation §9.6: ask first whether an election could be won, without touching the term.
    fn become_pre_candidate(&mut self) {
        self.campaign_by_transfer = false;
        self.campaign += 1;
        self.answered_rounds.clear();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_deadline();
        if self.voters.vote_result(&self.votes) == VoteResult::Won {
            self.become_candidate(false);
            return;
        }
        self.request_votes(true, false);
    }

    /// §5.2: increment the term, vote for itself, ask every other voter.
    fn become_candidate(&mut self, transfer: bool) {
        self.campaign_by_transfer = transfer;
        self.campaign += 1;
        self.answered_rounds.clear();
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        self.hard_state_changed = true;
        self.role = Role::Candidate;
        self.leader = None;
        self.leader_heard_at = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_deadline();
        if self.voters.vote_result(&self.votes) == VoteResult::Won {
            self.become_leader();
            return;
        }
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let term = if pre_vote {
            self.term.next()
        } else {
            self.term
        };
        let last_log = self.log.last_id();
        for peer in self.other_voters() {
            self.out.persisted_messages.push(Message {
                from: self.config.id,
                to: peer,
                term,
                body: MessageBody::RequestVote {
                    pre_vote,
                    last_log,
                    transfer,
                    campaign: self.campaign,
                },
            });
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.transfer = None;
        self.lease = LeaseClock::default();
        self.became_leader_at = self.now;
        let next = self.log.last_index().next();
        let window = self.config.max_inflight_appends;
        self.progress = self
            .other_voters()
            .into_iter()
            .map(|peer| (peer, Progress::new(next, window)))
            .collect();
        // §5.4.2 / dissertation §6.4: a blank entry of the new term; once it commits, so has
        // everything before it, and reads may be served.
        self.log.push(Entry {
            term: self.term,
            index: next,
            payload: Payload::Blank,
        });
        // The first AppendEntries (sent at the next take_actions) carry round 1.
        self.lease.start_round(self.now);
        self.heartbeat_deadline = self.now.plus_ms(self.config.heartbeat_interval_ms);
        self.on_round_acknowledged();
    }

    // ----- votes (§5.2, §5.4.1, dissertation §9.6) ------------------------------------------

    fn handle_request_vote(&mut self, msg: Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log,
            transfer,
            campaign,
        } = msg.body
        else {
            return;
        };
        // Stickiness holds whatever brought this node to the request's term: a node that heard
        // from a leader less than a minimum election timeout ago helps elect no one else
        // (dissertation §4.2.3, §6.4.1), unless the leader itself asked for the election.
        let sticky = self.vote != Some(msg.from) && self.is_sticky_against(transfer);
        // One vote per term, first come first served; a pre-vote for a later term promises
        // nothing and may be granted to anyone.
        let can_vote = !sticky
            && (self.vote == Some(msg.from)
                || (self.vote.is_none() && self.leader.is_none())
                || (pre_vote && msg.term > self.term));
        let granted = can_vote && self.log.is_up_to_date(last_log);
        if granted && !pre_vote {
            self.vote = Some(msg.from);
            self.hard_state_changed = true;
            self.reset_election_deadline();
        }
        let term = if granted && pre_vote {
            msg.term
        } else {
            self.term
        };
        self.send_with_term(
            msg.from,
            term,
            MessageBody::RequestVoteResponse {
                pre_vote,
                granted,
                campaign,
            },
        );
    }

    fn step_candidate(&mut self, msg: Message) {
        match msg.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                // §5.2: a leader of this term exists.
                self.become_follower(self.term, Some(msg.from));
                self.step_follower(msg);
            }
            MessageBody::RequestVoteResponse {
                pre_vote,
                granted,
                campaign,
            } => {
                if campaign != self.campaign || pre_vote != (self.role == Role::PreCandidate) {
                    return; // an answer to an earlier campaign or phase
                }
                if pre_vote && granted && msg.term != self.term.next() {
                    return; // a grant for another term than the one this pre-vote proposes
                }
                self.votes.insert(msg.from, granted);
                match self.voters.vote_result(&self.votes) {
                    VoteResult::Won if pre_vote => self.become_candidate(false),
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            // Dissertation §3.10: the leader of this term hands over leadership; a node that
            // was rehearsing an election of its own (pre-vote) takes it up at once.
            MessageBody::TimeoutNow if self.role == Role::PreCandidate && self.is_voter() => {
                self.become_candidate(true);
            }
            _ => {}
        }
    }

    // ----- followers (§5.3) -------------------------------------------------------------------

    fn step_follower(&mut self, msg: Message) {
        match msg.body {
            MessageBody::AppendEntries {
                prev_log,
                entries,
                leader_commit,
                round,
            } => {
                self.heard_from_leader(msg.from);
                let outcome = self.handle_append(prev_log, entries, leader_commit);
                if let Some(outcome) = outcome {
                    self.answered_round(round);
                    self.send(
                        msg.from,
                        MessageBody::AppendEntriesResponse { round, outcome },
                    );
                }
            }
            MessageBody::Heartbeat {
                commit,
                round,
                freshness,
            } => {
                self.heard_from_leader(msg.from);
                // The leader sends at most our match index, so those entries are the leader's.
                self.log.commit_to(commit);
                if let Some(freshness) = freshness {
                    self.record_freshness(freshness);
                }
                self.answered_round(round);
                self.send(msg.from, MessageBody::HeartbeatResponse { round });
            }
            // Dissertation §3.10: campaign at once, skipping the pre-vote.
            MessageBody::TimeoutNow if self.is_voter() => self.become_candidate(true),
            _ => {}
        }
    }

    /// Remembers when this follower first answered `round` (its answer leaves no earlier than
    /// now; a later answer to the same round may be the one the leader hears first, so only the
    /// first counts).
    fn answered_round(&mut self, round: u64) {
        if round == 0
            || self
                .answered_rounds
                .back()
                .is_some_and(|&(r, _)| r >= round)
        {
            return;
        }
        if self.answered_rounds.len() >= MAX_ANSWERED_ROUNDS {
            self.answered_rounds.pop_front();
        }
        self.answered_rounds.push_back((round, self.now));
    }

    /// The leader vouched for its commit index as of this follower's answer to a round.
    fn record_freshness(&mut self, freshness: Freshness) {
        // The first answer to the named round, or to an earlier one (sent no later): the
        // leader's commit index covers every write acknowledged before it.
        let Some(&(_, as_of)) = self
            .answered_rounds
            .iter()
            .rev()
            .find(|&&(r, _)| r <= freshness.answered_round)
        else {
            return;
        };
        while let Some(&(r, _)) = self.answered_rounds.front() {
            if r >= freshness.answered_round {
                break;
            }
            self.answered_rounds.pop_front();
        }
        let fact = FreshCommit {
            index: freshness.commit,
            as_of,
        };
        if self
            .freshness
            .back()
            .is_some_and(|last| last.as_of >= as_of)
        {
            return;
        }
        // A newer statement with an index no higher makes the older ones useless.
        while self
            .freshness
            .back()
            .is_some_and(|last| last.index >= fact.index)
        {
            self.freshness.pop_back();
        }
        // Only the newest statement this node has committed, and the ones after it, are useful.
        while self
            .freshness
            .get(1)
            .is_some_and(|next| next.index <= self.log.committed)
        {
            self.freshness.pop_front();
        }
        if self.freshness.len() >= MAX_FRESHNESS {
            self.freshness.pop_back();
        }
        self.freshness.push_back(fact);
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        if self.leader != Some(leader) {
            self.answered_rounds.clear();
        }
        self.leader = Some(leader);
        self.leader_heard_at = Some(self.now);
        self.reset_election_deadline();
    }

    /// Figure 2, AppendEntries receiver rules 2–5. `None` when the message must be dropped
    /// unanswered (a leader asking to remove committed entries).
    fn handle_append(
        &mut self,
        prev_log: EntryId,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) -> Option<AppendOutcome> {
        if !self.log.matches(prev_log) {
            return Some(AppendOutcome::Reject {
                rejected: prev_log.index,
                hint: self.log.conflict_hint(prev_log.index),
            });
        }
        let last_new = LogIndex(prev_log.index.0 + entries.len() as u64);
        if self.log.append_after_match(entries).is_err() {
            return None;
        }
        self.log.commit_to(leader_commit.min(last_new));
        Some(AppendOutcome::Success {
            match_index: last_new,
        })
    }

    // ----- leaders (§5.3, §5.4.2) ---------------------------------------------------------------

    fn step_leader(&mut self, msg: Message) {
        match msg.body {
            MessageBody::AppendEntriesResponse { round, outcome } => {
                self.handle_append_response(msg.from, round, outcome);
            }
            MessageBody::HeartbeatResponse { round } => {
                let now = self.now;
                let Some(pr) = self.progress.get_mut(&msg.from) else {
                    return;
                };
                pr.acked_round = pr.acked_round.max(round);
                pr.last_ack_at = Some(now);
                pr.probe_sent = false;
                if pr.state == ReplicationState::Replicate && pr.inflights.full() {
                    // The follower is alive but some acknowledgement went missing.
                    pr.inflights.free_first();
                }
                let behind = pr.match_index < self.log.last_index();
                self.maybe_send_timeout_now(msg.from);
                self.on_round_acknowledged();
                if behind {
                    // Entries in flight may have been lost: an append at the follower's expected
                    // position either succeeds or draws a rejection that restarts probing.
                    self.maybe_send_append(msg.from, true);
                }
            }
            _ => {}
        }
    }

    fn handle_append_response(&mut self, from: NodeId, round: u64, outcome: AppendOutcome) {
        let last = self.log.last_index();
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.acked_round = pr.acked_round.max(round);
        pr.last_ack_at = Some(now);
        match outcome {
            AppendOutcome::Success { match_index } => {
                if match_index > last {
                    return; // claims entries this leader never had: ignore
                }
                let updated = pr.maybe_update(match_index);
                if pr.state == ReplicationState::Probe {
                    pr.become_replicate();
                } else {
                    pr.inflights.free_to(match_index);
                }
                if updated {
                    self.maybe_commit();
                }
                self.maybe_send_timeout_now(from);
            }
            AppendOutcome::Reject { rejected, hint } => {
                let next = self.log.next_from_hint(rejected, hint);
                if pr.maybe_decrease_to(rejected, next) && pr.state == ReplicationState::Replicate {
                    pr.become_probe();
                }
            }
        }
        self.on_round_acknowledged();
    }

    /// §5.3, §5.4.2: commit the highest index a majority holds, but only by counting replicas
    /// of an entry of the current term (Figure 8).
    fn maybe_commit(&mut self) {
        let me = self.config.id;
        let persisted = self.log.persisted;
        let progress = &self.progress;
        let majority = LogIndex(self.voters.committed(|id| {
            if id == me {
                persisted.0
            } else {
                progress.get(&id).map_or(0, |p| p.match_index.0)
            }
        }));
        if majority > self.log.committed && self.log.term_at(majority) == Some(self.term) {
            let first_in_term = !self.term_committed();
            self.log.commit_to(majority);
            if first_in_term {
                self.reads.assign_index(self.log.committed);
            }
        }
    }

    /// Sends what each follower can take now: new entries, a commit advance, or a probe.
    fn flush_leader(&mut self) {
        if self.reads.needs_round(self.lease.latest_round()) {
            // One round confirms every read queued since the last one (batching). Any number
            // of rounds may be in flight: the lease clock keeps their send times per
            // millisecond, not per round.
            self.broadcast_heartbeat();
        }
        // Walks the peers by id without collecting them (this runs once per batch).
        let mut next = self.progress.keys().next().copied();
        while let Some(peer) = next {
            // Bounded: each pass either sends or returns false, and the window limits sends.
            for _ in 0..=self.config.max_inflight_appends {
                if !self.maybe_send_append(peer, false) {
                    break;
                }
            }
            next = self
                .progress
                .range((Bound::Excluded(peer), Bound::Unbounded))
                .next()
                .map(|(&id, _)| id);
        }
    }

    /// Sends the next AppendEntries to `peer` if it can take one and there is something to send
    /// (or `even_if_empty`). Returns whether a message went out.
    fn maybe_send_append(&mut self, peer: NodeId, even_if_empty: bool) -> bool {
        let last = self.log.last_index();
        let committed = self.log.committed;
        let round = self.lease.latest_round();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return false;
        };
        if pr.paused() {
            return false;
        }
        let wanted = even_if_empty
            || match pr.state {
                ReplicationState::Probe => pr.match_index < last || pr.sent_commit < committed,
                ReplicationState::Replicate => pr.next_index <= last || pr.sent_commit < committed,
            };
        if !wanted {
            return false;
        }
        let prev_index = pr.next_index.prev();
        let Some(prev_term) = self.log.term_at(prev_index) else {
            // Cannot happen while the leader's log only grows; recover by probing from the end.
            pr.next_index = last.next();
            pr.become_probe();
            return false;
        };
        let entries = self.log.slice(
            pr.next_index,
            last,
            self.config.max_entries_per_append,
            self.config.max_bytes_per_append,
        );
        let last_sent = entries.last().map_or(prev_index, |e| e.index);
        pr.sent(last_sent, !entries.is_empty());
        pr.sent_commit = committed;
        let body = MessageBody::AppendEntries {
            prev_log: EntryId {
                term: prev_term,
                index: prev_index,
            },
            entries,
            leader_commit: committed,
            round,
        };
        self.send(peer, body);
        true
    }

    fn broadcast_heartbeat(&mut self) {
        // Whether the lease holds as this round goes out: only then can the leader vouch that no
        // other leader acknowledged a write (see `Freshness`).
        let vouch = self.lease_holds();
        let round = self.lease.start_round(self.now);
        self.heartbeat_deadline = self.now.plus_ms(self.config.heartbeat_interval_ms);
        let committed = self.log.committed;
        let beats: Vec<(NodeId, LogIndex, u64)> = self
            .progress
            .iter()
            .map(|(&id, pr)| (id, committed.min(pr.match_index), pr.acked_round))
            .collect();
        for (peer, commit, answered_round) in beats {
            let freshness = (vouch && answered_round > 0).then_some(Freshness {
                answered_round,
                commit: committed,
            });
            self.send(
                peer,
                MessageBody::Heartbeat {
                    commit,
                    round,
                    freshness,
                },
            );
        }
        self.on_round_acknowledged();
    }

    /// A follower acknowledged a round (or this leader started one): move the confirmed round,
    /// and with it the lease and the reads waiting on it.
    fn on_round_acknowledged(&mut self) {
        let me = self.config.id;
        let latest = self.lease.latest_round();
        let progress = &self.progress;
        let confirmed = self.voters.committed(|id| {
            if id == me {
                latest
            } else {
                progress.get(&id).map_or(0, |p| p.acked_round)
            }
        });
        if self.lease.confirm(confirmed) {
            self.resolve_reads();
        }
    }

    /// Sends TimeoutNow to a transfer's target once it holds the whole log; again if it later
    /// answers a round sent after the last TimeoutNow (which was then lost, or reached it before
    /// it could act on it).
    fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last = self.log.last_index();
        let latest_round = self.lease.latest_round();
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        if transfer.target != peer {
            return;
        }
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        let due = transfer
            .timeout_now_round
            .is_none_or(|sent| pr.acked_round > sent);
        if due && pr.match_index == last {
            transfer.timeout_now_round = Some(latest_round);
            self.send(peer, MessageBody::TimeoutNow);
        }
    }

    fn resolve_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let ready = self
            .reads
            .take_ready(self.lease.confirmed_round(), self.log.applied);
        self.out
            .reads
            .extend(ready.into_iter().map(|(id, index)| (id, Ok(index))));
    }

    // ----- helpers ------------------------------------------------------------------------------

    fn advance_clock(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn reset_election_deadline(&mut self) {
        let timeout = self.rng.range(
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
        self.election_deadline = self.now.plus_ms(timeout);
    }

    fn check_quorum_deadline(&self) -> Instant {
        let heard = self
            .lease
            .confirmed_sent_at()
            .map_or(self.became_leader_at, |t| t.max(self.became_leader_at));
        heard.plus_ms(self.config.election_timeout_min_ms)
    }

    /// True when this node must refuse to help an election along: it is in lease, and the
    /// election was not asked for by the leader itself (a transfer overrides stickiness).
    fn is_sticky_against(&self, transfer: bool) -> bool {
        !transfer && self.in_lease()
    }

    /// True while this node must not help elect anyone else: it leads, or it heard from a leader
    /// less than a minimum election timeout ago.
    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            _ => self
                .leader_heard_at
                .is_some_and(|t| self.now.ms_since(t) < self.config.election_timeout_min_ms),
        }
    }

    fn term_committed(&self) -> bool {
        self.log.term_at(self.log.committed) == Some(self.term)
    }

    fn is_voter(&self) -> bool {
        self.voters.contains(self.config.id)
    }

    fn other_voters(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.voters
            .ids()
            .into_iter()
            .filter(|&id| id != me)
            .collect()
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            leader_hint: self.leader,
        }
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
        if self.role == Role::Leader {
            self.out.messages.push(msg);
        } else {
            self.out.persisted_messages.push(msg);
        }
    }

    /// Asserts this node's own invariants (debug builds).
    pub(crate) fn check_invariants(&self) {
        self.log.check();
        if self.role == Role::Leader {
            debug_assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
            debug_assert_eq!(self.leader, Some(self.config.id));
            for pr in self.progress.values() {
                debug_assert!(pr.match_index < pr.next_index, "match < next");
                debug_assert!(pr.match_index <= self.log.last_index(), "match <= last");
            }
        } else {
            debug_assert!(self.progress.is_empty(), "only a leader tracks progress");
            debug_assert_eq!(self.reads.len(), 0, "only a leader holds reads");
        }
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &RaftLog {
        &self.log
    }
}

fn validate_initial_state(state: &InitialState) -> Result<(), Error> {
    let bad = |why: String| Err(Error::InvalidState(why));
    if state.voters.is_empty() {
        return bad("no voters".into());
    }
    if state.hard_state.term.0 >= 1 << 62 {
        return bad(format!("term {} is out of range", state.hard_state.term));
    }
    if state.voters.contains(&NodeId(0)) || state.hard_state.vote == Some(NodeId(0)) {
        return bad("node id 0 is reserved".into());
    }
    let mut expected = LogIndex(1);
    let mut term = Term(0);
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
