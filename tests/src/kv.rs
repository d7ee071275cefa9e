//! The key-value state machine of the cluster tests: raft-kv's
//! [`KvStore`](raft_kv::store::KvStore). (What every replica applied is recorded by the
//! simulation kit's `raft_sim::Recording` in the cluster simulations.)

pub use raft_kv::store::{KvCommand, KvResponse, KvStore};
