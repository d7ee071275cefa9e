//! A misconfigured node sees its own mistake: the peers that refuse it say why, and it shows
//! the reason in its per-peer connection state and logs it once per peer and cause.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::{PeerConnection, Transport};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cluster_id_reports_the_refusal_itself() {
    capture_warnings();
    let node1 = start(1, CLUSTER).await;
    let stray = start(2, CLUSTER + 1).await;
    link(&node1, &stray);
    let mut attempt = 0;
    eventually("node 2 was refused several times", || {
        attempt += 1;
        stray.transport.send(heartbeat(2, 1, attempt));
        node1.transport.stats().inbound.handshakes_refused >= 5
    })
    .await;
    let connections = stray.transport.peer_connections();
    let [(NodeId(1), PeerConnection::Refused { reason })] = &connections[..] else {
        panic!("node 2's view of node 1: {connections:?}");
    };
    assert!(reason.contains(&format!("cluster {CLUSTER}")), "{reason}");
    assert_eq!(
        stray.transport.stats().peers[&NodeId(1)].connection,
        connections[0].1
    );
    // Warned once on the misconfigured side, however often it was refused.
    let warned = warnings_with(&["peer refused the connection", "node=n2 "]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains(&format!("cluster {CLUSTER}")),
        "{warned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_unknown_to_its_peer_reports_that_and_an_absent_peer_is_unreachable() {
    let node1 = start(1, CLUSTER).await;
    let stranger = start(4, CLUSTER).await;
    stranger
        .transport
        .add_peer(NodeId(1), node1.transport.local_addr().to_string())
        .unwrap();
    // And a peer nobody listens for.
    stranger
        .transport
        .add_peer(NodeId(5), "127.0.0.1:1")
        .unwrap();
    assert_eq!(
        stranger.transport.peer_connections(),
        vec![
            (NodeId(1), PeerConnection::Idle),
            (NodeId(5), PeerConnection::Idle)
        ]
    );
    stranger.transport.send(heartbeat(4, 1, 1));
    stranger.transport.send(heartbeat(4, 5, 1));
    eventually("both dials failed", || {
        let states = stranger.transport.peer_connections();
        matches!(
            &states[..],
            [
                (_, PeerConnection::Refused { .. }),
                (_, PeerConnection::Unreachable { .. })
            ]
        )
    })
    .await;
    let states = stranger.transport.peer_connections();
    let PeerConnection::Refused { reason } = &states[0].1 else {
        unreachable!()
    };
    assert!(reason.contains("does not know"), "{reason}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
