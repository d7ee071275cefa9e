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
//! The answers to pipelined requests leave together: [`Coalesce`] holds a connection's answers
//! while the client's next requests are already there to read, and sends them when there is
//! nothing more to read (or when they pass [`COALESCE_BYTES`]), so a client that pipelines
//! gets one write for many answers rather than one each. hyper's own
//! `http1::Builder::pipeline_flush` does the same without a bound: it buffers every answer
//! while pipelined requests remain unread (a client that pipelines reads of a large value and
//! never reads the answers grows the node's memory by each answer's size), and a stop can drop
//! the answer to the request in flight; it is left off.

use crate::rate_limit::LogLimiter;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Serves `router` over plain HTTP on `listener` until `stop` turns true, then stops accepting,
/// lets every connection finish the request it is answering, and returns once all have
/// closed.
pub(crate) async fn serve(listener: TcpListener, router: Router, stop: watch::Receiver<bool>) {
    let serving = stop.clone();
    accept_loop(listener, stop, "HTTP", |stream, remote, connections| {
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(stream, remote, router.clone(), serving.clone()));
    })
    .await;
}

/// The accept loop of both servers: hands every connection accepted on `listener` (of
/// protocol `what`, for the log) to `accept`, which spawns what serves it on the set it is
/// given, until `stop` turns true; then stops accepting and returns once every connection has
/// closed. The set is owned here, so that when this task is aborted (the caller's drain
/// timeout passed) every connection is dropped with it: a stalled client cannot hold a stop
/// up. A failed accept (out of file descriptors, most likely) is logged at a limited rate and
/// waited out rather than spun on.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    mut accept: impl FnMut(TcpStream, SocketAddr, &mut JoinSet<()>),
) {
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
            Ok((stream, remote)) => accept(stream, remote, &mut connections),
            Err(e) => {
                if log.allow(None, "accept") {
                    tracing::warn!(error = %e, "cannot accept an {what} connection");
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
    let serving = builder.serve_connection(TokioIo::new(Coalesce::new(io)), service);
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

/// The most answer bytes [`Coalesce`] holds back: beyond it they are sent at once (and a
/// client that reads none of them stops the node reading its requests).
pub(crate) const COALESCE_BYTES: usize = 64 * 1024;

/// The longest [`Coalesce`] holds an answer: a slow request pipelined behind quick ones does
/// not hold up their answers longer than this.
pub(crate) const COALESCE_HOLD: Duration = Duration::from_millis(5);

/// The buffer a connection keeps between batches; a larger one is given back once sent.
const KEPT_BUFFER_BYTES: usize = 8 * 1024;

/// A connection whose writes are held while the client's next requests are there to read, and
/// sent when the connection is flushed after a read found nothing more to read, when a write
/// would take them past [`COALESCE_BYTES`], when they have been held for [`COALESCE_HOLD`], or
/// on shutdown: the answers to a client's pipelined requests leave in one write, and a client
/// that sends one request at a time gets its answer as soon as hyper flushes it. At most
/// [`COALESCE_BYTES`] are held: a write that does not fit waits for what is held to be sent.
pub(crate) struct Coalesce<I> {
    io: I,
    held: Vec<u8>,
    /// How much of `held` was sent.
    sent: usize,
    /// The last read found nothing more to read (or the end): a flush sends what is held.
    drained: bool,
    /// When what is held must be sent at the latest; armed when the first byte is held.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Coalesce<I> {
    pub(crate) fn new(io: I) -> Coalesce<I> {
        Coalesce {
            io,
            held: Vec::new(),
            sent: 0,
            drained: true,
            deadline: None,
        }
    }
}

impl<I: AsyncWrite + Unpin> Coalesce<I> {
    /// Sends everything held, then flushes the connection (a TLS stream's records).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.held.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.held[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.held.clear();
        if self.held.capacity() > KEPT_BUFFER_BYTES {
            self.held = Vec::new();
        }
        self.sent = 0;
        self.deadline = None;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // More requests: their answers join the ones held.
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.drained = false;
                Poll::Ready(Ok(()))
            }
            // The client closed its side: send what is held before saying so.
            Poll::Ready(Ok(())) => {
                this.drained = true;
                this.poll_send(cx)
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Nothing more to read: send the answers held (the read waits either way), and
            // what is written from now on at the next flush.
            Poll::Pending => {
                this.drained = true;
                match this.poll_send(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesce<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() + data.len() > COALESCE_BYTES {
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if !this.held.is_empty() {
                return Poll::Pending;
            }
            if data.len() > COALESCE_BYTES {
                return Pin::new(&mut this.io).poll_write(cx, data);
            }
        }
        if this.held.is_empty() {
            this.deadline = Some(Box::pin(tokio::time::sleep(COALESCE_HOLD)));
        }
        this.held.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Sends what is held if no more requests were there to read, or once it has been held
    /// for [`COALESCE_HOLD`]; else keeps it for the answers to the requests still to read
    /// (and is woken when the hold expires: hyper flushes again then).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let expired = this
            .deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if this.drained || expired {
            this.poll_send(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_shutdown(cx),
            other => other,
        }
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

    /// A connection that counts the writes that reach it.
    struct Counted {
        io: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write(cx, data);
            if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The answers to requests a client pipelined leave together; one request at a time gets
    /// its answer at once.
    #[tokio::test]
    async fn pipelined_answers_leave_together() -> Result<()> {
        let router = Router::new().route("/k", get(|| async { "value" }));
        let (client, server) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            io: server,
            writes: Arc::clone(&writes),
        };
        let (_stop, stopped) = watch::channel(false);
        let remote: SocketAddr = "127.0.0.1:1".parse()?;
        tokio::spawn(connection(counted, remote, router, stopped));
        let (mut reader, mut writer) = tokio::io::split(client);
        let request = "GET /k HTTP/1.1\r\nhost: node\r\n\r\n";
        let answers = |text: &str| text.matches("HTTP/1.1 200 OK").count();
        let mut got = String::new();
        let mut buf = vec![0u8; 1 << 16];
        writer.write_all(request.repeat(5).as_bytes()).await?;
        while answers(&got) < 5 {
            let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await??;
            assert!(n > 0, "closed after {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        // hyper answers the first request before it looks for the next ones (one write each
        // without coalescing: five).
        let together = writes.load(Ordering::Relaxed);
        assert!(together <= 2, "{together} writes for five answers: {got}");
        // One request alone is answered without waiting for another.
        writer.write_all(request.as_bytes()).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await??;
        assert_eq!(answers(&String::from_utf8_lossy(&buf[..n])), 1);
        assert_eq!(writes.load(Ordering::Relaxed), together + 1);
        Ok(())
    }

    /// Reads from `client` until `text` arrives; how long that took, or `None` after `limit`.
    async fn time_to(client: &mut TcpStream, text: &str, limit: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(text) {
            let left = limit.checked_sub(started.elapsed())?;
            match tokio::time::timeout(left, client.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
        Some(started.elapsed())
    }

    /// A client that asks `Expect: 100-continue` gets its `100 Continue` (held, it would wait
    /// for it while the node waits for the body).
    #[tokio::test]
    async fn a_client_expecting_100_continue_gets_it() -> Result<()> {
        let put = axum::routing::put(|body: String| async move { body });
        let (address, _stop) = start(Router::new().route("/put", put)).await?;
        let mut client = TcpStream::connect(address).await?;
        let head = "PUT /put HTTP/1.1\r\nhost: node\r\ncontent-length: 5\r\n\
                    expect: 100-continue\r\n\r\n";
        client.write_all(head.as_bytes()).await?;
        let waited = time_to(&mut client, "100 Continue", Duration::from_secs(5)).await;
        assert!(waited.is_some(), "no 100 Continue within 5 s");
        client.write_all(b"hello").await?;
        let answered = time_to(&mut client, "hello", Duration::from_secs(5)).await;
        assert!(answered.is_some(), "no answer to the body");
        Ok(())
    }

    /// The answer to a quick request is not held behind a slow one pipelined after it.
    #[tokio::test]
    async fn a_slow_request_does_not_hold_up_the_answers_before_it() -> Result<()> {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "slow"
        };
        let router = Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route("/slow", get(slow));
        let (address, _stop) = start(router).await?;
        let mut client = TcpStream::connect(address).await?;
        let requests = "GET /fast HTTP/1.1\r\nhost: node\r\n\r\n\
                        GET /slow HTTP/1.1\r\nhost: node\r\n\r\n\
                        GET /fast HTTP/1.1\r\nhost: node\r\n\r\n";
        client.write_all(requests.as_bytes()).await?;
        let first = time_to(&mut client, "fast", Duration::from_secs(5)).await;
        assert!(
            first.is_some_and(|took| took < Duration::from_millis(500)),
            "the first answer took {first:?}"
        );
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
        assert!(
            served < 50,
            "{served} answers of 1 MiB were made for a client reading none"
        );
        Ok(())
    }
}
