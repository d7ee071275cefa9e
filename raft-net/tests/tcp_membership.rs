//! The TCP transport learns where new members are from the membership; it never moves a peer
//! configured by hand, and never drops a peer on its own (a removed leader must stay reachable
//! until it has handed over, and an uncommitted membership may still be undone).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::node::Transport;
use raft_core::{Membership, NodeId};
use std::time::Duration;
use support::*;

fn ids(transport: &raft_net::TcpTransport<raft_net::TokioNet>) -> Vec<u64> {
    transport
        .peer_connections()
        .iter()
        .map(|(id, _)| id.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_an_address_become_peers_and_stay() {
    let node1 = start(1, CLUSTER).await;
    let mut node2 = start(2, CLUSTER).await;
    let mut node3 = start(3, CLUSTER).await;
    // Node 2 knows node 1 by configuration; node 1 learns of node 2 from the membership only.
    node2
        .transport
        .add_peer(NodeId(1), node1.transport.local_addr().to_string())
        .unwrap();
    node3
        .transport
        .add_peer(NodeId(1), node1.transport.local_addr().to_string())
        .unwrap();
    node1
        .transport
        .add_peer(NodeId(3), node3.transport.local_addr().to_string())
        .unwrap();
    let with_2 = Membership::new([NodeId(1), NodeId(3)])
        .and_then(|m| m.add_learner(NodeId(2)))
        .and_then(|m| m.with_address(NodeId(2), node2.transport.local_addr().to_string()))
        .unwrap();
    node1.transport.membership_changed(&with_2);
    assert_eq!(ids(&node1.transport), [2, 3]);
    node1.transport.send(heartbeat(1, 2, 42));
    let message = next(&mut node2, PATIENCE)
        .await
        .expect("the new member is reached");
    assert_eq!((message.from, round(&message)), (NodeId(1), 42));

    // A membership without node 2 drops nothing: it may be undone, and node 2 may be a leader
    // handing over.
    node1
        .transport
        .membership_changed(&with_2.remove_learner(NodeId(2)).unwrap());
    node1.transport.send(heartbeat(1, 2, 43));
    let message = next(&mut node2, PATIENCE).await.expect("still reached");
    assert_eq!(round(&message), 43);

    // An address in the membership does not move a peer configured by hand.
    let stale = with_2.with_address(NodeId(3), "127.0.0.1:9").unwrap();
    node1.transport.membership_changed(&stale);
    node1.transport.send(heartbeat(1, 3, 44));
    let message = next(&mut node3, PATIENCE)
        .await
        .expect("the configured address holds");
    assert_eq!(round(&message), 44);

    // A learnt peer moves with its address, and one removed by hand is gone.
    let moved = with_2.with_address(NodeId(2), "127.0.0.1:9").unwrap();
    node1.transport.membership_changed(&moved);
    node1.transport.send(heartbeat(1, 2, 45));
    assert!(next(&mut node2, Duration::from_millis(300)).await.is_none());
    assert!(node1.transport.remove_peer(NodeId(2)));
    assert_eq!(ids(&node1.transport), [3]);
}
