//! # raft-storage
//!
//! Implementations of [`raft_core::node::LogStore`] and [`raft_core::node::SnapshotStore`]:
//!
//! * [`MemLogStore`] keeps the log and the hard state in memory. A clone shares the same
//!   contents, so a test can "restart" a node on the very store it used before, which is how
//!   crash-and-restart is simulated without a disk. Its writes are durable for as long as the
//!   process lives.
//! * [`MemSnapshotStore`] keeps the latest snapshot image in memory, with the same sharing
//!   between clones. Images are written in chunks through independent writers, become the
//!   latest atomically when finished, and are read back in chunks without copying.
//!
//! [`conformance`] holds the suites of checks every store must pass; run them against a new
//! store. [`conformance::run`] checks a `LogStore` (durability across a restart, the conflict
//! rewrite, truncation, purging a prefix and where the log then starts, refused gaps);
//! [`conformance::snapshots`] checks a `SnapshotStore` (chunked round trips, unfinished images
//! staying invisible, the newest image winning, durability across a restart).

pub mod conformance;
mod memory;
mod snapshot_files;
mod snapshots;
mod wal;

pub use memory::MemLogStore;
pub use snapshot_files::FileSnapshotStore;
pub use snapshots::MemSnapshotStore;
pub use wal::{FileLogOptions, FileLogStore};
