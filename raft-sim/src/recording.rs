//! The wrapper the harness puts around the user's state machine, and what it records: every
//! command any node applied, by index, so that replicas can be compared with each other and
//! with the model.

use crate::world::Capped;
use async_trait::async_trait;
use raft_core::node::{SnapshotReader, SnapshotSource, StateMachine};
use raft_core::{LogIndex, NodeId, SnapshotMeta};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

/// The user's state machine as a simulated node runs it: every apply is recorded (index,
/// command as the log encodes it, response) for the checks of [`crate::Report`]. Everything
/// else is passed through unchanged.
pub struct Recording<SM: StateMachine> {
    inner: SM,
    node: NodeId,
    incarnation: u64,
    applied: Applied<SM::Command>,
}

impl<SM: StateMachine> Recording<SM> {
    pub(crate) fn new(
        inner: SM,
        node: NodeId,
        incarnation: u64,
        applied: Applied<SM::Command>,
    ) -> Self {
        Recording {
            inner,
            node,
            incarnation,
            applied,
        }
    }
}

#[async_trait]
impl<SM> StateMachine for Recording<SM>
where
    // `&self` methods return `Send` futures: every state machine is `Sync` in practice.
    SM: StateMachine + Sync,
    SM::Command: Clone + Debug,
    SM::Response: Debug,
{
    type Command = SM::Command;
    type Response = SM::Response;
    type Query = SM::Query;
    type QueryResponse = SM::QueryResponse;

    async fn apply(&mut self, index: LogIndex, command: SM::Command) -> SM::Response {
        let encoded = postcard::to_allocvec(&command).unwrap_or_default();
        let kept = command.clone();
        let response = self.inner.apply(index, command).await;
        self.applied.record(AppliedEntry {
            index,
            encoded,
            command: kept,
            response: format!("{response:?}"),
            node: self.node,
            incarnation: self.incarnation,
        });
        response
    }

    async fn query(&self, query: SM::Query) -> SM::QueryResponse {
        self.inner.query(query).await
    }

    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        self.inner.snapshot().await
    }

    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        self.inner.restore(meta, image).await
    }

    fn durable_index(&self) -> Option<LogIndex> {
        self.inner.durable_index()
    }
}

/// One apply, as a node recorded it.
#[derive(Clone, Debug)]
pub(crate) struct AppliedEntry<C> {
    pub(crate) index: LogIndex,
    /// The command as the log holds it (postcard), to compare replicas exactly.
    pub(crate) encoded: Vec<u8>,
    pub(crate) command: C,
    /// The response, as `Debug` shows it: replicas must agree on it too.
    pub(crate) response: String,
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
}

/// Every command applied in a run, by index (shared by every node's [`Recording`]).
#[derive(Debug)]
pub(crate) struct Applied<C>(Arc<Mutex<AppliedLog<C>>>);

impl<C> Clone for Applied<C> {
    fn clone(&self) -> Self {
        Applied(Arc::clone(&self.0))
    }
}

impl<C> Default for Applied<C> {
    fn default() -> Self {
        Applied(Arc::new(Mutex::new(AppliedLog {
            first: BTreeMap::new(),
            disagreements: Capped::default(),
        })))
    }
}

/// What [`Applied`] holds.
#[derive(Debug)]
pub(crate) struct AppliedLog<C> {
    /// The first apply seen at each index.
    pub(crate) first: BTreeMap<LogIndex, AppliedEntry<C>>,
    /// Applies that disagreed with the first at their index (state machine safety, §5.4.3,
    /// and determinism).
    pub(crate) disagreements: Capped,
}

impl<C> Applied<C> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, AppliedLog<C>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, entry: AppliedEntry<C>) {
        let mut log = self.lock();
        let problem = match log.first.get(&entry.index) {
            None => None,
            Some(first) if first.encoded != entry.encoded => Some(format!(
                "state machine safety: n{} (incarnation {}) applied a different command at index \
                 {} than n{} (incarnation {})",
                entry.node.0, entry.incarnation, entry.index.0, first.node.0, first.incarnation
            )),
            Some(first) if first.response != entry.response => Some(format!(
                "determinism: n{} (incarnation {}) answered {} to the command at index {}, \
                 n{} (incarnation {}) answered {}: the state machine is not deterministic, or a \
                 snapshot and restore changed its state",
                entry.node.0,
                entry.incarnation,
                entry.response,
                entry.index.0,
                first.node.0,
                first.incarnation,
                first.response
            )),
            Some(_) => None,
        };
        match problem {
            Some(problem) => log.disagreements.push(problem),
            None => {
                log.first.entry(entry.index).or_insert(entry);
            }
        }
    }
}
