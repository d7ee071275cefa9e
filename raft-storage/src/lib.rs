//! # raft-storage
//!
//! Implementations of [`raft_core::node::LogStore`] and [`raft_core::node::SnapshotStore`]:
//!
//! * [`FileLogStore`] keeps the log and the hard state durably in a data directory: a
//!   segmented write-ahead log of checksummed records, with group commit (every operation
//!   waiting when its writer thread is free goes out with one write and one `fdatasync`),
//!   crash recovery that cuts off a torn write at the tail and refuses any other damage with
//!   an error naming the file and the offset, and poisoning after a failed sync.
//! * [`FileSnapshotStore`] keeps snapshot images durably, one checksummed file each, finished
//!   by `fsync` and rename.
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
//!
//! The file stores' formats, their recovery decision table and what a write costs are in
//! `docs/storage.md`. With the feature `turmoil` they also run on turmoil's simulated
//! filesystem (`FileLogStore::open_simulated`, `FileSnapshotStore::open_simulated`),
//! where a simulated crash loses what was not synced.

pub mod conformance;
mod memory;
mod snapshot_files;
mod snapshots;
mod wal;

pub use memory::MemLogStore;
pub use snapshot_files::FileSnapshotStore;
pub use snapshots::MemSnapshotStore;
pub use wal::{FileLogOptions, FileLogStore};
