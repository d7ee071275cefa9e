//! Serving reads without writing to the log: the leader's lease and ReadIndex (dissertation
//! §6.4, §6.4.1), how fresh a node's data is for bounded-staleness reads, CheckQuorum's clock
//! (§6.2, shared with the lease), and leadership transfer (§3.10), which gives the lease up.

use super::{MAX_ANSWERED_ROUNDS, MAX_FRESHNESS, Raft, RoleState, leader_message};
use crate::progress::ReplicationState;
use crate::reads::Reader;
use crate::{
    Freshness, LogIndex, Message, MessageBody, NodeId, ProtocolError, ReadId, ReadMode, Time,
};

/// How fresh the data a node holds is: every write acknowledged anywhere before `as_of` (on
/// this node's clock) is at or below `index`, which this node holds committed. A node that has
/// applied `index` may serve a read that must reflect every write acknowledged more than
/// `now - as_of` ago (a bounded-staleness read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FreshCommit {
    /// A committed index this node holds.
    pub index: LogIndex,
    /// Every write acknowledged before this instant is at or below `index`.
    pub as_of: Time,
}

/// A leadership transfer under way (dissertation §3.10).
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub(super) target: NodeId,
    /// The transfer is abandoned if the target has not taken over by then.
    pub(super) deadline: Time,
    /// The latest heartbeat round when TimeoutNow was last sent; it is sent again if the target
    /// answers a later round (the first was lost, or reached a node that could not act on it).
    timeout_now_round: Option<u64>,
}

impl Raft {
    /// Queues a read. Its outcome comes back in [`crate::Actions::reads`] once leadership is
    /// confirmed for it (dissertation §6.4) and the state machine has applied up to its index.
    ///
    /// On a follower that knows its leader, the read is forwarded: the follower asks the leader
    /// for a read index (one request for all the reads of a batch), the leader answers with its
    /// commit index once a heartbeat round (or, for `Lease`, its lease) confirms it still leads,
    /// and the follower serves the read once it has applied that index. A read whose request is
    /// unanswered when the follower stops following that leader fails with
    /// [`ProtocolError::NotLeader`]; one unanswered after a maximum election timeout, with
    /// [`ProtocolError::Timeout`]. Candidates, and followers that know no leader, refuse reads
    /// with `NotLeader`.
    pub fn read(&mut self, now: Time, id: ReadId, mode: ReadMode) -> Result<(), ProtocolError> {
        self.advance_clock(now);
        if let RoleState::Follower {
            leader: Some(_),
            forwarded,
        } = &mut self.role
        {
            forwarded.push(id, mode == ReadMode::Lease);
            return Ok(());
        }
        let lease_holds = self.lease_holds();
        let term_committed = self.term_committed();
        let committed = self.log.committed;
        let applied = self.log.applied;
        let leader = self.leader_state()?;
        if mode == ReadMode::Lease && lease_holds {
            if committed <= applied {
                // Nothing to wait for: the common case of a lease read, answered without
                // touching the queue.
                self.out.reads.push((id, Ok(committed)));
            } else {
                leader.reads.push(Reader::Local(id), Some(committed), 0);
            }
        } else {
            // Until an entry of this term commits, the commit index may be behind what earlier
            // leaders committed; the read gets its index when that entry commits. Either way it
            // waits for a round not sent yet, so it cannot be ready now.
            let index = term_committed.then_some(committed);
            let round = leader.lease.latest_round() + 1;
            leader.reads.push(Reader::Local(id), index, round);
        }
        Ok(())
    }

    /// A follower asks for a read index: confirmed as for the leader's own reads, but answered
    /// as soon as it is confirmed (the follower waits for its own apply). Any other role
    /// refuses at once.
    pub(super) fn handle_read_index(&mut self, from: NodeId, request: u64, lease: bool) {
        let lease_holds = lease && self.lease_holds();
        let term_committed = self.term_committed();
        let committed = self.log.committed;
        let RoleState::Leader(leader) = &mut self.role else {
            let body = MessageBody::ReadIndexResponse {
                request,
                index: None,
            };
            self.send(from, body);
            return;
        };
        if lease_holds {
            let body = MessageBody::ReadIndexResponse {
                request,
                index: Some(committed),
            };
            leader_message(&mut self.out, self.config.id, self.term, from, body);
        } else {
            let index = term_committed.then_some(committed);
            let round = leader.lease.latest_round() + 1;
            leader
                .reads
                .push(Reader::Remote { from, request }, index, round);
        }
    }

    /// The leader answered a read-index request of this follower.
    pub(super) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        request: u64,
        index: Option<LogIndex>,
    ) {
        let RoleState::Follower {
            leader: Some(leader),
            forwarded,
        } = &mut self.role
        else {
            return;
        };
        if *leader != from {
            return;
        }
        let reads = forwarded.answered(request);
        match index {
            Some(index) => {
                if !reads.is_empty() {
                    self.reads_to_apply.entry(index).or_default().extend(reads);
                    self.resolve_reads();
                }
            }
            None => {
                let failed = ProtocolError::NotLeader { leader_hint: None };
                for id in reads {
                    self.out.reads.push((id, Err(failed.clone())));
                }
            }
        }
    }

    /// Sends the read-index requests for the reads a follower took since its last batch.
    pub(super) fn flush_forwarded_reads(&mut self) {
        let deadline = self.now.plus_ms(self.config.election_timeout_max_ms);
        let RoleState::Follower {
            leader: Some(leader),
            forwarded,
        } = &mut self.role
        else {
            return;
        };
        if !forwarded.has_unsent() {
            return;
        }
        let number = &mut self.read_request;
        let requests = forwarded.take_unsent(deadline, || {
            *number += 1;
            *number
        });
        for (request, lease) in requests {
            // A follower's message: it goes out with the others after the batch's writes.
            self.out.persisted_messages.push(Message {
                from: self.config.id,
                to: *leader,
                term: self.term,
                body: MessageBody::ReadIndex { request, lease },
            });
        }
    }

    /// Fails the forwarded reads whose request went unanswered for a maximum election timeout
    /// (lost, or the leader cannot confirm itself).
    pub(super) fn expire_forwarded_reads(&mut self) {
        if let RoleState::Follower { forwarded, .. } = &mut self.role {
            for id in forwarded.expire(self.now) {
                self.out.reads.push((id, Err(ProtocolError::Timeout)));
            }
        }
    }

    /// True while this node is leader, has committed an entry of its term, and its lease holds
    /// at the latest time it was given: it may serve a read without a round trip.
    pub fn lease_holds(&self) -> bool {
        match &self.role {
            RoleState::Leader(leader) => {
                self.term_committed() && leader.lease.holds(self.now, self.config.lease_duration_ms)
            }
            _ => false,
        }
    }

    /// When the current lease ends, if this node is a leader that holds one.
    pub fn lease_valid_until(&self) -> Option<Time> {
        match &self.role {
            RoleState::Leader(leader) if self.lease_holds() => {
                leader.lease.valid_until(self.config.lease_duration_ms)
            }
            _ => None,
        }
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
        match &self.role {
            RoleState::Leader(leader) if self.term_committed() => {
                leader.lease.confirmed_sent_at().map(|as_of| FreshCommit {
                    index: self.log.committed,
                    as_of,
                })
            }
            RoleState::Leader(_) => None,
            _ => self
                .freshness
                .iter()
                .rev()
                .find(|f| f.index <= self.log.committed)
                .copied(),
        }
    }

    /// Hands leadership to `to` (dissertation §3.10): brings it up to date at once, then tells
    /// it to start an election as soon as it holds the whole log. The lease is given up for the
    /// rest of this term, and new proposals are refused until the transfer ends or is abandoned
    /// after a minimum election timeout.
    ///
    /// Naming the leader itself abandons a pending transfer, so proposals are accepted again at
    /// once (the lease stays void for the rest of the term); with none pending it does nothing.
    pub fn transfer_leadership(&mut self, now: Time, to: NodeId) -> Result<(), ProtocolError> {
        self.advance_clock(now);
        let me = self.config.id;
        let is_voter = self.log.voters().contains(to);
        let deadline = now.plus_ms(self.config.election_timeout_min_ms);
        let last = self.log.last_index();
        let leader = self.leader_state()?;
        if to == me {
            leader.transfer = None;
            return Ok(());
        }
        if !is_voter {
            return Err(ProtocolError::InvalidArgument(format!(
                "{to} is not a voter"
            )));
        }
        if leader.transfer.is_some_and(|t| t.target == to) {
            return Ok(());
        }
        leader.transfer = Some(Transfer {
            target: to,
            deadline,
            timeout_now_round: None,
        });
        // Once the target may win, this leader must not serve from its lease any more; a
        // delayed TimeoutNow could start that election at any time in this term.
        leader.lease.void();
        if let Some(pr) = leader.progress.get_mut(&to)
            && pr.match_index < last
        {
            // Catch the target up now rather than at the next heartbeat: appends in flight to
            // it may have been lost, so send again from what it is known to hold (a probe goes
            // out at once). The batch's flush sends them.
            match pr.state {
                ReplicationState::Replicate => {
                    pr.next_index = pr.match_index.next();
                    pr.inflights.reset();
                }
                ReplicationState::Probe => pr.probe_sent = false,
                // It receives the snapshot first; TimeoutNow follows once it holds the log.
                ReplicationState::Snapshot => {}
            }
        }
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    // ----- followers: how fresh their data is --------------------------------------------------

    /// Remembers when this follower first answered `round` (its answer leaves no earlier than
    /// now; a later answer to the same round may be the one the leader hears first, so only the
    /// first counts).
    pub(super) fn answered_round(&mut self, round: u64) {
        if self.answered_term != self.term {
            // Another leader, with rounds of its own.
            self.answered_rounds.clear();
            self.answered_term = self.term;
        }
        let answered_rounds = &mut self.answered_rounds;
        if round == 0 || answered_rounds.back().is_some_and(|&(r, _)| r >= round) {
            return;
        }
        if answered_rounds.len() >= MAX_ANSWERED_ROUNDS {
            answered_rounds.pop_front();
        }
        answered_rounds.push_back((round, self.now));
    }

    /// The leader vouched for its commit index as of this follower's answer to a round.
    pub(super) fn record_freshness(&mut self, freshness: Freshness) {
        if freshness.session != self.session || self.answered_term != self.term {
            // About an answer of this node's previous run, or of another term's rounds.
            return;
        }
        let answered_rounds = &mut self.answered_rounds;
        // The first answer to the named round, or to an earlier one (sent no later): the
        // leader's commit index covers every write acknowledged before it.
        let Some(&(_, as_of)) = answered_rounds
            .iter()
            .rev()
            .find(|&&(r, _)| r <= freshness.answered_round)
        else {
            return;
        };
        while let Some(&(r, _)) = answered_rounds.front() {
            if r >= freshness.answered_round {
                break;
            }
            answered_rounds.pop_front();
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

    // ----- leaders: rounds, reads, transfer ---------------------------------------------------

    /// A follower acknowledged a round (or this leader started one): move the confirmed round,
    /// and with it the lease and the reads waiting on it.
    pub(super) fn on_round_acknowledged(&mut self) {
        let me = self.config.id;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let latest = leader.lease.latest_round();
        let progress = &leader.progress;
        let confirmed = self.log.voters().committed(|id| {
            if id == me {
                latest
            } else {
                progress.get(&id).map_or(0, |p| p.acked_round)
            }
        });
        if leader.lease.confirm(confirmed) {
            self.resolve_reads();
        }
    }

    /// Sends TimeoutNow to a transfer's target once it holds the whole log; again if it later
    /// answers a round sent after the last TimeoutNow (which was then lost, or reached it before
    /// it could act on it).
    pub(super) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last = self.log.last_index();
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let latest_round = leader.lease.latest_round();
        let Some(transfer) = leader.transfer.as_mut() else {
            return;
        };
        if transfer.target != peer {
            return;
        }
        let Some(pr) = leader.progress.get(&peer) else {
            return;
        };
        let due = transfer
            .timeout_now_round
            .is_none_or(|sent| pr.acked_round > sent);
        if due && pr.match_index == last {
            transfer.timeout_now_round = Some(latest_round);
            let body = MessageBody::TimeoutNow;
            leader_message(&mut self.out, self.config.id, self.term, peer, body);
            if self.removal_committed() {
                // Its successor holds the whole log and campaigns now: nothing is left to lead.
                self.become_follower(self.term, None);
            }
        }
    }

    /// Answers the reads that are ready: those whose confirmed index is applied, and a leader's
    /// followers' requests that are confirmed.
    pub(super) fn resolve_reads(&mut self) {
        let applied = self.log.applied;
        while let Some(entry) = self.reads_to_apply.first_entry()
            && *entry.key() <= applied
        {
            let index = *entry.key();
            let reads = entry.remove();
            self.out
                .reads
                .extend(reads.into_iter().map(|id| (id, Ok(index))));
        }
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let ready = leader
            .reads
            .take_ready(leader.lease.confirmed_round(), applied);
        for (reader, index) in ready {
            match reader {
                Reader::Local(id) => self.out.reads.push((id, Ok(index))),
                Reader::Remote { from, request } => {
                    let body = MessageBody::ReadIndexResponse {
                        request,
                        index: Some(index),
                    };
                    leader_message(&mut self.out, self.config.id, self.term, from, body);
                }
            }
        }
    }
}
