//! [`TcpTransport`]: the handle the node sends through, and the state its tasks share.

use crate::tcp::admission::Admission;
use crate::tcp::config::{ConfigError, TcpConfig};
use crate::tcp::network::{Deliver, Network, Spawner};
use crate::tcp::outbound::stopped;
use crate::tcp::queue::OutboundQueue;
use crate::tcp::share::Shares;
use crate::tcp::stats::{InboundCounters, PeerStats, TransportStats};
use crate::tcp::tls::node_name;
use crate::tcp::warnings::Warnings;
use crate::tcp::{inbound, outbound};
use raft_core::node::{PeerConnection, Transport};
use raft_core::{Message, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Why a transport could not start or change.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TcpError {
    /// The configuration breaks a rule of [`TcpConfig::validate`].
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The listener could not be bound (address in use, not available, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured `listen_addr`.
        addr: String,
        /// What the network stack said.
        source: io::Error,
    },
    /// The transport has been shut down.
    #[error("transport is shut down")]
    Shutdown,
}

/// A TCP transport for one node: one outbound connection per peer, dialled on first use and
/// redialled with backoff; a listener accepting the peers' connections and delivering their
/// messages to the node's [`raft_core::node::Inbox`]. Generic over the network stack, so the same code runs on
/// [`crate::TokioNet`] and, in simulation, `TurmoilNet`.
///
/// Cheap to clone; clones share one transport. It stops when [`TcpTransport::shutdown`] is
/// called or the last clone is dropped.
///
/// ```no_run
/// # async fn example(inbox: raft_core::node::Inbox) -> Result<(), raft_net::TcpError> {
/// use raft_core::NodeId;
/// use raft_net::{Spawner, TcpConfig, TcpTransport, TokioNet};
/// let peers = [(NodeId(2), "10.0.0.2:7000".to_string()), (NodeId(3), "10.0.0.3:7000".to_string())];
/// let config = TcpConfig::new(NodeId(1), 0xC1A5, "0.0.0.0:7000", peers);
/// let transport = TcpTransport::start(TokioNet, config, inbox, Spawner::tokio()).await?;
/// // Give `transport` to `raft_core::node::Node::start`.
/// # Ok(()) }
/// ```
pub struct TcpTransport<N: Network> {
    shared: Arc<Shared<N>>,
    lifecycle: Arc<Lifecycle>,
}

impl<N: Network> Clone for TcpTransport<N> {
    fn clone(&self) -> Self {
        TcpTransport {
            shared: Arc::clone(&self.shared),
            lifecycle: Arc::clone(&self.lifecycle),
        }
    }
}

impl<N: Network> std::fmt::Debug for TcpTransport<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// What every task of one transport shares. Tasks hold this, never the [`Lifecycle`], so that
/// dropping the last handle stops them.
pub(crate) struct Shared<N> {
    pub(crate) network: N,
    /// The configuration as started; `peers` in it is not updated, [`Shared::peers`] is.
    pub(crate) config: TcpConfig,
    /// Where inbound messages go: the node's inbox.
    pub(crate) inbox: Box<dyn Deliver>,
    pub(crate) spawner: Spawner,
    pub(crate) local_addr: SocketAddr,
    /// The current peers and their outbound state. Read by `send` and by the handshake check.
    pub(crate) peers: RwLock<BTreeMap<NodeId, Arc<PeerLink>>>,
    /// The open inbound connection of each peer, keyed by the handshake's node id. Dropping an
    /// entry's sender tells its reader to close: a peer that dialled again has given up on its
    /// older connection, and a removed peer loses its connection.
    pub(crate) inbound: Mutex<BTreeMap<NodeId, InboundSlot>>,
    /// Tells inbound connections apart in [`Shared::inbound`].
    pub(crate) next_connection_id: AtomicU64,
    pub(crate) counters: InboundCounters,
    /// Which accepted connections may attempt a handshake.
    pub(crate) admission: Arc<Admission>,
    /// Each peer's share of what is handed to the inbox.
    pub(crate) shares: Shares,
    /// Which warnings are logged rather than only counted.
    pub(crate) warnings: Warnings,
    /// The peers added because a membership gave their address ([`Transport::membership_changed`]),
    /// whose address a later membership may move; peers configured or added by hand keep the
    /// address they were given.
    pub(crate) learned: Mutex<BTreeSet<NodeId>>,
    /// When the transport started: the origin of the times in [`PeerConnection`] and of the
    /// inbound connections' last-byte clocks.
    pub(crate) started: Instant,
    /// Becomes true on shutdown; its sender lives in the [`Lifecycle`], so it also closes when
    /// the last handle is dropped. Every task waits on it.
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// An inbound connection registered in [`Shared::inbound`].
pub(crate) struct InboundSlot {
    pub(crate) connection_id: u64,
    /// When its last byte arrived, in microseconds since [`Shared::started`]: a connection
    /// that is live is not displaced by a newer one claiming the same node.
    pub(crate) last_byte_micros: Arc<AtomicU64>,
    /// Dropped to close the connection.
    pub(crate) _close: oneshot::Sender<()>,
}

/// One peer's outbound state.
#[derive(Debug)]
pub(crate) struct PeerLink {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) queue: OutboundQueue,
    /// How the link stands; written by the writer task, read by stats and the node's status.
    pub(crate) state: Mutex<PeerConnection>,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped_connection_lost: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
}

impl PeerLink {
    pub(crate) fn set_state(&self, state: PeerConnection) {
        *lock(&self.state) = state;
    }

    /// Unreachable since `now_ms`, unless it already was (the outage began earlier).
    pub(crate) fn mark_unreachable(&self, now_ms: u64) {
        let mut state = lock(&self.state);
        if !matches!(*state, PeerConnection::Unreachable { .. }) {
            *state = PeerConnection::Unreachable { since_ms: now_ms };
        }
    }

    pub(crate) fn state(&self) -> PeerConnection {
        lock(&self.state).clone()
    }

    fn stats(&self) -> PeerStats {
        let connection = self.state();
        PeerStats {
            addr: self.addr.clone(),
            connected: connection == PeerConnection::Connected,
            connection,
            queued: self.queue.len(),
            queued_bytes: self.queue.bytes(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped_queue_full: self.queue.dropped(),
            dropped_connection_lost: self.dropped_connection_lost.load(Ordering::Relaxed),
            dropped_too_large: self.dropped_too_large.load(Ordering::Relaxed),
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
        }
    }
}

/// Starting and stopping: held by the handles only.
struct Lifecycle {
    shutdown: watch::Sender<bool>,
    /// Cloned into every task and dropped by it when it ends; taken out on shutdown, after
    /// which `all_stopped` yields `None` once the last task is gone (mini-redis's pattern).
    task_token: Mutex<Option<mpsc::Sender<()>>>,
    all_stopped: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// A task's proof of life: the transport's shutdown waits until every one is dropped.
pub(crate) type TaskToken = mpsc::Sender<()>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map or option update: a panic inside one cannot
    // leave the data half-changed, so a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<N> Shared<N> {
    pub(crate) fn peers(&self) -> RwLockReadGuard<'_, BTreeMap<NodeId, Arc<PeerLink>>> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<NodeId, Arc<PeerLink>>> {
        self.peers.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn inbound(&self) -> MutexGuard<'_, BTreeMap<NodeId, InboundSlot>> {
        lock(&self.inbound)
    }

    pub(crate) fn micros_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) fn millis_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

impl<N: Network> TcpTransport<N> {
    /// Validates `config`, binds its listener and starts the transport's tasks with `spawner`:
    /// the acceptor, and one writer per peer (which dials only once there is a message to
    /// send). Inbound messages go to `inbox`: the node's [`raft_core::node::Inbox`], or any
    /// other [`Deliver`] sink.
    ///
    /// Under turmoil, call it inside the host with [`Spawner::local`].
    pub async fn start(
        network: N,
        config: TcpConfig,
        inbox: impl Deliver,
        spawner: Spawner,
    ) -> Result<TcpTransport<N>, TcpError> {
        config.validate()?;
        let bind_error = |source| TcpError::Bind {
            addr: config.listen_addr.clone(),
            source,
        };
        let listener = network
            .bind(&config.listen_addr)
            .await
            .map_err(bind_error)?;
        let local_addr = network.local_addr(&listener).map_err(bind_error)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (token, all_stopped) = mpsc::channel(1);
        let peers = config.peers.clone();
        let admission = Arc::new(Admission::new(
            config.max_handshakes_per_address,
            config.max_inbound_connections,
        ));
        let shares = Shares::new(config.max_inbound_bytes);
        let shared = Arc::new(Shared {
            network,
            config,
            inbox: Box::new(inbox),
            spawner,
            local_addr,
            peers: RwLock::new(BTreeMap::new()),
            inbound: Mutex::new(BTreeMap::new()),
            next_connection_id: AtomicU64::new(0),
            counters: InboundCounters::default(),
            admission,
            shares,
            warnings: Warnings::default(),
            learned: Mutex::new(BTreeSet::new()),
            started: Instant::now(),
            shutdown: shutdown_rx,
        });
        let transport = TcpTransport {
            shared: Arc::clone(&shared),
            lifecycle: Arc::new(Lifecycle {
                shutdown: shutdown_tx,
                task_token: Mutex::new(Some(token.clone())),
                all_stopped: tokio::sync::Mutex::new(all_stopped),
            }),
        };
        tracing::info!(
            node = %shared.config.node_id,
            cluster = shared.config.cluster_id,
            %local_addr,
            "transport listening"
        );
        if let Some(tls) = &shared.config.tls {
            let node = shared.config.node_id;
            tls.bind_node(node);
            if !tls.names_node(node) {
                tracing::warn!(%node, name = %node_name(node), "this node's TLS certificate does not name it: peers will refuse its connections");
            }
            let mut shutdown = shared.shutdown.clone();
            let token = token.clone();
            shared.spawner.spawn(tls.clone().watch(node, async move {
                stopped(&mut shutdown).await;
                drop(token);
            }));
        }
        shared
            .spawner
            .spawn(inbound::accept_loop(Arc::clone(&shared), listener, token));
        for (id, addr) in peers {
            transport.add_peer(id, addr)?;
        }
        Ok(transport)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// The address the listener is bound to, with the actual port when configured with port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Adds peer `id` at `addr` (or moves it to a new address, dropping what was queued for
    /// the old one): it may connect to this node from now on, and messages to it are sent.
    pub fn add_peer(&self, id: NodeId, addr: impl Into<String>) -> Result<(), TcpError> {
        let addr = addr.into();
        if id.0 == 0 || id == self.shared.config.node_id {
            return Err(ConfigError(format!("peer id {id} is 0 or this node's own id")).into());
        }
        let token = lock(&self.lifecycle.task_token)
            .clone()
            .ok_or(TcpError::Shutdown)?;
        let config = &self.shared.config;
        let link = Arc::new(PeerLink {
            id,
            addr: addr.clone(),
            queue: OutboundQueue::new(
                config.queue_capacity,
                config.queue_capacity_bytes,
                config.overflow,
            ),
            state: Mutex::new(PeerConnection::Idle),
            sent: AtomicU64::new(0),
            dropped_connection_lost: AtomicU64::new(0),
            dropped_too_large: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
        });
        // A peer configured by IP address keeps room for its handshakes even while unknown
        // addresses hold their whole share of the listener (one known by name is learnt at
        // its first accepted handshake).
        if let Ok(socket) = addr.parse::<SocketAddr>() {
            self.shared.admission.learn(socket.ip());
        }
        {
            let mut peers = self.shared.peers_mut();
            if peers.get(&id).is_some_and(|old| old.addr == addr) {
                return Ok(());
            }
            if let Some(old) = peers.insert(id, Arc::clone(&link)) {
                old.queue.close();
            }
        }
        self.shared
            .spawner
            .spawn(outbound::run_writer(Arc::clone(&self.shared), link, token));
        Ok(())
    }

    /// Removes peer `id`: its queue is discarded, its connections close, and it may no longer
    /// connect. Returns whether it was a peer.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        // Inbound lock first, as the handshake takes them (see `inbound::register`).
        let removed = {
            let mut inbound = self.shared.inbound();
            inbound.remove(&id);
            self.shared.peers_mut().remove(&id)
        };
        match removed {
            Some(link) => {
                link.queue.close();
                true
            }
            None => false,
        }
    }

    /// The transport's counters now.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            peers: self
                .shared
                .peers()
                .iter()
                .map(|(&id, link)| (id, link.stats()))
                .collect(),
            inbound: self
                .shared
                .counters
                .snapshot(self.shared.warnings.suppressed.load(Ordering::Relaxed)),
        }
    }

    /// Stops the transport: closes the listener and every connection, discards queued
    /// messages, and returns once every task has ended (so the listen address can be bound
    /// again). Later sends are dropped. Calling it again returns at once.
    pub async fn shutdown(&self) {
        self.lifecycle.shutdown.send_replace(true);
        lock(&self.lifecycle.task_token).take();
        for link in self.shared.peers().values() {
            link.queue.close();
        }
        self.shared.inbound().clear();
        let mut all_stopped = self.lifecycle.all_stopped.lock().await;
        // Tasks never send on their token: this yields `None` once the last one is dropped.
        while all_stopped.recv().await.is_some() {}
        tracing::info!(node = %self.shared.config.node_id, "transport stopped");
    }
}

impl<N: Network> TcpTransport<N> {
    /// Queues `message` for its recipient, or drops it (a message is never sent on another
    /// node's behalf, nor to a node that is not a peer).
    fn route(&self, peers: &BTreeMap<NodeId, Arc<PeerLink>>, message: Message) {
        let node_id = self.shared.config.node_id;
        if message.from != node_id {
            tracing::debug!(node = %node_id, from = %message.from, "not sending a message from another node");
            return;
        }
        match peers.get(&message.to) {
            Some(link) => {
                // A full queue drops a message and counts it; Raft treats it as lost.
                link.queue.push(message);
            }
            None => {
                tracing::debug!(node = %node_id, to = %message.to, "no such peer; message dropped");
            }
        }
    }
}

impl<N: Network> Transport for TcpTransport<N> {
    fn send(&self, message: Message) {
        self.route(&self.shared.peers(), message);
    }

    fn send_batch(&self, messages: Vec<Message>) {
        let peers = self.shared.peers();
        for message in messages {
            self.route(&peers, message);
        }
    }

    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        self.shared
            .peers()
            .iter()
            .map(|(&id, link)| (id, link.state()))
            .collect()
    }

    /// Adds every member with an address in the membership that is not a peer yet, and moves
    /// a peer learnt this way whose address the membership changed. A peer configured at start
    /// or added with [`TcpTransport::add_peer`] keeps its address (the operator's word wins),
    /// and no peer is removed here: the membership in force may still be undone (its entry
    /// truncated), and a removed leader must stay reachable until it has handed over. Remove
    /// a departed node with [`TcpTransport::remove_peer`]; until then it is harmless, since
    /// the protocol refuses what it should not take from a non-member.
    fn membership_changed(&self, membership: &raft_core::Membership) {
        let me = self.shared.config.node_id;
        let mut learned = lock(&self.shared.learned);
        for (&id, address) in membership.addresses() {
            let current = self.shared.peers().get(&id).map(|link| link.addr.clone());
            let wanted = match current {
                _ if id == me => false,
                None => true,
                Some(current) => learned.contains(&id) && current != *address,
            };
            if !wanted {
                continue;
            }
            match self.add_peer(id, address.clone()) {
                Ok(()) => {
                    tracing::info!(node = %me, peer = %id, %address, "peer learnt from the membership");
                    learned.insert(id);
                }
                Err(error) => {
                    tracing::warn!(node = %me, peer = %id, %address, %error, "cannot add a member as a peer");
                }
            }
        }
    }
}
