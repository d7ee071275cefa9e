//! Peers that try to starve, flood or displace a node, and links that are merely slow or
//! flaky: each scenario on loopback, with the harm bounded and the real peers still served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::Transport;
use support::*;

/// Handshakes claiming to be node 2 while node 2's own connection is live are refused with
/// their reason; node 2's connection is never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_does_not_displace_a_live_connection() {
    let mut node1 = start(1, CLUSTER).await;
    let node2 = start(2, CLUSTER).await;
    link(&node1, &node2);
    node2.transport.send(heartbeat(2, 1, 0));
    assert_eq!(round(&next(&mut node1, PATIENCE).await.unwrap()), 0);
    for attempt in 1..=30 {
        let (_stream, verdict) = try_handshake(&node1, 2).await;
        assert_eq!(verdict, Some(ALREADY_CONNECTED), "claim {attempt}");
    }
    node2.transport.send(heartbeat(2, 1, 1));
    assert_eq!(round(&next(&mut node1, PATIENCE).await.unwrap()), 1);
    assert_eq!(
        node2.transport.stats().peers[&NodeId(1)].connections_opened,
        1
    );
    let inbound = node1.transport.stats().inbound;
    assert_eq!(
        (inbound.connections_accepted, inbound.handshakes_refused),
        (1, 30)
    );
}
