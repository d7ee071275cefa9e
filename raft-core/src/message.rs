//! The messages nodes exchange: one variant per RPC of Figure 2 and its response, plus the
//! heartbeat, pre-vote and TimeoutNow messages of the dissertation.

use crate::{ConflictHint, Entry, EntryData, EntryId, LogIndex, NodeId, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

/// Terms and indexes at or above this are refused: far beyond any real cluster's life, and it
/// keeps the arithmetic on them in range.
const MAX_VALUE: u64 = 1 << 62;

/// What one member of a membership costs decoded, at most (its id in a B-tree node).
pub(crate) const VOTER_DECODED_BYTES: usize = 48;

/// What a membership costs decoded, at most: its ids, and the allocation of each of its three
/// sets and of the shared pointer that holds it.
pub(crate) fn membership_decoded_bytes(membership: &crate::Membership) -> usize {
    let addresses: usize = membership
        .addresses()
        .values()
        .map(|a| 1 + a.len() / VOTER_DECODED_BYTES)
        .sum();
    let ids = membership.voters().len()
        + membership.outgoing_voters().len()
        + membership.learners().len()
        + membership.addresses().len()
        + addresses;
    ids.saturating_mul(VOTER_DECODED_BYTES)
        .saturating_add(MEMBERSHIP_DECODED_BYTES)
}

/// The fixed part of [`membership_decoded_bytes`]: three B-tree leaves and a shared pointer.
pub(crate) const MEMBERSHIP_DECODED_BYTES: usize = 3 * 200 + 64;

/// A message between two members of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term the sender would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The content of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MessageBody {
    /// RequestVote (§5.2), or its pre-vote rehearsal (dissertation §9.6).
    RequestVote {
        /// A rehearsal: granting it changes nothing on the voter.
        pre_vote: bool,
        /// The candidate's last log entry, for the up-to-date check (§5.4.1).
        last_log: EntryId,
        /// The election was asked for by the leader (TimeoutNow), so voters grant it even while
        /// they still hear from that leader (dissertation §3.10).
        transfer: bool,
        /// The candidate's count of the campaigns (pre-vote rounds and elections) it has
        /// started; the answer echoes it, so that an answer to an earlier campaign, delayed in
        /// the network, is never counted in a later one.
        campaign: u64,
    },
    /// The answer to a RequestVote.
    RequestVoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// The vote was granted.
        granted: bool,
        /// The `campaign` of the request answered.
        campaign: u64,
    },
    /// AppendEntries (§5.3): entries after `prev_log`, and the leader's commit index.
    AppendEntries {
        /// The entry just before `entries`, which the follower must hold.
        prev_log: EntryId,
        /// Entries to store; they directly follow `prev_log` and may be empty.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// The latest heartbeat round the leader had started when sending this.
        round: u64,
    },
    /// The answer to an AppendEntries.
    AppendEntriesResponse {
        /// The heartbeat round echoed back.
        round: u64,
        /// The answering node's session (see [`MessageBody::HeartbeatResponse`]).
        session: u64,
        /// Whether the entries were stored.
        outcome: AppendOutcome,
    },
    /// A heartbeat: leadership and commit index, no entries. `commit` is at most the
    /// follower's known match index, so it never points past entries the follower lacks.
    Heartbeat {
        /// The leader's commit index (Figure 2's *leaderCommit*, as in
        /// [`MessageBody::AppendEntries`]), capped at the follower's known match index, so that
        /// the follower may adopt it.
        leader_commit: LogIndex,
        /// The round this heartbeat belongs to.
        round: u64,
        /// Sent while the leader's lease holds: what the follower needs to serve
        /// bounded-staleness reads.
        freshness: Option<Freshness>,
    },
    /// The answer to a Heartbeat.
    HeartbeatResponse {
        /// The round echoed back.
        round: u64,
        /// A random number the answering node drew when it started: a node that restarts
        /// answers rounds its previous run answered too, and the leader's statements about
        /// those answers ([`Freshness`]) must not be mistaken for statements about its own.
        session: u64,
    },
    /// The leader asks the recipient to start an election now (dissertation §3.10).
    TimeoutNow,
    /// A follower asks its leader for a read index (dissertation §6.4): the leader's commit
    /// index once it has confirmed it still leads, for the reads the follower serves itself.
    ReadIndex {
        /// The follower's number for this request, echoed by the answer.
        request: u64,
        /// The reads may be confirmed by the leader's lease instead of a heartbeat round.
        lease: bool,
    },
    /// The answer to a [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The `request` answered.
        request: u64,
        /// The index the reads may be served at once the follower has applied it; `None` when
        /// the recipient could not confirm itself as leader (it was not, or stopped being).
        index: Option<LogIndex>,
    },
    /// InstallSnapshot (§7): one chunk of the leader's latest snapshot, for a follower that
    /// needs entries the leader has discarded. Chunks are sent in order, a few at a time; the
    /// size of the image need not be known until its last chunk.
    InstallSnapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Where in the image `data` starts.
        offset: u64,
        /// The chunk's bytes.
        data: EntryData,
        /// This chunk ends the image.
        done: bool,
    },
    /// The answer to an [`MessageBody::InstallSnapshot`] chunk that did not end the image (the
    /// last chunk is answered, once the snapshot is installed, with an
    /// [`MessageBody::AppendEntriesResponse`] matching its last entry).
    InstallSnapshotResponse {
        /// The last entry of the snapshot being received.
        snapshot: EntryId,
        /// The offset of the chunk answered.
        offset: u64,
        /// How many bytes of its image the follower holds durably: where the leader continues
        /// (0 when the follower has no part of it, for instance after a restart). Below
        /// `offset`, the chunk answered was not taken: a chunk before it is missing.
        next_offset: u64,
    },
}

/// A leader's statement to one follower, sent while its lease holds: every write acknowledged
/// anywhere before the follower sent its first answer to round `answered_round` is at or below
/// `commit`.
///
/// It holds because the leader took `commit`, its own commit index with an entry of its term
/// committed, after it had received that answer, and while its lease held no other leader could
/// have acknowledged a write (which rests on the lease's bounded clock drift). The follower knows
/// on its own clock when it first answered the round, so it can tell how old the data at
/// `commit` may be without comparing clocks with the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// The latest heartbeat round of this term the follower has answered, as far as the leader
    /// has heard.
    pub answered_round: u64,
    /// The session of the answer to that round (a follower that restarted ignores statements
    /// about its previous run's answers).
    pub session: u64,
    /// The leader's commit index when it sent this.
    pub commit: LogIndex,
}

/// How a follower answered an AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `match_index`.
    Success {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The consistency check failed at `rejected` (the message's `prev_log.index`).
    Reject {
        /// The previous index of the rejected message.
        rejected: LogIndex,
        /// Where the follower's log diverges.
        hint: ConflictHint,
    },
}

impl Message {
    /// About how many bytes this message occupies in memory, decoded (the envelope, and each
    /// entry with its payload): what a queue of messages is bounded by. An entry decoded costs
    /// far more than its few bytes on the wire, which is why inbound queues count this.
    pub fn decoded_size(&self) -> usize {
        let envelope = std::mem::size_of::<Message>();
        match &self.body {
            MessageBody::AppendEntries { entries, .. } => {
                entries.iter().fold(envelope, |sum, e| {
                    let data = match &e.payload {
                        crate::Payload::Command(data) => data.len(),
                        crate::Payload::Membership(m) => membership_decoded_bytes(m),
                        crate::Payload::Blank => 0,
                    };
                    sum.saturating_add(std::mem::size_of::<Entry>() + data)
                })
            }
            MessageBody::InstallSnapshot { meta, data, .. } => envelope
                .saturating_add(data.len())
                .saturating_add(membership_decoded_bytes(&meta.membership)),
            _ => envelope,
        }
    }

    /// Checks what can be checked of a message on its own: that it is addressed from someone
    /// else, that its entries follow `prev_log` one by one with terms that never decrease and
    /// never exceed the message's term. The protocol rejects a message that fails, before it
    /// touches any state.
    pub fn validate(&self) -> Result<(), String> {
        // No honest cluster comes near these; refusing them keeps every `+ 1` in range.
        if self.term.0 >= MAX_VALUE {
            return Err(format!("term {} is out of range", self.term));
        }
        match &self.body {
            MessageBody::RequestVote { last_log, .. }
                if last_log.index.0 >= MAX_VALUE || last_log.term.0 >= MAX_VALUE =>
            {
                return Err("last log entry out of range".to_string());
            }
            MessageBody::AppendEntries {
                prev_log,
                entries,
                leader_commit,
                ..
            } if prev_log.index.0.saturating_add(entries.len() as u64) >= MAX_VALUE
                || leader_commit.0 >= MAX_VALUE =>
            {
                return Err("log index out of range".to_string());
            }
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success { match_index },
                ..
            } if match_index.0 >= MAX_VALUE => {
                return Err("match index out of range".to_string());
            }
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Reject { rejected, hint },
                ..
            } if rejected.0 >= MAX_VALUE || hint.first_index.0 >= MAX_VALUE => {
                return Err("rejected index out of range".to_string());
            }
            MessageBody::Heartbeat {
                leader_commit,
                freshness,
                ..
            } if leader_commit.0 >= MAX_VALUE
                || freshness.is_some_and(|f| f.commit.0 >= MAX_VALUE) =>
            {
                return Err("commit index out of range".to_string());
            }
            MessageBody::ReadIndexResponse {
                index: Some(index), ..
            } if index.0 >= MAX_VALUE => {
                return Err("read index out of range".to_string());
            }
            MessageBody::InstallSnapshot { meta, offset, .. }
                if meta.last.index.0 >= MAX_VALUE
                    || meta.last.term.0 >= MAX_VALUE
                    || *offset >= MAX_VALUE =>
            {
                return Err("snapshot position out of range".to_string());
            }
            MessageBody::InstallSnapshot { meta, .. } if meta.last.term > self.term => {
                return Err(format!(
                    "snapshot of term {} above message term {}",
                    meta.last.term, self.term
                ));
            }
            MessageBody::InstallSnapshotResponse {
                snapshot,
                offset,
                next_offset,
            } if snapshot.index.0 >= MAX_VALUE
                || *offset >= MAX_VALUE
                || *next_offset >= MAX_VALUE =>
            {
                return Err("snapshot position out of range".to_string());
            }
            _ => {}
        }
        if self.from == self.to {
            return Err(format!("message from {} to itself", self.from));
        }
        if self.from.0 == 0 || self.to.0 == 0 {
            return Err("node id 0 is reserved".to_string());
        }
        if let MessageBody::AppendEntries {
            prev_log, entries, ..
        } = &self.body
        {
            if prev_log.term > self.term {
                return Err(format!(
                    "prev_log term {} above message term {}",
                    prev_log.term, self.term
                ));
            }
            let mut expected = prev_log.index.next();
            let mut term = prev_log.term;
            for entry in entries {
                if entry.index != expected {
                    return Err(format!(
                        "entry index {} where {} was expected",
                        entry.index, expected
                    ));
                }
                if entry.term < term || entry.term > self.term {
                    return Err(format!(
                        "entry {} has term {} outside {}..={}",
                        entry.index, entry.term, term, self.term
                    ));
                }
                term = entry.term;
                expected = expected.next();
            }
        }
        Ok(())
    }
}
