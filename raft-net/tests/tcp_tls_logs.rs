//! A node whose TLS certificate names another node id is refused, and both sides say so in
//! their logs, once per cause: the listener names the cause, the dialler the peer's reason
//! (which its status shows too; see `tests/tests/tls_cluster.rs` for a whole node's `Status`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_core::NodeId;
use raft_core::node::{PeerConnection, Transport};
use raft_net::{PeerTls, TlsOptions};
use support::*;

/// A CA and a certificate from it for each of `names` (Ed25519), as PEM.
fn certificates(names: &[&str]) -> (String, Vec<(String, String)>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap().pem();
    let issuer = rcgen::Issuer::new(params, key);
    let leaves = names
        .iter()
        .map(|name| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    (ca, leaves)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_is_refused_and_logged_on_both_sides() {
    capture_warnings();
    // Node 2 is given node 3's certificate.
    let (ca, leaves) = certificates(&["raft-node-1", "raft-node-3"]);
    let tls = |(cert, key): &(String, String)| {
        PeerTls::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            ca.as_bytes(),
            TlsOptions::default(),
        )
        .unwrap()
    };
    let mut config = fast_config(1, CLUSTER, "127.0.0.1:0");
    config.tls = Some(tls(&leaves[0]));
    let node1 = start_with(config).await;
    let mut config = fast_config(2, CLUSTER, "127.0.0.1:0");
    config.tls = Some(tls(&leaves[1]));
    let node2 = start_with(config).await;
    link(&node1, &node2);
    let mut attempt = 0;
    eventually("node 2 was refused several times", || {
        attempt += 1;
        node2.transport.send(heartbeat(2, 1, attempt));
        node1
            .transport
            .stats()
            .inbound
            .handshakes_refused_by_cause
            .get("certificate for another node")
            .is_some_and(|&n| n >= 3)
    })
    .await;
    let connections = node2.transport.peer_connections();
    let [(NodeId(1), PeerConnection::Refused { reason })] = &connections[..] else {
        panic!("node 2's view of node 1: {connections:?}");
    };
    assert!(reason.contains("does not name"), "{reason}");
    // Once per cause on each side, however often it was refused.
    let dialler = warnings_with(&["peer refused the connection", "node=n2 ", "does not name"]);
    assert_eq!(dialler.len(), 1, "{dialler:?}");
    let listener = warnings_with(&[
        "inbound connection refused at the handshake: certificate for another node",
        "node=n1 ",
    ]);
    assert_eq!(listener.len(), 1, "{listener:?}");
    assert!(listener[0].contains("raft-node-2"), "{listener:?}");
}
