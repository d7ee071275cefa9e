//! `raft-kv certs --out DIR --nodes 1,2,3`: a throw-away certificate authority and what a
//! cluster needs from it, for trying TLS out or for tests (a real deployment's certificates
//! come from its own CA, under the same conventions).
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA (`--tls-ca` everywhere), and its key, to make more certificates later |
//! | `N.pem`, `N.key` | node N's certificate and key (`--tls-cert`, `--tls-key`) |
//! | `client.pem`, `client.key` | a client certificate, for clients that present one |
//!
//! A node's certificate names, as subject alternative names, the DNS name
//! [`raft_net::node_name`] (`raft-node-N`), `localhost` and the IP address `127.0.0.1`; it serves
//! both as a server and as a client certificate (extended key usages serverAuth and
//! clientAuth), since a node is both to its peers. The name `raft-node-N` is how a peer
//! transport tells which node a certificate belongs to. Keys are ECDSA P-256; certificates are
//! valid from an hour ago (for clocks a little behind) for a year, the CA for ten years.
//!
//! Nothing is overwritten: if any file to be written exists, nothing is written. A directory
//! that already holds `ca.pem` and `ca.key` keeps its CA, and only the nodes' files are made
//! (`raft-kv certs --out DIR --nodes 4` adds node 4 to a cluster).

use clap::Args;
use raft_core::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// `raft-kv certs`.
#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    /// The directory to write into (created if missing; no file in it is overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// The node ids to make certificates for, as `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
}

/// The CA's subject, followed by a digest of its public key: each CA has a name of its own
/// (so that a certificate of another throw-away CA is reported as one of an unknown CA, not as
/// a bad signature from this one), and a CA kept in a directory can be named again from its
/// key alone, to sign with it.
const CA_NAME: &str = "raft-kv throw-away CA";

/// How long a node's or the client's certificate is valid.
const CERTIFICATE_DAYS: i64 = 365;

/// How long the CA is valid: longer than the certificates it signs, so that one signed near
/// the end of another's year is not cut short.
const CA_DAYS: i64 = 3650;

/// One file to write.
struct Output {
    name: String,
    contents: String,
    /// A private key: readable by its owner only.
    secret: bool,
    what: String,
}

/// Runs `raft-kv certs`: writes the files and prints what it wrote.
pub async fn run(args: CertsArgs) -> Result<ExitCode, String> {
    let written = tokio::task::spawn_blocking(move || write_all(&args.out, &args.nodes))
        .await
        .map_err(|e| e.to_string())??;
    for (path, what) in written {
        println!("wrote {}  ({what})", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make {what}: {e}")
}

/// The parameters of the CA whose key is `key`: the same every time for one key (see
/// [`CA_NAME`]).
fn ca_params(now: OffsetDateTime, key: &KeyPair) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("the CA"))?;
    let digest: String = params
        .key_identifier(key)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("{CA_NAME} {digest}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    Ok(params)
}

/// A certificate signed by `issuer`, named `common_name` with `names` as its subject
/// alternative names, for `usages`; and its new key.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    now: OffsetDateTime,
) -> Result<(String, String), String> {
    let error = rcgen_error(common_name);
    let mut params = CertificateParams::new(names).map_err(&error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CERTIFICATE_DAYS);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(&error)?;
    let certificate = params.signed_by(&key, issuer).map_err(&error)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// Checks that `certificate` (PEM) chains to the CA in `ca` (PEM) under the server name
/// `name`: that a CA kept in a directory is the one its key signs for.
fn verify(ca: &str, certificate: &str, name: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let der = der.map_err(|e| format!("ca.pem: {e}"))?;
        roots.add(der).map_err(|e| format!("ca.pem: {e}"))?;
    }
    let leaf = CertificateDer::from_pem_slice(certificate.as_bytes()).map_err(|e| e.to_string())?;
    let provider = crate::tls::provider();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("ca.pem: {e}"))?;
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Makes and writes the files for `nodes` in `out`; returns each file written and what it is.
pub fn write_all(out: &Path, nodes: &[u64]) -> Result<Vec<(PathBuf, String)>, String> {
    let mut ids: Vec<NodeId> = Vec::new();
    for &id in nodes {
        if id == 0 {
            return Err("--nodes: node id 0 is reserved; ids start at 1".into());
        }
        if ids.contains(&NodeId(id)) {
            return Err(format!("--nodes: node {id} is named twice"));
        }
        ids.push(NodeId(id));
    }
    if ids.is_empty() {
        return Err("--nodes needs at least one node id".into());
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let now = OffsetDateTime::now_utc();
    let (ca_pem, ca_key) = (out.join("ca.pem"), out.join("ca.key"));
    let mut outputs = Vec::new();
    let (issuer, ca_certificate) = match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            let key = KeyPair::from_pem(&read(&ca_key)?)
                .map_err(|e| format!("{}: not a private key: {e}", ca_key.display()))?;
            (
                Issuer::new(ca_params(now, &key)?, key),
                Some(read(&ca_pem)?),
            )
        }
        (false, false) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(rcgen_error("the CA"))?;
            let params = ca_params(now, &key)?;
            let certificate = params.self_signed(&key).map_err(rcgen_error("the CA"))?;
            outputs.push(Output {
                name: "ca.pem".into(),
                contents: certificate.pem(),
                secret: false,
                what: "the CA's certificate: --tls-ca".into(),
            });
            outputs.push(Output {
                name: "ca.key".into(),
                contents: key.serialize_pem(),
                secret: true,
                what: "the CA's key: keep it to make more certificates, or delete it".into(),
            });
            let issuer = Issuer::new(params, key);
            let (cert, key) = leaf(
                &issuer,
                "raft-kv client",
                Vec::new(),
                vec![ExtendedKeyUsagePurpose::ClientAuth],
                now,
            )?;
            outputs.push(Output {
                name: "client.pem".into(),
                contents: cert,
                secret: false,
                what: "a client certificate: --tls-cert of a client".into(),
            });
            outputs.push(Output {
                name: "client.key".into(),
                contents: key,
                secret: true,
                what: "its key: --tls-key of a client".into(),
            });
            (issuer, None)
        }
        _ => {
            return Err(format!(
                "{} holds one of ca.pem and ca.key but not the other: refusing to make a second CA beside it",
                out.display()
            ));
        }
    };
    for id in ids {
        let name = raft_net::node_name(id);
        let names = vec![name.clone(), "localhost".into(), "127.0.0.1".into()];
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (cert, key) = leaf(&issuer, &name, names, usages, now)?;
        if let Some(ca) = &ca_certificate {
            verify(ca, &cert, &name).map_err(|e| {
                format!(
                    "{} and {} do not make a CA this command can sign with: {e}",
                    ca_pem.display(),
                    ca_key.display()
                )
            })?;
        }
        outputs.push(Output {
            name: format!("{}.pem", id.0),
            contents: cert,
            secret: false,
            what: format!("node {}'s certificate ({name}, localhost, 127.0.0.1)", id.0),
        });
        outputs.push(Output {
            name: format!("{}.key", id.0),
            contents: key,
            secret: true,
            what: format!("node {}'s key", id.0),
        });
    }
    let existing: Vec<String> = outputs
        .iter()
        .filter(|o| out.join(&o.name).exists())
        .map(|o| o.name.clone())
        .collect();
    if !existing.is_empty() {
        return Err(format!(
            "{} already holds {}: refusing to overwrite (nothing was written)",
            out.display(),
            existing.join(", ")
        ));
    }
    let mut written = Vec::new();
    for output in outputs {
        let path = out.join(&output.name);
        write_new(&path, &output.contents, output.secret)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push((path, output.what));
    }
    Ok(written)
}

/// Writes a file that must not exist yet; a secret one readable by its owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_chain_to_the_ca_under_their_node_name() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path(), &[1, 2]).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca.key",
                "client.pem",
                "client.key",
                "1.pem",
                "1.key",
                "2.pem",
                "2.key"
            ]
        );
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        verify(&read("ca.pem"), &read("1.pem"), "raft-node-1").unwrap();
        verify(&read("ca.pem"), &read("1.pem"), "localhost").unwrap();
        verify(&read("ca.pem"), &read("2.pem"), "127.0.0.1").unwrap();
        assert!(verify(&read("ca.pem"), &read("1.pem"), "raft-node-2").is_err());
        #[cfg(unix)]
        for name in ["ca.key", "client.key", "1.key", "2.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }

        // Nothing is overwritten; a node added later is signed by the CA kept.
        let again = write_all(dir.path(), &[2, 3]).unwrap_err();
        assert!(again.contains("already holds 2.pem, 2.key"), "{again}");
        assert!(!dir.path().join("3.pem").exists(), "nothing written");
        let added = write_all(dir.path(), &[3]).unwrap();
        assert_eq!(added.len(), 2);
        verify(&read("ca.pem"), &read("3.pem"), "raft-node-3").unwrap();

        // A kept CA whose key is not its own is refused.
        let other = tempfile::tempdir().unwrap();
        write_all(other.path(), &[1]).unwrap();
        std::fs::copy(dir.path().join("ca.key"), other.path().join("ca.key")).unwrap();
        let mismatch = write_all(other.path(), &[9]).unwrap_err();
        assert!(mismatch.contains("do not make a CA"), "{mismatch}");
        std::fs::remove_file(other.path().join("ca.key")).unwrap();
        let half = write_all(other.path(), &[9]).unwrap_err();
        assert!(half.contains("not the other"), "{half}");
        for bad in [&[0][..], &[1, 1], &[]] {
            assert!(write_all(other.path(), bad).is_err(), "{bad:?}");
        }
    }
}
