//! Elections (§5.2), the vote's last-log comparison (§5.4.1), PreVote (dissertation §9.6) and
//! stickiness (dissertation §4.2.3): a node that hears a leader helps elect no one else.

use super::{Campaign, LeaderState, Raft, RoleState, fresh_progress};
use crate::lease::LeaseClock;
use crate::quorum::VoteResult;
use crate::reads::ReadQueue;
use crate::{Entry, Message, MessageBody, Payload};
use std::collections::BTreeMap;

impl Raft {
    pub(super) fn start_election(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Dissertation §9.6: ask first whether an election could be won, without touching the term.
    fn become_pre_candidate(&mut self) {
        if self.open_campaign(true, false) {
            self.become_candidate(false);
            return;
        }
        self.request_votes(true, false);
    }

    /// §5.2: increment the term, vote for itself, ask every other voter. `transfer`: the
    /// election was asked for by the leader (TimeoutNow), which lets it past stickiness.
    pub(super) fn become_candidate(&mut self, transfer: bool) {
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        self.hard_state_changed = true;
        self.leader_heard_at = None;
        if self.open_campaign(false, transfer) {
            self.become_leader();
            return;
        }
        self.request_votes(false, transfer);
    }

    /// Starts a new campaign with this node's own vote: a pre-vote round or an election.
    /// Returns whether that vote alone wins it (a single voter).
    fn open_campaign(&mut self, pre_vote: bool, by_transfer: bool) -> bool {
        self.campaign = self.campaign.wrapping_add(1);
        let votes = BTreeMap::from([(self.config.id, true)]);
        let won = self.log.voters().vote_result(&votes) == VoteResult::Won;
        let campaign = Campaign { votes, by_transfer };
        self.change_role(if pre_vote {
            RoleState::PreCandidate(campaign)
        } else {
            RoleState::Candidate(campaign)
        });
        self.reset_election_deadline();
        won
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
        let by_transfer = self.elected_by_transfer();
        let next = self.log.last_index().next();
        let progress = fresh_progress(self.other_members(), next, &self.config);
        // §5.4.2 / dissertation §6.4: a blank entry of the new term; once it commits, so has
        // everything before it, and reads may be served.
        self.log.push(Entry {
            term: self.term,
            index: next,
            payload: Payload::Blank,
        });
        let mut lease = LeaseClock::default();
        // The first AppendEntries (sent at the next take_actions) carry round 1.
        lease.start_round(self.now);
        self.change_role(RoleState::Leader(Box::new(LeaderState {
            progress,
            lease,
            took_office_at: self.now,
            heartbeat_deadline: self.now.plus_ms(self.config.heartbeat_interval_ms),
            reads: ReadQueue::default(),
            transfer: None,
            by_transfer,
            uncommitted_bytes: 0,
        })));
        self.on_round_acknowledged();
    }

    // ----- votes (§5.2, §5.4.1, dissertation §9.6) ------------------------------------------

    pub(super) fn handle_request_vote(&mut self, msg: Message) {
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
                || (self.vote.is_none() && self.leader().is_none())
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

    pub(super) fn step_candidate(&mut self, msg: Message) {
        let pre_candidate = matches!(self.role, RoleState::PreCandidate(_));
        match msg.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // §5.2: a leader of this term exists.
                self.become_follower(self.term, Some(msg.from));
                self.step_follower(msg);
            }
            MessageBody::RequestVoteResponse {
                pre_vote,
                granted,
                campaign,
            } => {
                if campaign != self.campaign || pre_vote != pre_candidate {
                    return; // an answer to an earlier campaign or phase
                }
                if pre_vote && granted && msg.term != self.term.next() {
                    return; // a grant for another term than the one this pre-vote proposes
                }
                let result = match &mut self.role {
                    RoleState::PreCandidate(c) | RoleState::Candidate(c) => {
                        c.votes.insert(msg.from, granted);
                        self.log.voters().vote_result(&c.votes)
                    }
                    _ => return,
                };
                match result {
                    VoteResult::Won if pre_vote => self.become_candidate(false),
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            // Dissertation §3.10: the leader of this term hands over leadership; a node that
            // was rehearsing an election of its own (pre-vote) takes it up at once.
            MessageBody::TimeoutNow if pre_candidate && self.is_voter() => {
                self.become_candidate(true);
            }
            _ => {}
        }
    }

    // ----- stickiness (dissertation §4.2.3) ------------------------------------------------------

    pub(super) fn reset_election_deadline(&mut self) {
        let timeout = self.rng.range(
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
        self.election_deadline = self.now.plus_ms(timeout);
    }

    /// True when this node must refuse to help an election along: it leads or heard a leader
    /// recently, and the election was not asked for by the leader itself (a transfer overrides
    /// stickiness).
    pub(super) fn is_sticky_against(&self, transfer: bool) -> bool {
        !transfer && self.heard_leader_recently()
    }

    /// True while this node must not help elect anyone else: it leads, or it heard from a leader
    /// less than a minimum election timeout ago. (The follower side of a leader's lease; the
    /// leader's own is [`Raft::lease_holds`].)
    fn heard_leader_recently(&self) -> bool {
        match self.role {
            RoleState::Leader(_) => true,
            _ => self
                .leader_heard_at
                .is_some_and(|t| self.now.ms_since(t) < self.config.election_timeout_min_ms),
        }
    }
}
