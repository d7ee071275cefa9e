//! The three seams a user plugs into: the state machine being replicated, the log's stable
//! storage, and the network.

use crate::node::PeerConnection;
use crate::{Entry, HardState, LogIndex, Message, NodeId};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeSet;
use thiserror::Error;

/// The deterministic state machine that Raft replicates.
///
/// Every node applies the same commands in the same order, so `apply` must depend on nothing
/// but the state and the command: no clocks, no randomness, no I/O whose result can differ
/// between nodes. Commands and responses are the user's own serde types; the node encodes
/// them (with `postcard`) for the log.
///
/// # Example: a replicated counter
///
/// ```
/// use raft_core::node::StateMachine;
/// use raft_core::LogIndex;
/// use async_trait::async_trait;
/// use bytes::Bytes;
///
/// #[derive(Default)]
/// struct Counter { value: i64 }
///
/// #[async_trait]
/// impl StateMachine for Counter {
///     type Command = i64;          // add this much
///     type Response = i64;         // the value after adding
///     type Query = ();
///     type QueryResponse = i64;
///
///     async fn apply(&mut self, _index: LogIndex, delta: i64) -> i64 {
///         self.value += delta;
///         self.value
///     }
///     async fn query(&self, _: ()) -> i64 {
///         self.value
///     }
///     async fn snapshot(&self) -> Bytes {
///         Bytes::from(self.value.to_be_bytes().to_vec())
///     }
///     async fn restore(&mut self, image: Bytes) -> Result<(), String> {
///         let bytes: [u8; 8] = image.as_ref().try_into().map_err(|_| "not 8 bytes".to_string())?;
///         self.value = i64::from_be_bytes(bytes);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait StateMachine: Send + 'static {
    /// What clients propose; stored in the log.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to the client that proposed it.
    type Response: Send + 'static;
    /// A read-only question about the state.
    type Query: Send + 'static;
    /// The answer to a [`StateMachine::Query`].
    type QueryResponse: Send + 'static;

    /// Applies one committed command. Called once per command, in log order, on every node.
    async fn apply(&mut self, index: LogIndex, command: Self::Command) -> Self::Response;

    /// Answers a query from the current state. The node calls it only after the read barrier
    /// the caller asked for (see [`crate::node::Consistency`]).
    async fn query(&self, query: Self::Query) -> Self::QueryResponse;

    /// A consistent point-in-time image of the state, for log compaction (§7).
    async fn snapshot(&self) -> Bytes;

    /// Replaces the state with an image from [`StateMachine::snapshot`].
    async fn restore(&mut self, image: Bytes) -> Result<(), String>;
}

/// Why a storage operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The operating system reported an error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data failed a check (bad checksum, impossible record, gap in the log).
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// The store refuses further writes after an earlier failure that may have lost data
    /// (for example a failed fsync); restart the node to recover from what is durable.
    #[error("storage poisoned by an earlier failure: {0}")]
    Poisoned(String),
    /// The caller asked for something the store cannot have (a purged or future index).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    /// What kind of failure this is, in a form that can be copied, compared and kept (the
    /// node reports it in [`crate::node::Error::Storage`]).
    pub fn kind(&self) -> StorageErrorKind {
        match self {
            StorageError::Io(error) => StorageErrorKind::Io(error.kind()),
            StorageError::Corrupt(_) => StorageErrorKind::Corrupt,
            StorageError::Poisoned(_) => StorageErrorKind::Poisoned,
            StorageError::Unavailable(_) => StorageErrorKind::Unavailable,
        }
    }
}

/// The kind of a [`StorageError`], which a caller may act on: retry after an I/O error,
/// restore from a backup after corruption, restart after poisoning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The operating system reported an error of this kind.
    Io(std::io::ErrorKind),
    /// Stored data failed a check.
    Corrupt,
    /// The store refuses writes after an earlier failure.
    Poisoned,
    /// Something was asked that the store cannot have (a purged or future index).
    Unavailable,
}

/// What a log store recovered at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// The last hard state written.
    pub hard_state: HardState,
    /// Every entry held, in index order, from index 1 (until snapshots move the start).
    pub entries: Vec<Entry>,
    /// The voting members last saved with [`LogStore::save_voters`], if any.
    pub voters: Option<BTreeSet<NodeId>>,
}

impl Recovered {
    /// What a store recovered: its hard state, its entries from index 1, its saved voters.
    /// (The type may gain fields, such as snapshot metadata, that default to "none".)
    pub fn new(
        hard_state: HardState,
        entries: Vec<Entry>,
        voters: Option<BTreeSet<NodeId>>,
    ) -> Recovered {
        Recovered {
            hard_state,
            entries,
            voters,
        }
    }
}

/// Stable storage for the log and the hard state of one node.
///
/// Every method that writes returns only once what it wrote is durable: this is the
/// durability barrier Raft's safety rests on (Figure 2: persistent state is updated on stable
/// storage before the node answers an RPC). `raft_storage` has an in-memory store and a
/// conformance suite (`raft_storage::conformance::run`) any implementation can run against
/// itself.
///
/// # Example: a store that wraps another and counts durable writes
///
/// ```
/// use async_trait::async_trait;
/// use raft_core::node::{LogStore, Recovered, StorageError};
/// use raft_core::{Entry, HardState, LogIndex, NodeId};
/// use std::collections::BTreeSet;
///
/// struct Counting<S> { inner: S, writes: u64 }
///
/// #[async_trait]
/// impl<S: LogStore> LogStore for Counting<S> {
///     async fn recover(&mut self) -> Result<Recovered, StorageError> {
///         self.inner.recover().await
///     }
///     async fn write(&mut self, hard_state: Option<HardState>, entries: Vec<Entry>) -> Result<(), StorageError> {
///         self.writes += 1; // one call per batch: the group-commit unit
///         self.inner.write(hard_state, entries).await
///     }
///     async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
///         self.inner.truncate_suffix(from).await
///     }
///     async fn purge_prefix(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
///         self.inner.purge_prefix(up_to).await
///     }
///     async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
///         self.inner.read(from, to).await
///     }
///     async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
///         self.inner.save_voters(voters).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut store = Counting { inner: raft_storage::MemLogStore::new(), writes: 0 };
/// store.write(Some(HardState::default()), Vec::new()).await.unwrap();
/// assert_eq!(store.writes, 1);
/// # });
/// ```
#[async_trait]
pub trait LogStore: Send + 'static {
    /// Reads back everything durable, to restart the protocol.
    async fn recover(&mut self) -> Result<Recovered, StorageError>;

    /// Durably stores `hard_state` (when given), then `entries`. `entries` are contiguous, and
    /// every stored entry at or after `entries[0].index` is replaced by them. This is step 2 of
    /// the [`crate::Actions`] contract; one call per batch lets a store group-commit.
    async fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> Result<(), StorageError>;

    /// Removes every entry at or after `from`.
    async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError>;

    /// Discards every entry at or before `up_to` (they are covered by a snapshot).
    async fn purge_prefix(&mut self, up_to: LogIndex) -> Result<(), StorageError>;

    /// Entries `from..=to` that are still held, in order.
    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError>;

    /// Durably records the voting members.
    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError>;
}

/// Outbound messages to peers. Inbound messages reach the node through its [`crate::node::Inbox`].
///
/// `send` must not block and must not fail loudly: Raft tolerates lost, delayed and duplicated
/// messages, so a transport drops what it cannot deliver (and may count or log it).
///
/// # Example: a transport that delivers straight into peers' inboxes
///
/// ```
/// use raft_core::node::{Inbox, Transport};
/// use raft_core::{Message, NodeId};
/// use std::collections::BTreeMap;
///
/// struct Direct { peers: BTreeMap<NodeId, Inbox> }
///
/// impl Transport for Direct {
///     fn send(&self, message: Message) {
///         if let Some(inbox) = self.peers.get(&message.to) {
///             let _ = inbox.deliver(message); // a full inbox drops it, like a lost packet
///         }
///     }
/// }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// Queues `message` for delivery to `message.to`.
    fn send(&self, message: Message);

    /// Queues several messages; transports may write them to a peer in one go.
    fn send_batch(&self, messages: Vec<Message>) {
        for message in messages {
            self.send(message);
        }
    }

    /// How the link to each peer stands, in id order, for [`crate::node::Status::connections`].
    /// Called at most once per millisecond while the node is busy, so it must be cheap; the
    /// default reports nothing.
    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        Vec::new()
    }
}
