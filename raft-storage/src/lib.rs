//! # raft-storage
//!
//! Implementations of [`raft_core::node::LogStore`]:
//!
//! * [`MemLogStore`] keeps everything in memory. A clone shares the same contents, so a test
//!   can "restart" a node on the very store it used before, which is how crash-and-restart is
//!   simulated without a disk. Its writes are durable for as long as the process lives.
//!
//! [`conformance`] is the suite of checks every `LogStore` must pass (durability across a
//! restart, the conflict rewrite, truncation, purging, refused gaps); run it against a new store.

pub mod conformance;
mod memory;

pub use memory::MemLogStore;
