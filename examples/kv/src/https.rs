//! The HTTP API over TLS: the plain server's accept loop and connections (`http1.rs`) with a
//! TLS handshake in between. It keeps what the plain server does on a clean stop (no new
//! connections; requests in flight are answered and idle connections closed, within the
//! caller's drain timeout), and bounds what a client can make it spend before it has finished
//! a handshake:
//!
//! - at most [`MAX_HANDSHAKES`] handshakes at once, and at most
//!   [`MAX_HANDSHAKES_PER_ADDRESS`] from one address, each within [`HANDSHAKE_TIMEOUT`]; a
//!   connection beyond either is closed as soon as it is accepted (cause `busy`) rather than
//!   left in the kernel's backlog, where it would queue the clients behind it: one address
//!   holding idle connections open cannot lock the API out;
//! - a connection whose first byte is not a TLS handshake record (plain HTTP sent to the
//!   HTTPS port) is closed at once, without waiting for the timeout.
//!
//! Every failed handshake is counted in `raft_kv_tls_handshake_failures_total{cause}` and
//! logged, at most once per remote address and cause every 10 s.

use crate::metrics::Metrics;
use crate::rate_limit::LogLimiter;
use crate::tls::handshake_failure_cause;
use axum::Router;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most TLS handshakes under way at once.
pub const MAX_HANDSHAKES: usize = 256;

/// The most TLS handshakes under way at once from one IP address.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;

/// The first byte of a TLS record that carries a handshake message (RFC 8446 §5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What every connection of the loop shares.
struct Shared {
    acceptor: TlsAcceptor,
    router: Router,
    metrics: Arc<Metrics>,
    log: LogLimiter,
}

/// Serves `router` over TLS on `listener` until `stop` turns true, then stops accepting, lets
/// every connection finish the request it is answering, and returns once all have closed. The
/// caller bounds that wait: aborting this task drops every connection it holds.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        acceptor,
        router,
        metrics,
        log: LogLimiter::default(),
    });
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_address = Arc::new(Mutex::new(BTreeMap::new()));
    let serving = stop.clone();
    crate::http1::accept_loop(listener, stop, "HTTPS", |stream, remote, connections| {
        // Accept and close, rather than stop accepting: what waits in the backlog waits
        // behind the connections that hold the slots.
        let Some(slot) = HandshakeSlot::take(&handshakes, &per_address, remote.ip()) else {
            failed(&shared, remote, "busy");
            return;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            remote,
            slot,
            shared.clone(),
            serving.clone(),
        ));
    })
    .await;
}

/// A handshake under way: one of [`MAX_HANDSHAKES`], and one of its address's
/// [`MAX_HANDSHAKES_PER_ADDRESS`], both given back when dropped.
struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    per_address: Arc<Mutex<BTreeMap<IpAddr, usize>>>,
    address: IpAddr,
}

impl HandshakeSlot {
    /// A slot for a handshake from `address`, if both limits allow one.
    fn take(
        handshakes: &Arc<Semaphore>,
        per_address: &Arc<Mutex<BTreeMap<IpAddr, usize>>>,
        address: IpAddr,
    ) -> Option<HandshakeSlot> {
        let mut counts = per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_insert(0);
        if *count >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        let permit = handshakes.clone().try_acquire_owned().ok()?;
        *count += 1;
        Some(HandshakeSlot {
            _permit: permit,
            per_address: per_address.clone(),
            address,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// One connection: the handshake (holding `slot` while it lasts), then HTTP/1.1 until the
/// client closes or `stop` turns true.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    slot: HandshakeSlot,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => return,
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &shared.acceptor)) => handshake,
    };
    drop(slot);
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(cause)) => return failed(&shared, remote, cause),
        Err(_) => return failed(&shared, remote, "timeout"),
    };
    crate::http1::connection(tls, remote, shared.router.clone(), stop).await;
}

/// The TLS handshake, refusing at once a connection that does not start with one.
async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, &'static str> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Err("closed"),
        Ok(_) if first[0] == TLS_HANDSHAKE_RECORD => {}
        // An HTTP request starts with its method's letters.
        Ok(_) if first[0].is_ascii_alphabetic() => return Err("plaintext"),
        Ok(_) => return Err("not_tls"),
        Err(_) => return Err("io"),
    }
    acceptor
        .accept(stream)
        .await
        .map_err(|e| handshake_failure_cause(&e))
}

/// Counts and (rate-limited) logs a failed handshake. The stream is already dropped: a
/// client that sent plaintext sees its connection reset, not a hang.
fn failed(shared: &Shared, remote: SocketAddr, cause: &'static str) {
    shared.metrics.count_handshake_failure(cause);
    // A connection closed before it sent anything is what load balancers' health checks do.
    if cause == "closed" {
        tracing::debug!(%remote, "a connection to the HTTPS port closed before its handshake");
        return;
    }
    if shared.log.allow(Some(remote.ip()), cause) {
        tracing::warn!(
            %remote,
            cause = %cause,
            "a TLS handshake on the HTTP port failed (further failures from this address for this cause are not logged for 10 s)"
        );
    }
}
