//! The in-memory log store.

use async_trait::async_trait;
use raft_core::node::{Failover, LogStore, Recovered, StorageError};
use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId};
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Contents {
    hard_state: HardState,
    /// Entries in index order; the first has index `first_index`.
    entries: VecDeque<Entry>,
    /// The index of the first entry held (1 until a prefix is purged).
    first_index: LogIndex,
    voters: Option<BTreeSet<NodeId>>,
    /// The entry before the first one held (the last purged).
    log_start: EntryId,
    failovers: Vec<Failover>,
}

/// A [`LogStore`] in memory. Clones share the same contents.
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<Contents>>,
}

impl MemLogStore {
    /// An empty store.
    pub fn new() -> MemLogStore {
        MemLogStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Contents>, StorageError> {
        self.inner
            .lock()
            .map_err(|_| StorageError::Poisoned("a writer panicked".into()))
    }
}

impl Contents {
    fn first(&self) -> LogIndex {
        if self.first_index.0 == 0 {
            LogIndex(1)
        } else {
            self.first_index
        }
    }

    fn last(&self) -> LogIndex {
        self.entries.back().map_or(self.first().prev(), |e| e.index)
    }

    fn truncate_from(&mut self, from: LogIndex) {
        let keep = from.0.saturating_sub(self.first().0);
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }
}

#[async_trait]
impl LogStore for MemLogStore {
    async fn recover(&mut self) -> Result<Recovered, StorageError> {
        let contents = self.lock()?;
        let mut recovered = Recovered::new(
            contents.hard_state,
            contents.entries.iter().cloned().collect(),
            contents.voters.clone(),
        );
        recovered.log_start = contents.log_start;
        recovered.failovers = contents.failovers.clone();
        Ok(recovered)
    }

    async fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> Result<(), StorageError> {
        let mut contents = self.lock()?;
        if let Some(first) = entries.first() {
            // Validate before changing anything: contiguous, and joining the log without a gap.
            if first.index > contents.last().next() || first.index < contents.first() {
                return Err(StorageError::Unavailable(format!(
                    "write at {} does not join the log {}..={}",
                    first.index,
                    contents.first(),
                    contents.last()
                )));
            }
            if entries.windows(2).any(|w| w[1].index != w[0].index.next()) {
                return Err(StorageError::Corrupt("entries are not contiguous".into()));
            }
        }
        if let Some(hard_state) = hard_state {
            contents.hard_state = hard_state;
        }
        if let Some(first) = entries.first() {
            let from = first.index;
            contents.truncate_from(from);
            contents.entries.extend(entries);
        }
        Ok(())
    }

    async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let mut contents = self.lock()?;
        contents.truncate_from(from);
        Ok(())
    }

    async fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError> {
        let mut contents = self.lock()?;
        if up_to.index < contents.first() {
            return Ok(());
        }
        let diverged = contents
            .entries
            .iter()
            .find(|e| e.index == up_to.index)
            .is_none_or(|e| e.term != up_to.term);
        if diverged {
            contents.entries.clear();
        }
        while contents
            .entries
            .front()
            .is_some_and(|e| e.index <= up_to.index)
        {
            contents.entries.pop_front();
        }
        contents.first_index = up_to.index.next();
        contents.log_start = up_to;
        Ok(())
    }

    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        let contents = self.lock()?;
        if from < contents.first() {
            return Err(StorageError::Unavailable(format!(
                "{from} was purged; the log starts at {}",
                contents.first()
            )));
        }
        Ok(contents
            .entries
            .iter()
            .filter(|e| e.index >= from && e.index <= to)
            .cloned()
            .collect())
    }

    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
        self.lock()?.voters = Some(voters.clone());
        Ok(())
    }

    async fn save_failovers(&mut self, history: &[Failover]) -> Result<(), StorageError> {
        self.lock()?.failovers = history.to_vec();
        Ok(())
    }
}
