//! Loading, naming and reloading; the handshakes themselves are tested end to end in
//! `raft-net/tests/tcp_tls.rs`.

use super::*;

fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (rcgen::Issuer::new(params, key), cert.pem())
}

fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_certificate_names_the_nodes_of_its_dns_names_only() {
    let (issuer, _) = ca();
    let (cert, _) = leaf(&issuer, &["raft-node-3", "db3.example"]);
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert!(names_node(&der, NodeId(3)));
    assert!(!names_node(&der, NodeId(4)));
    assert!(!names_node(&der, NodeId(33)), "no prefix matching");
    let (wildcard, _) = leaf(&issuer, &["*.raft-node-3"]);
    let der = CertificateDer::from_pem_slice(wildcard.as_bytes()).unwrap();
    assert!(!names_node(&der, NodeId(3)));
}

#[test]
fn bad_material_is_refused_with_a_reason() {
    let (issuer, ca_pem) = ca();
    let (cert, key) = leaf(&issuer, &["raft-node-1"]);
    let (_, other_key) = leaf(&issuer, &["raft-node-1"]);
    let options = TlsOptions::default();
    let cases: [(&str, &str, &str, &str); 5] = [
        ("not pem", &key, &ca_pem, "holds no certificate"),
        (&cert, "not pem", &ca_pem, "private key"),
        (&cert, &key, "", "CA bundle holds no certificate"),
        (&cert, &other_key, &ca_pem, "do not go together"),
        (&cert, &key, &cert[..cert.len() / 2], "CA bundle"),
    ];
    for (cert, key, ca, words) in cases {
        let error = PeerTls::from_pem(cert.as_bytes(), key.as_bytes(), ca.as_bytes(), options)
            .expect_err(words);
        assert!(error.0.contains(words), "{error} should say {words}");
    }
    assert!(PeerTls::from_pem(cert.as_bytes(), key.as_bytes(), ca_pem.as_bytes(), options).is_ok());
}

#[test]
fn a_failed_reload_keeps_the_material_in_use() {
    let (issuer, ca_pem) = ca();
    let (one, one_key) = leaf(&issuer, &["raft-node-1"]);
    let (two, two_key) = leaf(&issuer, &["raft-node-2"]);
    let tls = PeerTls::from_pem(
        one.as_bytes(),
        one_key.as_bytes(),
        ca_pem.as_bytes(),
        TlsOptions::default(),
    )
    .unwrap();
    assert!(tls.names_node(NodeId(1)));
    assert!(
        tls.reload_pem(two.as_bytes(), one_key.as_bytes(), ca_pem.as_bytes())
            .is_err()
    );
    assert!(tls.names_node(NodeId(1)) && tls.reloads() == 0);
    tls.reload_pem(two.as_bytes(), two_key.as_bytes(), ca_pem.as_bytes())
        .unwrap();
    assert!(tls.names_node(NodeId(2)) && !tls.names_node(NodeId(1)));
    assert_eq!(tls.reloads(), 1);
}

#[test]
fn once_a_node_uses_them_new_material_must_name_it() {
    let (issuer, ca_pem) = ca();
    let (one, one_key) = leaf(&issuer, &["raft-node-1"]);
    let (two, two_key) = leaf(&issuer, &["raft-node-2"]);
    let tls = PeerTls::from_pem(
        one.as_bytes(),
        one_key.as_bytes(),
        ca_pem.as_bytes(),
        TlsOptions::default(),
    )
    .unwrap();
    tls.bind_node(NodeId(1));
    let error = tls
        .reload_pem(two.as_bytes(), two_key.as_bytes(), ca_pem.as_bytes())
        .unwrap_err();
    assert!(error.0.contains("raft-node-1"), "{error}");
    assert!(tls.names_node(NodeId(1)) && tls.reloads() == 0);
    let (renewed, renewed_key) = leaf(&issuer, &["raft-node-1", "db1.example"]);
    tls.reload_pem(
        renewed.as_bytes(),
        renewed_key.as_bytes(),
        ca_pem.as_bytes(),
    )
    .unwrap();
    assert_eq!(tls.reloads(), 1);
}

#[tokio::test]
async fn files_are_read_again_only_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, ca_pem) = ca();
    let (one, one_key) = leaf(&issuer, &["raft-node-1"]);
    let files = TlsFiles {
        cert: dir.path().join("1.pem"),
        key: dir.path().join("1.key"),
        ca: dir.path().join("ca.pem"),
    };
    std::fs::write(&files.cert, &one).unwrap();
    std::fs::write(&files.key, &one_key).unwrap();
    std::fs::write(&files.ca, &ca_pem).unwrap();
    let tls = PeerTls::load(files.clone(), TlsOptions::default())
        .await
        .unwrap();
    assert_eq!(tls.reload_files().await, Ok(false));
    let (two, two_key) = leaf(&issuer, &["raft-node-2"]);
    // Half-way through a rotation the pair does not match: the old material stays.
    std::fs::write(&files.cert, &two).unwrap();
    assert!(tls.reload_files().await.is_err());
    assert!(tls.names_node(NodeId(1)));
    std::fs::write(&files.key, &two_key).unwrap();
    assert_eq!(tls.reload_files().await, Ok(true));
    assert!(tls.names_node(NodeId(2)));
    std::fs::remove_file(&files.ca).unwrap();
    let error = tls.reload_files().await.unwrap_err();
    assert!(error.0.contains("ca.pem"), "{error}");
}
