//! The TCP transport, in the order data flows through it:
//!
//! * [`transport`] — [`TcpTransport`]: `send` routes each message to its peer's queue.
//! * [`queue`] — the bounded per-peer queue; drops by [`Overflow`] policy when full.
//! * [`outbound`] — one writer task per peer: dial lazily, handshake, write batches, keepalives,
//!   redial after [`backoff`].
//! * [`wire`] — the handshake and the frames, the only code that touches raw bytes.
//! * [`inbound`] — the acceptor and one reader per connection: admit the connection
//!   ([`admission`]: a few handshakes per address, room kept for known peers), check the
//!   handshake and answer it with a verdict, read frames, check the header, decode, validate,
//!   and deliver to the node's inbox within the sender's [`share`] of it.
//! * [`network`] — the seam to the TCP stack ([`TokioNet`], `TurmoilNet`) and the [`Spawner`].
//! * [`tls`] — mutual TLS: wraps each connection before the handshake; certificates name
//!   node ids.
//! * [`config`], [`stats`], [`warnings`] — settings with their rules, counters, and the rate
//!   limit that keeps a misbehaving peer from flooding the log.

mod admission;
mod backoff;
mod config;
mod inbound;
mod network;
mod outbound;
mod queue;
mod share;
mod stats;
pub mod tls;
mod transport;
mod warnings;
mod wire;

pub use config::{ConfigError, TcpConfig};
#[cfg(feature = "turmoil")]
pub use network::TurmoilNet;
pub use network::{Deliver, Network, Spawner, Task, TokioNet};
pub use queue::Overflow;
pub use stats::{InboundStats, PeerStats, TransportStats};
pub use transport::{TcpError, TcpTransport};
pub use wire::VERSION as WIRE_VERSION;
