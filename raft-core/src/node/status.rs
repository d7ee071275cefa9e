//! What a node reports about itself: a [`Status`] snapshot on a watch channel, with the lag of
//! every follower and the history of leadership changes.

use crate::{LogIndex, NodeId, Role, Term};
use serde::{Deserialize, Serialize};

/// A snapshot of one node's state, published on [`crate::node::NodeHandle::watch_status`].
///
/// A change of role, term or leader is published at once; other fields (indexes, lag) are
/// refreshed at most once per millisecond while the node is busy, and within a millisecond of
/// the last change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of in that term.
    pub leader: Option<NodeId>,
    /// The highest index it knows committed.
    pub commit_index: LogIndex,
    /// The highest index its state machine applied.
    pub applied_index: LogIndex,
    /// The index of its last log entry.
    pub last_log_index: LogIndex,
    /// How many entries its log holds in memory (after the latest compaction).
    pub log_entries: u64,
    /// The last index its latest snapshot covers, and the image's size in bytes (0 when the
    /// node has not written or read the whole image since it started).
    pub snapshot: Option<(LogIndex, u64)>,
    /// Leader only: how long its lease still holds, in milliseconds (`None` without a lease).
    pub lease_remaining_ms: Option<u64>,
    /// How stale this node's data may be, in milliseconds: every write acknowledged more than
    /// this long ago is in its committed log (see [`crate::Raft::fresh_commit`]), so a
    /// [`crate::node::Consistency::BoundedStaleness`] read with a larger bound is served here
    /// once the node has applied that far. `None` when it cannot vouch for any (a follower whose
    /// leader's lease does not hold, or which lacks the entries the leader committed; a
    /// leader before its first entry commits).
    pub staleness_ms: Option<u64>,
    /// The membership this node uses: the latest its log holds, committed or not (`None` on a
    /// node that joins a running cluster and has not heard from its leader yet).
    pub membership: Option<crate::Membership>,
    /// The index of the entry that brought that membership in; the change is done once
    /// `commit_index` reaches it.
    pub membership_index: LogIndex,
    /// Leader only: every follower's replication state, voters and learners, in id order.
    pub peers: Vec<PeerStatus>,
    /// The most recent leadership changes this node saw, oldest first (bounded).
    pub failovers: Vec<Failover>,
    /// How the transport's link to each peer stands, in id order, as reported by
    /// [`crate::node::Transport::peer_connections`] (empty for a transport that does not say).
    pub connections: Vec<(NodeId, PeerConnection)>,
}

/// How a transport's link to one peer stands: what an operator looks at first when a node
/// cannot reach its cluster (a node started with another cluster's id sees `Refused`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PeerConnection {
    /// Nothing has been sent to the peer yet, so no connection was attempted.
    Idle,
    /// A connection is established.
    Connected,
    /// The peer answered and refused this node; `reason` says why (another cluster id, a node
    /// id it does not know, an unsupported wire version, over TLS a certificate it does not
    /// accept). Retried with backoff.
    Refused {
        /// The peer's reason, as the transport words it.
        reason: String,
    },
    /// This node refused the peer: over TLS, the certificate it presented did not verify
    /// (an unknown CA, expired or not yet valid, or not naming the peer's node id). `reason`
    /// says which. Retried with backoff, so a corrected certificate is picked up.
    Untrusted {
        /// What was wrong with the peer's certificate.
        reason: String,
    },
    /// Connecting has failed since `since_ms` (milliseconds since the transport started), for
    /// a reason other than a refusal: the peer is down, unreachable or too slow to answer.
    Unreachable {
        /// When the current run of failures began.
        since_ms: u64,
    },
}

/// How far one follower is behind the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeerStatus {
    /// The follower.
    pub id: NodeId,
    /// The highest index known replicated on it.
    pub match_index: LogIndex,
    /// Entries it lacks: the leader's last index minus its match index.
    pub lag_entries: u64,
    /// Milliseconds since the leader last heard from it (`None`: never in this term).
    pub since_last_ack_ms: Option<u64>,
    /// It votes (in either half while a change of voters is in progress); a learner
    /// otherwise. Learners are never part of the in-sync set.
    pub voter: bool,
    /// It answered within the configured maximum replication lag, so `Ack::All` writes wait
    /// for it if it is a voter (Kafka's in-sync replica set).
    pub in_sync: bool,
    /// While the leader sends it a snapshot (it needs entries the leader's log no longer
    /// holds): the bytes of the image it has acknowledged so far.
    pub snapshot_bytes_sent: Option<u64>,
}

/// Why leadership changed, as far as the observing node can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailoverTrigger {
    /// This node won an election it started when its election timer expired.
    Election,
    /// This node won an election it started at the old leader's request (TimeoutNow).
    Transfer,
    /// Another node became leader; this node learned of it from its messages.
    Observed,
    /// This node won an election the old leader asked for (TimeoutNow) because a membership
    /// change removed the old leader from the voters.
    MembershipChange,
}

/// One change of leader seen by this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Failover {
    /// The term of the new leader.
    pub term: Term,
    /// The leader this node knew before, if any.
    pub old_leader: Option<NodeId>,
    /// The new leader.
    pub new_leader: NodeId,
    /// What caused it.
    pub trigger: FailoverTrigger,
    /// When this node saw it, in milliseconds since the node started.
    pub at_ms: u64,
    /// When this node is the new leader: how many entries it held that its state machine had
    /// not applied when it took office (what it had to catch up on before serving reads).
    pub new_leader_unapplied_entries: Option<u64>,
    /// Seen before this node last restarted, and recovered from its [`LogStore`]
    /// (see [`LogStore::save_failovers`]); `at_ms` then counts from the start of that earlier
    /// run, not this one.
    ///
    /// [`LogStore`]: crate::node::LogStore
    /// [`LogStore::save_failovers`]: crate::node::LogStore::save_failovers
    pub earlier_run: bool,
}

impl Failover {
    /// A change of leader to `new_leader` in `term`, seen `at_ms` after the node started (for
    /// stores that rebuild the history they saved; the node records its own).
    pub fn new(
        term: Term,
        old_leader: Option<NodeId>,
        new_leader: NodeId,
        trigger: FailoverTrigger,
        at_ms: u64,
    ) -> Failover {
        Failover {
            term,
            old_leader,
            new_leader,
            trigger,
            at_ms,
            new_leader_unapplied_entries: None,
            earlier_run: false,
        }
    }
}
