//! # raft-net
//!
//! Implementations of [`raft_core::node::Transport`], the node's way out to its peers; the way
//! in is the node's [`raft_core::node::Inbox`], which every transport delivers to.
//!
//! * [`ChannelNetwork`] (module `channel`) connects nodes in one process through their inboxes,
//!   with links that a test can cut and restore (partitions without sockets).
//! * [`TcpTransport`] (module `tcp`) connects nodes over TCP. A message goes from `send` into
//!   its peer's queue, bounded in messages and bytes (`tcp::queue`); the peer's writer task
//!   (`tcp::outbound`) dials on first use, exchanges a versioned handshake (magic, version,
//!   cluster id, node id; the listener answers with a verdict), and writes what is queued as
//!   length-delimited postcard frames in batches of about a megabyte (`tcp::wire`); it
//!   redials with exponential backoff when the connection fails or falls silent. On the other
//!   node the acceptor and a reader per connection (`tcp::inbound`) admit a few handshakes per
//!   address, check the handshake, read and check frames (closing a connection that sends
//!   anything invalid), and deliver to the inbox within each peer's share of it.
//!
//! * [`conformance`] checks any [`raft_core::node::Transport`] (these two, or a user's own) for
//!   what the node relies on: delivery intact and to its addressee, no panic or hang on a dead
//!   peer, send order per link where promised, bounded and counted drops under back-pressure,
//!   delivery again after a restart.
//!
//! The TCP transport assumes nothing good of the bytes it receives: a peer, or anything that
//! connects to the port, may be hostile or broken. Silent connections cannot hold every
//! handshake slot, a claim to be a node cannot displace that node's live connection, a frame
//! is charged its decoded size against its sender's share before it is decoded, one peer
//! cannot take the inbox from the others, warnings are rate-limited, a slow link is judged by
//! whether bytes move, a peer that stops reading holds a bounded amount of memory, and a peer
//! that drops every connection is redialled with backoff. A node that is refused learns why
//! (another cluster, an unknown node id, another wire version) and reports it per peer in
//! [`TransportStats`] and in the node's `Status::connections`.
//!
//! With [`TcpConfig::tls`] set, every connection is mutual TLS (rustls) from its first byte:
//! each node presents a certificate from a configured CA whose subject alternative name
//! `raft-node-<id>` ([`node_name`]) must match the node id it claims, so that one node's
//! certificate cannot speak for another; a refused TLS handshake is counted by cause
//! ([`InboundStats::handshakes_refused_by_cause`]) and shown on the dialling side. Certificates
//! are reloaded when their files change ([`tls`]).
//!
//! The TCP code is generic over a [`Network`]: [`TokioNet`] is the operating system's TCP, and
//! `TurmoilNet` (feature `turmoil`) is turmoil's simulated TCP, so a simulation exercises the
//! very code that runs in production. Its tasks are started by a caller-chosen [`Spawner`]:
//! [`Spawner::tokio`] in production, [`Spawner::local`] inside a turmoil host.
//!
//! ```
//! use raft_core::NodeId;
//! use raft_net::{Spawner, TcpConfig, TcpTransport, TokioNet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), raft_net::TcpError> {
//! let (inbox, _inbound) = raft_core::node::inbox(4096);
//! // Node 1 of cluster 7, on a free port; peers can also be added once their ports are known.
//! let peers = [(NodeId(2), "127.0.0.1:7002".to_string())];
//! let config = TcpConfig::new(NodeId(1), 7, "127.0.0.1:0", peers);
//! let transport = TcpTransport::start(TokioNet, config, inbox, Spawner::tokio()).await?;
//! println!("listening on {}", transport.local_addr());
//! transport.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Under turmoil the same call takes `TurmoilNet` and [`Spawner::local`], inside the host.

mod channel;
pub mod conformance;
mod tcp;

pub use channel::{ChannelNetwork, ChannelTransport};
#[cfg(feature = "turmoil")]
pub use tcp::TurmoilNet;
pub use tcp::tls::{self, PeerTls, TlsError, TlsFiles, TlsOptions, node_name};
pub use tcp::{
    ConfigError, Deliver, InboundStats, Network, Overflow, PeerStats, Spawner, Task, TcpConfig,
    TcpError, TcpTransport, TokioNet, TransportStats, WIRE_VERSION,
};
