//! Mutual TLS on the TCP transport, over loopback: a TLS pair exchanges messages, and each way a
//! connection can be refused (a plaintext peer on either side, an unknown CA, an expired or not
//! yet valid certificate, a certificate for another node on either side, no client certificate,
//! a client that never finishes its handshake) is refused with its own cause, counted by cause,
//! shown on the dialling side as the peer's state, and leaves the listener serving its real
//! peers. Certificates reloaded from files are picked up by new connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{PeerConnection, Transport};
use raft_core::{LogIndex, Message, MessageBody, NodeId, Term};
use raft_net::{PeerTls, Spawner, TcpConfig, TcpTransport, TlsFiles, TlsOptions, TokioNet};
use raft_tests::certs::{Signed, TestCa, Validity};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

const CLUSTER: u64 = 7;
const PATIENCE: Duration = Duration::from_secs(10);

struct TestNode {
    transport: TcpTransport<TokioNet>,
    received: mpsc::UnboundedReceiver<Message>,
}

async fn start(id: u64, tls: Option<PeerTls>) -> TestNode {
    let mut config = TcpConfig::new(NodeId(id), CLUSTER, "127.0.0.1:0", []);
    config.connect_timeout = Duration::from_millis(1000);
    config.handshake_timeout = Duration::from_millis(500);
    config.keepalive_interval = Duration::from_millis(50);
    config.reconnect_backoff_min = Duration::from_millis(5);
    config.reconnect_backoff_max = Duration::from_millis(50);
    config.tls = tls;
    let (tx, received) = mpsc::unbounded_channel();
    let transport = TcpTransport::start(TokioNet, config, tx, Spawner::tokio())
        .await
        .unwrap();
    TestNode {
        transport,
        received,
    }
}

fn link(a: &TestNode, b: &TestNode) {
    for (x, y) in [(a, b), (b, a)] {
        x.transport
            .add_peer(y.transport.node_id(), y.transport.local_addr().to_string())
            .unwrap();
    }
}

fn heartbeat(from: u64, to: u64, round: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            round,
            freshness: None,
        },
    }
}

/// Sends heartbeats from `from` to `to` until one arrives; fails after [`PATIENCE`].
async fn delivered(from: &TestNode, to: &mut TestNode) {
    let (a, b) = (from.transport.node_id().0, to.transport.node_id().0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for round in 1.. {
        from.transport.send(heartbeat(a, b, round));
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(20), to.received.recv()).await
        {
            assert_eq!((message.from, message.to), (NodeId(a), NodeId(b)));
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing from {a} reached {b}: {:?}",
            from.transport.peer_connections()
        );
    }
}

/// Keeps `from` dialling `to` until `to` refused it `times` times for `cause`; returns `from`'s
/// view of the link then. Nothing may have been delivered.
async fn refused(from: &TestNode, to: &mut TestNode, cause: &str) -> PeerConnection {
    let (a, b) = (from.transport.node_id().0, to.transport.node_id().0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for round in 1.. {
        from.transport.send(heartbeat(a, b, round));
        let stats = to.transport.stats().inbound;
        if stats.handshakes_refused_by_cause.get(cause).copied() >= Some(2) {
            assert_eq!(stats.messages_delivered, 0);
            assert!(to.received.try_recv().is_err());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {b} did not refuse node {a} for {cause:?}: {stats:?}; node {a} sees {:?}",
            from.transport.peer_connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The dialler's state is set after its attempt ends; give it a moment.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let state = from.transport.peer_connections()[0].1.clone();
        if !matches!(state, PeerConnection::Idle | PeerConnection::Connected) {
            return state;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends from `from` to its one peer until `from` refuses the peer's certificate; the reason
/// must contain `words`.
async fn untrusted(from: &TestNode, words: &str) {
    let (a, b) = (
        from.transport.node_id().0,
        from.transport.peer_connections()[0].0.0,
    );
    from.transport.send(heartbeat(a, b, 1));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let state = from.transport.peer_connections()[0].1.clone();
        if let PeerConnection::Untrusted { reason } = &state {
            assert!(reason.contains(words), "{reason}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn reason(state: &PeerConnection) -> &str {
    match state {
        PeerConnection::Refused { reason } | PeerConnection::Untrusted { reason } => reason,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_peers_exchange_messages_both_ways() {
    let ca = TestCa::new(1);
    let mut one = start(1, Some(ca.node(1).tls(&ca.pem))).await;
    let mut two = start(2, Some(ca.node(2).tls(&ca.pem))).await;
    link(&one, &two);
    delivered(&one, &mut two).await;
    delivered(&two, &mut one).await;
    assert_eq!(one.transport.stats().inbound.handshakes_refused, 0);
    assert_eq!(
        one.transport.peer_connections(),
        vec![(NodeId(2), PeerConnection::Connected)]
    );
    // A peer that stops closes its connections without a TLS close_notify: between frames,
    // that is a clean close, not invalid input.
    two.transport.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(one.transport.stats().inbound.connections_closed_on_error, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_peer_is_refused_on_either_side() {
    let ca = TestCa::new(1);
    let mut secure = start(1, Some(ca.node(1).tls(&ca.pem))).await;
    let mut plain = start(2, None).await;
    link(&secure, &plain);
    let state = refused(&plain, &mut secure, "not a TLS handshake").await;
    assert!(reason(&state).contains("TLS on one side only"), "{state:?}");
    let state = refused(&secure, &mut plain, "TLS on a plaintext port").await;
    assert!(
        matches!(state, PeerConnection::Unreachable { .. }),
        "{state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused_on_either_side() {
    let ca = TestCa::new(1);
    let rogue = TestCa::new(2);
    let mut one = start(1, Some(ca.node(1).tls(&ca.pem))).await;
    // Node 2 trusts the real CA but presents a certificate from another.
    let mut two = start(2, Some(rogue.node(2).tls(&ca.pem))).await;
    link(&one, &two);
    let state = refused(&two, &mut one, "unknown CA").await;
    assert!(matches!(state, PeerConnection::Refused { .. }), "{state:?}");
    assert!(reason(&state).contains("TLS handshake"), "{state:?}");
    // Node 1 dialling node 2 refuses node 2's certificate itself.
    untrusted(&one, "unknown CA").await;
    assert!(two.received.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = TestCa::new(1);
    let name = raft_net::node_name(NodeId(2));
    for (validity, cause) in [
        (Validity::Expired, "expired certificate"),
        (Validity::NotYetValid, "certificate not yet valid"),
    ] {
        let mut one = start(1, Some(ca.node(1).tls(&ca.pem))).await;
        let two = start(2, Some(ca.sign(&[&name], validity).tls(&ca.pem))).await;
        link(&one, &two);
        let state = refused(&two, &mut one, cause).await;
        assert!(matches!(state, PeerConnection::Refused { .. }), "{state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_cannot_speak_for_this_one() {
    let ca = TestCa::new(1);
    let mut one = start(1, Some(ca.node(1).tls(&ca.pem))).await;
    // Node 2 holds node 3's certificate: valid, from the right CA, for the wrong node.
    let mut two = start(2, Some(ca.node(3).tls(&ca.pem))).await;
    link(&one, &two);
    let state = refused(&two, &mut one, "certificate for another node").await;
    assert!(matches!(state, PeerConnection::Refused { .. }), "{state:?}");
    assert!(reason(&state).contains("does not name"), "{state:?}");
    // And dialled, it is not taken for node 2 either.
    untrusted(&one, "another node").await;
    assert!(two.received.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_or_a_handshake_are_refused_cheaply() {
    let ca = TestCa::new(1);
    let mut one = start(1, Some(ca.node(1).tls(&ca.pem))).await;
    let two = start(2, Some(ca.node(2).tls(&ca.pem))).await;
    link(&one, &two);
    let addr = one.transport.local_addr();

    // A TLS client that trusts the CA but has no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for ca in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = raft_net::tls::crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("raft-node-1").unwrap();
    // TLS 1.3 lets the client finish first; the refusal arrives on its first read.
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, tls.read(&mut byte)).await;
        assert!(!matches!(read, Ok(Ok(1))), "{read:?}");
    }

    // A client that connects and sends nothing holds its slot for the handshake timeout only.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let by_cause = one.transport.stats().inbound.handshakes_refused_by_cause;
        if by_cause.get("no certificate") == Some(&1)
            && by_cause.get("TLS handshake timed out") == Some(&1)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{by_cause:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(silent);
    // The real peer is served all along.
    delivered(&two, &mut one).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_are_picked_up_by_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestCa::new(1);
    let new = TestCa::new(2);
    let write =
        |name: &str, contents: &str| std::fs::write(dir.path().join(name), contents).unwrap();
    let files = |id: u64| TlsFiles {
        cert: dir.path().join(format!("{id}.pem")),
        key: dir.path().join(format!("{id}.key")),
        ca: dir.path().join("ca.pem"),
    };
    let install = |id: u64, signed: &Signed| {
        write(&format!("{id}.pem"), &signed.cert);
        write(&format!("{id}.key"), &signed.key);
    };
    install(1, &old.node(1));
    install(2, &old.node(2));
    write("ca.pem", &old.pem);
    let mut options = TlsOptions::default();
    options.poll_interval = Duration::from_millis(20);
    let tls1 = PeerTls::load(files(1), options).await.unwrap();
    let tls2 = PeerTls::load(files(2), options).await.unwrap();
    let mut one = start(1, Some(tls1.clone())).await;
    let mut two = start(2, Some(tls2.clone())).await;
    link(&one, &two);
    delivered(&two, &mut one).await;

    // Rotate to the new CA: first trust both, then swap each node's certificate, then drop
    // the old CA. Both transports poll the shared files.
    write("ca.pem", &format!("{}{}", old.pem, new.pem));
    install(1, &new.node(1));
    install(2, &new.node(2));
    write("ca.pem", &new.pem);
    // The transports' own polling picks the change up...
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !(tls1.reloads() >= 1 && tls2.reloads() >= 1) {
        assert!(tokio::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... and ends on the files' final content (a poll may have caught a middle state).
    for tls in [&tls1, &tls2] {
        while tls.reload_files().await != Ok(false) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "files never settled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // A new connection, made with the new material only (the old CA is no longer trusted).
    two.transport.remove_peer(NodeId(1));
    one.transport.remove_peer(NodeId(2));
    link(&one, &two);
    delivered(&two, &mut one).await;
    delivered(&one, &mut two).await;
    assert_eq!(one.transport.stats().inbound.handshakes_refused, 0);

    // A broken file keeps the material in use and is reported, not installed.
    let before = tls1.reloads();
    write("1.key", "not a key");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tls1.reloads(), before);
    two.transport.remove_peer(NodeId(1));
    one.transport.remove_peer(NodeId(2));
    link(&one, &two);
    delivered(&two, &mut one).await;
}
