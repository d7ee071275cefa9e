//! Serving the HTTP API's connections with hyper's HTTP/1.1 server: the plain HTTP accept
//! loop, and what it and the HTTPS one (`https.rs`) do with each connection.
//!
//! Both build hyper's connection themselves rather than through `axum::serve`, so that both
//! own their connections (the caller aborts the accept loop's task after its drain timeout,
//! which drops every connection it holds) and both cut off a client that opens a request and
//! does not finish its head. On a clean stop both keep what `axum::serve` does: no new
//! connections; requests in flight are answered and idle connections closed, within the
//! caller's drain timeout.
//!
//! hyper's `http1::Builder::pipeline_flush` is left off, although it writes the answers to
//! pipelined requests together: with it hyper buffers every answer while pipelined requests
//! remain unread, without bound (a client that pipelines reads of a large value and never
//! reads the answers grows the node's memory by each answer's size), and a stop can drop the
//! answer to the request in flight. Without it, a connection's unsent answers stop hyper
//! from reading further requests once they pass its write buffer's limit.

use crate::rate_limit::LogLimiter;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Serves `router` over plain HTTP on `listener` until `stop` turns true, then stops accepting,
/// lets every connection finish the request it is answering, and returns once all have
/// closed.
pub(crate) async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    // Owned here, so that when this task is aborted (the drain timeout passed) every
    // connection is dropped with it.
    let mut connections = JoinSet::new();
    let log = LogLimiter::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, remote, router.clone(), stop.clone()));
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be released rather
                // than spin.
                if log.allow(None, "accept") {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Reap what has finished, so that the set holds only live connections.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves `router` on one connection (`io`, from `remote`) until the client closes it or
/// `stop` turns true; then answers the request under way, if any, and closes.
pub(crate) async fn connection<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // What `ConnectInfo` gives the handlers: the refusal log needs it.
        request.extensions_mut().insert(ConnectInfo(remote));
        let mut router = router.clone();
        tower_service::Service::call(&mut router, request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The timer makes hyper's header read timeout (30 s) apply: a client that opens a request
    // and stalls is cut off.
    builder.timer(TokioTimer::new());
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(serving);
    let finished = tokio::select! {
        served = serving.as_mut() => Some(served),
        _ = stop.wait_for(|s| *s) => None,
    };
    let served = match finished {
        Some(served) => served,
        None => {
            // Answer the request under way, if any, then close.
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%remote, error = %e, "an HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// Serves `router` on a loopback port; returns the address and the stop switch.
    async fn start(router: Router) -> Result<(SocketAddr, watch::Sender<bool>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, router, stopped));
        Ok((address, stop))
    }

    /// A stop while pipelined requests wait behind a slow one still answers the slow one,
    /// marked as the last on the connection.
    #[tokio::test]
    async fn a_stop_answers_the_request_in_flight_on_a_pipelined_connection() -> Result<()> {
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "slow-answer"
        };
        let (address, stop) = start(Router::new().route("/slow", get(slow))).await?;
        let mut client = TcpStream::connect(address).await?;
        let request = "GET /slow HTTP/1.1\r\nhost: node\r\n\r\n";
        client.write_all(request.repeat(3).as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true)?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await??;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("slow-answer"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        Ok(())
    }

    /// A client that pipelines requests for large answers and reads none of them gets only as
    /// many served as the connection's buffers hold: the node stops reading its requests,
    /// rather than keep every answer in memory.
    #[tokio::test]
    async fn unread_answers_stop_the_node_reading_pipelined_requests() -> Result<()> {
        let served = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&served);
        let big = move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                vec![b'x'; 1 << 20]
            }
        };
        let (address, _stop) = start(Router::new().route("/big", get(big))).await?;
        let mut client = TcpStream::connect(address).await?;
        let request = "GET /big HTTP/1.1\r\nhost: node\r\n\r\n";
        client.write_all(request.repeat(200).as_bytes()).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let served = served.load(Ordering::Relaxed);
        // The loopback socket's buffers hold a few answers of 1 MiB; all 200 would be 200 MiB.
        assert!(served < 50, "{served} answers of 1 MiB were made for a client reading none");
        Ok(())
    }
}
