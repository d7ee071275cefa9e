//! The three seams a user plugs into: the state machine being replicated, the log's stable
//! storage, and the network.

use crate::node::{Failover, PeerConnection};
use crate::{Entry, EntryId, HardState, LogIndex, Message, NodeId, SnapshotMeta};
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
/// use raft_core::node::{SnapshotReader, SnapshotSource, StateMachine};
/// use raft_core::{LogIndex, SnapshotMeta};
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
///     async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
///         // Eight bytes: serializing under `&self` is fine for a state this small.
///         Ok(Box::new(Bytes::from(self.value.to_be_bytes().to_vec())))
///     }
///     async fn restore(
///         &mut self,
///         _meta: &SnapshotMeta,
///         image: &mut SnapshotReader<'_>,
///     ) -> Result<(), String> {
///         let image = image.read_to_end().await?;
///         let bytes: [u8; 8] = image.as_slice().try_into().map_err(|_| "not 8 bytes".to_string())?;
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

    /// A point-in-time image of the state after the last command applied, for log compaction
    /// (§7).
    ///
    /// The node calls this between applies and reads the image from the returned source on a
    /// task of its own, writing it to its [`SnapshotStore`] while it goes on applying and
    /// answering heartbeats. So this should return quickly with a view that later applies do
    /// not change (a clone of a persistent or copy-on-write structure, a database's snapshot
    /// handle) and produce the bytes in the source. A state machine that can only serialize
    /// itself can do it here and return the bytes as one chunk (`Bytes` is a
    /// [`SnapshotSource`]): correct, but applies wait while it serializes.
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String>;

    /// Replaces the state with the image of the snapshot `meta` describes (taken by some
    /// node's [`StateMachine::snapshot`] after it applied `meta.last`), read chunk by chunk
    /// from `image`, so an image larger than memory can be restored.
    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String>;

    /// For a state machine that keeps its own state durably: the index of the last command it
    /// applied and kept. When it is at or after the start of the recovered log, a restarted
    /// node neither restores a snapshot nor applies those entries again. The default, `None`,
    /// is a state machine that starts empty on every start.
    fn durable_index(&self) -> Option<LogIndex> {
        None
    }
}

/// Where the node reads a snapshot image from, chunk by chunk: what
/// [`StateMachine::snapshot`] hands out.
#[async_trait]
pub trait SnapshotSource: Send + 'static {
    /// The next chunk of the image, or `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String>;
}

/// An image already in memory, as one chunk.
#[async_trait]
impl SnapshotSource for Bytes {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        Ok(Some(std::mem::take(self)))
    }
}

/// Reads the image of one stored snapshot, chunk by chunk, for [`StateMachine::restore`].
pub struct SnapshotReader<'a> {
    store: &'a mut dyn SnapshotStore,
    meta: SnapshotMeta,
    offset: u64,
    done: bool,
    chunk_bytes: usize,
}

impl<'a> SnapshotReader<'a> {
    /// Reads the latest image in `store`, which must be the one `meta` describes, in chunks of
    /// up to `chunk_bytes`.
    pub fn new(
        store: &'a mut dyn SnapshotStore,
        meta: SnapshotMeta,
        chunk_bytes: usize,
    ) -> SnapshotReader<'a> {
        SnapshotReader {
            store,
            meta,
            offset: 0,
            done: false,
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    /// The next chunk of the image, or `None` at its end. Fails if the store cannot read it,
    /// or now holds another image.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.done {
            return Ok(None);
        }
        let chunk = self
            .store
            .read(self.offset, self.chunk_bytes)
            .await
            .map_err(|e| e.to_string())?;
        if chunk.meta != self.meta {
            return Err(format!(
                "the store holds the snapshot at {} instead of the one at {}",
                chunk.meta.last.index, self.meta.last.index
            ));
        }
        self.offset += chunk.data.len() as u64;
        self.done = chunk.last;
        if chunk.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(chunk.data))
    }

    /// How many bytes of the image were read so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The rest of the image in one buffer (for a state small enough to hold twice).
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, String> {
        let mut image = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            image.extend_from_slice(&chunk);
        }
        Ok(image)
    }
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
    /// Every entry held, in index order, from the one after `log_start`.
    pub entries: Vec<Entry>,
    /// The cluster's first voters, saved with [`LogStore::save_voters`] when the node first
    /// started, if it did (a node that joined a running cluster saved none). Later
    /// memberships are in the log and the snapshot.
    pub voters: Option<BTreeSet<NodeId>>,
    /// The entry just before the first one held: the last one purged with
    /// [`LogStore::purge_prefix`] (index 0, term 0 when nothing was purged). Its term is what a
    /// follower's consistency check needs for an append right after it.
    pub log_start: EntryId,
    /// The history of leadership changes last saved with [`LogStore::save_failovers`], oldest
    /// first (empty when none was).
    pub failovers: Vec<Failover>,
}

impl Recovered {
    /// What a store recovered: its hard state, its entries from index 1, its saved voters.
    /// (The type may gain fields that default to "none".) Set [`Recovered::log_start`] for a
    /// log whose prefix was purged.
    pub fn new(
        hard_state: HardState,
        entries: Vec<Entry>,
        voters: Option<BTreeSet<NodeId>>,
    ) -> Recovered {
        Recovered {
            hard_state,
            entries,
            voters,
            log_start: EntryId::default(),
            failovers: Vec::new(),
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
/// use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId};
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
///     async fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError> {
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

    /// Makes the log start after `up_to` (a snapshot covers it): discards every entry at or
    /// before `up_to.index`, and every entry after it too unless the entry held at
    /// `up_to.index` has `up_to.term` (a snapshot installed from the leader replaced a log that
    /// diverged from it). Durably remembers `up_to`, which [`LogStore::recover`] returns as
    /// [`Recovered::log_start`]. Purging at or before the current start changes nothing.
    async fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError>;

    /// Entries `from..=to` that are still held, in order.
    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError>;

    /// Durably records the cluster's first voters, once, on a node's first start (membership
    /// changes are log entries, and snapshots carry the membership; neither comes here).
    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError>;

    /// Durably records the history of leadership changes this node has seen (the most recent
    /// [`crate::node::NodeConfig::failover_history`]; all of it, replacing what was saved
    /// before), which [`LogStore::recover`] returns as [`Recovered::failovers`] so that
    /// [`crate::node::Status::failovers`] survives a restart. The node calls it after each
    /// change of leader it sees. Nothing in the protocol depends on it: the default keeps
    /// nothing, and a restarted node's history then starts empty.
    async fn save_failovers(&mut self, history: &[Failover]) -> Result<(), StorageError> {
        let _ = history;
        Ok(())
    }
}

/// Where snapshots live (§7): each image is written in chunks, finished atomically, and read
/// back in chunks, so an image never has to fit in memory at once. The store keeps the latest
/// complete image (the one whose last included entry has the highest index) and may drop older
/// ones once a newer one is finished.
///
/// Several images may be written at once (a node's own snapshot while it receives one from its
/// leader): each [`SnapshotWriter`] is independent and invisible until finished. A writer
/// dropped without [`SnapshotWriter::finish`] leaves nothing behind. `raft_storage` has an
/// in-memory store and a conformance suite (`raft_storage::conformance::snapshots`).
#[async_trait]
pub trait SnapshotStore: Send + 'static {
    /// Starts writing a new image of the state described by `meta`.
    async fn create(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<Box<dyn SnapshotWriter>, StorageError>;

    /// The metadata of the latest complete image, if any.
    async fn latest(&mut self) -> Result<Option<SnapshotMeta>, StorageError>;

    /// Up to `max_bytes` (at least 1) of the latest complete image, from byte `offset`, with
    /// that image's metadata: a reader that finds a newer image than the one it was reading
    /// starts over. Fails with [`StorageError::Unavailable`] when there is no complete image
    /// or `offset` is past its end.
    async fn read(&mut self, offset: u64, max_bytes: usize) -> Result<SnapshotChunk, StorageError>;
}

/// A piece of a stored image, read with [`SnapshotStore::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotChunk {
    /// The image this piece belongs to.
    pub meta: SnapshotMeta,
    /// Where in the image it starts.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// It ends the image.
    pub last: bool,
}

impl SnapshotChunk {
    /// A chunk of the image `meta`, at `offset`; `last` when it ends the image.
    pub fn new(meta: SnapshotMeta, offset: u64, data: Bytes, last: bool) -> SnapshotChunk {
        SnapshotChunk {
            meta,
            offset,
            data,
            last,
        }
    }
}

/// An image being written into a [`SnapshotStore`], from [`SnapshotStore::create`].
#[async_trait]
pub trait SnapshotWriter: Send {
    /// Appends `data` to the image.
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError>;

    /// Makes the image durable and, atomically, the store's latest, unless the store already
    /// holds a complete image with a higher last index (then this one is discarded). A crash
    /// before this returns leaves the store as it was.
    async fn finish(self: Box<Self>) -> Result<(), StorageError>;
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

    /// The membership in force changed (a change was appended, undone, or came with a
    /// snapshot), and on start. A transport that learns where peers are from the membership
    /// adds the members with an address ([`crate::Membership::addresses`]) it does not know;
    /// the default does nothing.
    fn membership_changed(&self, membership: &crate::Membership) {
        let _ = membership;
    }

    /// How the link to each peer stands, in id order, for [`crate::node::Status::connections`].
    /// Called at most once per millisecond while the node is busy, so it must be cheap; the
    /// default reports nothing.
    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        Vec::new()
    }
}
