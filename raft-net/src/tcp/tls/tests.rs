//! Loading, naming and reloading; the handshakes themselves are tested end to end in
//! `tests/tests/tcp_tls.rs`.

use super::*;

type Fallible = Result<(), Box<dyn std::error::Error>>;

/// A certificate and its key, PEM.
type Pair = (String, String);

fn ca() -> Result<(rcgen::Issuer<'static, rcgen::KeyPair>, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok((rcgen::Issuer::new(params, key), cert.pem()))
}

fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    names: &[&str],
) -> Result<Pair, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Settings presenting `pair` and trusting `ca_pem`.
fn tls(pair: &Pair, ca_pem: &str) -> Result<PeerTls, TlsError> {
    PeerTls::from_pem(
        pair.0.as_bytes(),
        pair.1.as_bytes(),
        ca_pem.as_bytes(),
        TlsOptions::default(),
    )
}

#[test]
fn a_certificate_names_the_nodes_of_its_dns_names_only() -> Fallible {
    let (issuer, _) = ca()?;
    let (cert, _) = leaf(&issuer, &["raft-node-3", "db3.example"])?;
    let der = CertificateDer::from_pem_slice(cert.as_bytes())?;
    assert!(names_node(&der, NodeId(3)));
    assert!(!names_node(&der, NodeId(4)));
    assert!(!names_node(&der, NodeId(33)), "no prefix matching");
    let (wildcard, _) = leaf(&issuer, &["*.raft-node-3"])?;
    let der = CertificateDer::from_pem_slice(wildcard.as_bytes())?;
    assert!(!names_node(&der, NodeId(3)));
    Ok(())
}

#[test]
fn bad_material_is_refused_with_a_reason() -> Fallible {
    let (issuer, ca_pem) = ca()?;
    let (cert, key) = leaf(&issuer, &["raft-node-1"])?;
    let (_, other_key) = leaf(&issuer, &["raft-node-1"])?;
    let cases: [(&str, &str, &str, &str); 5] = [
        ("not pem", &key, &ca_pem, "holds no certificate"),
        (&cert, "not pem", &ca_pem, "private key"),
        (&cert, &key, "", "CA bundle holds no certificate"),
        (&cert, &other_key, &ca_pem, "do not go together"),
        (&cert, &key, &cert[..cert.len() / 2], "CA bundle"),
    ];
    for (cert, key, ca, words) in cases {
        let Err(error) = tls(&(cert.into(), key.into()), ca) else {
            panic!("accepted material that should fail with {words:?}");
        };
        assert!(error.0.contains(words), "{error} should say {words}");
    }
    tls(&(cert, key), &ca_pem)?;
    Ok(())
}

#[test]
fn a_failed_reload_keeps_the_material_in_use() -> Fallible {
    let (issuer, ca_pem) = ca()?;
    let one = leaf(&issuer, &["raft-node-1"])?;
    let two = leaf(&issuer, &["raft-node-2"])?;
    let tls = tls(&one, &ca_pem)?;
    assert!(tls.names_node(NodeId(1)));
    let mismatched = tls.reload_pem(two.0.as_bytes(), one.1.as_bytes(), ca_pem.as_bytes());
    assert!(mismatched.is_err());
    assert!(tls.names_node(NodeId(1)) && tls.reloads() == 0);
    tls.reload_pem(two.0.as_bytes(), two.1.as_bytes(), ca_pem.as_bytes())?;
    assert!(tls.names_node(NodeId(2)) && !tls.names_node(NodeId(1)));
    assert_eq!(tls.reloads(), 1);
    Ok(())
}

#[test]
fn once_a_node_uses_them_new_material_must_name_it() -> Fallible {
    let (issuer, ca_pem) = ca()?;
    let two = leaf(&issuer, &["raft-node-2"])?;
    let tls = tls(&leaf(&issuer, &["raft-node-1"])?, &ca_pem)?;
    tls.bind_node(NodeId(1));
    let Err(error) = tls.reload_pem(two.0.as_bytes(), two.1.as_bytes(), ca_pem.as_bytes()) else {
        panic!("a certificate for node 2 was installed for node 1");
    };
    assert!(error.0.contains("raft-node-1"), "{error}");
    assert!(tls.names_node(NodeId(1)) && tls.reloads() == 0);
    let renewed = leaf(&issuer, &["raft-node-1", "db1.example"])?;
    tls.reload_pem(
        renewed.0.as_bytes(),
        renewed.1.as_bytes(),
        ca_pem.as_bytes(),
    )?;
    assert_eq!(tls.reloads(), 1);
    Ok(())
}

#[tokio::test]
async fn files_are_read_again_only_when_they_change() -> Fallible {
    let dir = tempfile::tempdir()?;
    let (issuer, ca_pem) = ca()?;
    let one = leaf(&issuer, &["raft-node-1"])?;
    let files = TlsFiles {
        cert: dir.path().join("1.pem"),
        key: dir.path().join("1.key"),
        ca: dir.path().join("ca.pem"),
    };
    std::fs::write(&files.cert, &one.0)?;
    std::fs::write(&files.key, &one.1)?;
    std::fs::write(&files.ca, &ca_pem)?;
    let tls = PeerTls::load(files.clone(), TlsOptions::default()).await?;
    assert_eq!(tls.reload_files().await, Ok(false));
    let two = leaf(&issuer, &["raft-node-2"])?;
    // Half-way through a rotation the pair does not match: the old material stays.
    std::fs::write(&files.cert, &two.0)?;
    assert!(tls.reload_files().await.is_err());
    assert!(tls.names_node(NodeId(1)));
    std::fs::write(&files.key, &two.1)?;
    assert_eq!(tls.reload_files().await, Ok(true));
    assert!(tls.names_node(NodeId(2)));
    std::fs::remove_file(&files.ca)?;
    let Err(error) = tls.reload_files().await else {
        panic!("a missing CA bundle was not noticed");
    };
    assert!(error.0.contains("ca.pem"), "{error}");
    Ok(())
}
