//! Shared pieces of the TCP transport tests: nodes on loopback with fast timeouts, messages, a
//! raw client speaking (or mangling) the wire protocol, and waiting without fixed sleeps.

#![allow(dead_code)] // each test file uses a different part

use raft_core::{Message, MessageBody, NodeId, Term};
use raft_net::{Spawner, TcpConfig, TcpTransport, TokioNet};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The cluster id of the tests' cluster.
pub const CLUSTER: u64 = 7;

/// How long a test waits for something that should happen within milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A transport on loopback and the messages it received.
pub struct TestNode {
    pub transport: TcpTransport<TokioNet>,
    pub received: mpsc::UnboundedReceiver<Message>,
}

/// Timeouts short enough for tests, long enough for a loaded CI machine.
pub fn fast_config(id: u64, cluster: u64, listen: &str) -> TcpConfig {
    let mut config = TcpConfig::new(NodeId(id), cluster, listen, []);
    config.connect_timeout = Duration::from_millis(500);
    config.write_timeout = Duration::from_millis(500);
    config.keepalive_interval = Duration::from_millis(50);
    config.idle_timeout = Duration::from_millis(1000);
    config.reconnect_backoff_min = Duration::from_millis(5);
    config.reconnect_backoff_max = Duration::from_millis(100);
    config.seed = id;
    config
}

/// Starts node `id` of `cluster` on an ephemeral loopback port, with no peers yet.
pub async fn start(id: u64, cluster: u64) -> TestNode {
    start_with(fast_config(id, cluster, "127.0.0.1:0")).await
}

/// Starts a node with `config`.
pub async fn start_with(config: TcpConfig) -> TestNode {
    let (tx, received) = mpsc::unbounded_channel();
    let transport = TcpTransport::start(TokioNet, config, tx, Spawner::tokio())
        .await
        .expect("transport starts");
    TestNode {
        transport,
        received,
    }
}

/// Makes `a` and `b` peers of each other.
pub fn link(a: &TestNode, b: &TestNode) {
    a.transport
        .add_peer(b.transport.node_id(), b.transport.local_addr().to_string())
        .expect("add peer");
    b.transport
        .add_peer(a.transport.node_id(), a.transport.local_addr().to_string())
        .expect("add peer");
}

/// A heartbeat from `from` to `to` carrying `round`, which tests use as a sequence number.
pub fn heartbeat(from: u64, to: u64, round: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Heartbeat {
            commit: raft_core::LogIndex(0),
            round,
            freshness: None,
        },
    }
}

/// The round of a heartbeat.
pub fn round(message: &Message) -> u64 {
    match message.body {
        MessageBody::Heartbeat { round, .. } => round,
        _ => panic!("not a heartbeat: {message:?}"),
    }
}

/// The next message `node` receives, or `None` after `within`.
pub async fn next(node: &mut TestNode, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, node.received.recv())
        .await
        .ok()
        .flatten()
}

/// Polls `condition` until it holds; fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The wire version this build speaks (`raft_net`'s handshake version).
pub const WIRE_VERSION: u16 = 2;

/// The 22-byte handshake, built by hand so that tests also check the documented layout.
pub fn hello_bytes(magic: &[u8; 4], version: u16, cluster: u64, node: u64) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&cluster.to_be_bytes());
    bytes.extend_from_slice(&node.to_be_bytes());
    bytes
}

/// A frame around `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// A frame carrying `message`.
pub fn message_frame(message: &Message) -> Vec<u8> {
    frame(&postcard::to_stdvec(message).expect("encodes"))
}

/// A raw connection to `node` that has completed a valid handshake as node `as_node`.
pub async fn handshaken_client(node: &TestNode, as_node: u64) -> TcpStream {
    let mut stream = TcpStream::connect(node.transport.local_addr())
        .await
        .expect("connects");
    stream
        .write_all(&hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, as_node))
        .await
        .expect("writes");
    let mut reply = [0u8; 22];
    stream.read_exact(&mut reply).await.expect("hello reply");
    assert_eq!(
        reply.to_vec(),
        hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, node.transport.node_id().0)
    );
    stream
}

/// Whether the server closed `stream` within [`PATIENCE`] (keepalive frames are skipped).
pub async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Keepalives (empty frames) only.
            Ok(Ok(n)) => assert!(buf[..n].iter().all(|&b| b == 0), "unexpected bytes"),
        }
    }
}
