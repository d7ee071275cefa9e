//! `raft-kv`: a replicated key-value service over HTTP, built only on the public API of
//! `raft-core`, `raft-storage` and `raft-net`.
//!
//! How a request flows through the modules:
//!
//! ```text
//!  client ──HTTP──▶ http (Api) ──NodeHandle──▶ raft-core node ──TcpTransport──▶ peers
//!    ▲                 │  307 to the leader         │ FileLogStore, FileSnapshotStore
//!    └── client ◀──────┘  (via store::Directory)    ▼
//!                                             store (KvStore: map, request table, directory)
//! ```
//!
//! - [`store`]: the state machine: the map, the table of request ids already applied (so a
//!   retried write takes effect once), and the directory of node addresses.
//! - [`server`]: one node: its data directory, Raft node, transport and HTTP server.
//! - [`http`]: the HTTP/JSON API and its error codes.
//! - [`metrics`]: `GET /metrics` in the Prometheus text format.
//! - [`client`]: a client that follows redirects to the leader.
//! - [`tokens`] and [`auth`]: bearer tokens, and which route needs which role.
//! - [`tls`]: HTTPS for the API and its clients (the accept loop is in `https.rs`), and
//!   [`certs`]: `raft-kv certs`, a throw-away CA and node certificates.
//! - [`cli`]: the command line: `serve`, `demo`, `bench`, `certs` and the client subcommands.
//! - [`demo`] and [`mod@bench`]: the one-command demonstration and the load generator.

pub mod auth;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod demo;
pub mod http;
mod http1;
pub mod https;
pub mod metrics;
mod pipeline;
mod rate_limit;
pub mod server;
pub mod store;
pub mod tls;
pub mod tokens;

pub use client::{Client, ClientSecurity};
pub use server::{ServeOptions, Server};
pub use store::{KvCommand, KvResponse, KvStore};
pub use tls::TlsFiles;
pub use tokens::Tokens;
