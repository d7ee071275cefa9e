//! # raft-storage
//!
//! Implementations of [`raft_core::node::LogStore`]:
//!
//! * [`MemLogStore`] keeps everything in memory. A clone shares the same contents, so a test
//!   can "restart" a node on the very store it used before, which is how crash-and-restart is
//!   simulated without a disk. Its writes are durable for as long as the process lives.

mod memory;

pub use memory::MemLogStore;
