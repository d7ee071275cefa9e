//! Mutual TLS between nodes: [`PeerTls`] holds this node's certificate and key and the CA that
//! signs its peers' certificates; the transport wraps every connection in TLS (rustls, ring
//! provider, TLS 1.3 only unless [`TlsOptions::allow_tls12`]) before the Raft handshake.
//!
//! # Which node a certificate belongs to
//!
//! A node's certificate carries the DNS subject alternative name `raft-node-<id>`
//! ([`node_name`]); it may carry any other names too (its host name, its IP address). Both
//! sides check it, so one node's certificate cannot speak for another node:
//!
//! * the dialler verifies the listener's certificate for the name `raft-node-<id of the peer it
//!   dials>`, like an HTTPS client verifies a host name;
//! * the listener verifies the dialler's certificate (a client certificate is required), reads
//!   the node id the dialler claims in its Raft hello, and refuses the connection, with a
//!   verdict the dialler reports as its peer's refusal, unless the certificate names
//!   `raft-node-<claimed id>`.
//!
//! Both certificates must chain to a CA in the configured bundle and be valid now (by the
//! system clock). Session resumption is off, so every connection presents the certificates
//! current at its handshake. There are no revocation lists: a certificate stays acceptable
//! until it expires or its CA leaves the bundle, so withdrawing one means moving the cluster
//! to a new CA.
//!
//! # Rotation
//!
//! Each handshake uses the configuration current at its start; established connections keep
//! theirs. [`PeerTls::reload_pem`] swaps in new PEM at any time. A `PeerTls` made by
//! [`PeerTls::load`] from files is polled by the transport every
//! [`TlsOptions::poll_interval`]: when a file's content changes, the three files are read
//! again and take effect if they are valid together; if not, the previous ones stay and a
//! warning says why (once per distinct failure). A CA bundle may hold the old and the new CA
//! while certificates are replaced node by node.

use raft_core::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS subject alternative name that marks a certificate as node `id`'s: `raft-node-<id>`.
///
/// ```
/// assert_eq!(raft_net::node_name(raft_core::NodeId(3)), "raft-node-3");
/// ```
pub fn node_name(id: NodeId) -> String {
    format!("raft-node-{}", id.0)
}

/// Where a node's TLS material lives, in PEM: its certificate (chain, leaf first), its private
/// key (PKCS#8, PKCS#1 or SEC1), and the CA certificates its peers' certificates must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The CA bundle peers are verified against.
    pub ca: PathBuf,
}

/// Choices beyond the certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Also accept TLS 1.2 (off: TLS 1.3 only). Only for peers that cannot speak 1.3.
    pub allow_tls12: bool,
    /// How often the transport looks for changed files (for a [`PeerTls`] loaded from files).
    pub poll_interval: Duration,
}

impl Default for TlsOptions {
    /// TLS 1.3 only; files polled every second.
    fn default() -> TlsOptions {
        TlsOptions {
            allow_tls12: false,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// TLS material that cannot be used; the text says which and why.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The PEM a configuration was built from: what a reload compares with.
#[derive(Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

/// A configuration ready for handshakes.
struct Loaded {
    pem: Pem,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// This node's leaf certificate.
    leaf: CertificateDer<'static>,
}

/// Mutual TLS settings of a TCP transport ([`crate::TcpConfig::tls`]): this node's certificate
/// and key and the CA bundle its peers are verified against. Cheap to clone; clones share the
/// material, so a reload through one is seen by all. The [module documentation](crate::tls)
/// says how node ids are bound to certificates and how rotation works.
///
/// ```
/// # fn example(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<(), raft_net::TlsError> {
/// use raft_core::NodeId;
/// use raft_net::{PeerTls, TcpConfig, TlsOptions};
/// let mut config = TcpConfig::new(NodeId(1), 7, "0.0.0.0:7000", []);
/// config.tls = Some(PeerTls::from_pem(cert, key, ca, TlsOptions::default())?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PeerTls {
    inner: Arc<Inner>,
}

struct Inner {
    options: TlsOptions,
    /// The node whose transport uses these settings, once one started: new material must name
    /// it.
    node: OnceLock<NodeId>,
    files: Option<TlsFiles>,
    current: RwLock<Arc<Loaded>>,
    reloads: AtomicU64,
    /// The last reload failure reported, so a file left broken is reported once.
    last_failure: Mutex<Option<String>>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("options", &self.inner.options)
            .field("files", &self.inner.files)
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Builds the settings from PEM: this node's certificate chain, its private key, and the CA
    /// bundle. Fails if any of them does not parse, the key does not match the certificate,
    /// or the bundle holds no CA.
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        ca: &[u8],
        options: TlsOptions,
    ) -> Result<PeerTls, TlsError> {
        let pem = Pem {
            cert: cert.to_vec(),
            key: key.to_vec(),
            ca: ca.to_vec(),
        };
        PeerTls::new(pem, options, None)
    }

    /// Reads [`TlsFiles`] and builds the settings from them, as [`PeerTls::from_pem`]. A
    /// transport started with the result reloads the files when they change.
    pub async fn load(files: TlsFiles, options: TlsOptions) -> Result<PeerTls, TlsError> {
        let pem = read_files(&files).await?;
        PeerTls::new(pem, options, Some(files))
    }

    fn new(pem: Pem, options: TlsOptions, files: Option<TlsFiles>) -> Result<PeerTls, TlsError> {
        let loaded = build(pem, options)?;
        Ok(PeerTls {
            inner: Arc::new(Inner {
                options,
                files,
                node: OnceLock::new(),
                current: RwLock::new(Arc::new(loaded)),
                reloads: AtomicU64::new(0),
                last_failure: Mutex::new(None),
            }),
        })
    }

    /// Replaces the certificate, key and CA bundle for every handshake from now on;
    /// established connections are kept. On error nothing changes. Once a transport started
    /// with these settings, a certificate that does not name its node is refused: its peers
    /// would refuse it.
    pub fn reload_pem(&self, cert: &[u8], key: &[u8], ca: &[u8]) -> Result<(), TlsError> {
        let pem = Pem {
            cert: cert.to_vec(),
            key: key.to_vec(),
            ca: ca.to_vec(),
        };
        self.install(build(pem, self.inner.options)?)
    }

    /// Reads the files again (for a `PeerTls` made by [`PeerTls::load`]) and, if their content
    /// changed, installs them as [`PeerTls::reload_pem`]. Returns whether anything changed.
    /// The transport calls this every [`TlsOptions::poll_interval`]; call it yourself to reload
    /// at once (on `SIGHUP`, say).
    pub async fn reload_files(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.inner.files else {
            return Ok(false);
        };
        let pem = read_files(files).await?;
        if pem == self.current().pem {
            return Ok(false);
        }
        self.install(build(pem, self.inner.options)?)?;
        Ok(true)
    }

    /// How many times new material was installed since these settings were made.
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// The options these settings were made with.
    pub fn options(&self) -> TlsOptions {
        self.inner.options
    }

    /// Whether this node's current certificate names node `id` (`raft-node-<id>`).
    pub fn names_node(&self, id: NodeId) -> bool {
        names_node(&self.current().leaf, id)
    }

    /// Records that node `id`'s transport uses these settings (the first call wins).
    pub(crate) fn bind_node(&self, id: NodeId) {
        let _ = self.inner.node.set(id);
    }

    fn install(&self, loaded: Loaded) -> Result<(), TlsError> {
        if let Some(&node) = self.inner.node.get()
            && !names_node(&loaded.leaf, node)
        {
            return Err(TlsError(format!(
                "the new certificate does not name this node ({}): its peers would refuse it",
                node_name(node)
            )));
        }
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current().acceptor.clone()
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        self.current().connector.clone()
    }

    /// Reloads changed files every [`TlsOptions::poll_interval`] until `stop` resolves (nothing
    /// to do for settings made from PEM). Logs each reload, and each distinct failure once.
    pub(crate) async fn watch(self, node: NodeId, stop: impl std::future::Future<Output = ()>) {
        if self.inner.files.is_none() {
            return;
        }
        let poll = async {
            loop {
                tokio::time::sleep(self.inner.options.poll_interval).await;
                match self.reload_files().await {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(%node, "TLS certificate, key and CA reloaded"),
                    Err(error) => {
                        if self.note_failure(&error.0) {
                            tracing::warn!(%node, %error, "TLS files changed but cannot be used; keeping the previous ones");
                        }
                    }
                }
            }
        };
        tokio::select! {
            biased;
            () = stop => {}
            () = poll => {}
        }
    }

    /// Records a failed reload; true if it differs from the last one reported.
    fn note_failure(&self, failure: &str) -> bool {
        let mut last = self
            .inner
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() == Some(failure) {
            return false;
        }
        *last = Some(failure.to_owned());
        true
    }
}

async fn read_files(files: &TlsFiles) -> Result<Pem, TlsError> {
    let read = |path: PathBuf, what: &'static str| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| TlsError(format!("cannot read the {what} {}: {e}", path.display())))
    };
    Ok(Pem {
        cert: read(files.cert.clone(), "certificate").await?,
        key: read(files.key.clone(), "private key").await?,
        ca: read(files.ca.clone(), "CA bundle").await?,
    })
}

/// Parses `pem` and builds both sides' rustls configurations.
fn build(pem: Pem, options: TlsOptions) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the certificate is not valid PEM: {e}")))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(TlsError("the certificate file holds no certificate".into()));
    };
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| TlsError(format!("the private key is not valid PEM: {e}")))?;
    let cas = CertificateDer::pem_slice_iter(&pem.ca)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the CA bundle is not valid PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("a CA certificate is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError("the CA bundle holds no certificate".into()));
    }
    let roots = Arc::new(roots);
    let provider = crypto_provider();
    let versions: &[&'static SupportedProtocolVersion] = if options.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let tls = |e: rustls::Error| TlsError(e.to_string());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError(format!("cannot verify peers with this CA bundle: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| TlsError(format!("the certificate and key do not go together: {e}")))?;
    // No resumption: every connection presents, and is checked against, current material.
    server.send_tls13_tickets = 0;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(tls)?
        .with_root_certificates(Arc::clone(&roots))
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError(format!("the certificate and key do not go together: {e}")))?;
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Loaded {
        pem,
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
        leaf,
    })
}

/// The cryptography of every TLS configuration of the project: rustls's ring provider.
///
/// ring rather than aws-lc-rs: it builds with a C compiler alone (no cmake, no assembler
/// toolchain) on every platform the project supports. rustls deprecates it because it has no
/// post-quantum key exchange; X25519 and the P-curves remain. Use it for any other rustls
/// configuration next to the transport's (an HTTPS API, its clients), so one choice holds
/// everywhere.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `cert` (DER) carries the subject alternative name [`node_name`]`(id)`: whether a
/// peer would take it for node `id`'s.
pub fn names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(name) = ServerName::try_from(node_name(id)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The name a dialler verifies the certificate of peer `id` against.
pub(crate) fn server_name(id: NodeId) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(node_name(id)).map_err(|e| TlsError(e.to_string()))
}

/// A failed TLS handshake or TLS read, sorted by cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFailure {
    /// What went wrong in a few words: a label for logs and metrics.
    pub(crate) cause: &'static str,
    /// rustls's own words.
    pub(crate) detail: String,
    /// The other side sent a fatal alert: it refused this node (its certificate, its
    /// version), rather than this node refusing it.
    pub(crate) by_peer: bool,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {} ({})", self.cause, self.detail)
    }
}

/// Sorts an I/O error from a TLS stream; `None` when it did not come from TLS (a reset, a
/// timeout, an early end of stream).
pub(crate) fn tls_failure(error: &io::Error) -> Option<TlsFailure> {
    use rustls::{CertificateError as C, Error as E};
    let error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    let cause = match error {
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => "not a TLS handshake",
        E::InappropriateHandshakeMessage { .. } => "not a TLS handshake",
        E::NoCertificatesPresented => "no certificate",
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired certificate",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate not yet valid"
        }
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown CA",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "certificate for another node"
        }
        E::InvalidCertificate(_) => "invalid certificate",
        E::AlertReceived(_) => "refused by the peer",
        E::PeerIncompatible(_) => "incompatible TLS version or algorithms",
        _ => "TLS error",
    };
    Some(TlsFailure {
        cause,
        detail: error.to_string(),
        by_peer: matches!(error, E::AlertReceived(_)),
    })
}

/// A connection, in the clear or in TLS: what the reader and writer tasks use.
pub(crate) enum Conn<S> {
    Plain(S),
    Tls(Box<tokio_rustls::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The certificate the other side of `conn` presented (`None` in the clear).
pub(crate) fn peer_leaf<S>(conn: &Conn<S>) -> Option<CertificateDer<'static>> {
    let Conn::Tls(tls) = conn else { return None };
    let certificates = match tls.as_ref() {
        tokio_rustls::TlsStream::Client(s) => s.get_ref().1.peer_certificates(),
        tokio_rustls::TlsStream::Server(s) => s.get_ref().1.peer_certificates(),
    };
    certificates
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

#[cfg(test)]
mod tests;
