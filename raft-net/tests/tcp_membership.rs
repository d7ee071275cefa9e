//! The TCP transport learns where new members are from the membership, and forgets the ones
//! it learnt that way once they leave; peers configured by hand are never forgotten.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::node::Transport;
use raft_core::{Membership, NodeId};
use support::*;

fn ids(transport: &raft_net::TcpTransport<raft_net::TokioNet>) -> Vec<u64> {
    transport
        .peer_connections()
        .iter()
        .map(|(id, _)| id.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_an_address_become_peers_and_leave_with_the_membership() {
    let node1 = start(1, CLUSTER).await;
    let mut node2 = start(2, CLUSTER).await;
    let node3 = start(3, CLUSTER).await;
    // Node 2 knows node 1 by configuration; node 1 learns of node 2 from the membership only.
    node2
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

    // Applying the same membership again changes nothing; one without node 2 removes it, but
    // not node 3, which was configured by hand although it has no address in the membership.
    node1.transport.membership_changed(&with_2);
    assert_eq!(ids(&node1.transport), [2, 3]);
    let without_2 = with_2.remove_learner(NodeId(2)).unwrap();
    node1.transport.membership_changed(&without_2);
    assert_eq!(ids(&node1.transport), [3]);
    let without_3 = Membership::new([NodeId(1)]).unwrap();
    node1.transport.membership_changed(&without_3);
    assert_eq!(ids(&node1.transport), [3], "a configured peer stays");
}
