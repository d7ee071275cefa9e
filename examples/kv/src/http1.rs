//! Serving the HTTP API's connections with hyper's HTTP/1.1 server: the plain HTTP accept
//! loop, and what it and the HTTPS one (`https.rs`) do with each connection.
//!
//! Both build hyper's connection themselves rather than through `axum::serve`, so as to set
//! [`hyper::server::conn::http1::Builder::pipeline_flush`]: the answers to requests a client
//! pipelined are written together when the next request is already read, rather than one
//! write each. On a clean stop both keep what `axum::serve` does: no new connections; requests
//! in flight are answered and idle connections closed, within the caller's drain timeout (the
//! caller aborts the accept loop's task after it, which drops every connection it holds).

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
                connections.spawn(connection(
                    stream,
                    remote,
                    router.clone(),
                    HeaderTimeout::Off,
                    stop.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be released rather
                // than spin.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Reap what has finished, so that the set holds only live connections.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Whether hyper cuts off a client that opens a request and does not finish its head (after
/// hyper's default of 30 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderTimeout {
    /// As `axum::serve` had it for plain HTTP: no timer.
    Off,
    /// As the HTTPS server has it.
    On,
}

/// Serves `router` on one connection (`io`, from `remote`) until the client closes it or
/// `stop` turns true; then answers the request under way, if any, and closes.
pub(crate) async fn connection<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    header_timeout: HeaderTimeout,
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
    // Answers to pipelined requests go out in one write once the last one read is answered.
    builder.pipeline_flush(true);
    if header_timeout == HeaderTimeout::On {
        // The timer makes hyper's header read timeout apply: a client that opens a request
        // and stalls is cut off.
        builder.timer(TokioTimer::new());
    }
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
