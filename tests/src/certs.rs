#![allow(clippy::expect_used)] // test support: a failure to make a certificate is the test failing

//! Throw-away certificates for TLS tests: a CA, and node certificates that name
//! `raft-node-<id>` (the transport's convention, [`raft_net::node_name`]), made with `rcgen`.
//! Ed25519 keys: quick to make, and fixed-size signatures keep simulated handshakes the same
//! length from run to run.

use raft_core::NodeId;
use raft_net::{PeerTls, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ED25519, SerialNumber,
};

/// A certificate authority that signs test certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM: the CA bundle nodes verify each other against.
    pub pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From 1975 to 4096 (rcgen's default).
    Now,
    /// Only in 2000.
    Expired,
    /// Only in 2090.
    NotYetValid,
}

fn key_pair() -> KeyPair {
    KeyPair::generate_for(&PKCS_ED25519).expect("an Ed25519 key")
}

impl TestCa {
    /// A new CA; `serial` tells certificates of different CAs apart in failure messages.
    pub fn new(serial: u64) -> TestCa {
        let key = key_pair();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.self_signed(&key).expect("a self-signed CA");
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A certificate with the DNS or IP subject alternative names `names`.
    pub fn sign(&self, names: &[&str], validity: Validity) -> Signed {
        let key = key_pair();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match validity {
            Validity::Now => {}
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2000, 12, 31);
            }
            Validity::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2090, 12, 31);
            }
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        Signed {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Node `id`'s certificate: `raft-node-<id>`, `localhost` and 127.0.0.1, valid now.
    pub fn node(&self, id: u64) -> Signed {
        self.sign(
            &[&raft_net::node_name(NodeId(id)), "localhost", "127.0.0.1"],
            Validity::Now,
        )
    }
}

impl Signed {
    /// Transport TLS settings presenting this certificate and trusting `ca_pem`.
    pub fn tls(&self, ca_pem: &str) -> PeerTls {
        PeerTls::from_pem(
            self.cert.as_bytes(),
            self.key.as_bytes(),
            ca_pem.as_bytes(),
            TlsOptions::default(),
        )
        .expect("valid TLS material")
    }
}
