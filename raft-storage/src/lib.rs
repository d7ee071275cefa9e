//! # raft-storage
//!
//! Log stores for `raft-core`. This crate will hold the in-memory store, the durable segmented
//! write-ahead log, and a conformance suite any store can run against itself. It is empty until
//! the storage trait of `raft-core`'s node exists; see the workspace README for the roadmap.
