//! A ledger replicated with Raft: a transfer never overdraws, so the total never changes.

use async_trait::async_trait;
use raft_core::node::{SnapshotReader, SnapshotSource, StateMachine};
use raft_core::{LogIndex, SnapshotMeta};
use serde::{Deserialize, Serialize};

/// The state machine: every account's balance, by account number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bank(pub Vec<u64>);

/// A command: `Transfer(from, to, amount)` moves `amount` from account `from` to account `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transfer(pub usize, pub usize, pub u64);

/// A read: one account's balance, or the sum of all of them.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum Query {
    Balance(usize),
    Total,
}

impl Bank {
    /// Makes the transfer unless it would overdraw or names a missing account; whether it did.
    pub fn transfer(&mut self, &Transfer(from, to, amount): &Transfer) -> bool {
        let done = from != to && to < self.0.len() && self.0.get(from) >= Some(&amount);
        if done {
            self.0[from] -= amount;
            self.0[to] += amount;
        }
        done
    }
    /// The answer to `query`.
    pub fn answer(&self, query: &Query) -> u64 {
        match query {
            Query::Balance(account) => self.0.get(*account).copied().unwrap_or(0),
            Query::Total => self.0.iter().sum(),
        }
    }
}

#[async_trait]
impl StateMachine for Bank {
    type Command = Transfer;
    type Response = bool;
    type Query = Query;
    type QueryResponse = u64;
    async fn apply(&mut self, _: LogIndex, transfer: Transfer) -> bool {
        self.transfer(&transfer)
    }
    async fn query(&self, query: Query) -> u64 {
        self.answer(&query)
    }
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        let image = postcard::to_allocvec(self).map_err(|e| e.to_string())?;
        Ok(Box::new(bytes::Bytes::from(image)))
    }
    async fn restore(
        &mut self,
        _: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        *self = postcard::from_bytes(&image.read_to_end().await?).map_err(|e| e.to_string())?;
        Ok(())
    }
}
