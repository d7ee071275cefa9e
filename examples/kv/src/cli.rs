//! The command line: `raft-kv serve` runs a node, `raft-kv demo` a whole cluster in one
//! process, `raft-kv bench` a load generator, `raft-kv certs` certificates to try TLS with,
//! and the other subcommands are clients of the HTTP API. Every failure ends with a one-line
//! message on stderr and exit code 1 (2 for bad flags).

use crate::client::{Client, ClientSecurity, Reply, encode_key, endpoints};
use crate::http::{Limits, parse_ack};
use crate::server::{ServeOptions, Server};
use crate::tokens::Tokens;
use clap::{Args, Parser, Subcommand};
use raft_core::NodeId;
use raft_core::node::NodeConfig;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A replicated key-value service on Raft.
#[derive(Debug, Parser)]
#[command(name = "raft-kv", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a 3-node cluster in this process, run a workload through a failover and a
    /// membership change, and check that no acknowledged write was lost.
    Demo,
    /// Run one node.
    Serve(ServeArgs),
    /// Set a key.
    Put {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Acknowledgement level: local, quorum or all (default: the node's).
        #[arg(long)]
        ack: Option<String>,
        /// Idempotency key: a retry with the same id takes effect once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Read a key.
    Get {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The key.
        key: String,
        /// linearizable (default), lease, stale or follower.
        #[arg(long)]
        consistency: Option<String>,
        /// Wait until the node has applied this index (read your writes).
        #[arg(long)]
        min_index: Option<u64>,
        /// With `--consistency follower`: the staleness bound.
        #[arg(long)]
        max_staleness_ms: Option<u64>,
    },
    /// Compare and swap: set a key to VALUE if it holds --expect (or is absent with
    /// --expect-absent).
    Cas {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// The value the key must hold.
        #[arg(
            long,
            conflicts_with = "expect_absent",
            required_unless_present = "expect_absent"
        )]
        expect: Option<String>,
        /// The key must be absent.
        #[arg(long)]
        expect_absent: bool,
        /// Idempotency key: a retry with the same id takes effect once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Delete a key.
    Delete {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The key.
        key: String,
        /// Idempotency key: a retry with the same id takes effect once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show each node's role, term and indexes, and the leader's view of its peers.
    Status {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Show the cluster's members and their addresses.
    Members {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Add a node as a learner (start it first with `serve --join`).
    AddLearner {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Its Raft address (HOST:PORT).
        #[arg(long)]
        addr: String,
        /// Its HTTP address (HOST:PORT).
        #[arg(long = "node-http")]
        node_http: String,
        /// Answer once it is within this many entries of the leader.
        #[arg(long)]
        catch_up_within: Option<u64>,
    },
    /// Make these nodes the voters (learners are promoted, missing voters removed).
    ChangeMembership {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The new voters, as `1,2,3`.
        #[arg(long, value_delimiter = ',', required = true)]
        voters: Vec<u64>,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// The nodes to ask.
        #[command(flatten)]
        target: Target,
        /// The node to hand leadership to.
        #[arg(long)]
        to: u64,
    },
    /// Load-test a cluster over HTTP.
    Bench(crate::bench::BenchArgs),
    /// Write a throw-away CA and certificates for nodes (`N.pem`, `N.key`) and a client.
    Certs(crate::certs::CertsArgs),
}

/// Where a client subcommand sends its requests.
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// The nodes' HTTP addresses, as `HOST:PORT,HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub http: String,
    /// Print the JSON answer instead of readable text.
    #[arg(long)]
    pub json: bool,
    /// HTTPS and tokens.
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

/// How a client (a subcommand, or `bench`) reaches the nodes: HTTPS and bearer tokens.
#[derive(Clone, Debug, Default, Args)]
pub struct ClientSecurityArgs {
    /// Speak HTTPS, trusting the CA certificate(s) in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM) over HTTPS.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A token file (lines read=TOKEN, write=TOKEN, admin=TOKEN): each request carries the
    /// least privileged token that suffices for it.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// One bearer token, sent with every request.
    #[arg(long)]
    pub token: Option<String>,
}

impl ClientSecurityArgs {
    /// Reads the files the flags name.
    pub async fn load(&self) -> Result<ClientSecurity, String> {
        let tls = match &self.tls_ca {
            None => None,
            Some(ca) => {
                let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                Some(crate::tls::client_config(ca, identity).await?)
            }
        };
        let tokens = match (&self.token_file, &self.token) {
            (Some(file), _) => Some(Tokens::load(file).await?),
            (None, Some(token)) => Some(Tokens::single(token)?),
            (None, None) => None,
        };
        Ok(ClientSecurity { tls, tokens })
    }
}

/// `raft-kv serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// This node's id (1 or more).
    #[arg(long)]
    pub id: u64,
    /// Where the Raft transport listens (HOST:PORT).
    #[arg(long)]
    pub listen: String,
    /// Where the HTTP API listens (HOST:PORT).
    #[arg(long)]
    pub http: String,
    /// The HTTP address to give clients and other nodes (default: --http).
    #[arg(long)]
    pub advertise_http: Option<String>,
    /// The data directory (created on first start).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The nodes' Raft addresses, as `1=HOST:PORT,2=HOST:PORT`. On first start, exactly the
    /// voters, this node included (unless --join).
    #[arg(long, default_value = "")]
    pub peers: String,
    /// Join a running cluster: wait for its leader to add this node.
    #[arg(long)]
    pub join: bool,
    /// Identifies the cluster; nodes of other clusters are refused.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Minimum election timeout; the maximum is twice this. The default, like etcd's, rides
    /// out a disk whose fsync stalls for a few hundred milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Leader lease (0 disables lease reads); must be under the election timeout minus the
    /// clock drift bound.
    #[arg(long, default_value_t = 800)]
    pub lease_ms: u64,
    /// The most two clocks may drift apart over one election timeout.
    #[arg(long, default_value_t = 50)]
    pub clock_drift_ms: u64,
    /// Acknowledgement level of writes that name none: local, quorum or all.
    #[arg(long, default_value = "quorum")]
    pub ack: String,
    /// Take a snapshot every this many applied entries (0: never on its own).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot for followers slightly behind.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_keep_entries: u64,
    /// How long a request may take before it is answered 504.
    #[arg(long, default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// The longest key accepted, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub max_key_bytes: usize,
    /// The longest value accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    /// This node's certificate (PEM): with --tls-key and --tls-ca, the HTTP API is served
    /// over HTTPS only. Reloaded when the file changes, or on SIGHUP.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that client certificates, when presented, must chain to.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// The oldest TLS version the HTTP API accepts: 1.3 or 1.2.
    #[arg(long, default_value = "1.3", value_parser = ["1.2", "1.3"])]
    pub tls_min_version: String,
    /// Bearer tokens (lines read=TOKEN, write=TOKEN, admin=TOKEN): every request then needs
    /// one. It must hold the admin token, which the node registers itself with.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// With --token-file: GET /status and GET /metrics need no token (for scrapers).
    #[arg(long)]
    pub open_status: bool,
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(list: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("--peers: {item:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("--peers: {id:?} is not a node id"))?;
        if id == 0 {
            return Err("--peers: node id 0 is reserved; ids start at 1".into());
        }
        let addr = addr.trim();
        if !addr.contains(':') {
            return Err(format!("--peers: {addr:?} is not HOST:PORT"));
        }
        if peers.insert(NodeId(id), addr.to_string()).is_some() {
            return Err(format!("--peers: node {id} is named twice"));
        }
    }
    Ok(peers)
}

impl ServeArgs {
    /// The options these flags describe, checked.
    pub fn options(&self) -> Result<ServeOptions, String> {
        if self.id == 0 {
            return Err("--id: node id 0 is reserved; ids start at 1".into());
        }
        let id = NodeId(self.id);
        let peers = parse_peers(&self.peers)?;
        let mut options = ServeOptions::new(
            id,
            self.listen.clone(),
            self.http.clone(),
            self.data_dir.clone(),
            peers,
        );
        options.join = self.join;
        options.cluster_id = self.cluster_id;
        options.advertise_http = self.advertise_http.clone();
        options.default_ack = parse_ack(&self.ack).map_err(|e| format!("--ack: {e}"))?;
        options.limits = Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
        };
        options.tls = crate::tls::files_from_flags(
            self.tls_cert.clone(),
            self.tls_key.clone(),
            self.tls_ca.clone(),
        )?;
        options.allow_tls12 = self.tls_min_version == "1.2";
        if options.allow_tls12 && options.tls.is_none() {
            return Err("--tls-min-version goes with --tls-cert, --tls-key and --tls-ca".into());
        }
        options.open_status = self.open_status;
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err("--max-key-bytes and --max-value-bytes must be at least 1".into());
        }
        let mut node = NodeConfig::new(id, []);
        node.raft.election_timeout_min_ms = self.election_timeout_ms;
        node.raft.election_timeout_max_ms = self.election_timeout_ms.saturating_mul(2);
        node.raft.heartbeat_interval_ms = self.heartbeat_ms;
        node.raft.lease_duration_ms = self.lease_ms;
        node.raft.clock_drift_bound_ms = self.clock_drift_ms;
        node.snapshot_every = self.snapshot_every;
        node.snapshot_keep_entries = self.snapshot_keep_entries;
        node.request_timeout = Duration::from_millis(self.request_timeout_ms);
        // Room for the longest key and value, and the command's framing.
        node.max_command_bytes = node.max_command_bytes.max(
            self.max_key_bytes
                .saturating_add(self.max_value_bytes.saturating_mul(2))
                .saturating_add(4096),
        );
        options.node = node;
        Ok(options)
    }
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log(&cli))),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raft-kv: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raft-kv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What is logged without `RUST_LOG`: a node logs its own lifecycle; the demo, bench and
/// clients only warnings (their output is their report).
fn default_log(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Serve(_) => "info",
        _ => "error",
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Demo => crate::demo::run().await,
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Certs(args) => crate::certs::run(args).await,
        Command::Put {
            target,
            key,
            value,
            ack,
            request_id,
        } => {
            let path = format!("/kv/{}{}", encode_key(&key), query(&[("ack", ack)]));
            let body = json!({"value": value, "request_id": request_id});
            let reply = call(&target, Method::PUT, &path, Some(body)).await?;
            print_reply(&target, reply, |b| format!("ok, index {}", b["index"]))
        }
        Command::Get {
            target,
            key,
            consistency,
            min_index,
            max_staleness_ms,
        } => {
            let params = [
                ("consistency", consistency),
                ("min_index", min_index.map(|i| i.to_string())),
                ("max_staleness_ms", max_staleness_ms.map(|i| i.to_string())),
            ];
            let path = format!("/kv/{}{}", encode_key(&key), query(&params));
            let reply = call(&target, Method::GET, &path, None).await?;
            print_reply(&target, reply, |b| match b["value"].as_str() {
                Some(value) => value.to_string(),
                None => "(absent)".to_string(),
            })
        }
        Command::Cas {
            target,
            key,
            value,
            expect,
            expect_absent: _,
            request_id,
        } => {
            let path = format!("/kv/{}/cas", encode_key(&key));
            let body = json!({"expect": expect, "value": value, "request_id": request_id});
            let reply = call(&target, Method::POST, &path, Some(body)).await?;
            print_reply(&target, reply, |b| {
                let found = b["value"].as_str().unwrap_or("(absent)").to_string();
                if b["ok"].as_bool() == Some(true) {
                    format!("swapped, index {}", b["index"])
                } else {
                    format!("not swapped: the key holds {found}")
                }
            })
        }
        Command::Delete {
            target,
            key,
            request_id,
        } => {
            let path = format!(
                "/kv/{}{}",
                encode_key(&key),
                query(&[("request_id", request_id)])
            );
            let reply = call(&target, Method::DELETE, &path, None).await?;
            print_reply(&target, reply, |b| format!("ok, index {}", b["index"]))
        }
        Command::Status { target } => status(&target).await,
        Command::Members { target } => {
            let reply = call(&target, Method::GET, "/cluster/members", None).await?;
            print_reply(&target, reply, members_text)
        }
        Command::AddLearner {
            target,
            id,
            addr,
            node_http,
            catch_up_within,
        } => {
            let body = json!({"id": id, "addr": addr, "http": node_http, "catch_up_within": catch_up_within});
            let reply = call(&target, Method::POST, "/cluster/learners", Some(body)).await?;
            print_reply(&target, reply, |b| {
                format!("node {id} added as a learner, index {}", b["index"])
            })
        }
        Command::ChangeMembership { target, voters } => {
            let body = json!({"voters": voters});
            let reply = call(&target, Method::POST, "/cluster/membership", Some(body)).await?;
            print_reply(&target, reply, |b| {
                format!("voters are now {voters:?}, index {}", b["index"])
            })
        }
        Command::TransferLeader { target, to } => {
            let body = json!({"to": to});
            let reply = call(
                &target,
                Method::POST,
                "/cluster/transfer-leader",
                Some(body),
            )
            .await?;
            print_reply(&target, reply, |_| {
                format!("handing leadership to node {to}")
            })
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let mut options = args.options()?;
    if let Some(file) = &args.token_file {
        options.tokens = Some(Tokens::load(file).await?);
    } else if args.open_status {
        return Err(
            "--open-status goes with --token-file (without tokens, everything is open)".into(),
        );
    }
    let server = Server::start(options).await?;
    tokio::select! {
        biased;
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        () = server.stopped() => {
            server.shutdown().await;
            Err("the node stopped on its own (a storage failure stops a node rather than risk acknowledging writes it cannot make durable; see the log above); restart it to recover from what is on disk".into())
        }
    }
}

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `?a=1&b=2` from the parameters that are set.
fn query(params: &[(&str, Option<String>)]) -> String {
    let set: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    if set.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(set).unwrap_or_default())
}

async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Reply, String> {
    let client = client_of(target).await?;
    client.call(method, path, body.as_ref()).await
}

/// A client of the nodes `target` names, with its HTTPS and tokens.
async fn client_of(target: &Target) -> Result<Client, String> {
    let security = target.security.load().await?;
    let endpoints = endpoints(&target.http, security.tls.is_some())?;
    Client::with_security(endpoints, security)
}

/// Prints a reply: its JSON with `--json`, otherwise `text` of it; an error answer is an
/// error either way.
fn print_reply(
    target: &Target,
    reply: Reply,
    text: impl FnOnce(&Value) -> String,
) -> Result<ExitCode, String> {
    if target.json {
        println!("{}", reply.body);
        return Ok(if reply.status.is_success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let body = reply.into_result()?;
    println!("{}", text(&body));
    Ok(ExitCode::SUCCESS)
}

fn members_text(body: &Value) -> String {
    let mut out = format!(
        "voters {}  learners {}{}\n",
        body["voters"],
        body["learners"],
        if body["joint"].as_bool() == Some(true) {
            format!("  (joint: leaving {})", body["outgoing_voters"])
        } else {
            String::new()
        }
    );
    out.push_str(&format!("{:>4}  {:<22} {:<22}\n", "id", "raft", "http"));
    if let Some(nodes) = body["nodes"].as_object() {
        for (id, node) in nodes {
            let field = |f: &str| node[f].as_str().unwrap_or("-").to_string();
            out.push_str(&format!(
                "{id:>4}  {:<22} {:<22}\n",
                field("raft"),
                field("http")
            ));
        }
    }
    out.trim_end().to_string()
}

/// `raft-kv status`: one row per node given, then the leader's view of its peers.
async fn status(target: &Target) -> Result<ExitCode, String> {
    let client = client_of(target).await?;
    let mut rows = Vec::new();
    for endpoint in endpoints(&target.http, client.https())? {
        let base = client.base(&endpoint);
        let reply = client.send_to(&base, Method::GET, "/status", None).await;
        rows.push((endpoint, reply.map_err(|e| crate::client::describe(&e))));
    }
    if target.json {
        let all: Vec<Value> = rows
            .iter()
            .map(|(endpoint, reply)| match reply {
                Ok(reply) => reply.body.clone(),
                Err(e) => json!({"endpoint": endpoint, "error": e}),
            })
            .collect();
        println!("{}", Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:>4} {:<9} {:>5} {:>6} {:>9} {:>9} {:>9} {:>8}",
        "node", "id", "role", "term", "leader", "commit", "applied", "last", "lease"
    );
    let mut leader_peers = None;
    let mut failed = false;
    for (endpoint, reply) in &rows {
        let s = match reply {
            Ok(reply) if reply.status.is_success() => &reply.body,
            Ok(reply) => {
                println!("{endpoint:<22} error {}", reply.status);
                failed = true;
                continue;
            }
            Err(e) => {
                println!("{endpoint:<22} unreachable: {e}");
                failed = true;
                continue;
            }
        };
        let lease = s["lease_remaining_ms"]
            .as_u64()
            .map_or("-".to_string(), |ms| format!("{ms}ms"));
        println!(
            "{endpoint:<22} {:>4} {:<9} {:>5} {:>6} {:>9} {:>9} {:>9} {:>8}",
            s["id"].to_string(),
            s["role_name"].as_str().unwrap_or("?"),
            s["term"].to_string(),
            s["leader"].as_u64().map_or("-".into(), |l| l.to_string()),
            s["commit_index"].to_string(),
            s["applied_index"].to_string(),
            s["last_log_index"].to_string(),
            lease
        );
        if s["role_name"] == "leader" {
            leader_peers = Some(s["peers"].clone());
        }
    }
    if let Some(Value::Array(peers)) = leader_peers {
        println!(
            "\nthe leader's peers:\n{:>4} {:<7} {:>9} {:>11} {:>13} {:>8}",
            "id", "kind", "match", "lag entries", "last ack ago", "in sync"
        );
        for p in peers {
            println!(
                "{:>4} {:<7} {:>9} {:>11} {:>13} {:>8}",
                p["id"].to_string(),
                if p["voter"].as_bool() == Some(true) {
                    "voter"
                } else {
                    "learner"
                },
                p["match_index"].to_string(),
                p["lag_entries"].to_string(),
                p["since_last_ack_ms"]
                    .as_u64()
                    .map_or("-".into(), |ms| format!("{ms}ms")),
                if p["in_sync"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_lists_are_refused() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=h:7002").unwrap();
        assert_eq!(peers[&NodeId(2)], "h:7002");
        for bad in ["1", "x=h:1", "0=h:1", "1=h", "1=h:1,1=h:2"] {
            assert!(parse_peers(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn serve_flags_are_checked() {
        let mut args = ServeArgs {
            id: 1,
            listen: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            advertise_http: None,
            data_dir: "/tmp/x".into(),
            peers: "1=127.0.0.1:7001".into(),
            join: false,
            cluster_id: 1,
            election_timeout_ms: 150,
            heartbeat_ms: 30,
            lease_ms: 120,
            clock_drift_ms: 15,
            ack: "quorum".into(),
            snapshot_every: 100,
            snapshot_keep_entries: 10,
            request_timeout_ms: 1000,
            max_key_bytes: 10,
            max_value_bytes: 10,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_min_version: "1.3".into(),
            token_file: None,
            open_status: false,
        };
        assert!(args.options().is_ok());
        args.tls_cert = Some("node.pem".into());
        assert!(args.options().unwrap_err().contains("go together"));
        args.tls_key = Some("node.key".into());
        args.tls_ca = Some("ca.pem".into());
        let options = args.options().unwrap();
        assert_eq!(options.tls.unwrap().ca, PathBuf::from("ca.pem"));
        assert!(!options.allow_tls12);
        args.tls_min_version = "1.2".into();
        assert!(args.options().unwrap().allow_tls12);
        args.tls_ca = None;
        assert!(args.options().is_err());
        args.ack = "most".into();
        assert!(args.options().unwrap_err().contains("--ack"));
        args.ack = "all".into();
        args.id = 0;
        assert!(args.options().is_err());
    }
}
