//! The async node: drives the protocol with tokio, through the user's [`StateMachine`],
//! [`LogStore`] and [`Transport`], and offers the client API on a cloneable [`NodeHandle`].
//!
//! ```text
//!  clients ──NodeHandle──▶ ┌────────────── driver task ──────────────┐
//!                          │ Raft (pure) ─Actions─▶ 1 send            │──▶ Transport
//!  Transport ──Inbox─────▶ │                        2 LogStore::write │
//!                          │                          SnapshotStore   │
//!                          │                        3 persisted()     │
//!                          │                        4 send (after 2)  │
//!                          │                        5 StateMachine    │
//!                          │                        6 reads, replies  │──▶ watch<Status>
//!                          │                        7 restore, 8 read │
//!                          └──────────────────────────────────────────┘
//!        snapshot builds run on a task of their own ──▶ SnapshotStore
//! ```
//!
//! Every [`NodeConfig::snapshot_every`] applied entries (or on
//! [`NodeHandle::snapshot`]), the node takes a snapshot of its state machine, writes it to its
//! [`SnapshotStore`] off its own task, then discards the log entries it covers (keeping
//! [`NodeConfig::snapshot_keep_entries`] so that a follower slightly behind still catches up
//! from the log). A follower that needs discarded entries receives the leader's latest
//! snapshot in chunks, restores its state machine from it, and continues with the log.
//!
//! One task owns the protocol, the store and the state machine and carries out every batch of
//! [`crate::Actions`] in the documented order. While it waits for a write to become durable,
//! requests and messages queue up; the next batch takes them all, so many proposals share one
//! write (group commit) and one AppendEntries per follower (batching).
//!
//! # Example: replicate your own state machine
//!
//! Implement [`StateMachine`], then start one node per member with a [`LogStore`] and a
//! [`SnapshotStore`] (here `raft_storage::MemLogStore` and `MemSnapshotStore`) and a
//! [`Transport`] (here `raft_net::ChannelNetwork`, which links nodes in one process;
//! `raft_net::TcpTransport` links processes).
//!
//! ```
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use raft_core::node::{
//!     Ack, Consistency, Node, NodeConfig, SnapshotReader, SnapshotSource, StateMachine,
//! };
//! use raft_core::{LogIndex, NodeId, Role, SnapshotMeta};
//!
//! /// A register holding the last value written.
//! #[derive(Default)]
//! struct Register(String);
//!
//! #[async_trait]
//! impl StateMachine for Register {
//!     type Command = String;
//!     type Response = ();
//!     type Query = ();
//!     type QueryResponse = String;
//!     async fn apply(&mut self, _: LogIndex, value: String) {
//!         self.0 = value;
//!     }
//!     async fn query(&self, _: ()) -> String {
//!         self.0.clone()
//!     }
//!     async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
//!         Ok(Box::new(Bytes::from(self.0.clone())))
//!     }
//!     async fn restore(&mut self, _: &SnapshotMeta, image: &mut SnapshotReader<'_>) -> Result<(), String> {
//!         self.0 = String::from_utf8(image.read_to_end().await?).map_err(|e| e.to_string())?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), raft_core::node::Error> {
//! let voters = [NodeId(1), NodeId(2), NodeId(3)];
//! let network = raft_net::ChannelNetwork::new();
//! let mut nodes = Vec::new();
//! for id in voters {
//!     let (inbox, inbound) = raft_core::node::inbox(1024);
//!     network.register(id, inbox);
//!     let config = NodeConfig::new(id, voters);
//!     let (log, snapshots) = (raft_storage::MemLogStore::new(), raft_storage::MemSnapshotStore::new());
//!     let transport = network.transport(id);
//!     nodes.push(Node::start(config, Register::default(), log, snapshots, transport, inbound).await?);
//! }
//! // Wait for an election, then write through the leader and read back linearizably.
//! let leader = loop {
//!     if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
//!         break n.clone();
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! };
//! let written = leader.propose("hello".to_string(), Ack::Quorum).await?;
//! let read = leader.query(Consistency::Linearizable, ()).await?;
//! assert_eq!(read.response, "hello");
//! // Any node serves a read-your-writes read once it has applied the write.
//! let read = nodes[0].query(Consistency::AtLeast(written.index), ()).await?;
//! assert_eq!(read.response, "hello");
//! # Ok(())
//! # }
//! ```

// The node by concern: `driver` runs the loop and carries out each batch of `Actions`;
// requests wait for their answer in `writes` (acknowledgement levels) and `reads` (read
// barriers), and time out through `deadlines`; `publish` keeps the status watchers see;
// `handle` is the client side, which queues requests for the loop.
mod clock;
mod deadlines;
mod driver;
mod handle;
mod inbox;
mod membership;
mod publish;
mod reads;
mod snapshots;
mod status;
mod traits;
mod writes;

pub use clock::NodeClock;
pub use handle::NodeHandle;
pub use inbox::{DEFAULT_INBOX_BYTES, InboundMessages, Inbox, inbox, inbox_with_limits};
pub use status::{Failover, FailoverTrigger, PeerConnection, PeerStatus, Status};
pub use traits::{
    LogStore, Recovered, SnapshotChunk, SnapshotReader, SnapshotSource, SnapshotStore,
    SnapshotWriter, StateMachine, StorageError, StorageErrorKind, Transport,
};

use handle::{Request, Shared};

use crate::{Config, LogIndex, NodeId, SnapshotMeta, Term};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

/// How many replicas must hold a write before it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ack {
    /// The leader made it durable locally (the asynchronous replication of PostgreSQL or
    /// MySQL). Fastest; **a write acknowledged this way is lost if the leader fails before a
    /// majority stores it.** The outcome carries no response: the command has not been applied.
    Local,
    /// A majority stored it and it was applied: Raft commit. Survives any minority of failures.
    #[default]
    Quorum,
    /// Committed, and every **in-sync** voter stored it: not every voter. A voter that has not
    /// answered the leader within [`NodeConfig::max_replication_lag`] is out of sync and not
    /// waited for, so a write succeeds with a voter down (Kafka's `acks=all` with
    /// `min.insync.replicas`). Refused up front with [`Error::NotEnoughReplicas`] when fewer than
    /// [`NodeConfig::min_in_sync`] voters (the leader included; default 1) are in sync: raise
    /// it to make `All` refuse writes that too few replicas would hold. If the node loses leadership after the
    /// commit but before it has seen every in-sync voter store the write, the caller gets
    /// [`Error::Timeout`]: the write is committed, the extra promise is unconfirmed.
    All,
}

/// What a read must be guaranteed to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable, by ReadIndex: the leader confirms it still leads with a heartbeat round
    /// after the read arrives, then serves once it has applied its commit index. On a follower
    /// the read is forwarded: the leader confirms its commit index the same way (one request
    /// for all the reads the follower took at once), and the follower serves once it has
    /// applied that index, which spreads the work of linearizable reads over every node.
    Linearizable,
    /// Linearizable while the leader's lease holds, without a round trip; otherwise as
    /// `Linearizable`. Relies on bounded clock drift (see [`crate::Config`]). On a follower, one
    /// round trip to the leader, which answers from its lease.
    Lease,
    /// Read-your-writes on any node: served once the node has applied at least this index (the
    /// index every write returns).
    AtLeast(LogIndex),
    /// Any node whose data reflects every write acknowledged more than this long before the
    /// read is answered (the follower reads of PostgreSQL's and MySQL's replicas with a maximum
    /// lag); otherwise [`Error::TooStale`]. [`Status::staleness_ms`] shows how stale a node is.
    ///
    /// A leader can always tell (from its heartbeat rounds, without any clock assumption). A
    /// follower relies on statements its leader sends with heartbeats while the leader's lease
    /// holds, so this rests on the same bounded clock drift as [`Consistency::Lease`]; with
    /// leases disabled only the leader serves these reads. Ages are measured on the serving
    /// node's own clock in whole milliseconds.
    BoundedStaleness(Duration),
    /// Any node, now, whatever it has applied.
    Stale,
}

/// Why a request failed. Every variant says what the caller can do about it.
///
/// For a write, each variant also says whether the write may still take effect:
///
/// | variant | the write |
/// |---|---|
/// | `NotLeader` | never takes effect: it was refused, or another entry committed at its index |
/// | `NotEnoughReplicas`, `TransferInProgress`, `UncommittedLimit`, `Membership`, `InvalidArgument`, `InvalidConfig` | never takes effect: refused before it was proposed (or, for a command that does not decode, skipped by every replica) |
/// | `Timeout` | **unknown**: it may have taken effect, or may still |
/// | `Shutdown`, `Storage` | **unknown** if the node had taken it; refused otherwise |
///
/// A write whose entry this node's log lost in a change of leader is not answered `NotLeader`
/// at once: another node may still hold the entry and commit it in a later term. It is answered
/// when its index commits (with its own entry: success; with another: `NotLeader`), or
/// `Timeout` at its deadline.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// Only the leader can do this: retry on `leader_hint` if known. For a write: it has not
    /// taken effect and never will (refused, or another entry committed at its index), so a
    /// retry cannot apply it twice. For a linearizable read on a follower: the node knows no
    /// leader, or its leader lost office before confirming the read; retry.
    #[error("not the leader (leader: {})", crate::types::MaybeNode(*leader_hint))]
    NotLeader {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// No answer within the request timeout. A write's outcome is unknown: it may have been
    /// applied, or may still be (read it back, or make the command idempotent, before a retry).
    #[error("request timed out")]
    Timeout,
    /// An `Ack::All` write was refused up front (no effect): too few voters are in sync.
    #[error("not enough in-sync replicas ({in_sync} in sync, {required} required)")]
    NotEnoughReplicas {
        /// Voters in sync now, the leader included.
        in_sync: usize,
        /// The configured minimum.
        required: usize,
    },
    /// The leader is handing over leadership; retry shortly. A write was refused (no effect).
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The leader holds more uncommitted entries than [`crate::Config::max_uncommitted_bytes`]
    /// allows (it cannot reach a quorum, or its followers are slow). The write was refused (no
    /// effect); retry after a pause, or elsewhere if leadership moves.
    #[error("too much uncommitted data ({uncommitted_bytes} bytes, limit {limit_bytes})")]
    UncommittedLimit {
        /// What the leader's uncommitted entries cost.
        uncommitted_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },
    /// A bounded-staleness read found that this node cannot vouch for data that recent: its
    /// leader's word is older than the bound, or it lacks entries its leader committed. Read
    /// from the leader instead.
    #[error(
        "this node cannot vouch for data within the staleness bound (leader: {})",
        crate::types::MaybeNode(*leader_hint)
    )]
    TooStale {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The node has stopped. A write it had already taken may or may not take effect (other
    /// nodes may commit it); one it never took had no effect.
    #[error("node is shut down")]
    Shutdown,
    /// Stable storage failed; the node stopped rather than risk acknowledging lost data. As
    /// with `Shutdown`, a write it had taken may or may not take effect.
    #[error("storage failure ({kind:?}): {message}")]
    Storage {
        /// What kind of failure it was.
        kind: StorageErrorKind,
        /// What the store said.
        message: String,
    },
    /// A membership change was refused (no effect): unsafe, changing nothing, or made while
    /// the previous one is not committed yet ([`crate::MembershipError::Uncommitted`]: retry
    /// shortly).
    #[error("membership change refused: {0}")]
    Membership(crate::MembershipError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument was invalid (for example, a command larger than the configured maximum).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The error the node reports for a failure of its store.
    pub(crate) fn storage(error: StorageError) -> Error {
        Error::Storage {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl From<crate::ProtocolError> for Error {
    fn from(e: crate::ProtocolError) -> Error {
        match e {
            crate::ProtocolError::NotLeader { leader_hint } => Error::NotLeader { leader_hint },
            crate::ProtocolError::TransferInProgress => Error::TransferInProgress,
            crate::ProtocolError::UncommittedLimit {
                uncommitted_bytes,
                limit_bytes,
            } => Error::UncommittedLimit {
                uncommitted_bytes,
                limit_bytes,
            },
            crate::ProtocolError::Timeout => Error::Timeout,
            crate::ProtocolError::Membership(error) => Error::Membership(error),
            crate::ProtocolError::InvalidConfig(c) => Error::InvalidConfig(c.to_string()),
            crate::ProtocolError::InvalidArgument(why) => Error::InvalidArgument(why),
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}

/// The outcome of an acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome<R> {
    /// Where the command sits in the log: the read-your-writes token for
    /// [`Consistency::AtLeast`].
    pub index: LogIndex,
    /// The term it was written in.
    pub term: Term,
    /// What the state machine returned; `None` for [`Ack::Local`] writes.
    pub response: Option<R>,
}

/// The outcome of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutcome<R> {
    /// The state machine had applied up to this index when it answered.
    pub applied_index: LogIndex,
    /// The answer.
    pub response: R,
}

/// Settings of one node beyond the protocol's own [`Config`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The protocol's tunables (this node's id among them).
    pub raft: Config,
    /// The voting members when the cluster is first formed. A node that recovers saved voters
    /// uses those instead, and membership changes in the log supersede them. Empty for a node
    /// that joins a running cluster ([`NodeConfig::joining`]).
    pub voters: BTreeSet<NodeId>,
    /// How long a client request may take before it fails with [`Error::Timeout`], counted
    /// from when the node takes it from its queue. The node keeps this deadline itself, so it
    /// cannot answer while it is blocked in a storage or state machine call; wrap a call in
    /// `tokio::time::timeout` for a hard bound.
    pub request_timeout: Duration,
    /// A follower that has not answered the leader for this long is out of sync: `Ack::All`
    /// writes stop waiting for it, and `Status` reports it.
    pub max_replication_lag: Duration,
    /// The fewest in-sync voters (the leader included) an `Ack::All` write accepts.
    pub min_in_sync: usize,
    /// The largest encoded command accepted, in bytes.
    pub max_command_bytes: usize,
    /// Seeds the protocol's randomness (mixed with the node id): election timeouts, and the
    /// numbers that tell this run's answers and campaigns from those of the node's previous
    /// runs (see [`crate::Freshness`]). [`NodeConfig::new`] draws it at random; set a fixed
    /// value only for reproducible tests, and then a different one for each restart.
    pub seed: u64,
    /// How many leadership changes [`Status::failovers`] keeps.
    pub failover_history: usize,
    /// Take a snapshot once this many entries were applied since the last one (§7), so that
    /// the log, and a restart's replay, stay bounded. 0 takes none on its own
    /// ([`NodeHandle::snapshot`] still does). Default 10,000.
    pub snapshot_every: u64,
    /// Entries kept in the log before a new snapshot's last one, so that a follower slightly
    /// behind catches up from the log rather than the snapshot. Default 1,000.
    pub snapshot_keep_entries: u64,
    /// The largest chunk of a snapshot image read or sent at once, in bytes. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// The clock the node measures its timeouts, leases and staleness bounds on: tokio's
    /// ([`NodeClock::real`], the default). Simulations give a node an adjustable one to make
    /// its clock drift ([`NodeClock::adjustable`]). Request timeouts keep tokio's clock.
    pub clock: NodeClock,
}

impl NodeConfig {
    /// Defaults for node `id` of a cluster whose voters are `voters`.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> NodeConfig {
        NodeConfig {
            raft: Config::new(id),
            voters: voters.into_iter().collect(),
            request_timeout: Duration::from_secs(5),
            max_replication_lag: Duration::from_secs(1),
            min_in_sync: 1,
            max_command_bytes: 4 << 20,
            seed: random_seed(),
            failover_history: 64,
            snapshot_every: 10_000,
            snapshot_keep_entries: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            clock: NodeClock::real(),
        }
    }

    /// Defaults for node `id` joining a running cluster: it forms no cluster of its own,
    /// never campaigns, and waits for the leader to add it (as a learner,
    /// [`NodeHandle::add_learner`]) and send it a snapshot or the log, which bring it the
    /// cluster's membership.
    pub fn joining(id: NodeId) -> NodeConfig {
        NodeConfig::new(id, [])
    }

    /// Checks the protocol configuration and the node's own settings against each other.
    pub fn validate(&self) -> Result<(), Error> {
        self.raft
            .validate()
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        if self.voters.contains(&NodeId(0)) {
            return Err(Error::InvalidConfig("node id 0 is reserved".into()));
        }
        // No voters: a node that joins a running cluster, which takes the cluster's membership
        // from its leader; the voters may change, so `min_in_sync` is checked against the
        // first ones only.
        let voters = if self.voters.is_empty() {
            usize::MAX
        } else {
            self.voters.len()
        };
        if self.min_in_sync == 0 || self.min_in_sync > voters {
            return Err(Error::InvalidConfig(format!(
                "min_in_sync {} must be between 1 and the number of voters ({})",
                self.min_in_sync,
                self.voters.len()
            )));
        }
        if self.request_timeout.is_zero() || self.max_replication_lag.is_zero() {
            return Err(Error::InvalidConfig(
                "request_timeout and max_replication_lag must be non-zero".into(),
            ));
        }
        if self.max_command_bytes == 0 || self.snapshot_chunk_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_command_bytes and snapshot_chunk_bytes must be >= 1".into(),
            ));
        }
        Ok(())
    }
}

/// The future that runs a node; spawn it on any executor (for example
/// `tokio::task::spawn_local` under turmoil, where task order must be deterministic).
pub type NodeTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts nodes.
pub struct Node;

impl Node {
    /// Recovers from `store` and `snapshots`, then spawns the node's task with `tokio::spawn`.
    pub async fn start<SM, LS, SS, T>(
        config: NodeConfig,
        state_machine: SM,
        store: LS,
        snapshots: SS,
        transport: T,
        inbound: InboundMessages,
    ) -> Result<NodeHandle<SM>, Error>
    where
        SM: StateMachine,
        LS: LogStore,
        SS: SnapshotStore,
        T: Transport,
    {
        let (handle, task) =
            Node::create(config, state_machine, store, snapshots, transport, inbound).await?;
        tokio::spawn(task);
        Ok(handle)
    }

    /// Recovers from `store` and `snapshots` and returns the handle and the task to run,
    /// unspawned.
    ///
    /// Recovery: the log store's entries after its start, and the latest snapshot. The state
    /// machine is restored from that snapshot, unless it keeps its own state durably at or
    /// after the log's start ([`StateMachine::durable_index`]); then the log's entries after
    /// what it holds are applied again as they commit.
    pub async fn create<SM, LS, SS, T>(
        config: NodeConfig,
        mut state_machine: SM,
        mut store: LS,
        snapshots: SS,
        transport: T,
        inbound: InboundMessages,
    ) -> Result<(NodeHandle<SM>, NodeTask), Error>
    where
        SM: StateMachine,
        LS: LogStore,
        SS: SnapshotStore,
        T: Transport,
    {
        config.validate()?;
        let recovered = store.recover().await.map_err(Error::storage)?;
        let mut snapshots = snapshots;
        let snapshot = snapshots.latest().await.map_err(Error::storage)?;
        let mut snapshots =
            snapshots::Snapshots::new(snapshots, snapshot.clone(), config.snapshot_chunk_bytes);
        let applied = restore_state_machine(
            &mut state_machine,
            &mut snapshots,
            snapshot.as_ref(),
            recovered.log_start.index,
        )
        .await?;
        // The cluster's first membership: saved once, when the node first starts, so that a
        // later start with other voters configured cannot change it. A joining node (no
        // voters configured) has none: its log or snapshot brings one.
        // A store that holds entries or a snapshot but no first voters belongs to a node that
        // joined a running cluster: voters configured now were never its cluster's first
        // ones, and saving them would invent a membership the cluster never had.
        let joined =
            !recovered.entries.is_empty() || recovered.log_start.index.0 > 0 || snapshot.is_some();
        let voters = match recovered.voters.clone() {
            Some(voters) => voters,
            None if config.voters.is_empty() || joined => BTreeSet::new(),
            None => {
                store
                    .save_voters(&config.voters)
                    .await
                    .map_err(Error::storage)?;
                config.voters.clone()
            }
        };
        let membership = crate::Membership::new(voters).ok();
        let (requests_tx, requests_rx) = mpsc::channel(4096);
        let id = config.raft.id;
        let (status_tx, status_rx) = watch::channel(publish::initial_status(id));
        let shared = Arc::new(Shared::default());
        let task = driver::Driver::new(
            config.clone(),
            membership,
            recovered,
            snapshot,
            applied,
            state_machine,
            store,
            snapshots,
            transport,
            requests_rx,
            inbound,
            status_tx,
            shared.clone(),
        )?;
        let handle = NodeHandle::new(
            id,
            requests_tx,
            status_rx,
            config.request_timeout,
            config.max_command_bytes,
            shared,
        );
        Ok((handle, Box::pin(task.run())))
    }
}

/// Brings a starting state machine to where recovery can continue from: its own durable state
/// if it keeps one at or after the log's start, else the latest snapshot. Returns the index it
/// then holds.
async fn restore_state_machine<SM: StateMachine, SS: SnapshotStore>(
    state_machine: &mut SM,
    snapshots: &mut snapshots::Snapshots<SS>,
    snapshot: Option<&SnapshotMeta>,
    log_start: LogIndex,
) -> Result<LogIndex, Error> {
    let snapshot_index = snapshot.map_or(LogIndex(0), |s| s.last.index);
    if let Some(durable) = state_machine.durable_index()
        && durable >= log_start
        && durable >= snapshot_index
    {
        return Ok(durable);
    }
    let Some(meta) = snapshot else {
        if log_start.0 > 0 {
            return Err(Error::storage(StorageError::Corrupt(format!(
                "the log starts after {log_start} but there is no snapshot"
            ))));
        }
        return Ok(LogIndex(0));
    };
    snapshots.restore(state_machine, meta).await?;
    Ok(meta.last.index)
}

/// A seed that differs between runs of a process (and between calls), from the standard
/// library's randomly keyed hasher: no dependency, no clock read.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
