//! Log replication (§5.3): proposals, AppendEntries and heartbeats on both sides, the conflict
//! search, and commit by counting replicas of an entry of the current term (§5.4.2, Figure 8).

use super::{Raft, RoleState, leader_message};
use crate::progress::ReplicationState;
use crate::{
    AppendOutcome, Entry, EntryData, EntryId, Freshness, LogIndex, Message, MessageBody, NodeId,
    Payload, ProtocolError,
};
use std::ops::Bound;

impl Raft {
    /// Appends a command to the leader's log and returns its id: once an applied entry has this
    /// index and term, the command is committed; if the index is applied with another term,
    /// the command was lost in a change of leader.
    pub fn propose(&mut self, command: impl Into<EntryData>) -> Result<EntryId, ProtocolError> {
        let limit_bytes = self.config.max_uncommitted_bytes;
        let entry = Entry {
            term: self.term,
            index: self.log.last_index().next(),
            payload: Payload::Command(command.into()),
        };
        let leader = self.leader_state()?;
        if leader.transfer.is_some() {
            return Err(ProtocolError::TransferInProgress);
        }
        // etcd's MaxUncommittedEntriesSize: refuse once the tail is full, but never a proposal
        // to an empty tail, so one entry larger than the limit still goes through.
        let cost = uncommitted_cost(&entry);
        let uncommitted_bytes = leader.uncommitted_bytes;
        if uncommitted_bytes > 0 && uncommitted_bytes.saturating_add(cost) > limit_bytes {
            return Err(ProtocolError::UncommittedLimit {
                uncommitted_bytes,
                limit_bytes,
            });
        }
        leader.uncommitted_bytes = uncommitted_bytes.saturating_add(cost);
        let id = entry.id();
        self.log.push(entry);
        Ok(id)
    }

    // ----- followers (§5.3) -------------------------------------------------------------------

    pub(super) fn step_follower(&mut self, msg: Message) {
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
                    let session = self.session;
                    self.send(
                        msg.from,
                        MessageBody::AppendEntriesResponse {
                            round,
                            session,
                            outcome,
                        },
                    );
                }
            }
            MessageBody::Heartbeat {
                leader_commit: commit,
                round,
                freshness,
            } => {
                self.heard_from_leader(msg.from);
                // The leader sends at most our match index, so those entries are the leader's.
                // One beyond our last entry breaks that promise: commit nothing on its word.
                if commit <= self.log.last_index() {
                    self.log.commit_to(commit);
                }
                if let Some(freshness) = freshness {
                    self.record_freshness(freshness);
                }
                self.answered_round(round);
                let session = self.session;
                self.send(msg.from, MessageBody::HeartbeatResponse { round, session });
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.handle_install_snapshot(msg.from, meta, offset, data, done),
            // Dissertation §3.10: campaign at once, skipping the pre-vote.
            MessageBody::TimeoutNow if self.is_voter() => self.become_candidate(true),
            _ => {}
        }
    }

    pub(super) fn heard_from_leader(&mut self, from: NodeId) {
        if let RoleState::Follower { leader, .. } = &mut self.role {
            *leader = Some(from);
        }
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

    pub(super) fn step_leader(&mut self, msg: Message) {
        match msg.body {
            MessageBody::AppendEntriesResponse {
                round,
                session,
                outcome,
            } => {
                self.handle_append_response(msg.from, round, session, outcome);
            }
            MessageBody::HeartbeatResponse { round, session } => {
                let now = self.now;
                let last = self.log.last_index();
                let RoleState::Leader(leader) = &mut self.role else {
                    return;
                };
                let Some(pr) = leader.progress.get_mut(&msg.from) else {
                    return;
                };
                pr.heard_session(session);
                pr.acked(round, session, now);
                if pr.state == ReplicationState::Snapshot {
                    self.snapshot_heartbeat_answered(msg.from, round);
                    self.on_round_acknowledged();
                    return;
                }
                pr.probe_sent = false;
                let next_bytes = self.log.entry(pr.next_index).map(|e| e.payload_len());
                if pr.state == ReplicationState::Replicate && !pr.inflights.admits(next_bytes) {
                    // The follower is alive but some acknowledgement went missing.
                    pr.inflights.free_first();
                }
                let behind = pr.match_index < last;
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

    fn handle_append_response(
        &mut self,
        from: NodeId,
        round: u64,
        session: u64,
        outcome: AppendOutcome,
    ) {
        let last = self.log.last_index();
        let now = self.now;
        let next_from_hint = match outcome {
            AppendOutcome::Reject { rejected, hint } => self.log.next_from_hint(rejected, hint),
            AppendOutcome::Success { .. } => last.next(),
        };
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(pr) = leader.progress.get_mut(&from) else {
            return;
        };
        pr.heard_session(session);
        pr.acked(round, session, now);
        match outcome {
            AppendOutcome::Success { match_index } => {
                if match_index > last {
                    return; // claims entries this leader never had: ignore
                }
                let updated = pr.maybe_update(match_index);
                match pr.state {
                    ReplicationState::Probe => pr.become_replicate(),
                    ReplicationState::Replicate => pr.inflights.free_to(match_index),
                    // Installed (or the follower already held it): back to the log.
                    ReplicationState::Snapshot => {
                        if pr.snapshot.is_none_or(|s| pr.match_index >= s.last.index) {
                            pr.become_replicate();
                        }
                    }
                }
                if updated {
                    self.maybe_commit();
                }
                self.maybe_send_timeout_now(from);
            }
            AppendOutcome::Reject { rejected, .. } => {
                if pr.maybe_decrease_to(rejected, next_from_hint)
                    && pr.state == ReplicationState::Replicate
                {
                    pr.become_probe();
                }
            }
        }
        self.on_round_acknowledged();
    }

    /// §5.3, §5.4.2: commit the highest index a majority holds, but only by counting replicas
    /// of an entry of the current term (Figure 8).
    pub(super) fn maybe_commit(&mut self) {
        let me = self.config.id;
        let persisted = self.log.persisted;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let progress = &leader.progress;
        let majority = LogIndex(self.log.voters().committed(|id| {
            if id == me {
                persisted.0
            } else {
                progress.get(&id).map_or(0, |p| p.match_index.0)
            }
        }));
        if majority > self.log.committed && self.log.term_at(majority) == Some(self.term) {
            let first_in_term = self.log.term_at(self.log.committed) != Some(self.term);
            // What the newly committed entries of this term cost leaves the uncommitted tail.
            if leader.uncommitted_bytes > 0 {
                let term = self.term;
                let freed: usize = self
                    .log
                    .range(self.log.committed.next(), majority)
                    .filter(|e| e.term == term)
                    .map(uncommitted_cost)
                    .sum();
                leader.uncommitted_bytes = leader.uncommitted_bytes.saturating_sub(freed);
            }
            self.log.commit_to(majority);
            if first_in_term {
                leader.reads.assign_index(self.log.committed);
            }
            self.membership_committed();
        }
    }

    /// Sends what each follower can take now: new entries, a commit advance, or a probe.
    pub(super) fn flush_leader(&mut self) {
        let RoleState::Leader(leader) = &self.role else {
            return;
        };
        if leader.reads.needs_round(leader.lease.latest_round()) {
            // One round confirms every read queued since the last one (batching). Any number
            // of rounds may be in flight: the lease clock keeps their send times per
            // millisecond, not per round.
            self.broadcast_heartbeat();
        }
        // Walks the peers by id without collecting them (this runs once per batch).
        let mut next = first_peer(&self.role, None);
        while let Some(peer) = next {
            // Bounded: each pass either sends or returns false, and the window limits sends.
            for _ in 0..=self.config.max_inflight_appends {
                if !self.maybe_send_append(peer, false) {
                    break;
                }
            }
            next = first_peer(&self.role, Some(peer));
        }
    }

    /// Sends the next AppendEntries to `peer` if it can take one and there is something to send
    /// (or `even_if_empty`). Returns whether a message went out.
    pub(super) fn maybe_send_append(&mut self, peer: NodeId, even_if_empty: bool) -> bool {
        let last = self.log.last_index();
        let committed = self.log.committed;
        let RoleState::Leader(leader) = &mut self.role else {
            return false;
        };
        let round = leader.lease.latest_round();
        let Some(pr) = leader.progress.get_mut(&peer) else {
            return false;
        };
        if pr.state == ReplicationState::Snapshot {
            return self.maybe_request_chunk(peer);
        }
        if pr.paused() {
            return false;
        }
        let wanted = even_if_empty
            || match pr.state {
                ReplicationState::Probe => pr.match_index < last || pr.sent_commit < committed,
                ReplicationState::Replicate => pr.next_index <= last || pr.sent_commit < committed,
                ReplicationState::Snapshot => false,
            };
        if !wanted {
            return false;
        }
        let prev_index = pr.next_index.prev();
        let Some(prev_term) = self.log.term_at(prev_index) else {
            // The follower needs entries compacted away: send the snapshot (§7).
            return self.start_snapshot(peer) && self.maybe_request_chunk(peer);
        };
        // Flow control by bytes: a message carries at most what is left of the follower's byte
        // budget; an entry larger than that waits until nothing else is in flight, then goes
        // alone.
        let mut max_bytes = self.config.max_bytes_per_append;
        if pr.state == ReplicationState::Replicate {
            let next_bytes = self.log.entry(pr.next_index).map(|e| e.payload_len());
            if !pr.inflights.admits(next_bytes) {
                return false;
            }
            max_bytes = max_bytes.min(pr.inflights.bytes_left());
        }
        let (entries, bytes) = self.log.slice(
            pr.next_index,
            last,
            self.config.max_entries_per_append,
            max_bytes,
        );
        let last_sent = entries.last().map_or(prev_index, |e| e.index);
        pr.sent(last_sent, !entries.is_empty(), bytes);
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
        leader_message(&mut self.out, self.config.id, self.term, peer, body);
        true
    }

    /// Starts a heartbeat round: leadership and the commit index to every follower.
    pub(super) fn broadcast_heartbeat(&mut self) {
        // Whether the lease holds as this round goes out: only then can the leader vouch that no
        // other leader acknowledged a write (see `Freshness`).
        let vouch = self.lease_holds();
        let now = self.now;
        let committed = self.log.committed;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let round = leader.lease.start_round(now);
        leader.heartbeat_deadline = now.plus_ms(self.config.heartbeat_interval_ms);
        for (&peer, pr) in &leader.progress {
            let freshness = (vouch && pr.acked_round > 0).then_some(Freshness {
                answered_round: pr.acked_round,
                session: pr.acked_session,
                commit: committed,
            });
            let body = MessageBody::Heartbeat {
                leader_commit: committed.min(pr.match_index),
                round,
                freshness,
            };
            leader_message(&mut self.out, self.config.id, self.term, peer, body);
        }
        self.on_round_acknowledged();
    }
}

/// What an entry counts toward [`crate::Config::max_uncommitted_bytes`]: its payload and its
/// size in memory; the blank entry of a new term and membership entries count nothing, so they
/// are never refused.
fn uncommitted_cost(entry: &Entry) -> usize {
    match entry.payload {
        Payload::Blank | Payload::Membership(_) => 0,
        Payload::Command(_) => std::mem::size_of::<Entry>() + entry.payload_len(),
    }
}

/// The first follower after `after` (or the first of all), in id order.
fn first_peer(role: &RoleState, after: Option<NodeId>) -> Option<NodeId> {
    let RoleState::Leader(leader) = role else {
        return None;
    };
    let progress = &leader.progress;
    match after {
        None => progress.keys().next().copied(),
        Some(peer) => progress
            .range((Bound::Excluded(peer), Bound::Unbounded))
            .next()
            .map(|(&id, _)| id),
    }
}
