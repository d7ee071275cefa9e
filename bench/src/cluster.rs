//! A cluster of nodes in this process, over the in-process transport or loopback TCP, with a
//! state machine that does nothing (so the figures measure the library, not the application).

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{Node, NodeConfig, NodeHandle, SnapshotReader, SnapshotSource, StateMachine};
use raft_core::{LogIndex, NodeId, Role, SnapshotMeta};
use raft_net::{ChannelNetwork, Spawner, TcpConfig, TcpTransport, TokioNet};
use raft_storage::{MemLogStore, MemSnapshotStore};
use std::collections::BTreeMap;
use std::time::Duration;

/// Applies nothing; commands are opaque bytes (`Bytes`, which serde encodes as one length and
/// the bytes, not as a sequence of numbers like a `Vec<u8>`).
#[derive(Default)]
pub struct Null {
    applied: u64,
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
        Ok(Box::new(Bytes::copy_from_slice(
            &self.applied.to_be_bytes(),
        )))
    }
    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        let image = image.read_to_end().await?;
        let bytes = image
            .as_slice()
            .try_into()
            .map_err(|_| "expected 8 bytes")?;
        self.applied = u64::from_be_bytes(bytes);
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
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let network = ChannelNetwork::new();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            network: network.clone(),
            tcp: BTreeMap::new(),
        };
        let mut inbounds = BTreeMap::new();
        for &id in &ids {
            let (inbox, inbound) = raft_core::node::inbox(1 << 16);
            match wire {
                Wire::Channel => network.register(id, inbox),
                Wire::Tcp => {
                    let mut config = TcpConfig::new(id, 1, "127.0.0.1:0", Vec::new());
                    config.queue_capacity = 1 << 16;
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
            if let Some(window) = max_inflight {
                config.raft.max_inflight_appends = window;
            }
            let inbound = inbounds.remove(&id).ok_or("missing inbox")?;
            let store = MemLogStore::new();
            let handle = match wire {
                Wire::Channel => {
                    Node::start(
                        config,
                        Null::default(),
                        store,
                        MemSnapshotStore::new(),
                        network.transport(id),
                        inbound,
                    )
                    .await
                }
                Wire::Tcp => {
                    let transport = cluster.tcp[&id].clone();
                    let snapshots = MemSnapshotStore::new();
                    Node::start(
                        config,
                        Null::default(),
                        store,
                        snapshots,
                        transport,
                        inbound,
                    )
                    .await
                }
            }
            .map_err(|e| e.to_string())?;
            cluster.nodes.insert(id, handle);
        }
        Ok(cluster)
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
