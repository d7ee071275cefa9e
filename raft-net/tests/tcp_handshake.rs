//! The handshake: a node refuses connections from another cluster, from a node it does not
//! know, and with a wrong magic or version, and keeps serving its good peers; a dialler refuses
//! a listener that turns out to be another node than the one it dialled.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::Transport;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_is_refused_and_good_peers_are_still_served() {
    let mut node1 = start(1, CLUSTER).await;
    let good = start(2, CLUSTER).await;
    let stranger = start(3, CLUSTER + 1).await;
    link(&node1, &good);
    // Node 1 knows node 3 by id; only the cluster id differs.
    link(&node1, &stranger);

    good.transport.send(heartbeat(2, 1, 1));
    assert_eq!(round(&next(&mut node1, PATIENCE).await.unwrap()), 1);

    let mut attempt = 0;
    eventually("node 1 refused node 3", || {
        attempt += 1;
        stranger.transport.send(heartbeat(3, 1, attempt));
        node1.transport.stats().inbound.handshakes_refused >= 2
    })
    .await;
    assert_eq!(
        stranger.transport.stats().peers[&NodeId(1)].connections_opened,
        0
    );

    good.transport.send(heartbeat(2, 1, 2));
    let message = next(&mut node1, PATIENCE).await.unwrap();
    assert_eq!((message.from, round(&message)), (NodeId(2), 2));
    assert!(next(&mut node1, Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_configured_peer_is_refused() {
    let mut node1 = start(1, CLUSTER).await;
    let unknown = start(4, CLUSTER).await;
    // Node 4 knows node 1, but node 1 does not know node 4.
    unknown
        .transport
        .add_peer(NodeId(1), node1.transport.local_addr().to_string())
        .unwrap();
    let mut attempt = 0;
    eventually("node 1 refused node 4", || {
        attempt += 1;
        unknown.transport.send(heartbeat(4, 1, attempt));
        node1.transport.stats().inbound.handshakes_refused >= 1
    })
    .await;
    assert!(next(&mut node1, Duration::from_millis(200)).await.is_none());
}

/// Table: handshakes that are not ours, sent by hand; each is refused by closing, after an
/// answer that says why (none for bytes that are not a Raft hello at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_magic_version_cluster_or_node_id_is_refused_with_its_reason() {
    let node1 = start(1, CLUSTER).await;
    let peer = start(2, CLUSTER).await;
    link(&node1, &peer);
    let cases = [
        ("magic", hello_bytes(b"HTTP", 1, CLUSTER, 2), None),
        (
            "version",
            hello_bytes(b"RAFT", 99, CLUSTER, 2),
            Some(UNSUPPORTED_VERSION),
        ),
        (
            "cluster",
            hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER + 1, 2),
            Some(OTHER_CLUSTER),
        ),
        (
            "unknown node",
            hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, 9),
            Some(UNKNOWN_NODE),
        ),
        (
            "own id",
            hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, 1),
            Some(UNKNOWN_NODE),
        ),
        (
            "reserved id",
            hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, 0),
            Some(UNKNOWN_NODE),
        ),
    ];
    for (refused, (name, hello, expected)) in cases.into_iter().enumerate() {
        let mut stream = TcpStream::connect(node1.transport.local_addr())
            .await
            .unwrap();
        assert_eq!(send_hello(&mut stream, &hello).await, expected, "{name}");
        assert!(closed_by_server(&mut stream).await, "{name}: closed");
        let stats = node1.transport.stats().inbound;
        assert_eq!(stats.handshakes_refused, refused as u64 + 1, "{name}");
        assert_eq!(stats.connections_accepted, 0, "{name}");
    }
    // The listener still serves its peer, with a hand-made but valid handshake too.
    let _client = handshaken_client(&node1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialler_refuses_a_listener_that_is_another_node() {
    let node1 = start(1, CLUSTER).await;
    let mut impostor = start(3, CLUSTER).await;
    // Node 1 believes node 2 lives where node 3 listens; node 3 accepts node 1.
    node1
        .transport
        .add_peer(NodeId(2), impostor.transport.local_addr().to_string())
        .unwrap();
    impostor
        .transport
        .add_peer(NodeId(1), node1.transport.local_addr().to_string())
        .unwrap();
    node1.transport.send(heartbeat(1, 2, 1));
    eventually("node 3 accepted node 1's connection", || {
        impostor.transport.stats().inbound.connections_accepted >= 2
    })
    .await;
    // Node 1 gave up on each connection at the handshake: nothing was sent or delivered.
    let stats = &node1.transport.stats().peers[&NodeId(2)];
    assert_eq!((stats.connections_opened, stats.sent), (0, 0));
    assert!(
        next(&mut impostor, Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_refused_after_the_handshake_timeout() {
    let node1 = start(1, CLUSTER).await;
    let mut stream = TcpStream::connect(node1.transport.local_addr())
        .await
        .unwrap();
    // No handshake at all: closed after `handshake_timeout` (300 ms in these tests).
    assert!(closed_by_server(&mut stream).await);
    assert_eq!(node1.transport.stats().inbound.handshakes_refused, 1);
}
