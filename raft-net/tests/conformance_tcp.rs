//! The transport conformance suite run against the TCP transport on loopback ([`TokioNet`]),
//! one test per check.
//!
//! Each node listens on 127.0.0.1, on a port picked at its first start and kept for its
//! restarts; a new node is configured with the addresses of the nodes before it, and added as a
//! peer to those that run. Timeouts are the short ones of the other TCP tests. The drop counter
//! is the sum of [`TransportStats`]' drop counters: the outbound ones of every peer (queue
//! full, connection lost, too large) and the inbound ones (inbox full, over the sender's
//! share).
//!
//! [`TransportStats`]: raft_net::TransportStats

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::Inbox;
use raft_net::conformance::{self, Check, Cluster};
use raft_net::{Spawner, TcpError, TcpTransport, TokioNet};
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Default)]
struct Loopback {
    running: BTreeMap<NodeId, TcpTransport<TokioNet>>,
    /// Where each node started listens, kept for its restart.
    addrs: BTreeMap<NodeId, SocketAddr>,
}

impl Cluster for Loopback {
    type Transport = TcpTransport<TokioNet>;
    type Error = TcpError;

    async fn start(&mut self, id: NodeId, inbox: Inbox) -> Result<Self::Transport, TcpError> {
        let listen = self
            .addrs
            .get(&id)
            .map_or_else(|| "127.0.0.1:0".to_string(), SocketAddr::to_string);
        let mut config = support::fast_config(id.0, support::CLUSTER, &listen);
        config.peers = self
            .addrs
            .iter()
            .filter(|&(&peer, _)| peer != id)
            .map(|(&peer, addr)| (peer, addr.to_string()))
            .collect();
        let transport = TcpTransport::start(TokioNet, config, inbox, Spawner::tokio()).await?;
        let addr = transport.local_addr();
        for other in self.running.values() {
            other.add_peer(id, addr.to_string())?;
        }
        self.addrs.insert(id, addr);
        self.running.insert(id, transport.clone());
        Ok(transport)
    }

    async fn stop(&mut self, id: NodeId) {
        if let Some(transport) = self.running.remove(&id) {
            transport.shutdown().await;
        }
    }

    /// One connection per direction of each pair, written in queue order.
    fn fifo_per_link(&self) -> bool {
        true
    }

    fn dropped(&self, id: NodeId) -> Option<u64> {
        let stats = self.running.get(&id)?.stats();
        let outbound: u64 = stats
            .peers
            .values()
            .map(|peer| {
                peer.dropped_queue_full + peer.dropped_connection_lost + peer.dropped_too_large
            })
            .sum();
        let inbound =
            stats.inbound.messages_dropped_inbox_full + stats.inbound.messages_dropped_over_share;
        Some(outbound + inbound)
    }
}

async fn passes(check: Check) {
    if let Err(failure) = conformance::run_check(check, Loopback::default()).await {
        panic!("{failure}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    passes(Check::Delivery).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer() {
    passes(Check::DeadPeer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering() {
    passes(Check::Ordering).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure() {
    passes(Check::BackPressure).await;
}

/// Also: `shutdown` closes the listener before it returns, so a node restarted at once on its
/// address can bind it (30 restarts in a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery() {
    passes(Check::Recovery).await;
}
