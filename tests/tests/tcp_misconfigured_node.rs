//! A node started with another cluster's id, over real TCP: the other two elect a leader
//! without it, and it shows in its own `Status` why it cannot join (before, it sat as a
//! pre-candidate at term 0 and the reason was a log line on the other nodes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Node, NodeConfig, PeerConnection};
use raft_core::{NodeId, Role};
use raft_net::{Spawner, TcpConfig, TcpTransport, TokioNet};
use raft_storage::{MemLogStore, MemSnapshotStore};
use raft_tests::kv::KvStore;
use std::time::Duration;

const CLUSTER: u64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cluster_id_shows_the_refusal_in_its_status() {
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let mut inbounds = Vec::new();
    let mut transports = Vec::new();
    for id in voters {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        // Node 3 was given another cluster's id.
        let cluster = if id == NodeId(3) {
            CLUSTER + 1
        } else {
            CLUSTER
        };
        let mut config = TcpConfig::new(id, cluster, "127.0.0.1:0", []);
        config.reconnect_backoff_max = Duration::from_millis(100);
        let transport = TcpTransport::start(TokioNet, config, inbox, Spawner::tokio())
            .await
            .unwrap();
        inbounds.push(inbound);
        transports.push(transport);
    }
    for a in &transports {
        for b in &transports {
            if a.node_id() != b.node_id() {
                a.add_peer(b.node_id(), b.local_addr().to_string()).unwrap();
            }
        }
    }
    let mut nodes = Vec::new();
    for ((id, transport), inbound) in voters.into_iter().zip(transports).zip(inbounds) {
        let mut config = NodeConfig::new(id, voters);
        config.seed = id.0;
        let node = Node::start(
            config,
            KvStore::default(),
            MemLogStore::new(),
            MemSnapshotStore::new(),
            transport,
            inbound,
        );
        nodes.push(node.await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = nodes[2].status();
        let refused = status
            .connections
            .iter()
            .filter(|(_, state)| {
                matches!(state, PeerConnection::Refused { reason } if reason.contains("cluster 7"))
            })
            .count();
        let leader_elected = nodes[..2].iter().any(|n| n.status().role == Role::Leader);
        if refused == 2 && leader_elected {
            assert_ne!(status.role, Role::Leader);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3's status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}
