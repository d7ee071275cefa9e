//! One raft-kv node: its data directory, its Raft node on the TCP transport with the file
//! stores, and its HTTP API.
//!
//! The data directory holds `raft-kv.id` (the cluster id and node id it belongs to, written on
//! first start and checked on every later one), `log/` (a `FileLogStore`, which also locks the
//! directory against a second process) and `snapshots/` (a `FileSnapshotStore`).
//!
//! With [`TlsFiles`] the HTTP API is served over HTTPS only (see `https.rs`) and the peers
//! speak mutual TLS (the transport's [`PeerTls`], from the same files); with
//! [`Tokens`] every request needs a bearer token (see [`crate::auth`]).

use crate::http::{Api, Limits, Security};
use crate::metrics::Metrics;
use crate::store::{Directory, KvCommand, KvStore, NodeAddresses};
use crate::tls::{ServerTls, TlsFiles};
use crate::tokens::Tokens;
use raft_core::node::{Ack, Node, NodeConfig, NodeHandle};
use raft_core::{NodeId, Role};
use raft_net::{PeerTls, Spawner, TcpConfig, TcpTransport, TlsOptions, TokioNet};
use raft_storage::{FileLogStore, FileSnapshotStore};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a node is run: what `raft-kv serve` takes on its command line.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// This node's id (1 or more).
    pub id: NodeId,
    /// Identifies the cluster: nodes of another cluster are refused, and a data directory of
    /// another cluster is not opened.
    pub cluster_id: u64,
    /// Where the Raft transport listens.
    pub listen: String,
    /// Where the HTTP API listens.
    pub http: String,
    /// The HTTP address other nodes and clients are sent to; by default the address bound.
    pub advertise_http: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The Raft addresses of the nodes: on first start (without `join`), exactly the
    /// cluster's voters, this node included.
    pub peers: BTreeMap<NodeId, String>,
    /// Join a running cluster: bootstrap nothing and wait for the leader to add this node.
    pub join: bool,
    /// The protocol's and node's settings; `id` and `voters` are set from the fields above.
    pub node: NodeConfig,
    /// The acknowledgement level of writes that name none.
    pub default_ack: Ack,
    /// Limits on keys and values.
    pub limits: Limits,
    /// `--tls-cert`, `--tls-key`, `--tls-ca`: serve the HTTP API over HTTPS only. The same
    /// files are meant for the Raft transport's mutual TLS.
    pub tls: Option<TlsFiles>,
    /// `--tls-min-version 1.2`: also accept TLS 1.2 on the HTTP API (TLS 1.3 only otherwise).
    pub allow_tls12: bool,
    /// `--token-file`: every request needs a bearer token. It must hold an admin token, which
    /// the node registers its addresses with.
    pub tokens: Option<Tokens>,
    /// `--open-status`: `GET /status` and `GET /metrics` need no token.
    pub open_status: bool,
}

impl ServeOptions {
    /// Defaults for node `id` with the given addresses and directory.
    pub fn new(
        id: NodeId,
        listen: impl Into<String>,
        http: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        peers: BTreeMap<NodeId, String>,
    ) -> ServeOptions {
        ServeOptions {
            id,
            cluster_id: 1,
            listen: listen.into(),
            http: http.into(),
            advertise_http: None,
            data_dir: data_dir.into(),
            peers,
            join: false,
            node: NodeConfig::new(id, []),
            default_ack: Ack::Quorum,
            limits: Limits::default(),
            tls: None,
            allow_tls12: false,
            tokens: None,
            open_status: false,
        }
    }
}

/// The file in a data directory that says whose it is.
const IDENTITY_FILE: &str = "raft-kv.id";

/// The file a running node holds locked, so that a second process cannot open its directory.
const LOCK_FILE: &str = "raft-kv.lock";

/// Whether `dir` holds any file but the stores' lock files: a log or snapshots.
fn holds_data(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|entry| entry.file_name() != "LOCK")
    })
}

/// Takes the data directory `dir` for this process, and checks (or, on first start, writes)
/// whose it is: cluster, node, and whether the node bootstrapped its cluster or joined one.
/// Returns the lock (held while the node runs) and whether the node joined.
///
/// | identity file | log or snapshots | outcome |
/// |---|---|---|
/// | absent | none | first start: written with this node's identity and `join` |
/// | absent | present | refused: the data is someone's, and whose cannot be told |
/// | this cluster and node | any | a restart; `join` is what the first start recorded |
/// | another cluster or node | any | refused |
fn claim_data_dir(
    dir: &Path,
    cluster_id: u64,
    id: NodeId,
    join: bool,
) -> Result<(std::fs::File, bool), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| format!("cannot open {}: {e}", dir.join(LOCK_FILE).display()))?;
    lock.try_lock().map_err(|_| {
        format!(
            "data directory {} is in use by another running node",
            dir.display()
        )
    })?;
    let path = dir.join(IDENTITY_FILE);
    let ours = |joined: bool| {
        let start = if joined { "join" } else { "bootstrap" };
        format!(
            "cluster_id={cluster_id}\nnode_id={}\nstarted={start}\n",
            id.0
        )
    };
    match std::fs::read_to_string(&path) {
        Ok(found) if found == ours(false) => Ok((lock, false)),
        Ok(found) if found == ours(true) => Ok((lock, true)),
        Ok(found) => Err(format!(
            "data directory {} belongs to another node or cluster ({}), not cluster {cluster_id} node {}",
            dir.display(),
            found.trim().replace('\n', ", "),
            id.0
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if holds_data(&dir.join("log")) || holds_data(&dir.join("snapshots")) {
                return Err(format!(
                    "data directory {} holds a log or snapshots but no {IDENTITY_FILE}: refusing to guess whose they are",
                    dir.display()
                ));
            }
            let temporary = dir.join(format!("{IDENTITY_FILE}.{}.tmp", std::process::id()));
            std::fs::write(&temporary, ours(join))
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &path))
                .and_then(|()| std::fs::File::open(dir)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((lock, join))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Why a token file without an admin token is refused.
const NO_ADMIN_TOKEN: &str = "--token-file has no admin token: a node registers its addresses with its leader (POST /cluster/nodes) with the admin token";

/// A running node.
pub struct Server {
    /// Held locked while the node runs.
    _lock: std::fs::File,
    node: NodeHandle<KvStore>,
    transport: TcpTransport<TokioNet>,
    directory: Directory,
    raft_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    register_task: JoinHandle<()>,
    /// Reloads the HTTPS certificate when its files change; `None` over plain HTTP.
    reload_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.node.id())
            .field("raft_addr", &self.raft_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the data directory, starts the node and its HTTP API. Every failure is a
    /// one-line message.
    pub async fn start(options: ServeOptions) -> Result<Server, String> {
        let ServeOptions {
            id,
            cluster_id,
            listen,
            http,
            advertise_http,
            data_dir,
            peers,
            join,
            node: mut config,
            default_ack,
            limits,
            tls,
            allow_tls12,
            tokens,
            open_status,
        } = options;
        if id.0 == 0 {
            return Err("node id 0 is reserved; ids start at 1".into());
        }
        // The security flags are checked before the data directory is touched, like the
        // others.
        let registration_token = match &tokens {
            None => None,
            Some(tokens) => match tokens.get(crate::tokens::Role::Admin) {
                Some(admin) => Some(admin.to_string()),
                None => return Err(NO_ADMIN_TOKEN.into()),
            },
        };
        let (server_tls, registrar_tls, peer_tls) = match &tls {
            None => (None, None, None),
            Some(files) => {
                let server = ServerTls::load(files, allow_tls12).await?;
                let client = crate::tls::client_config(&files.ca, None).await?;
                let mut options = TlsOptions::default();
                options.allow_tls12 = allow_tls12;
                let peers = PeerTls::load(files.clone(), options)
                    .await
                    .map_err(|e| format!("--tls-cert/--tls-key/--tls-ca for the peers: {e}"))?;
                if !peers.names_node(id) {
                    return Err(format!(
                        "--tls-cert {} does not name this node: a peer certificate must carry the DNS name {} (see `raft-kv certs`)",
                        files.cert.display(),
                        raft_net::node_name(id)
                    ));
                }
                (Some(server), Some(client), Some(peers))
            }
        };
        let https = server_tls.is_some();
        let registrar = crate::tls::http_client_builder(registrar_tls)?
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        config.raft.id = id;
        // Checked before the data directory is touched, so that a bad flag leaves no trace;
        // checked again below once the voters are known.
        config.validate().map_err(|e| e.to_string())?;
        let dir = data_dir.clone();
        let (lock, join) =
            tokio::task::spawn_blocking(move || claim_data_dir(&dir, cluster_id, id, join))
                .await
                .map_err(|e| e.to_string())??;
        // A node that joined a running cluster never bootstraps one, whatever its later
        // command lines say. On a restart the data directory holds the membership and --peers
        // only gives addresses; on first start, --peers is the cluster's first voters.
        if !join && !peers.contains_key(&id) {
            return Err(format!(
                "--peers must name this node ({}) and, on first start, every voter; start with --join to join a running cluster",
                id.0
            ));
        }
        config.voters = if join {
            BTreeSet::new()
        } else {
            peers.keys().copied().collect()
        };
        config.validate().map_err(|e| e.to_string())?;
        let log = FileLogStore::open(data_dir.join("log"))
            .await
            .map_err(|e| {
                format!(
                    "cannot open the log in {} (is another node running on it?): {e}",
                    data_dir.display()
                )
            })?;
        let snapshots = FileSnapshotStore::open(data_dir.join("snapshots"))
            .await
            .map_err(|e| format!("cannot open the snapshots in {}: {e}", data_dir.display()))?;

        let others = peers
            .iter()
            .filter(|(p, _)| **p != id)
            .map(|(p, a)| (*p, a.clone()));
        let mut tcp = TcpConfig::new(id, cluster_id, listen.clone(), others);
        tcp.tls = peer_tls.clone();
        let (inbox, inbound) = raft_core::node::inbox(1 << 16);
        let transport = TcpTransport::start(TokioNet, tcp, inbox, Spawner::tokio())
            .await
            .map_err(|e| format!("cannot listen for Raft on {listen}: {e}"))?;
        let raft_addr = transport.local_addr();

        let directory = Directory::default();
        let store = KvStore::new(directory.clone());
        let node = Node::start(config, store, log, snapshots, transport.clone(), inbound).await;
        let node = match node {
            Ok(node) => node,
            Err(e) => {
                transport.shutdown().await;
                return Err(format!("cannot start the node: {e}"));
            }
        };
        // The recovered membership, once the node has published it.
        let mut published = node.watch_status();
        let recovered = tokio::time::timeout(
            Duration::from_secs(1),
            published.wait_for(|s| s.membership.is_some()),
        )
        .await;
        let membership = match recovered {
            Ok(Ok(status)) => status.membership.clone(),
            _ => None,
        };
        let metrics = Metrics::new();
        {
            // Shut down explicitly on every path, so this clone keeps nothing alive.
            let transport = transport.clone();
            metrics.watch_transport(move || transport.stats().inbound);
        }
        metrics.start_from(&node.status());
        if let Some(membership) = membership {
            let configured: BTreeSet<NodeId> = peers.keys().copied().collect();
            if !join && membership.all_voters() != configured {
                tracing::warn!(
                    voters = ?membership.all_voters(),
                    ?configured,
                    "the data directory's voters differ from --peers; --peers only gives addresses now"
                );
            }
        }

        let listener = match tokio::net::TcpListener::bind(&http).await {
            Ok(listener) => listener,
            Err(e) => {
                node.shutdown().await;
                transport.shutdown().await;
                return Err(format!("cannot listen for HTTP on {http}: {e}"));
            }
        };
        let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let guarded = tokens.is_some();
        let api = Api::new(
            node.clone(),
            directory.clone(),
            metrics.clone(),
            limits,
            default_ack,
        )
        .with_security(Security {
            tokens,
            open_status,
            https,
        });
        let (stop, mut stopped) = watch::channel(false);
        let http_stopped = stop.subscribe();
        let router = api.router();
        let (http_task, reload_task) = match &server_tls {
            None => {
                let http_task = tokio::spawn(crate::http1::serve(listener, router, http_stopped));
                (http_task, None)
            }
            Some(server_tls) => {
                let served = crate::https::serve(
                    listener,
                    server_tls.acceptor(),
                    router,
                    metrics.clone(),
                    http_stopped,
                );
                let reload = server_tls.spawn_reloader(
                    metrics.clone(),
                    peer_tls.clone().map(|tls| (tls, id)),
                    stop.subscribe(),
                );
                (tokio::spawn(served), Some(reload))
            }
        };
        let me = NodeAddresses {
            raft: peers
                .get(&id)
                .cloned()
                .unwrap_or_else(|| raft_addr.to_string()),
            http: advertise_http.unwrap_or_else(|| http_addr.to_string()),
        };
        let registrar = Registrar {
            client: registrar,
            scheme: if https { "https" } else { "http" },
            token: registration_token,
        };
        let register_task = tokio::spawn({
            let (node, directory) = (node.clone(), directory.clone());
            async move {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => {}
                    () = keep_registered(node, directory, me, metrics, registrar) => {}
                }
            }
        });
        tracing::info!(
            id = id.0,
            %raft_addr,
            %http_addr,
            https,
            tokens = guarded,
            "raft-kv node started"
        );
        Ok(Server {
            _lock: lock,
            node,
            transport,
            directory,
            raft_addr,
            http_addr,
            stop,
            http_task,
            register_task,
            reload_task,
        })
    }

    /// The node's handle.
    pub fn node(&self) -> &NodeHandle<KvStore> {
        &self.node
    }

    /// Where each node listens, as the replicated state says.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The address the Raft transport listens on.
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_addr
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Resolves when the node has stopped on its own: after a storage failure, which stops a
    /// node rather than risk acknowledging writes it cannot make durable.
    pub async fn stopped(&self) {
        let status = self.node.watch_status();
        while status.has_changed().is_ok() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the way a crash would, as far as one process can: the node and its transport
    /// stop first, so requests in flight are cut off (answered `503 shutting_down`, their
    /// outcome unknown) rather than completed. Nothing is lost that was acknowledged: the log
    /// is on disk.
    pub async fn kill(self) {
        let _ = self.stop.send(true);
        self.register_task.abort();
        if let Some(reload) = &self.reload_task {
            reload.abort();
        }
        self.node.shutdown().await;
        self.transport.shutdown().await;
        self.http_task.abort();
    }

    /// Stops cleanly: stops taking HTTP connections, hands leadership to the most caught-up
    /// in-sync voter if this node leads (so that the cluster need not wait out an election
    /// timeout), gives the requests in flight up to [`DRAIN_TIMEOUT`] to be answered, then
    /// stops the node and the transport.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.register_task.abort();
        if let Some(reload) = &self.reload_task {
            reload.abort();
        }
        self.hand_over().await;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut self.http_task)
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after the drain timeout were cut off");
            self.http_task.abort();
        }
        self.node.shutdown().await;
        self.transport.shutdown().await;
    }

    /// If this node leads, asks the most caught-up in-sync voter to take over, and waits up to
    /// a second for it to.
    async fn hand_over(&self) {
        let status = self.node.status();
        if status.role != Role::Leader {
            return;
        }
        let successor = status
            .peers
            .iter()
            .filter(|p| p.voter && p.in_sync)
            .max_by_key(|p| p.match_index)
            .map(|p| p.id);
        let Some(successor) = successor else {
            return;
        };
        if self.node.transfer_leadership(successor).await.is_err() {
            return;
        }
        let mut status = self.node.watch_status();
        let stepped_down = status.wait_for(|s| s.role != Role::Leader);
        let _ = tokio::time::timeout(Duration::from_secs(1), stepped_down).await;
    }
}

/// How long a clean shutdown waits for the HTTP requests in flight: a slow or stalled client
/// must not keep a node (perhaps the leader) from stopping.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a follower asks its leader to register it: over the scheme the cluster's HTTP API
/// speaks, with the admin token if the API needs tokens.
struct Registrar {
    client: reqwest::Client,
    scheme: &'static str,
    token: Option<String>,
}

/// Keeps this node's addresses in the replicated directory, so that every node can send
/// clients to it when it leads: the leader proposes its own; a follower asks its leader.
async fn keep_registered(
    node: NodeHandle<KvStore>,
    directory: Directory,
    me: NodeAddresses,
    metrics: Arc<Metrics>,
    registrar: Registrar,
) {
    // A look every 100 ms, not at every status change: under load the status changes every
    // millisecond, and a new leader's entry may wait a tenth of a second.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // A refused token is said once as a warning (it will not cure itself), then quietly.
    let mut warned = false;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = node.status();
        metrics.follow(&current);
        let member = current
            .membership
            .as_ref()
            .is_some_and(|m| m.contains(current.id));
        if !member || directory.get(current.id).as_ref() == Some(&me) {
            continue;
        }
        let register = KvCommand::Register {
            id: current.id,
            raft: me.raft.clone(),
            http: me.http.clone(),
        };
        if current.role == Role::Leader {
            if let Err(e) = node.propose(register, Ack::Quorum).await {
                tracing::debug!(error = %e, "registering this node's addresses failed; will retry");
            }
            continue;
        }
        let Some(leader) = current.leader.and_then(|l| directory.get(l)) else {
            continue;
        };
        let body = serde_json::json!({"id": current.id.0, "raft": me.raft, "http": me.http});
        let url = format!("{}://{}/cluster/nodes", registrar.scheme, leader.http);
        let mut request = registrar
            .client
            .post(url)
            .json(&body)
            .timeout(Duration::from_secs(2));
        if let Some(token) = &registrar.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Err(e) => {
                let e = crate::client::describe(&e);
                tracing::debug!(error = %e, "asking the leader to register this node failed; will retry");
            }
            Ok(answer) if !answer.status().is_success() => {
                let status = answer.status();
                let refused = matches!(status.as_u16(), 401 | 403);
                if refused && !warned {
                    warned = true;
                    tracing::warn!(%status, "the leader refused this node's admin token: check that every node has the same --token-file; will retry");
                } else {
                    tracing::debug!(%status, "the leader did not register this node; will retry");
                }
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_belongs_to_one_node_of_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, joined) = claim_data_dir(dir.path(), 7, NodeId(1), true).unwrap();
        assert!(joined);
        let busy = claim_data_dir(dir.path(), 7, NodeId(1), true).unwrap_err();
        assert!(busy.contains("in use"), "{busy}");
        drop(lock);
        // A restart keeps what the first start recorded.
        let (lock, joined) = claim_data_dir(dir.path(), 7, NodeId(1), false).unwrap();
        assert!(joined, "a node that joined never bootstraps");
        drop(lock);
        let other_node = claim_data_dir(dir.path(), 7, NodeId(2), false).unwrap_err();
        assert!(other_node.contains("belongs to another"), "{other_node}");
        let other_cluster = claim_data_dir(dir.path(), 8, NodeId(1), false).unwrap_err();
        assert!(other_cluster.contains("cluster_id=7"), "{other_cluster}");
        // Data without an identity is nobody's to take.
        let orphan = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(orphan.path().join("log")).unwrap();
        std::fs::write(orphan.path().join("log/LOCK"), b"").unwrap();
        claim_data_dir(orphan.path(), 7, NodeId(1), false).unwrap();
        std::fs::remove_file(orphan.path().join(IDENTITY_FILE)).unwrap();
        std::fs::write(orphan.path().join("log/segment"), b"x").unwrap();
        let refused = claim_data_dir(orphan.path(), 7, NodeId(1), false).unwrap_err();
        assert!(refused.contains("refusing to guess"), "{refused}");
    }
}
