//! The key-value state machine of the cluster tests: raft-kv's [`KvStore`](raft_kv::store::KvStore), and an audit of
//! what every replica applied.

use raft_core::{LogIndex, NodeId};
pub use raft_kv::store::{KvCommand, KvResponse, KvStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Every command any node applied, by log index: the committed log as the state machines saw
/// it (blank entries, which reach no state machine, leave gaps). Shared by the nodes of a
/// simulation through clones. Two nodes applying different commands at one index (a breach of
/// state machine safety, §5.4.3) is recorded as a conflict.
#[derive(Clone, Debug, Default)]
pub struct Applied(Arc<Mutex<AppliedLog>>);

/// What [`Applied`] holds.
#[derive(Debug, Default)]
pub struct AppliedLog {
    /// The first command applied at each index, and the node that applied it.
    pub commands: BTreeMap<LogIndex, (KvCommand, NodeId)>,
    /// Every apply that disagreed with the first at its index.
    pub conflicts: Vec<String>,
}

impl Applied {
    /// What was recorded so far.
    pub fn take(&self) -> AppliedLog {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, node: NodeId, index: LogIndex, command: &KvCommand) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match log.commands.get(&index) {
            None => {
                log.commands.insert(index, (command.clone(), node));
            }
            Some((first, by)) if first != command => {
                let conflict =
                    format!("{node} applied {command:?} at {index}, {by} applied {first:?}");
                log.conflicts.push(conflict);
            }
            Some(_) => {}
        }
    }
}

/// An empty store that records every command it applies, as `node`, in `applied`.
pub fn recording(node: NodeId, applied: Applied) -> KvStore {
    KvStore::with_hook(Arc::new(move |index, command| {
        applied.record(node, index, command)
    }))
}
