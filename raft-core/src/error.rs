//! Errors the protocol returns to its caller.

use crate::{ConfigError, MembershipError, NodeId};
use thiserror::Error;

/// Why the protocol refused an input. Every variant is something the caller can act on.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Only the leader can do this; `leader_hint` is the leader this node knows of, if any. A
    /// read forwarded by a follower fails this way when the follower stops following the leader
    /// it asked, or that leader could not confirm itself, before the read was confirmed.
    #[error("not the leader (leader: {})", crate::types::MaybeNode(*leader_hint))]
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership over and takes no new proposals until that ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The leader holds more uncommitted entries than [`crate::Config::max_uncommitted_bytes`]
    /// allows (it cannot reach a quorum, or its followers are slow): the proposal was refused
    /// and changed nothing. Retry after a pause.
    #[error("too much uncommitted data ({uncommitted_bytes} bytes, limit {limit_bytes})")]
    UncommittedLimit {
        /// What the leader's uncommitted entries cost.
        uncommitted_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },
    /// A read forwarded by a follower to its leader went unanswered for a maximum election
    /// timeout (the request or its answer was lost, or the leader cannot confirm that it still
    /// leads). Nothing changed; retry.
    #[error("the leader did not answer in time")]
    Timeout,
    /// The configuration breaks a rule of [`crate::Config::validate`].
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The state given to [`crate::Raft::new`] is inconsistent.
    #[error("invalid initial state: {0}")]
    InvalidState(String),
    /// An argument was out of range (for example, a transfer to a node that is not a voter).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A membership change was refused (see [`MembershipError`]); nothing changed.
    #[error("membership change refused: {0}")]
    Membership(#[from] MembershipError),
    /// A message was malformed, misaddressed, or from a node outside this node's membership
    /// (except what only a leader sends and vote requests, which may come from a member this
    /// node has not heard of yet); it was dropped and nothing changed.
    #[error("message rejected: {0}")]
    RejectedMessage(String),
}
