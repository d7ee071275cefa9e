//! Whatever bytes a peer sends, the node does not panic: a stream that is not frames of
//! messages closes that one connection, a well-formed message that breaks a rule is dropped
//! alone, and the listener keeps accepting and delivering from good peers afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::node::Transport;
use raft_core::{EntryId, LogIndex, Message, MessageBody, NodeId, Term};
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;

/// Table: what a peer sends after a valid handshake, each of which must close the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_frames_of_messages_close_the_connection_only() {
    let mut node1 = start(1, CLUSTER).await;
    let good = start(2, CLUSTER).await;
    let hostile = start(3, CLUSTER).await;
    link(&node1, &good);
    link(&node1, &hostile);

    let mut undecodable = frame(&[0xFF; 32]);
    undecodable.extend(message_frame(&heartbeat(3, 1, 0)));
    let mut trailing = postcard::to_stdvec(&heartbeat(3, 1, 0)).unwrap();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "oversized length prefix",
            vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3],
        ),
        (
            "length above max_frame_bytes",
            (16u32 << 20 | 1).to_be_bytes().to_vec(),
        ),
        ("undecodable payload", undecodable),
        ("payload with trailing bytes", frame(&trailing)),
        ("truncated frame", {
            let mut bytes = message_frame(&heartbeat(3, 1, 0));
            bytes.truncate(bytes.len() - 2);
            bytes
        }),
        ("truncated length prefix", vec![0, 0]),
    ];
    for (closed, (name, bytes)) in cases.into_iter().enumerate() {
        let mut stream = handshaken_client(&node1, 3).await;
        stream.write_all(&bytes).await.unwrap();
        if name.starts_with("truncated") {
            // The peer goes away mid-frame.
            stream.shutdown().await.unwrap();
        }
        assert!(closed_by_server(&mut stream).await, "{name}: closed");
        eventually(name, || {
            node1.transport.stats().inbound.connections_closed_on_error == closed as u64 + 1
        })
        .await;

        // The node is alive and its good peer is served.
        good.transport.send(heartbeat(2, 1, closed as u64));
        let message = next(&mut node1, PATIENCE).await.unwrap();
        assert_eq!(
            (message.from, round(&message)),
            (NodeId(2), closed as u64),
            "{name}"
        );
    }
    // Nothing from the hostile connections got through.
    assert!(next(&mut node1, Duration::from_millis(200)).await.is_none());

    // And the hostile node's real transport is still accepted once it behaves.
    hostile.transport.send(heartbeat(3, 1, 99));
    let message = next(&mut node1, PATIENCE).await.unwrap();
    assert_eq!((message.from, round(&message)), (NodeId(3), 99));
}

/// Table: well-formed messages that break a rule; each is refused and closes its connection
/// (a peer that sends them is broken or hostile), and the peer's next connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_break_a_rule_close_the_connection() {
    let mut node1 = start(1, CLUSTER).await;
    let peer = start(2, CLUSTER).await;
    link(&node1, &peer);
    let bad_append = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::AppendEntries {
            // prev_log's term above the message's term: `Message::validate` refuses it.
            prev_log: EntryId {
                term: Term(5),
                index: LogIndex(1),
            },
            entries: vec![],
            leader_commit: LogIndex(0),
            round: 0,
        },
    };
    let cases = [
        ("sender other than the handshake's node", heartbeat(3, 1, 0)),
        ("recipient other than this node", heartbeat(2, 3, 0)),
        ("fails Message::validate", bad_append),
    ];
    for (rejected, (name, message)) in cases.into_iter().enumerate() {
        let mut stream = handshaken_client(&node1, 2).await;
        stream
            .write_all(&message_frame(&heartbeat(2, 1, rejected as u64)))
            .await
            .unwrap();
        let delivered = next(&mut node1, PATIENCE).await.unwrap();
        assert_eq!(round(&delivered), rejected as u64, "{name}");
        stream.write_all(&message_frame(&message)).await.unwrap();
        // Whatever follows the invalid message on that connection is not delivered.
        let _ = stream.write_all(&message_frame(&heartbeat(2, 1, 99))).await;
        assert!(closed_by_server(&mut stream).await, "{name}: closed");
        let stats = node1.transport.stats().inbound;
        assert_eq!(stats.messages_rejected, rejected as u64 + 1, "{name}");
        assert_eq!(
            stats.connections_closed_on_error,
            rejected as u64 + 1,
            "{name}"
        );
    }
    assert!(next(&mut node1, Duration::from_millis(200)).await.is_none());
}

/// A peer that restarted without closing its connection (a crash, a cut cable) gets in once
/// the old connection has fallen silent, and the old one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_replaces_an_older_one_that_fell_silent() {
    let mut node1 = start(1, CLUSTER).await;
    let peer = start(2, CLUSTER).await;
    link(&node1, &peer);
    let mut old = handshaken_client(&node1, 2).await;
    // Silent for more than two keepalive intervals (50 ms each in these tests).
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut new = handshaken_client(&node1, 2).await;
    assert!(closed_by_server(&mut old).await);
    new.write_all(&message_frame(&heartbeat(2, 1, 5)))
        .await
        .unwrap();
    assert_eq!(round(&next(&mut node1, PATIENCE).await.unwrap()), 5);
}
