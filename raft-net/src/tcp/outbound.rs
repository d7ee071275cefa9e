//! One peer's writer task: dials the peer when there is something to send, handshakes, writes
//! every queued message in one buffered write per batch, and dials again with backoff when the
//! connection fails.
//!
//! ```text
//!   idle ──message queued──▶ dial + handshake ──ok──▶ connected ──error / silence──┐
//!    ▲                            │ fail                  (batches, keepalives)     │
//!    └──────── backoff delay ◀────┴─────────────────────────────────────────────────┘
//! ```
//!
//! The backoff starts over only after a connection stayed up for an idle timeout, so a peer
//! that accepts and at once drops every connection is not dialled in a tight loop. A peer's
//! refusal carries its reason; it becomes the peer's [`PeerConnection`] state and one warning
//! per cause. Silence is measured in bytes on either side: a large frame that keeps moving
//! over a slow link is neither cut by the idle timer nor by the write timeout.
//!
//! The connection carries messages one way only; the peer sends back nothing but keepalives,
//! which tell this side the link is alive (turmoil's TCP, and a real network that silently
//! drops packets, would otherwise let a dead connection look healthy forever).

use crate::tcp::backoff::Backoff;
use crate::tcp::network::Network;
use crate::tcp::stats::{add, bump};
use crate::tcp::tls::{Conn, TlsFailure, server_name, tls_failure};
use crate::tcp::transport::{PeerLink, Shared, TaskToken};
use crate::tcp::wire::{
    self, FrameReader, HELLO_LEN, Hello, HelloError, KEEPALIVE_FRAME, RETAINED_BUFFER_BYTES,
    Verdict,
};
use raft_core::Message;
use raft_core::node::PeerConnection;
use std::fmt;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// Resolves once the transport is shutting down (or every handle was dropped). Cancel-safe.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// How a connection ended.
enum End {
    /// The transport stopped or the peer was removed: the task ends.
    Stop,
    /// The connection failed; dial again after a backoff delay.
    Failed(String),
}

/// Why dialling failed.
enum DialError {
    Io(io::Error),
    /// The peer's answer shows a peer this node must not talk to (checked here).
    Refused(HelloError),
    /// The peer answered with a refusal and its reason.
    RefusedByPeer {
        verdict: Verdict,
        theirs: Hello,
    },
    /// The peer closed the connection instead of answering: it does not speak this wire
    /// version's handshake, or it refused bytes that were not a hello.
    ClosedByPeer,
    TimedOut,
    /// The TLS handshake failed, or the peer refused this node's certificate with an alert.
    Tls(TlsFailure),
}

impl DialError {
    /// Whether the peer refused this node (a configuration problem, worth a warning and shown
    /// in the peer's state) rather than being unreachable or busy.
    fn refusal(&self) -> Option<&'static str> {
        match self {
            DialError::Refused(error) => Some(error.cause()),
            DialError::RefusedByPeer { verdict, .. } => match verdict {
                Verdict::OtherCluster => Some("cluster"),
                Verdict::UnknownNode => Some("unknown node"),
                Verdict::UnsupportedVersion => Some("version"),
                Verdict::CertificateMismatch => Some("certificate"),
                // The peer has a live connection from "us": it may be our own previous
                // connection, not yet seen dead. Transient.
                Verdict::AlreadyConnected | Verdict::Accepted => None,
            },
            DialError::ClosedByPeer => Some("closed at the handshake"),
            DialError::Tls(failure) => Some(failure.cause),
            DialError::Io(_) | DialError::TimedOut => None,
        }
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Io(e) => write!(f, "{e}"),
            DialError::Refused(e) => write!(f, "peer's handshake refused: {e}"),
            DialError::RefusedByPeer { verdict, theirs } => match verdict {
                Verdict::OtherCluster => write!(
                    f,
                    "peer refused this node: it belongs to cluster {}",
                    theirs.cluster_id
                ),
                Verdict::UnknownNode => {
                    f.write_str("peer refused this node: it does not know this node's id")
                }
                Verdict::UnsupportedVersion => write!(
                    f,
                    "peer refused this node: it speaks wire version {}, this node {}",
                    theirs.version,
                    wire::VERSION
                ),
                Verdict::CertificateMismatch => f.write_str(
                    "peer refused this node: this node's certificate does not name the node id \
                     it claims",
                ),
                Verdict::AlreadyConnected => {
                    f.write_str("peer has a live connection from this node already")
                }
                Verdict::Accepted => f.write_str("accepted"),
            },
            DialError::ClosedByPeer => f.write_str(
                "peer closed the connection at the handshake without an answer (an older wire \
                 version, TLS on one side only, a TLS handshake slower than the peer's \
                 connect timeout, or no room for another connection)",
            ),
            DialError::TimedOut => f.write_str("timed out"),
            DialError::Tls(failure) if failure.by_peer => {
                write!(
                    f,
                    "peer refused this node at the TLS handshake: {}",
                    failure.detail
                )
            }
            DialError::Tls(failure) => write!(f, "peer's certificate refused: {failure}"),
        }
    }
}

/// Batches are cut at about this many bytes, so that the write buffer of a peer stays small
/// whatever is queued for it.
const BATCH_BYTES: usize = 1 << 20;

/// Write buffers and batches larger than this are given back after use.
const RETAINED_BATCH_MESSAGES: usize = 4096;

/// The writer task of `link`, until the transport stops or the peer is removed.
pub(crate) async fn run_writer<N: Network>(
    shared: Arc<Shared<N>>,
    link: Arc<PeerLink>,
    _token: TaskToken,
) {
    let config = &shared.config;
    let node = config.node_id;
    let peer = link.id;
    let mut shutdown = shared.shutdown.clone();
    // The jitter differs per (node, peer) pair so that the pairs do not redial in step.
    let seed = config.seed ^ node.0.rotate_left(32) ^ peer.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut backoff = Backoff::new(
        config.reconnect_backoff_min,
        config.reconnect_backoff_max,
        seed,
    );
    // A connection must stay up this long before the backoff starts over: a peer that
    // accepts and then drops every connection is otherwise dialled in a tight loop.
    let healthy_after = config.idle_timeout;
    let mut failures_in_a_row = 0u32;
    // The refusal last warned about: each cause is warned about once per run of refusals.
    let mut warned: Option<&'static str> = None;
    let mut batch = Vec::new();
    let mut buffer = Vec::new();
    loop {
        // Dial lazily: only once there is something to send.
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = link.queue.wait() => {}
        }
        if !link.queue.has_work() {
            continue;
        }
        if link.queue.is_closed() {
            return;
        }
        let dialled = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            dialled = dial(&*shared, &link) => dialled,
        };
        match dialled {
            Ok(stream) => {
                failures_in_a_row = 0;
                warned = None;
                bump(&link.connections_opened);
                link.set_state(PeerConnection::Connected);
                tracing::info!(%node, %peer, addr = %link.addr, "connected to peer");
                let connected_at = Instant::now();
                let end = serve(
                    &shared,
                    &link,
                    stream,
                    &mut shutdown,
                    &mut batch,
                    &mut buffer,
                )
                .await;
                if connected_at.elapsed() >= healthy_after {
                    backoff.reset();
                }
                match end {
                    End::Stop => return,
                    End::Failed(reason) => {
                        link.set_state(PeerConnection::Unreachable {
                            since_ms: shared.millis_since_start(Instant::now()),
                        });
                        tracing::info!(%node, %peer, %reason, "connection to peer lost");
                    }
                }
            }
            Err(error) => {
                failures_in_a_row = failures_in_a_row.saturating_add(1);
                let reason = error.to_string();
                // A refusal is a configuration problem worth a warning, once per cause; a peer
                // that is down is routine, reported once per outage and then at debug level.
                match error.refusal() {
                    Some(cause) => {
                        link.set_state(match &error {
                            DialError::Tls(failure) if !failure.by_peer => {
                                PeerConnection::Untrusted {
                                    reason: reason.clone(),
                                }
                            }
                            _ => PeerConnection::Refused {
                                reason: reason.clone(),
                            },
                        });
                        if warned != Some(cause) {
                            warned = Some(cause);
                            tracing::warn!(%node, %peer, addr = %link.addr, error = %reason, "peer refused the connection");
                        } else {
                            tracing::debug!(%node, %peer, addr = %link.addr, error = %reason, failures_in_a_row, "peer refused the connection");
                        }
                    }
                    None => {
                        link.mark_unreachable(shared.millis_since_start(Instant::now()));
                        if failures_in_a_row == 1 {
                            tracing::info!(%node, %peer, addr = %link.addr, error = %reason, "cannot connect to peer");
                        } else {
                            tracing::debug!(%node, %peer, addr = %link.addr, error = %reason, failures_in_a_row, "cannot connect to peer");
                        }
                    }
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = sleep(delay) => {}
        }
    }
}

/// Connects to the peer and exchanges handshakes, within the connect timeout.
async fn dial<N: Network>(
    shared: &Shared<N>,
    link: &PeerLink,
) -> Result<Conn<N::Stream>, DialError> {
    let config = &shared.config;
    // A TLS failure (the peer's alert refusing this node's certificate can arrive with the
    // answer) is told apart from the link failing.
    let io_or_tls = |e: io::Error| match tls_failure(&e) {
        Some(failure) => DialError::Tls(failure),
        None => DialError::Io(e),
    };
    let attempt = async {
        let stream = shared
            .network
            .connect(&link.addr)
            .await
            .map_err(DialError::Io)?;
        let mut stream = match &config.tls {
            None => Conn::Plain(stream),
            Some(tls) => {
                let name = server_name(link.id).map_err(|e| {
                    DialError::Tls(TlsFailure {
                        cause: "invalid node name",
                        detail: e.0,
                        by_peer: false,
                    })
                })?;
                let stream = tls
                    .connector()
                    .connect(name, stream)
                    .await
                    .map_err(io_or_tls)?;
                Conn::Tls(Box::new(stream.into()))
            }
        };
        let hello = Hello::new(config.cluster_id, config.node_id);
        stream.write_all(&hello.encode()).await.map_err(io_or_tls)?;
        stream.flush().await.map_err(io_or_tls)?;
        let read_failed = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                DialError::ClosedByPeer
            } else {
                io_or_tls(e)
            }
        };
        let mut reply = [0u8; HELLO_LEN];
        stream.read_exact(&mut reply).await.map_err(read_failed)?;
        let reply = Hello::decode(&reply);
        // Magic and version before the verdict: a peer of another version may answer in
        // another layout.
        if reply.magic != wire::MAGIC || reply.version != wire::VERSION {
            return Err(DialError::Refused(
                reply
                    .check(reply.cluster_id)
                    .err()
                    .unwrap_or(HelloError::Version {
                        theirs: reply.version,
                        ours: wire::VERSION,
                    }),
            ));
        }
        let mut verdict = [0u8; 1];
        stream.read_exact(&mut verdict).await.map_err(read_failed)?;
        match Verdict::from_byte(verdict[0]) {
            Some(Verdict::Accepted) => {}
            Some(verdict) => {
                return Err(DialError::RefusedByPeer {
                    verdict,
                    theirs: reply,
                });
            }
            None => return Err(DialError::ClosedByPeer),
        }
        reply.check(config.cluster_id).map_err(DialError::Refused)?;
        if reply.node_id != link.id {
            return Err(DialError::Refused(HelloError::WrongNode {
                expected: link.id,
                found: reply.node_id,
            }));
        }
        Ok(stream)
    };
    // On timeout the half-done attempt is dropped with its stream: `read_exact` losing what it
    // read does not matter then.
    timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(DialError::TimedOut))
}

/// Sends the peer's messages over an established connection until it fails or the task must
/// stop.
async fn serve<N: Network>(
    shared: &Shared<N>,
    link: &PeerLink,
    stream: Conn<N::Stream>,
    shutdown: &mut watch::Receiver<bool>,
    batch: &mut Vec<Message>,
    buffer: &mut Vec<u8>,
) -> End {
    let config = &shared.config;
    let (read_half, mut write_half) = tokio::io::split(stream);
    let mut frames = FrameReader::new(read_half, config.max_frame_bytes);
    let mut last_written = Instant::now();
    loop {
        // `biased`: a fixed order keeps simulations reproducible. Every branch is cancel-safe
        // (the frame reader keeps partial frames in its own buffer).
        tokio::select! {
            biased;
            () = stopped(shutdown) => return End::Stop,
            frame = frames.next_frame(config.idle_timeout) => match frame {
                Ok(Some(frame)) if frame.is_empty() => continue,
                Ok(Some(_)) => return End::Failed("peer sent data on an outbound connection".into()),
                Ok(None) => return End::Failed("closed by peer".into()),
                Err(e) => return End::Failed(e.to_string()),
            },
            () = sleep_until(last_written + config.keepalive_interval) => {
                if let Err(reason) = write_all(&mut write_half, &KEEPALIVE_FRAME, config.write_timeout).await {
                    return End::Failed(reason);
                }
                last_written = Instant::now();
                continue;
            }
            () = link.queue.wait() => {}
        }
        batch.clear();
        if !link.queue.drain_into(batch, BATCH_BYTES) {
            return End::Stop;
        }
        buffer.clear();
        let mut framed = 0u64;
        for message in batch.drain(..) {
            match wire::encode_frame(&message, config.max_frame_bytes, buffer) {
                Ok(()) => framed += 1,
                Err(error) => {
                    bump(&link.dropped_too_large);
                    tracing::warn!(node = %config.node_id, peer = %link.id, %error, "outbound message dropped");
                }
            }
        }
        if buffer.is_empty() {
            continue;
        }
        // The whole batch in one write and one flush.
        let written = write_all(&mut write_half, buffer, config.write_timeout).await;
        // A large batch's memory goes back at once rather than staying with an idle peer.
        if buffer.capacity() > RETAINED_BUFFER_BYTES {
            *buffer = Vec::new();
        }
        if batch.capacity() > RETAINED_BATCH_MESSAGES {
            *batch = Vec::new();
        }
        match written {
            Ok(()) => {
                add(&link.sent, framed);
                last_written = Instant::now();
            }
            Err(reason) => {
                add(&link.dropped_connection_lost, framed);
                return End::Failed(reason);
            }
        }
    }
}

/// Writes and flushes `bytes`, failing once no byte could be written for `limit`: a large
/// batch over a slow link takes as long as it takes while it keeps moving. Not cancel-safe,
/// so never raced in a `select!`: a timeout ends the connection, and with it any question of
/// what part was written.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut bytes: &[u8],
    limit: std::time::Duration,
) -> Result<(), String> {
    let stalled = || format!("no byte could be written for {limit:?}");
    while !bytes.is_empty() {
        match timeout(limit, writer.write(bytes)).await {
            Ok(Ok(0)) => return Err("connection closed while writing".into()),
            // `get` rather than indexing: a writer that claims more than it was given
            // ends the write instead of panicking.
            Ok(Ok(n)) => bytes = bytes.get(n..).unwrap_or_default(),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(stalled()),
        }
    }
    match timeout(limit, writer.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(stalled()),
    }
}
