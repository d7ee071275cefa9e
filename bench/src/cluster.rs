//! A cluster of nodes in this process, over the in-process transport or loopback TCP, with a
//! state machine that does nothing (so the figures measure the library, not the application).

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{
    InboundMessages, LogStore, Node, NodeConfig, NodeHandle, SnapshotReader, SnapshotSource,
    SnapshotStore, StateMachine,
};
use raft_core::{LogIndex, NodeId, Role, SnapshotMeta};
use raft_net::{ChannelNetwork, Spawner, TcpConfig, TcpTransport, TokioNet};
use raft_storage::{FileLogStore, FileSnapshotStore, MemLogStore, MemSnapshotStore};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Applies nothing; commands are opaque bytes (`Bytes`, which serde encodes as one length and
/// the bytes, not as a sequence of numbers like a `Vec<u8>`). Its snapshot image is the count
/// of commands applied, padded to `image_bytes` (generated chunk by chunk, never held whole).
#[derive(Default)]
pub struct Null {
    applied: u64,
    image_bytes: u64,
}

/// A generated image: `left` bytes, handed out one shared chunk at a time.
struct Padding {
    left: u64,
    chunk: Bytes,
}

#[async_trait]
impl SnapshotSource for Padding {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.left == 0 {
            return Ok(None);
        }
        let len = self.left.min(self.chunk.len() as u64);
        self.left -= len;
        Ok(Some(self.chunk.slice(..len as usize)))
    }
}

#[async_trait]
impl StateMachine for Null {
    type Command = Bytes;
    type Response = ();
    type Query = ();
    type QueryResponse = u64;

    async fn apply(&mut self, _index: LogIndex, _command: Bytes) {
        self.applied += 1;
    }
    async fn query(&self, _: ()) -> u64 {
        self.applied
    }
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        if self.image_bytes <= 8 {
            return Ok(Box::new(Bytes::copy_from_slice(
                &self.applied.to_be_bytes(),
            )));
        }
        let mut first = self.applied.to_be_bytes().to_vec();
        first.resize(1 << 20, 0);
        Ok(Box::new(Padding {
            left: self.image_bytes,
            chunk: Bytes::from(first),
        }))
    }
    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        let Some(first) = image.next_chunk().await? else {
            return Err("empty image".into());
        };
        let bytes = first
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("expected 8 bytes")?;
        self.applied = u64::from_be_bytes(bytes);
        // The padding is read and dropped, as a real state machine would consume it.
        while image.next_chunk().await?.is_some() {}
        Ok(())
    }
}

/// How the nodes are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// `raft_net::ChannelNetwork`.
    Channel,
    /// `raft_net::TcpTransport` on 127.0.0.1.
    Tcp,
}

pub struct Cluster {
    nodes: BTreeMap<NodeId, NodeHandle<Null>>,
    network: ChannelNetwork,
    tcp: BTreeMap<NodeId, TcpTransport<TokioNet>>,
    /// Nodes whose transport runs but which are started only on `start_node`.
    deferred: BTreeMap<NodeId, (NodeConfig, raft_core::node::InboundMessages)>,
    image_bytes: u64,
    durable: Option<PathBuf>,
}

/// How a cluster is set up beyond the library's defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `Config::max_inflight_appends`.
    pub max_inflight: Option<usize>,
    /// The size of the state machine's snapshot image.
    pub image_bytes: u64,
    /// `NodeConfig::snapshot_every`, when set.
    pub snapshot_every: Option<u64>,
    /// This node's transport starts with the others, but the node itself only on
    /// [`Cluster::start_node`].
    pub deferred: Option<NodeId>,
    /// Durable stores (`FileLogStore`, `FileSnapshotStore`) in subdirectories of this one,
    /// instead of the in-memory stores.
    pub durable: Option<PathBuf>,
    /// Mutual TLS between the nodes (TCP only), with certificates made at start.
    pub tls: bool,
}

impl Cluster {
    /// Starts `n` nodes; `seed` varies the election timeouts between runs; `max_inflight`
    /// overrides the protocol's default window of AppendEntries in flight per follower.
    pub async fn start(
        wire: Wire,
        n: u64,
        seed: u64,
        max_inflight: Option<usize>,
    ) -> Result<Cluster, String> {
        let options = Options {
            max_inflight,
            ..Options::default()
        };
        Cluster::start_with(wire, n, seed, options).await
    }

    /// As [`Cluster::start`], with more settings.
    pub async fn start_with(
        wire: Wire,
        n: u64,
        seed: u64,
        options: Options,
    ) -> Result<Cluster, String> {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let network = ChannelNetwork::new();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            network: network.clone(),
            tcp: BTreeMap::new(),
            deferred: BTreeMap::new(),
            image_bytes: options.image_bytes,
            durable: options.durable.clone(),
        };
        let mut inbounds = BTreeMap::new();
        let certificates = match options.tls {
            true => Some(Certificates::new()?),
            false => None,
        };
        for &id in &ids {
            let (inbox, inbound) = raft_core::node::inbox(1 << 16);
            match wire {
                Wire::Channel => network.register(id, inbox),
                Wire::Tcp => {
                    let mut config = TcpConfig::new(id, 1, "127.0.0.1:0", Vec::new());
                    config.queue_capacity = 1 << 16;
                    if let Some(certificates) = &certificates {
                        config.tls = Some(certificates.node(id)?);
                    }
                    let transport = TcpTransport::start(TokioNet, config, inbox, Spawner::tokio())
                        .await
                        .map_err(|e| e.to_string())?;
                    cluster.tcp.insert(id, transport);
                }
            }
            inbounds.insert(id, inbound);
        }
        if wire == Wire::Tcp {
            let addrs: Vec<(NodeId, String)> = cluster
                .tcp
                .iter()
                .map(|(&id, t)| (id, t.local_addr().to_string()))
                .collect();
            for (&id, transport) in &cluster.tcp {
                for (peer, addr) in &addrs {
                    if *peer != id {
                        transport
                            .add_peer(*peer, addr.clone())
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        for &id in &ids {
            let mut config = NodeConfig::new(id, ids.iter().copied());
            config.seed = seed.wrapping_mul(0x9E37_79B9) ^ id.0;
            if let Some(window) = options.max_inflight {
                config.raft.max_inflight_appends = window;
            }
            if let Some(every) = options.snapshot_every {
                config.snapshot_every = every;
                config.snapshot_keep_entries = config.snapshot_keep_entries.min(every);
            }
            let inbound = inbounds.remove(&id).ok_or("missing inbox")?;
            cluster.deferred.insert(id, (config, inbound));
            if options.deferred != Some(id) {
                cluster.start_node(id).await?;
            }
        }
        Ok(cluster)
    }

    /// Starts a node whose start was deferred, with empty stores (in memory, or in files when
    /// the cluster is durable).
    pub async fn start_node(&mut self, id: NodeId) -> Result<(), String> {
        let (config, inbound) = self.deferred.remove(&id).ok_or("no such node waiting")?;
        let state_machine = Null {
            applied: 0,
            image_bytes: self.image_bytes,
        };
        match &self.durable {
            None => {
                let (store, snapshots) = (MemLogStore::new(), MemSnapshotStore::new());
                self.launch(id, config, inbound, state_machine, store, snapshots)
                    .await
            }
            Some(dir) => {
                let store = FileLogStore::open(dir.join(format!("n{}-log", id.0)))
                    .await
                    .map_err(|e| e.to_string())?;
                let snapshots = FileSnapshotStore::open(dir.join(format!("n{}-snapshots", id.0)))
                    .await
                    .map_err(|e| e.to_string())?;
                self.launch(id, config, inbound, state_machine, store, snapshots)
                    .await
            }
        }
    }

    async fn launch(
        &mut self,
        id: NodeId,
        config: NodeConfig,
        inbound: InboundMessages,
        state_machine: Null,
        store: impl LogStore,
        snapshots: impl SnapshotStore,
    ) -> Result<(), String> {
        let handle = match self.tcp.get(&id) {
            None => {
                let transport = self.network.transport(id);
                Node::start(config, state_machine, store, snapshots, transport, inbound).await
            }
            Some(transport) => {
                let transport = transport.clone();
                Node::start(config, state_machine, store, snapshots, transport, inbound).await
            }
        }
        .map_err(|e| e.to_string())?;
        self.nodes.insert(id, handle);
        Ok(())
    }

    /// One node's handle.
    pub fn node(&self, id: NodeId) -> Option<NodeHandle<Null>> {
        self.nodes.get(&id).cloned()
    }

    pub fn nodes(&self) -> Vec<NodeHandle<Null>> {
        self.nodes.values().cloned().collect()
    }

    /// The leader once it has committed an entry of its term (within 10 s).
    pub async fn leader(&self) -> Result<NodeHandle<Null>, String> {
        for _ in 0..10_000 {
            for node in self.nodes.values() {
                let status = node.status();
                if status.role == Role::Leader && status.commit_index.0 > 0 {
                    return Ok(node.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err("no leader within 10 s".into())
    }

    /// Messages sent over TCP so far, by every node to every peer (0 in-process).
    pub fn tcp_messages_sent(&self) -> u64 {
        self.tcp
            .values()
            .flat_map(|t| t.stats().peers.into_values())
            .map(|p| p.sent)
            .sum()
    }

    /// Stops one node as if its process died.
    pub async fn stop(&mut self, id: NodeId) {
        self.network.unregister(id);
        if let Some(transport) = self.tcp.remove(&id) {
            transport.shutdown().await;
        }
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// A throw-away CA that signs each node's certificate (ECDSA P-256, as deployments commonly
/// use), for `--tls`.
struct Certificates {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl Certificates {
    fn new() -> Result<Certificates, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Certificates {
            issuer: rcgen::Issuer::new(params, key),
            ca_pem: ca.pem(),
        })
    }

    fn node(&self, id: NodeId) -> Result<raft_net::PeerTls, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = rcgen::CertificateParams::new(vec![raft_net::node_name(id)])
            .and_then(|params| params.signed_by(&key, &self.issuer))
            .map_err(|e| e.to_string())?;
        raft_net::PeerTls::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            self.ca_pem.as_bytes(),
            raft_net::TlsOptions::default(),
        )
        .map_err(|e| e.to_string())
    }
}
