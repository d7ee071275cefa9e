//! Peers that try to starve, flood or displace a node, and links that are merely slow or
//! flaky: each scenario on loopback, with the harm bounded and the real peers still served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::Transport;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::*;
use tokio::io::AsyncReadExt;

/// Silent connections from another host, reopened as soon as they close, hold at most a few
/// handshake slots; a known peer reconnecting meanwhile gets through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_host_do_not_lock_out_a_peer() {
    let mut node1 = start(1, CLUSTER).await;
    let node2 = start(2, CLUSTER).await;
    link(&node1, &node2);
    let target = node1.transport.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    // More than the 64 inbound slots, from 127.0.0.2.
    for _ in 0..96 {
        let stop = Arc::clone(&stop);
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut stream) = connect_from([127, 0, 0, 2], target).await {
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Let the attack take every slot it can.
    tokio::time::sleep(Duration::from_millis(300)).await;
    node2.transport.send(heartbeat(2, 1, 1));
    let delivered = next(&mut node1, Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.unwrap();
    }
    assert_eq!(delivered.map(|m| round(&m)), Some(1), "node 2 got through");
    assert!(node1.transport.stats().inbound.connections_refused > 0);
}

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
