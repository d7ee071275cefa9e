//! Errors the protocol returns to its caller.

use crate::{ConfigError, NodeId};
use thiserror::Error;

/// Why the protocol refused an input. Every variant is something the caller can act on.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Only the leader can do this; `leader_hint` is the leader this node knows of, if any.
    #[error("not the leader (leader: {})", crate::types::MaybeNode(*leader_hint))]
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership over and takes no new proposals until that ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The configuration breaks a rule of [`crate::Config::validate`].
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The state given to [`crate::Raft::new`] is inconsistent.
    #[error("invalid initial state: {0}")]
    InvalidState(String),
    /// An argument was out of range (for example, a transfer to a node that is not a voter).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A message was malformed, misaddressed or from a node outside the cluster; it was dropped
    /// and nothing changed.
    #[error("message rejected: {0}")]
    RejectedMessage(String),
}
