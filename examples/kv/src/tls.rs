//! TLS for the HTTP API and its clients, with rustls on the transport's ring provider: the files
//! `--tls-cert`, `--tls-key` and `--tls-ca` name, the server's configuration (TLS 1.3 only
//! unless asked otherwise; client certificates optional, verified against the CA when
//! presented), the certificate that is reloaded when its files change or on `SIGHUP`, why a
//! handshake failed, and the clients' configuration.
//!
//! Every `reqwest` client of this crate is built by [`http_client_builder`], with a rustls
//! configuration made here: reqwest is compiled without a crypto provider of its own, and would
//! panic if asked for one.

use crate::metrics::Metrics;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The files of `--tls-cert`, `--tls-key` and `--tls-ca`: this node's certificate (PEM, the
/// chain from the node's own certificate up), its private key (PEM), and the CA that
/// certificates of clients and peers must chain to. The transport's type: the same files
/// secure the peers' connections and the HTTP API.
pub use raft_net::TlsFiles;

/// The files of the three flags: all three, or none (`Ok(None)`).
pub fn files_from_flags(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, String> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("--tls-cert", cert.is_none()),
                ("--tls-key", key.is_none()),
                ("--tls-ca", ca.is_none()),
            ]
            .iter()
            .filter(|(_, absent)| *absent)
            .map(|(flag, _)| *flag)
            .collect();
            Err(format!(
                "--tls-cert, --tls-key and --tls-ca go together: {} missing",
                missing.join(" and ")
            ))
        }
    }
}
/// The crypto this crate uses: the transport's choice ([`raft_net::tls::crypto_provider`], ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    raft_net::tls::crypto_provider()
}

/// A file's bytes, or a one-line error naming the flag and the file.
async fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))
}

/// The certificates of a PEM file: at least one.
fn certificates(
    flag: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not valid PEM ({e})", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected PEM blocks BEGIN CERTIFICATE)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The private key of a PEM file.
fn private_key(flag: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        format!(
            "{flag} {}: no private key in it (expected a PEM PRIVATE KEY block): {e}",
            path.display()
        )
    })
}

/// The trust anchors of a PEM file of CA certificates.
fn roots(flag: &str, path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(flag, path, pem)? {
        roots.add(certificate).map_err(|e| {
            format!(
                "{flag} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its key, read from the files of `--tls-cert` and `--tls-key` and
/// checked to belong together.
async fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = certificates("--tls-cert", cert, &read("--tls-cert", cert).await?)?;
    let secret = private_key("--tls-key", key, &read("--tls-key", key).await?)?;
    CertifiedKey::from_der(chain, secret, provider).map_err(|e| {
        format!(
            "--tls-key {} does not go with --tls-cert {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// The certificate a client presents: always the one it was given.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What says whether a file changed: its modification time, length and (on Unix) inode, so
/// that a file replaced by a rename within the clock's resolution is seen too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

async fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: metadata.modified().ok(),
        length: metadata.len(),
        inode,
    })
}

async fn stamps(files: &TlsFiles) -> (Option<Stamp>, Option<Stamp>) {
    (stamp(&files.cert).await, stamp(&files.key).await)
}

/// The certificate the server presents: swapped whole when the files change, read by every
/// handshake.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// How often the certificate's files are looked at.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// The HTTP API's TLS: its configuration, and the certificate it presents.
pub(crate) struct ServerTls {
    config: Arc<ServerConfig>,
    current: Arc<CurrentCertificate>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    /// The files' stamps when they were read.
    loaded: (Option<Stamp>, Option<Stamp>),
}

impl ServerTls {
    /// Reads the three files and builds the configuration: TLS 1.3 only unless
    /// `allow_tls12`; a client certificate is optional, and verified against the CA when one
    /// is presented.
    pub(crate) async fn load(files: &TlsFiles, allow_tls12: bool) -> Result<ServerTls, String> {
        let provider = provider();
        let loaded = stamps(files).await;
        let key = certified_key(&files.cert, &files.key, &provider).await?;
        let roots = roots("--tls-ca", &files.ca, &read("--tls-ca", &files.ca).await?)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
        let versions: &[&'static SupportedProtocolVersion] = if allow_tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(key))));
        let config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(current.clone());
        Ok(ServerTls {
            config: Arc::new(config),
            current,
            files: files.clone(),
            provider,
            loaded,
        })
    }

    /// What accepts TLS connections with this configuration.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Starts the task that reloads the certificate and key when their files change (looked
    /// at every [`RELOAD_POLL`]) or on `SIGHUP`, until `stop`. A reload that fails keeps the
    /// certificate served so far, and says why in the log.
    ///
    /// On `SIGHUP`, `peers` (the transport's TLS, which polls its files by itself) is reloaded
    /// at once too. With `peers`, a certificate that does not name node `peers.1` is not
    /// served: the transport refuses it, and both keep the same certificate.
    pub(crate) fn spawn_reloader(
        &self,
        metrics: Arc<Metrics>,
        peers: Option<(raft_net::PeerTls, raft_core::NodeId)>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let (files, current, provider) = (
            self.files.clone(),
            self.current.clone(),
            self.provider.clone(),
        );
        let mut last = self.loaded;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut hangup = hangups();
            loop {
                let forced = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    Some(()) = next_hangup(&mut hangup) => true,
                    _ = tick.tick() => false,
                };
                if let (true, Some((peers, _))) = (forced, &peers) {
                    match peers.reload_files().await {
                        Ok(changed) => {
                            tracing::info!(changed, "peer TLS files read again on SIGHUP")
                        }
                        Err(error) => {
                            tracing::warn!(%error, "the new peer TLS files cannot be used; keeping the previous ones")
                        }
                    }
                }
                let now = stamps(&files).await;
                if !forced && now == last {
                    continue;
                }
                last = now;
                let key = certified_key(&files.cert, &files.key, &provider)
                    .await
                    .and_then(|key| match (&peers, key.cert.first()) {
                        (Some((_, node)), Some(leaf))
                            if !raft_net::tls::names_node(leaf, *node) =>
                        {
                            Err(format!(
                                "--tls-cert {} does not name this node ({})",
                                files.cert.display(),
                                raft_net::node_name(*node)
                            ))
                        }
                        _ => Ok(key),
                    });
                match key {
                    Ok(key) => {
                        *current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                        metrics.count_certificate_reload("ok");
                        tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate and key");
                    }
                    Err(e) => {
                        metrics.count_certificate_reload("failed");
                        tracing::warn!(error = %e, "the new TLS certificate or key cannot be used; still serving the previous one");
                    }
                }
            }
        })
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// `SIGHUP`s, where there are such things and the handler could be installed.
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; the certificate is still reloaded when its files change");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The next `SIGHUP`; never, without a handler.
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    #[cfg(not(unix))]
    let _ = hangups;
    std::future::pending().await
}

/// Why a TLS handshake on the HTTP port failed, as the metric's `cause` label and the log
/// name it.
pub(crate) fn handshake_failure_cause(error: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(error) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "io";
    };
    match error {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "not_yet_valid",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::NoCertificatesPresented => "no_certificate",
        // The client refused this node's certificate (it does not trust the CA, or the
        // name does not match).
        Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired,
        ) => "client_refused_certificate",
        Error::PeerIncompatible(_)
        | Error::AlertReceived(
            AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure,
        ) => "incompatible",
        _ => "protocol",
    }
}

/// A client's TLS configuration: trust the CA certificates in `ca`, and present the
/// certificate and key of `identity` if given. Offers TLS 1.3 and 1.2.
pub async fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let roots = roots("--tls-ca", ca, &read("--tls-ca", ca).await?)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let identity = certified_key(cert, key, &provider).await?;
            Ok(builder.with_client_cert_resolver(Arc::new(ClientIdentity(Arc::new(identity)))))
        }
    }
}

/// A `reqwest` client builder that speaks HTTPS with `tls` (and plain HTTP either way). Every
/// reqwest client of this crate is made here: reqwest is built without a crypto provider, so
/// one built elsewhere would panic for the lack of one.
pub fn http_client_builder(tls: Option<ClientConfig>) -> Result<reqwest::ClientBuilder, String> {
    let tls = match tls {
        Some(tls) => tls,
        // Plain HTTP only: this configuration is never used, since `http://` URLs never
        // handshake, but reqwest wants one.
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription, CertificateError, Error};

    #[test]
    fn the_three_files_go_together() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(files_from_flags(None, None, None), Ok(None));
        let all = files_from_flags(p("c"), p("k"), p("a")).unwrap().unwrap();
        assert_eq!(all.ca, PathBuf::from("a"));
        let missing = files_from_flags(p("c"), None, None).unwrap_err();
        assert!(
            missing.contains("--tls-key and --tls-ca missing"),
            "{missing}"
        );
        let missing = files_from_flags(None, p("k"), p("a")).unwrap_err();
        assert!(missing.contains("--tls-cert missing"), "{missing}");
    }

    #[test]
    fn handshake_failures_are_named_by_cause() {
        let io = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let cases = [
            (
                io(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                "unknown_ca",
            ),
            (
                io(Error::InvalidCertificate(CertificateError::Expired)),
                "expired",
            ),
            (io(Error::NoCertificatesPresented), "no_certificate"),
            (
                io(Error::AlertReceived(AlertDescription::UnknownCA)),
                "client_refused_certificate",
            ),
            (
                io(Error::AlertReceived(AlertDescription::ProtocolVersion)),
                "incompatible",
            ),
            (io(Error::DecryptError), "protocol"),
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                "io",
            ),
        ];
        for (error, cause) in cases {
            assert_eq!(handshake_failure_cause(&error), cause, "{error}");
        }
    }

    #[tokio::test]
    async fn bad_files_are_refused_with_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM at all").unwrap();
        let files = TlsFiles {
            cert: garbage.clone(),
            key: garbage.clone(),
            ca: dir.path().join("absent.pem"),
        };
        let refused = ServerTls::load(&files, false).await.err().unwrap();
        assert!(refused.starts_with("--tls-cert "), "{refused}");
        assert!(refused.contains("no certificate"), "{refused}");
        let refused = client_config(&files.ca, None).await.unwrap_err();
        assert!(
            refused.contains("--tls-ca") && refused.contains("cannot read"),
            "{refused}"
        );
    }
}
