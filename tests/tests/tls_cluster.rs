//! A 3-node cluster over real TCP with mutual TLS: it elects and replicates; every node's
//! certificate and CA are then replaced (through a bundle that trusts both CAs, then the new
//! CA alone) and every connection is dropped, so that each new one needs the new material.
//! The leader keeps its leadership throughout and writes keep committing. And a node whose
//! certificate names another node id shows its peers' refusal in its own `Status`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Ack, Node, NodeConfig, NodeHandle, PeerConnection};
use raft_core::{NodeId, Role};
use raft_net::{PeerTls, Spawner, TcpConfig, TcpTransport, TokioNet};
use raft_storage::{MemLogStore, MemSnapshotStore};
use raft_tests::certs::TestCa;
use raft_tests::kv::{KvCommand, KvStore};
use std::time::Duration;

const CLUSTER: u64 = 7;
const PATIENCE: Duration = Duration::from_secs(10);

struct Cluster {
    nodes: Vec<NodeHandle<KvStore>>,
    transports: Vec<TcpTransport<TokioNet>>,
}

async fn start(tls: Vec<PeerTls>) -> Cluster {
    let voters: Vec<NodeId> = (1..=tls.len() as u64).map(NodeId).collect();
    let mut inbounds = Vec::new();
    let mut transports = Vec::new();
    for (&id, tls) in voters.iter().zip(tls) {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        let mut config = TcpConfig::new(id, CLUSTER, "127.0.0.1:0", []);
        config.reconnect_backoff_max = Duration::from_millis(100);
        config.tls = Some(tls);
        let transport = TcpTransport::start(TokioNet, config, inbox, Spawner::tokio())
            .await
            .unwrap();
        inbounds.push(inbound);
        transports.push(transport);
    }
    link_all(&transports);
    let mut nodes = Vec::new();
    for ((&id, transport), inbound) in voters.iter().zip(&transports).zip(inbounds) {
        let mut config = NodeConfig::new(id, voters.iter().copied());
        config.seed = id.0;
        let node = Node::start(
            config,
            KvStore::default(),
            MemLogStore::new(),
            MemSnapshotStore::new(),
            transport.clone(),
            inbound,
        );
        nodes.push(node.await.unwrap());
    }
    Cluster { nodes, transports }
}

/// Makes every transport a peer of every other (again, after [`unlink_all`]).
fn link_all(transports: &[TcpTransport<TokioNet>]) {
    for a in transports {
        for b in transports {
            if a.node_id() != b.node_id() {
                a.add_peer(b.node_id(), b.local_addr().to_string()).unwrap();
            }
        }
    }
}

/// Removes every peer, which closes every connection.
fn unlink_all(transports: &[TcpTransport<TokioNet>]) {
    for a in transports {
        for b in transports {
            a.remove_peer(b.node_id());
        }
    }
}

/// Waits until some node leads; returns its index and term.
async fn leader(cluster: &Cluster) -> (usize, u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some((i, status)) = cluster
            .nodes
            .iter()
            .map(|n| n.status())
            .enumerate()
            .find(|(_, s)| s.role == Role::Leader)
        {
            return (i, status.term.0);
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn put(node: &NodeHandle<KvStore>, key: &str) {
    let command = KvCommand::Put {
        key: key.into(),
        value: "v".into(),
    };
    node.propose(command, Ack::All).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_a_running_cluster_without_an_election() {
    let old = TestCa::new(1);
    let new = TestCa::new(2);
    let tls: Vec<PeerTls> = (1..=3).map(|id| old.node(id).tls(&old.pem)).collect();
    let cluster = start(tls.clone()).await;
    let (leader_at, term) = leader(&cluster).await;
    let leader = &cluster.nodes[leader_at];
    put(leader, "before").await;
    let opened = |cluster: &Cluster| -> u64 {
        cluster
            .transports
            .iter()
            .flat_map(|t| t.stats().peers.into_values())
            .map(|p| p.connections_opened)
            .sum()
    };

    // Trust both CAs, swap every certificate, then trust only the new CA.
    let both = format!("{}{}", old.pem, new.pem);
    for (id, tls) in (1..=3).zip(&tls) {
        let signed = new.node(id);
        tls.reload_pem(
            signed.cert.as_bytes(),
            signed.key.as_bytes(),
            both.as_bytes(),
        )
        .unwrap();
    }
    for (id, tls) in (1..=3).zip(&tls) {
        let signed = new.node(id);
        tls.reload_pem(
            signed.cert.as_bytes(),
            signed.key.as_bytes(),
            new.pem.as_bytes(),
        )
        .unwrap();
    }
    // Established connections are kept; new ones need the new material.
    put(leader, "rotated").await;
    unlink_all(&cluster.transports);
    link_all(&cluster.transports);
    // `Ack::All`: committed only once both followers, over new connections, have it.
    put(leader, "after").await;
    // Every link is new since the relinking: the leader's two at least connected, with the
    // new material only.
    assert!(opened(&cluster) >= 2, "no new connections");
    for transport in &cluster.transports {
        assert_eq!(transport.stats().inbound.handshakes_refused, 0);
    }
    let status = leader.status();
    assert_eq!((status.role, status.term.0), (Role::Leader, term));
    for node in &cluster.nodes {
        assert_eq!(node.status().term.0, term, "an election happened");
    }
    for node in cluster.nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_nodes_certificate_shows_the_refusal_in_its_status() {
    let ca = TestCa::new(1);
    // Node 3 holds node 1's certificate.
    let tls = vec![
        ca.node(1).tls(&ca.pem),
        ca.node(2).tls(&ca.pem),
        ca.node(1).tls(&ca.pem),
    ];
    let cluster = start(tls).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = cluster.nodes[2].status();
        // Nodes 1 and 2 refuse node 3's connections: its certificate names node 1, not the
        // node 3 it claims to be. (Dialled by them, it is not trusted as node 3 either.)
        let refused = status
            .connections
            .iter()
            .filter(|(_, state)| {
                matches!(state, PeerConnection::Refused { reason } if reason.contains("certificate does not name"))
            })
            .count();
        let elected = cluster.nodes[..2]
            .iter()
            .any(|n| n.status().role == Role::Leader);
        if refused == 2 && elected {
            assert_ne!(status.role, Role::Leader);
            let refusals = cluster.transports[1].stats().inbound;
            assert!(
                refusals.handshakes_refused_by_cause["certificate for another node"] > 0,
                "{refusals:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3's status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in cluster.nodes {
        node.shutdown().await;
    }
}
