//! The listener side: the acceptor task, and one reader task per accepted connection.
//!
//! The acceptor admits a connection to its handshake only within the limits of
//! [`crate::tcp::admission`] (a few at once per address, room kept for known peers). A reader
//! first reads the peer's hello within `handshake_timeout` and answers it: accepted, or
//! refused and why (another cluster or version, a node id this node does not know, a live
//! connection from that node already), closing a refused connection. Then it reads frames:
//! each payload's header must name the handshake's node as sender and this node as recipient,
//! the message must decode and pass `Message::validate`; anything else is invalid input and
//! closes the connection. A valid message goes to the node's inbox if its sender's share
//! allows ([`crate::tcp::share`]). Nothing a peer sends can panic the node: every branch ends
//! in a counter and, at a bounded rate, a log line ([`crate::tcp::warnings`]).

use crate::tcp::admission::Ticket;
use crate::tcp::network::Network;
use crate::tcp::outbound::{stopped, write_all};
use crate::tcp::stats::bump;
use crate::tcp::tls::{Conn, names_node, peer_leaf, tls_failure};
use crate::tcp::transport::{InboundSlot, Shared, TaskToken};
use crate::tcp::wire::{
    self, FrameReader, HELLO_LEN, Hello, HelloError, KEEPALIVE_FRAME, Verdict, encode_answer,
};
use raft_core::NodeId;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// How long the acceptor pauses after a failed `accept` (for example, out of file
/// descriptors), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts connections until the transport stops, then drops (closes) the listener.
pub(crate) async fn accept_loop<N: Network>(
    shared: Arc<Shared<N>>,
    mut listener: N::Listener,
    token: TaskToken,
) {
    let node = shared.config.node_id;
    let mut shutdown = shared.shutdown.clone();
    // Caps the connections open at once; a permit lives as long as its reader task.
    let open_connections = Arc::new(Semaphore::new(shared.config.max_inbound_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = shared.network.accept(&mut listener) => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                // Accept and close, rather than stop accepting: a backlog that is never
                // drained fills up (and in turmoil, a full backlog panics the simulation).
                let admitted = shared.admission.admit(remote.ip()).map_err(|r| r.cause());
                let permit = admitted.and_then(|ticket| {
                    Arc::clone(&open_connections)
                        .try_acquire_owned()
                        .map(|permit| (ticket, permit))
                        .map_err(|_| "too many inbound connections")
                });
                match permit {
                    Ok((ticket, permit)) => shared.spawner.spawn(serve_connection(
                        Arc::clone(&shared),
                        stream,
                        remote,
                        (ticket, permit),
                        token.clone(),
                    )),
                    Err(cause) => {
                        bump(&shared.counters.connections_refused);
                        if let Some(suppressed) = shared.warnings.admit(remote.ip(), cause) {
                            tracing::warn!(%node, %remote, suppressed, "closing a new inbound connection: {cause}");
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%node, %error, "accept failed");
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    () = sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    // The listener is closed before the task token goes: `shutdown` returns once the last
    // token is dropped, and promises that the address can be bound again by then. (Parameters
    // are dropped in reverse order, which would drop the token first.)
    drop(listener);
    drop(token);
    tracing::debug!(%node, "listener closed");
}

/// Handshakes with one inbound connection, then delivers its messages until it ends.
async fn serve_connection<N: Network>(
    shared: Arc<Shared<N>>,
    stream: N::Stream,
    remote: SocketAddr,
    (mut ticket, _permit): (Ticket, OwnedSemaphorePermit),
    _token: TaskToken,
) {
    let config = &shared.config;
    let node = config.node_id;
    let mut shutdown = shared.shutdown.clone();
    let stream = match &config.tls {
        None => Conn::Plain(stream),
        Some(tls) => {
            let accepted = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return,
                accepted = timeout(config.connect_timeout, tls.acceptor().accept(stream)) => accepted,
            };
            match accepted {
                Ok(Ok(stream)) => Conn::Tls(Box::new(stream.into())),
                Ok(Err(error)) => {
                    let (cause, reason) = match tls_failure(&error) {
                        Some(failure) => (failure.cause, failure.to_string()),
                        None => ("TLS handshake failed", format!("TLS: {error}")),
                    };
                    refused(&shared, &mut ticket, remote, cause, &reason);
                    return;
                }
                Err(_) => {
                    let reason = format!("no TLS handshake within {:?}", config.connect_timeout);
                    refused(
                        &shared,
                        &mut ticket,
                        remote,
                        "TLS handshake timed out",
                        &reason,
                    );
                    return;
                }
            }
        }
    };
    let leaf = peer_leaf(&stream);
    let (read_half, mut write_half) = tokio::io::split(stream);
    let mut frames = FrameReader::new(read_half, config.max_frame_bytes);

    let hello = tokio::select! {
        biased;
        () = stopped(&mut shutdown) => return,
        hello = read_hello(frames.get_mut(), config.handshake_timeout) => hello,
    };
    let last_byte = Arc::new(AtomicU64::new(shared.micros_since_start(Instant::now())));
    let registered = match hello {
        Ok(hello) => register(&shared, &hello, leaf.as_ref(), &last_byte)
            .map(|(connection_id, close)| (hello.node_id, connection_id, close))
            .map_err(|error| (error.cause(), error.to_string(), error.verdict())),
        Err(reason) => Err(("no handshake", reason, None)),
    };
    let reply = Hello::new(config.cluster_id, node);
    let (peer, connection_id, mut close) = match registered {
        Ok(registered) => registered,
        Err((cause, reason, verdict)) => {
            refused(&shared, &mut ticket, remote, cause, &reason);
            if let Some(verdict) = verdict {
                // Tell the dialler why, so that the misconfigured side sees its mistake. The
                // connection closes either way; a failed write changes nothing.
                let answer = encode_answer(&reply, verdict);
                let _ = write_all(&mut write_half, &answer, config.handshake_timeout).await;
            }
            return;
        }
    };
    ticket.handshake_done(true);
    bump(&shared.counters.connections_accepted);
    tracing::info!(%node, %peer, %remote, "accepted connection from peer");

    let answer = encode_answer(&reply, Verdict::Accepted);
    let mut last_written = Instant::now();
    // A failed answer is the link failing, not the peer misbehaving: close without blame.
    let answered = match write_all(&mut write_half, &answer, config.handshake_timeout).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%node, %peer, %remote, %error, "answer not written; closing connection");
            false
        }
    };
    let mut result = Ok(());
    while answered && result.is_ok() {
        last_byte.store(
            shared.micros_since_start(frames.last_byte_at()),
            Ordering::Relaxed,
        );
        // `biased`: a fixed order keeps simulations reproducible. Every branch is cancel-safe.
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            _ = &mut close => {
                tracing::debug!(%node, %peer, %remote, "connection replaced or peer removed");
                break;
            }
            frame = frames.next_frame(config.idle_timeout) => match frame {
                Ok(Some(payload)) => {
                    if !payload.is_empty() {
                        result = deliver(&shared, peer, &payload);
                    }
                }
                Ok(None) => {
                    tracing::debug!(%node, %peer, %remote, "connection closed by peer");
                    break;
                }
                Err(wire::FrameError::Idle(idle)) => {
                    tracing::info!(%node, %peer, %remote, "peer silent for {idle:?}; closing its connection");
                    break;
                }
                Err(error) => result = Err(("bad frame", error.to_string())),
            },
            () = sleep_until(last_written + config.keepalive_interval) => {
                // A write failure here is the link failing, not the peer misbehaving.
                if let Err(error) = write_all(&mut write_half, &KEEPALIVE_FRAME, config.write_timeout).await {
                    tracing::debug!(%node, %peer, %remote, %error, "keepalive failed; closing connection");
                    break;
                }
                last_written = Instant::now();
            }
        }
    }
    if let Err((cause, error)) = result {
        bump(&shared.counters.connections_closed_on_error);
        if let Some(suppressed) = shared.warnings.admit(peer, cause) {
            tracing::warn!(%node, %peer, %remote, %error, suppressed, "closing connection on invalid input");
        }
    }
    let mut inbound = shared.inbound();
    if inbound
        .get(&peer)
        .is_some_and(|slot| slot.connection_id == connection_id)
    {
        inbound.remove(&peer);
    }
}

/// Counts and (rate-limited) logs a connection refused at its TLS or Raft handshake.
fn refused<N>(
    shared: &Shared<N>,
    ticket: &mut Ticket,
    remote: SocketAddr,
    cause: &'static str,
    reason: &str,
) {
    ticket.handshake_done(false);
    shared.counters.refused(cause);
    if let Some(suppressed) = shared.warnings.admit(remote.ip(), cause) {
        let node = shared.config.node_id;
        tracing::warn!(%node, %remote, %reason, suppressed, "inbound connection refused at the handshake: {cause}");
    }
}

/// Reads the peer's handshake within `limit`.
async fn read_hello<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> Result<Hello, String> {
    let mut bytes = [0u8; HELLO_LEN];
    // `read_exact` is not cancel-safe, but losing this race ends the connection anyway.
    match timeout(limit, reader.read_exact(&mut bytes)).await {
        Ok(Ok(_)) => Ok(Hello::decode(&bytes)),
        Ok(Err(e)) => Err(format!("no handshake: {e}")),
        Err(_) => Err(format!("no handshake within {limit:?}")),
    }
}

/// Checks `hello` (and over TLS, that `leaf`, the certificate the peer presented, names the
/// node the hello claims) and, if it is acceptable, makes this connection the peer's current
/// one. Returns its id and the receiver that says when to close it.
///
/// An older connection of the same node is closed only if it has fallen silent (no byte for
/// two keepalive intervals): a node that really restarted gets in once its old connection
/// is visibly dead, while a mere claim to be that node cannot displace a live connection.
fn register<N>(
    shared: &Shared<N>,
    hello: &Hello,
    leaf: Option<&CertificateDer<'static>>,
    last_byte: &Arc<AtomicU64>,
) -> Result<(u64, oneshot::Receiver<()>), HelloError> {
    let config = &shared.config;
    hello.check(config.cluster_id)?;
    if config.tls.is_some() && !leaf.is_some_and(|leaf| names_node(leaf, hello.node_id)) {
        return Err(HelloError::CertificateMismatch(hello.node_id));
    }
    // The membership check and the registration happen under the inbound lock, which
    // `remove_peer` also takes first, so a peer removed concurrently leaves no connection.
    let mut inbound = shared.inbound();
    if hello.node_id == config.node_id || !shared.peers().contains_key(&hello.node_id) {
        return Err(HelloError::UnknownNode(hello.node_id));
    }
    if let Some(existing) = inbound.get(&hello.node_id) {
        let heard = existing.last_byte_micros.load(Ordering::Relaxed);
        let now = shared.micros_since_start(Instant::now());
        let live_for = (config.keepalive_interval * 2).min(config.idle_timeout);
        if u128::from(now.saturating_sub(heard)) < live_for.as_micros() {
            return Err(HelloError::AlreadyConnected(hello.node_id));
        }
    }
    let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let (close_tx, close_rx) = oneshot::channel();
    inbound.insert(
        hello.node_id,
        InboundSlot {
            connection_id,
            last_byte_micros: Arc::clone(last_byte),
            _close: close_tx,
        },
    );
    Ok((connection_id, close_rx))
}

/// Checks one payload from `peer` and hands its message to the inbox. Fails (closing the
/// connection) on invalid input; drops a valid message its sender's share does not allow.
fn deliver<N>(
    shared: &Shared<N>,
    peer: NodeId,
    payload: &[u8],
) -> Result<(), (&'static str, String)> {
    let node = shared.config.node_id;
    let counters = &shared.counters;
    let invalid = |cause: &'static str, detail: String| {
        bump(&counters.messages_rejected);
        (cause, detail)
    };
    // The header first: a message from or to another node, or with an impossible number of
    // entries, is refused before its body costs any decoding.
    let header = wire::peek_header(payload).map_err(|e| invalid("undecodable", e.to_string()))?;
    if header.from != peer || header.to != node {
        return Err(invalid(
            "foreign sender or recipient",
            format!("message from {} to {}", header.from, header.to),
        ));
    }
    // Charged before decoding, so a frame over its sender's share costs no decoding at all;
    // decoded outside the shares' lock, so a large frame delays no other peer.
    if let Err(denied) = shared.shares.admit(peer, header.decoded_bytes) {
        bump(&counters.messages_dropped_over_share);
        if let Some(suppressed) = shared.warnings.admit(peer, denied.cause()) {
            tracing::warn!(%node, %peer, suppressed, "message dropped: sender {}", denied.cause());
        }
        return Ok(());
    }
    let message =
        wire::decode_message(payload).map_err(|e| invalid("undecodable", e.to_string()))?;
    message
        .validate()
        .map_err(|reason| invalid("invalid message", reason))?;
    if shared.inbox.deliver(message) {
        bump(&counters.messages_delivered);
    } else {
        shared.shares.refused();
        bump(&counters.messages_dropped_inbox_full);
    }
    Ok(())
}
