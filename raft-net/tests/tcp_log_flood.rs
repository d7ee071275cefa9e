//! A flood of bad input is counted, not logged line by line: each peer or address logs each
//! cause at most once per interval.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_bad_frames_log_a_few_lines_not_thousands() {
    capture_warnings();
    let node1 = start(1, CLUSTER).await;
    let node2 = start(2, CLUSTER).await;
    link(&node1, &node2);
    let addr = node1.transport.local_addr();
    for _ in 0..200 {
        // A hello from a node id node 1 does not know.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = send_hello(&mut stream, &hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, 9)).await;
        // A bad frame from a known peer.
        let mut stream = handshaken_client(&node1, 2).await;
        stream.write_all(&frame(&[0xFF; 16])).await.unwrap();
        assert!(closed_by_server(&mut stream).await);
    }
    let stats = node1.transport.stats().inbound;
    assert_eq!(
        (stats.handshakes_refused, stats.connections_closed_on_error),
        (200, 200)
    );
    let logged = warnings_with(&["node=n1 "]);
    assert!(
        (1..=4).contains(&logged.len()),
        "{} lines: {logged:#?}",
        logged.len()
    );
    assert!(stats.warnings_suppressed >= 396, "{stats:?}");
}
