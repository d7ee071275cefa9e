//! Reconnection: a peer whose listener restarts on the same address is dialled again, and
//! messages queued meanwhile are delivered once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::Transport;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialler_reconnects_after_the_remote_listener_restarts() {
    let sender = start(1, CLUSTER).await;
    let mut receiver = start(2, CLUSTER).await;
    link(&sender, &receiver);
    let addr = receiver.transport.local_addr().to_string();

    sender.transport.send(heartbeat(1, 2, 0));
    assert_eq!(round(&next(&mut receiver, PATIENCE).await.unwrap()), 0);

    // The receiver stops; its listener and connections close.
    receiver.transport.shutdown().await;
    eventually("the sender noticed", || {
        !sender.transport.stats().peers[&NodeId(2)].connected
    })
    .await;
    // Dialling fails for a while (connection refused, backoff grows).
    sender.transport.send(heartbeat(1, 2, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new incarnation listens on the same address.
    let mut config = fast_config(2, CLUSTER, &addr);
    config
        .peers
        .insert(NodeId(1), sender.transport.local_addr().to_string());
    let mut restarted = start_with(config).await;
    let message = next(&mut restarted, PATIENCE).await.expect("redialled");
    assert_eq!(round(&message), 1, "the message queued while it was down");
    let stats = &sender.transport.stats().peers[&NodeId(2)];
    assert_eq!(stats.connections_opened, 2);
    assert!(stats.connected);

    // And the new connection carries later messages.
    sender.transport.send(heartbeat(1, 2, 2));
    assert_eq!(round(&next(&mut restarted, PATIENCE).await.unwrap()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_keeps_accepting_when_a_peer_restarts() {
    let mut receiver = start(1, CLUSTER).await;
    let sender = start(2, CLUSTER).await;
    link(&receiver, &sender);
    sender.transport.send(heartbeat(2, 1, 0));
    assert_eq!(round(&next(&mut receiver, PATIENCE).await.unwrap()), 0);

    // The sender's process dies and comes back with a new transport (and a new port).
    sender.transport.shutdown().await;
    drop(sender);
    let sender = start(2, CLUSTER).await;
    link(&receiver, &sender);
    sender.transport.send(heartbeat(2, 1, 1));
    assert_eq!(round(&next(&mut receiver, PATIENCE).await.unwrap()), 1);
    assert_eq!(receiver.transport.stats().inbound.connections_accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_everything_and_later_sends_are_dropped() {
    let sender = start(1, CLUSTER).await;
    let mut receiver = start(2, CLUSTER).await;
    link(&sender, &receiver);
    sender.transport.send(heartbeat(1, 2, 0));
    assert_eq!(round(&next(&mut receiver, PATIENCE).await.unwrap()), 0);
    sender.transport.shutdown().await;
    sender.transport.shutdown().await; // idempotent
    sender.transport.send(heartbeat(1, 2, 1));
    assert!(
        next(&mut receiver, Duration::from_millis(200))
            .await
            .is_none()
    );
    assert!(sender.transport.add_peer(NodeId(3), "127.0.0.1:1").is_err());
    // The listen address is free again.
    let addr = sender.transport.local_addr();
    std::net::TcpListener::bind(addr).expect("port released after shutdown");
}
