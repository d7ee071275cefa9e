//! Transports on loopback TCP exchange messages: all pairs of three nodes, long runs in order,
//! and a queue that overflows while its peer is unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::Transport;
use raft_net::Overflow;
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_transports_exchange_messages_between_every_pair() {
    let mut nodes = vec![
        start(1, CLUSTER).await,
        start(2, CLUSTER).await,
        start(3, CLUSTER).await,
    ];
    link(&nodes[0], &nodes[1]);
    link(&nodes[0], &nodes[2]);
    link(&nodes[1], &nodes[2]);
    for from in 1..=3u64 {
        for to in (1..=3u64).filter(|&to| to != from) {
            nodes[from as usize - 1]
                .transport
                .send(heartbeat(from, to, from * 10 + to));
        }
    }
    for (index, node) in nodes.iter_mut().enumerate() {
        let to = index as u64 + 1;
        let mut senders = BTreeSet::new();
        for _ in 0..2 {
            let message = next(node, PATIENCE).await.expect("a message arrives");
            assert_eq!(message.to, NodeId(to));
            assert_eq!(round(&message), message.from.0 * 10 + to);
            senders.insert(message.from.0);
        }
        let expected: BTreeSet<u64> = (1..=3).filter(|&id| id != to).collect();
        assert_eq!(senders, expected, "node {to} hears from both others");
    }
    for node in &nodes {
        // Counters are bumped just after the message moves on: wait for them to settle.
        eventually("counters settle", || {
            let stats = node.transport.stats();
            stats.inbound.messages_delivered == 2 && stats.peers.values().all(|peer| peer.sent == 1)
        })
        .await;
        let stats = node.transport.stats();
        assert_eq!(stats.inbound.handshakes_refused, 0);
        for peer in stats.peers.values() {
            assert_eq!(peer.connections_opened, 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_queued_messages_arrive_in_order_over_one_connection() {
    const COUNT: u64 = 20_000;
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.queue_capacity = COUNT as usize;
    let sender = start_with(config).await;
    let mut receiver = start(2, CLUSTER).await;
    link(&sender, &receiver);
    // Half one by one, half as batches, all faster than one connection can drain them.
    for round in 0..COUNT / 2 {
        sender.transport.send(heartbeat(1, 2, round));
    }
    for chunk in (COUNT / 2..COUNT).collect::<Vec<_>>().chunks(1000) {
        sender
            .transport
            .send_batch(chunk.iter().map(|&r| heartbeat(1, 2, r)).collect());
    }
    for expected in 0..COUNT {
        let message = next(&mut receiver, PATIENCE).await.expect("arrives");
        assert_eq!(round(&message), expected, "in order, none lost");
    }
    eventually("the sender counted every message", || {
        sender.transport.stats().peers[&NodeId(2)].sent == COUNT
    })
    .await;
    let stats = &sender.transport.stats().peers[&NodeId(2)];
    assert_eq!(stats.dropped_queue_full, 0);
    assert_eq!(stats.connections_opened, 1);
}

/// Table: overflow policy, and the rounds left in a queue of 4 after sending 0..10 to a peer
/// that cannot be reached (so nothing leaves the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_by_policy_counts_and_never_blocks() {
    for (overflow, kept) in [
        (Overflow::DropOldest, vec![6, 7, 8, 9]),
        (Overflow::DropNewest, vec![0, 1, 2, 3]),
    ] {
        // A port nobody listens on: bind one, note it, free it.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
        config.queue_capacity = 4;
        config.overflow = overflow;
        config.peers.insert(NodeId(2), addr.to_string());
        let sender = start_with(config).await;
        for round in 0..10 {
            sender.transport.send(heartbeat(1, 2, round));
        }
        let stats = &sender.transport.stats().peers[&NodeId(2)];
        assert_eq!(
            (stats.queued, stats.dropped_queue_full),
            (4, 6),
            "{overflow:?}"
        );

        // The peer comes up at that address: what was kept arrives, in order.
        let mut receiver = start_with(fast_config(2, CLUSTER, &addr.to_string())).await;
        receiver
            .transport
            .add_peer(NodeId(1), "127.0.0.1:1")
            .unwrap();
        for expected in &kept {
            let message = next(&mut receiver, PATIENCE).await.expect("arrives");
            assert_eq!(round(&message), *expected, "{overflow:?}");
        }
        assert!(
            next(&mut receiver, Duration::from_millis(100))
                .await
                .is_none()
        );
        sender.transport.shutdown().await;
        receiver.transport.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_from_this_node_or_to_no_peer_are_not_sent() {
    let sender = start(1, CLUSTER).await;
    let mut receiver = start(2, CLUSTER).await;
    link(&sender, &receiver);
    sender.transport.send_batch(vec![
        heartbeat(3, 2, 1), // not from this node
        heartbeat(1, 9, 2), // to no peer
        heartbeat(1, 2, 3),
    ]);
    let message = next(&mut receiver, PATIENCE).await.expect("arrives");
    assert_eq!(round(&message), 3);
    assert!(
        next(&mut receiver, Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_is_neither_sent_to_nor_accepted() {
    let sender = start(1, CLUSTER).await;
    let mut receiver = start(2, CLUSTER).await;
    link(&sender, &receiver);
    sender.transport.send(heartbeat(1, 2, 1));
    assert_eq!(round(&next(&mut receiver, PATIENCE).await.unwrap()), 1);

    // The receiver forgets node 1: its connection closes and a new one is refused.
    assert!(receiver.transport.remove_peer(NodeId(1)));
    // Keep sending: a message written just before the close is lost without a redial.
    let mut round = 1;
    eventually("the sender was refused", || {
        round += 1;
        sender.transport.send(heartbeat(1, 2, round));
        receiver.transport.stats().inbound.handshakes_refused >= 1
    })
    .await;
    assert!(
        next(&mut receiver, Duration::from_millis(100))
            .await
            .is_none()
    );
}
