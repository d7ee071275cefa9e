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
    config.handshake_timeout = Duration::from_millis(300);
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
            leader_commit: raft_core::LogIndex(0),
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
pub const WIRE_VERSION: u16 = raft_net::WIRE_VERSION;

/// The verdicts a listener answers a hello with.
pub const ACCEPTED: u8 = 0;
pub const OTHER_CLUSTER: u8 = 1;
pub const UNKNOWN_NODE: u8 = 2;
pub const UNSUPPORTED_VERSION: u8 = 3;
pub const ALREADY_CONNECTED: u8 = 4;

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
    let (stream, verdict) = try_handshake(node, as_node).await;
    assert_eq!(verdict, Some(ACCEPTED), "handshake as node {as_node}");
    stream
}

/// Sends a valid hello as node `as_node` and reads the answer's verdict (`None`: no answer).
pub async fn try_handshake(node: &TestNode, as_node: u64) -> (TcpStream, Option<u8>) {
    let mut stream = TcpStream::connect(node.transport.local_addr())
        .await
        .expect("connects");
    let verdict = send_hello(
        &mut stream,
        &hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, as_node),
    )
    .await;
    (stream, verdict)
}

/// Writes `hello` and reads the 23-byte answer: the listener's hello, then the verdict.
pub async fn send_hello(stream: &mut TcpStream, hello: &[u8]) -> Option<u8> {
    stream.write_all(hello).await.expect("writes");
    let mut answer = [0u8; 23];
    match tokio::time::timeout(PATIENCE, stream.read_exact(&mut answer)).await {
        Ok(Ok(_)) => {
            assert_eq!(&answer[..4], b"RAFT");
            assert_eq!(u16::from_be_bytes([answer[4], answer[5]]), WIRE_VERSION);
            Some(answer[22])
        }
        _ => None,
    }
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

/// Starts a node with `config` whose received messages wait in a channel of `capacity`: an
/// inbox that fills up when the test reads slowly.
pub async fn start_bounded(
    config: TcpConfig,
    capacity: usize,
) -> (TcpTransport<TokioNet>, mpsc::Receiver<Message>) {
    let (tx, rx) = mpsc::channel(capacity);
    let transport = TcpTransport::start(TokioNet, config, tx, Spawner::tokio())
        .await
        .expect("transport starts");
    (transport, rx)
}

/// Opens a connection to `to` from the loopback address `from` (any of 127.0.0.0/8), so that a
/// test can play a host other than the nodes' own 127.0.0.1.
pub async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// An AppendEntries from `from` to `to` carrying `entries` blank entries after index 1, or
/// one entry of `payload_bytes` bytes when `entries` is 0.
pub fn append(from: u64, to: u64, entries: u64, payload_bytes: usize) -> Message {
    let entry = |index: u64, payload| raft_core::Entry {
        term: Term(1),
        index: raft_core::LogIndex(index),
        payload,
    };
    let entries = if entries == 0 {
        vec![entry(
            2,
            raft_core::Payload::Command(vec![7u8; payload_bytes].into()),
        )]
    } else {
        (0..entries)
            .map(|i| entry(2 + i, raft_core::Payload::Blank))
            .collect()
    };
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::AppendEntries {
            prev_log: raft_core::EntryId {
                term: Term(1),
                index: raft_core::LogIndex(1),
            },
            entries,
            leader_commit: raft_core::LogIndex(0),
            round: 0,
        },
    }
}

/// A listener that plays node `id` of [`CLUSTER`] by hand: accepts connections, reads a hello
/// and answers it with `verdict`, then hands the connection to the test.
pub struct RawPeer {
    pub listener: tokio::net::TcpListener,
    pub id: u64,
}

impl RawPeer {
    pub async fn bind(id: u64) -> RawPeer {
        RawPeer {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binds"),
            id,
        }
    }

    pub fn addr(&self) -> String {
        self.listener.local_addr().expect("bound").to_string()
    }

    /// The next connection, once its handshake has been answered with "accepted".
    pub async fn accept(&self) -> TcpStream {
        let (mut stream, _) = self.listener.accept().await.expect("accepts");
        let mut hello = [0u8; 22];
        stream.read_exact(&mut hello).await.expect("hello");
        let mut answer = hello_bytes(b"RAFT", WIRE_VERSION, CLUSTER, self.id);
        answer.push(ACCEPTED);
        stream.write_all(&answer).await.expect("answers");
        stream
    }
}

/// Warning-level events, for the test binaries that install [`capture_warnings`].
pub static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Installs a global subscriber that records every warning and error as one line of
/// `field=value` pairs in [`WARNINGS`]. Once per test binary.
pub fn capture_warnings() {
    struct Capture;
    struct Line(String);
    impl tracing::field::Visit for Line {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            use std::fmt::Write;
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            *metadata.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = Line(String::new());
            event.record(&mut line);
            WARNINGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let _ = tracing::subscriber::set_global_default(Capture);
}

/// The captured warnings that contain every one of `words`.
pub fn warnings_with(words: &[&str]) -> Vec<String> {
    WARNINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .cloned()
        .collect()
}
