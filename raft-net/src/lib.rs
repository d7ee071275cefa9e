//! # raft-net
//!
//! Transports for `raft-core`: in-process channels, and TCP on tokio that also runs over
//! turmoil's simulated network. This crate is empty until the transport trait of `raft-core`'s
//! node exists; see the workspace README for the roadmap.
