//! Peers that try to starve, flood or displace a node, and links that are merely slow or
//! flaky: each scenario on loopback, with the harm bounded and the real peers still served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::node::Transport;
use raft_core::{MessageBody, NodeId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Valid frames whose entries decode to far more memory than they take on the wire are
/// charged their decoded size: over the sender's share, they are dropped without decoding, and
/// the peer's ordinary messages still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_decode_beyond_the_senders_share_are_dropped() {
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.max_frame_bytes = 2 << 20;
    config.max_inbound_bytes = 8 << 20;
    let mut node1 = start_with(config).await;
    let node2 = start(2, CLUSTER).await;
    link(&node1, &node2);
    // About 1 MiB on the wire, some 15 MiB decoded: over node 2's share of 8 MiB.
    let amplifying = message_frame(&append(2, 1, 250_000, 0));
    assert!(amplifying.len() < 2 << 20);
    let mut stream = handshaken_client(&node1, 2).await;
    for _ in 0..8 {
        stream.write_all(&amplifying).await.unwrap();
    }
    stream
        .write_all(&message_frame(&heartbeat(2, 1, 7)))
        .await
        .unwrap();
    let message = next(&mut node1, PATIENCE).await.unwrap();
    // (Not `round`: a delivered AppendEntries of 250,000 entries would make a huge message.)
    assert!(
        matches!(message.body, MessageBody::Heartbeat { round: 7, .. }),
        "a large frame was delivered"
    );
    let stats = node1.transport.stats().inbound;
    assert_eq!(stats.messages_dropped_over_share, 8);
    assert_eq!(stats.connections_closed_on_error, 0);
}

/// A frame whose header already shows it invalid (a foreign sender, more entries than bytes)
/// closes the connection before its body is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_an_invalid_header_closes_the_connection() {
    let mut node1 = start(1, CLUSTER).await;
    let node2 = start(2, CLUSTER).await;
    link(&node1, &node2);
    // A large AppendEntries from node 3 on node 2's connection.
    let foreign = message_frame(&append(3, 1, 100_000, 0));
    // An AppendEntries that declares a billion entries in a few bytes.
    let mut impossible = postcard::to_stdvec(&append(2, 1, 1, 0)).unwrap();
    let header_len = impossible.len() - 3 - 2; // one blank entry (3 bytes), commit and round
    impossible.truncate(header_len - 1); // drop the entry count (1 byte)
    impossible.extend_from_slice(&[0x80, 0x94, 0xEB, 0xDC, 0x03]); // 10^9 as a varint
    impossible.extend_from_slice(&[1, 2, 0, 0, 0]);
    for (closed, (name, bytes)) in [("foreign", foreign), ("impossible", frame(&impossible))]
        .into_iter()
        .enumerate()
    {
        let mut stream = handshaken_client(&node1, 2).await;
        stream.write_all(&bytes).await.unwrap();
        assert!(closed_by_server(&mut stream).await, "{name}: closed");
        let stats = node1.transport.stats().inbound;
        assert_eq!(
            stats.connections_closed_on_error,
            closed as u64 + 1,
            "{name}"
        );
        assert_eq!(stats.messages_rejected, closed as u64 + 1, "{name}");
    }
    assert!(next(&mut node1, Duration::from_millis(100)).await.is_none());
}

/// A large frame that keeps moving over a slow link is delivered even though it takes longer
/// than the idle timeout: idle means no bytes, not no whole frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_on_a_slow_link_is_delivered() {
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.idle_timeout = Duration::from_millis(300);
    let mut node1 = start_with(config).await;
    let node2 = start(2, CLUSTER).await;
    link(&node1, &node2);
    let bytes = message_frame(&append(2, 1, 0, 600 << 10));
    let mut stream = handshaken_client(&node1, 2).await;
    // 16 KiB every 10 ms: about 1.6 MB/s, 400 ms for the whole frame.
    for chunk in bytes.chunks(16 << 10) {
        stream.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let message = next(&mut node1, PATIENCE).await.expect("delivered");
    assert_eq!(message, append(2, 1, 0, 600 << 10));
}

/// The same outbound: a write that keeps moving is not cut by the write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_to_a_slow_reader_is_delivered() {
    let peer = RawPeer::bind(2).await;
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.write_timeout = Duration::from_millis(300);
    config.max_frame_bytes = 16 << 20;
    config.peers.insert(NodeId(2), peer.addr());
    let node1 = start_with(config).await;
    let message = append(1, 2, 0, 12 << 20);
    node1.transport.send(message.clone());
    let stream = peer.accept().await;
    let (mut read_half, mut write_half) = stream.into_split();
    let keepalives = tokio::spawn(async move {
        while write_half.write_all(&[0, 0, 0, 0]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Read about 8 MB/s, 64 KiB at a time: about 1.6 s for the whole message.
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let expected = message_frame(&message).len();
    while received.len() < expected {
        let n = tokio::time::timeout(PATIENCE, read_half.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {} of {expected} bytes", received.len());
        received.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    keepalives.abort();
    assert_eq!(received[..expected], message_frame(&message)[..]);
    assert_eq!(node1.transport.stats().peers[&NodeId(2)].sent, 1);
}

/// A peer that completes the handshake and never reads holds at most `queue_capacity_bytes`
/// of queued messages; the rest are dropped by policy and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_holds_bounded_memory() {
    let peer = RawPeer::bind(2).await;
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.max_frame_bytes = 1 << 20;
    config.queue_capacity_bytes = 4 << 20;
    config.peers.insert(NodeId(2), peer.addr());
    let node1 = start_with(config).await;
    node1.transport.send(heartbeat(1, 2, 0));
    let _stream = peer.accept().await;
    // 64 MiB of messages for a peer that reads nothing.
    for _ in 0..256 {
        node1.transport.send(append(1, 2, 0, 256 << 10));
    }
    let stats = &node1.transport.stats().peers[&NodeId(2)];
    assert!(stats.queued_bytes <= 4 << 20, "{stats:?}");
    assert!(stats.queued <= 16, "{stats:?}");
    assert!(stats.dropped_queue_full >= 200, "{stats:?}");
}

/// A peer that completes the handshake and then closes every connection at once is dialled
/// with a growing backoff, not in a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_drops_every_connection_is_not_redialled_in_a_loop() {
    let peer = RawPeer::bind(2).await;
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.peers.insert(NodeId(2), peer.addr());
    let node1 = start_with(config).await;
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    let acceptor = tokio::spawn(async move {
        loop {
            let stream = peer.accept().await;
            counter.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut round = 0;
    while tokio::time::Instant::now() < deadline {
        round += 1;
        node1.transport.send(heartbeat(1, 2, round));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acceptor.abort();
    // Backoff from 5 ms doubling to 100 ms: about 15 dials in a second, not hundreds.
    let dials = accepted.load(Ordering::Relaxed);
    assert!((2..=30).contains(&dials), "{dials} dials in one second");
}

/// One peer floods a node whose inbox is drained slowly; another peer's messages all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_does_not_starve_the_others() {
    let node2 = start(2, CLUSTER).await;
    let node3 = start(3, CLUSTER).await;
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    for node in [&node2, &node3] {
        let addr = node.transport.local_addr().to_string();
        config.peers.insert(node.transport.node_id(), addr);
    }
    let (transport, mut inbox) = start_bounded(config, 64).await;
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    drop(tx);
    let node1 = TestNode {
        transport,
        received,
    };
    node2
        .transport
        .add_peer(NodeId(1), node1.transport.local_addr().to_string())
        .unwrap();
    // The node takes a message about every 200 µs.
    let from_node2 = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&from_node2);
    let consumer = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            if message.from == NodeId(2) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            for _ in 0..200 {
                std::hint::spin_loop();
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
    let mut flood = handshaken_client(&node1, 3).await;
    let burst: Vec<u8> = (0..1000)
        .flat_map(|round| message_frame(&heartbeat(3, 1, round)))
        .collect();
    let flooding = tokio::spawn(async move { while flood.write_all(&burst).await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for round in 0..100 {
        node2.transport.send(heartbeat(2, 1, round));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // What was sent has arrived or been dropped within a few inbox drains.
    tokio::time::sleep(Duration::from_millis(300)).await;
    flooding.abort();
    consumer.abort();
    let delivered = from_node2.load(Ordering::Relaxed);
    assert_eq!(node2.transport.stats().peers[&NodeId(1)].sent, 100);
    assert!(delivered >= 95, "node 2 delivered {delivered} of 100");
    assert!(node1.transport.stats().inbound.messages_dropped_over_share > 0);
}

/// Valid frames that decode into large messages, sent faster than the node takes them, wait in
/// the node's inbox only up to its bound in decoded bytes; the rest are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_holds_at_most_its_bound_in_decoded_bytes() {
    const BOUND: usize = 8 << 20;
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.max_frame_bytes = 2 << 20;
    let (inbox, mut inbound) = raft_core::node::inbox_with_limits(1024, BOUND);
    let node1 = raft_net::TcpTransport::start(
        raft_net::TokioNet,
        config,
        inbox.clone(),
        raft_net::Spawner::tokio(),
    )
    .await
    .unwrap();
    let node2 = start(2, CLUSTER).await;
    node1
        .add_peer(NodeId(2), node2.transport.local_addr().to_string())
        .unwrap();
    // About 100 KiB on the wire and a few MiB decoded each; the node takes none of them.
    let large = message_frame(&append(2, 1, 50_000, 0));
    let decoded = append(2, 1, 50_000, 0).decoded_size();
    assert!(decoded > BOUND / 8 && decoded < BOUND);
    let mut stream = tokio::net::TcpStream::connect(node1.local_addr())
        .await
        .unwrap();
    let hello = hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, 2);
    assert_eq!(send_hello(&mut stream, &hello).await, Some(ACCEPTED));
    for _ in 0..20 {
        stream.write_all(&large).await.unwrap();
    }
    eventually("the inbox refused some", || {
        node1.stats().inbound.messages_dropped_inbox_full > 0
    })
    .await;
    assert!(
        inbox.queued_bytes() <= BOUND,
        "{} bytes wait",
        inbox.queued_bytes()
    );
    // Taking messages frees room.
    assert!(inbound.try_recv().is_some());
    assert!(inbox.queued_bytes() <= BOUND - decoded);
}
