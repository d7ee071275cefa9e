//! The seam between the TCP transport and a network stack: [`Network`], implemented for the
//! operating system's TCP through tokio ([`TokioNet`]) and for turmoil's simulated TCP
//! (`TurmoilNet`, feature `turmoil`). The transport's code above this seam is the same in
//! production and in simulation.
//!
//! Tasks are started through a [`Spawner`] chosen by the caller: `tokio::spawn` in a real
//! deployment, `tokio::task::spawn_local` inside a turmoil host (see [`Spawner::local`]).

use raft_core::Message;
use raft_core::node::Inbox;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A TCP stack: binds listeners, accepts and opens connections.
///
/// Addresses are strings `"host:port"`: an IP address or a name the stack resolves (a DNS name
/// for [`TokioNet`], a host name of the simulation for `TurmoilNet`).
pub trait Network: Clone + Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound listener.
    type Listener: Send + 'static;

    /// Binds a listener to `addr`.
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Waits for the next inbound connection; returns it and the remote address. Must be
    /// cancel-safe: the acceptor drops this future when the transport shuts down.
    fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address `listener` is bound to (with the port chosen when binding to port 0).
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Opens a connection to `addr`. The transport bounds it with its connect timeout.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The operating system's TCP, through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Network for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        let addr = addr.to_owned();
        async move { tokio::net::TcpListener::bind(addr).await }
    }

    async fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        // Raft's messages are small and latency-bound; batching is done above, per peer.
        stream.set_nodelay(true)?;
        Ok((stream, remote))
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let addr = addr.to_owned();
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
    }
}

/// turmoil's simulated TCP. Every method must be called from inside a turmoil host.
///
/// Simulated TCP does not retransmit: a segment lost to a partition stalls its connection for
/// good, and a connection attempt across a partition never completes. The transport copes
/// with timeouts on connecting and writing and with keepalives that expose a silent link, after
/// which it drops the connection and dials again.
#[cfg(feature = "turmoil")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

#[cfg(feature = "turmoil")]
impl Network for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        let addr = addr.to_owned();
        async move { turmoil::net::TcpListener::bind(addr).await }
    }

    async fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let addr = addr.to_owned();
        async move { turmoil::net::TcpStream::connect(addr).await }
    }
}

/// Where a transport hands inbound messages: the node's [`Inbox`] in a deployment; a channel
/// in a test that inspects what arrived, or anything else that takes messages without waiting.
pub trait Deliver: Send + Sync + 'static {
    /// Hands `message` over without waiting. Returns false if it was dropped (a full queue, a
    /// stopped node), which Raft tolerates like any lost message.
    fn deliver(&self, message: Message) -> bool;
}

impl Deliver for Inbox {
    fn deliver(&self, message: Message) -> bool {
        Inbox::deliver(self, message)
    }
}

impl Deliver for tokio::sync::mpsc::Sender<Message> {
    fn deliver(&self, message: Message) -> bool {
        self.try_send(message).is_ok()
    }
}

impl Deliver for tokio::sync::mpsc::UnboundedSender<Message> {
    fn deliver(&self, message: Message) -> bool {
        self.send(message).is_ok()
    }
}

/// A task of the transport: the acceptor, one reader per inbound connection, one writer per
/// peer. Each ends by itself when the transport shuts down.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts the transport's tasks. Cheap to clone.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl Spawner {
    /// Spawns with `tokio::spawn`, on the current runtime: for real deployments.
    pub fn tokio() -> Spawner {
        Spawner::new(|task| {
            tokio::spawn(task);
        })
    }

    /// Spawns with `tokio::task::spawn_local`: inside a turmoil host (which runs a `LocalSet`)
    /// so that task order, and with it the simulation, is reproducible, and the tasks die with
    /// the host when it crashes. The transport must then be started and used on that
    /// `LocalSet`; `spawn_local` panics anywhere else.
    pub fn local() -> Spawner {
        Spawner::new(|task| {
            tokio::task::spawn_local(task);
        })
    }

    /// Spawns with `spawn`, for any other executor.
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Spawner {
        Spawner(Arc::new(spawn))
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task));
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}
