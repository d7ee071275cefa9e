//! # raft-net
//!
//! Implementations of [`raft_core::node::Transport`]:
//!
//! * [`ChannelNetwork`] connects nodes in one process through their inboxes, with links that a
//!   test can cut and restore (partitions without sockets).

mod channel;

pub use channel::{ChannelNetwork, ChannelTransport};
