//! What the process-level tests share: free ports, `raft-kv` child processes that are killed
//! and reaped when dropped (a node's stderr is printed when its test fails), polling
//! `GET /status` for a leader, and a workload of concurrent clients that records every
//! operation in a linearizability history.

#![allow(dead_code)] // each test file uses a part of this

use raft_kv::client::{Client, Reply};
use raft_tests::linearizability::{History, Operation, OperationId, Response, Verdict, check};
// The workload's random numbers.
use raft_tests::rng::SplitMix64 as Rng;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// The `raft-kv` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// `n` ports that were free on 127.0.0.1 a moment ago, none of them handed out before in this
/// process (the kernel readily gives a port just released to the next `bind`, so a port chosen
/// for one node could otherwise be chosen again for another before the first binds it).
pub fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    // Every listener is held until the end, so that each bind gets a port not bound yet.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        assert!(held.len() < 1000, "no free port found");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    ports
}

/// A free `127.0.0.1:PORT`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_ports(1)[0])
}

/// The last `lines` lines of a text file (or why it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// A child process, killed (SIGKILL) and reaped when dropped, with its stdout and stderr in
/// files.
pub struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
    /// Where its stdout goes.
    pub stdout: PathBuf,
    /// Where its stderr goes.
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts `raft-kv args…`, appending its output to the two files.
    pub fn spawn(args: &[String], stdout: &Path, stderr: &Path) -> Proc {
        let child = Command::new(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(append(stdout))
            .stderr(append(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Proc {
            child,
            exited: None,
            stdout: stdout.to_path_buf(),
            stderr: stderr.to_path_buf(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, `"TERM"`) with `kill(1)`.
    pub fn signal(&mut self, name: &str) {
        assert!(
            self.exit_status().is_none(),
            "signal {name} to an exited process"
        );
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Its exit status, if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits up to `within` for it to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// What it wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it wrote on stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `raft-kv args…` to completion in `dir`'s files, killing it after `within`.
pub fn run(dir: &Path, args: &[&str], within: Duration) -> Finished {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let stdout = dir.join(format!("run-{n}.out"));
    let stderr = dir.join(format!("run-{n}.err"));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut proc = Proc::spawn(&args, &stdout, &stderr);
    let status = proc.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "raft-kv {args:?} still running after {within:?}\nstdout:\n{}\nstderr:\n{}",
            tail(&stdout, 40),
            tail(&stderr, 40)
        )
    });
    Finished {
        status,
        stdout: proc.stdout_text(),
        stderr: proc.stderr_text(),
    }
}

/// [`run`], off the async runtime's threads.
pub async fn run_async(dir: &Path, args: &[&str], within: Duration) -> Finished {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, &args, within)
    })
    .await
    .expect("the command's thread")
}

/// Runs `raft-kv args…` (a client subcommand, `certs`...), which must succeed without a
/// panic, and returns its stdout.
pub async fn ok(dir: &Path, args: &[&str]) -> String {
    let finished = run_async(dir, args, Duration::from_secs(20)).await;
    assert!(
        finished.status.success(),
        "raft-kv {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    finished.stdout
}

/// One `raft-kv serve` node: its addresses, data directory and command line, and its process
/// while it runs.
pub struct Node {
    /// Its id.
    pub id: u64,
    /// Its Raft address.
    pub raft: String,
    /// Its HTTP address.
    pub http: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its stderr, across restarts.
    pub log: PathBuf,
    /// The arguments of `raft-kv`.
    pub args: Vec<String>,
    /// Its HTTP API speaks HTTPS.
    pub https: bool,
    proc: Option<Proc>,
}

impl Node {
    /// Starts (or restarts) it with the same arguments.
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "node {} already runs", self.id);
        let _ = writeln!(append(&self.log), "==== raft-kv {}", self.args.join(" "));
        let stdout = self.log.with_extension("out");
        self.proc = Some(Proc::spawn(&self.args, &stdout, &self.log));
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// SIGTERM, and checks that it exits 0 within `within`; the process is reaped. Returns how
    /// long the stop took.
    pub fn terminate(&mut self, within: Duration) -> Duration {
        let asked = std::time::Instant::now();
        self.proc().signal("TERM");
        let status = self.proc().wait_exit(within);
        let took = asked.elapsed();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "node {}: exit within {within:?} of SIGTERM: {status:?}",
            self.id
        );
        self.kill();
        took
    }

    /// Its running process.
    pub fn proc(&mut self) -> &mut Proc {
        let id = self.id;
        self.proc
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// What it wrote on stderr since it was last started.
    pub fn log_of_this_run(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match log.rfind("==== raft-kv ") {
            Some(start) => log[start..].to_string(),
            None => log,
        }
    }

    /// Its base URL.
    pub fn base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }
}

/// A set of nodes in one temporary directory. Every process is killed when it is dropped; if
/// that happens because the test panicked, the end of each node's stderr is printed first.
pub struct Cluster {
    /// The nodes, by id.
    pub nodes: BTreeMap<u64, Node>,
    /// Holds the data directories and logs.
    pub dir: TempDir,
    probe: Client,
    /// The nodes defined from now on speak HTTPS.
    https: bool,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        let probe = Client::new(Vec::new())
            .expect("client")
            .with_timeout(Duration::from_millis(500));
        Cluster {
            nodes: BTreeMap::new(),
            dir: tempfile::tempdir().expect("temporary directory"),
            probe,
            https: false,
        }
    }

    /// Makes the cluster's own requests (statuses, the waits) with `probe`, which must have
    /// the tokens and TLS configuration the nodes need; the nodes defined from now on speak
    /// HTTPS if `https`.
    pub fn set_probe(&mut self, probe: Client, https: bool) {
        self.probe = probe.with_timeout(Duration::from_millis(500));
        self.https = https;
    }

    /// Starts nodes `1..=n` as the voters of a new cluster, each with the `extra` flags.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster::new();
        let ids: Vec<u64> = (1..=n).collect();
        for &id in &ids {
            cluster.define(id, extra);
        }
        let peers = cluster.peers(&ids);
        for &id in &ids {
            let node = cluster.nodes.get_mut(&id).expect("defined");
            node.args.extend(["--peers".to_string(), peers.clone()]);
            node.start();
        }
        cluster
    }

    /// Chooses addresses for node `id` and writes its `serve` command line (without `--peers`,
    /// which the caller adds), without starting it.
    pub fn define(&mut self, id: u64, extra: &[&str]) -> &mut Node {
        let ports = free_ports(2);
        let raft = format!("127.0.0.1:{}", ports[0]);
        let http = format!("127.0.0.1:{}", ports[1]);
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            raft.clone(),
            "--http".into(),
            http.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        // Faster than `serve`'s defaults (made for real disks and networks), so that a
        // failover fits in a test, and slow enough that an fsync stall of this machine's disk
        // (up to ~180 ms measured) does not cost the leader its office.
        for (flag, value) in [
            ("--election-timeout-ms", "300"),
            ("--heartbeat-ms", "50"),
            ("--lease-ms", "200"),
            ("--clock-drift-ms", "30"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let node = Node {
            id,
            raft,
            http,
            data_dir,
            log: self.dir.path().join(format!("node-{id}.log")),
            args,
            https: self.https,
            proc: None,
        };
        self.nodes.insert(id, node);
        self.nodes.get_mut(&id).expect("just inserted")
    }

    /// `--peers` for these nodes: `1=HOST:PORT,2=HOST:PORT`.
    pub fn peers(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|id| format!("{id}={}", self.nodes[id].raft))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`.
    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every node's HTTP address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.http.clone()).collect()
    }

    /// A client of every node, with short timeouts.
    pub fn client(&self) -> Client {
        Client::new(self.endpoints())
            .expect("client")
            .with_timeout(Duration::from_secs(2))
            .with_patience(Duration::from_secs(2))
    }

    /// Node `id`'s `GET /status`, if it answers within half a second.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let base = self.nodes[&id].base();
        match self
            .probe
            .send_to(&base, Method::GET, "/status", None)
            .await
        {
            Ok(reply) if reply.status.is_success() => Some(reply.body),
            _ => None,
        }
    }

    /// Waits until node `id` answers `GET /status`; panics if it exits or takes too long. A
    /// node that could not bind its ports (taken for a moment as the local port of some
    /// connection) is started again.
    pub async fn wait_up(&mut self, id: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.status(id).await {
                return status;
            }
            if let Some(exit) = self.node(id).proc().exit_status() {
                let log = self.node(id).log_of_this_run();
                let retry = log.contains("Address already in use") && Instant::now() < deadline;
                assert!(
                    retry,
                    "node {id} exited ({exit}) before it served HTTP:\n{log}"
                );
                eprintln!("node {id} found a port in use; starting it again");
                self.node(id).kill();
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.node(id).start();
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not answer within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first node of `among` whose status says it leads, waiting up to `within`.
    pub async fn wait_leader(&self, among: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            for &id in among {
                if let Some(status) = self.status(id).await
                    && status["role_name"] == "leader"
                {
                    return status["id"].as_u64().expect("status has an id");
                }
            }
            assert!(
                Instant::now() < deadline,
                "none of nodes {among:?} led within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nodes `1..=n` answer, one of them leads, and every member is registered
    /// (as a follower sees it); returns the leader and that follower.
    pub async fn wait_ready(&mut self, n: u64) -> (u64, u64) {
        for id in 1..=n {
            self.wait_up(id, Duration::from_secs(10)).await;
        }
        let ids: Vec<u64> = (1..=n).collect();
        let leader = self.wait_leader(&ids, Duration::from_secs(10)).await;
        let follower = ids
            .iter()
            .copied()
            .find(|&id| id != leader)
            .unwrap_or(leader);
        self.wait_registered(follower, Duration::from_secs(10))
            .await;
        (leader, follower)
    }

    /// Waits until node `via`'s `GET /cluster/members` gives every member both addresses (every
    /// node registered itself, so that any node can redirect clients to any leader).
    pub async fn wait_registered(&self, via: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let base = self.nodes[&via].base();
            let reply = self
                .probe
                .send_to(&base, Method::GET, "/cluster/members", None)
                .await;
            if let Ok(reply) = reply
                && reply.status.is_success()
                && let Some(nodes) = reply.body["nodes"].as_object()
                && nodes
                    .values()
                    .all(|n| n["raft"].is_string() && n["http"].is_string())
            {
                return reply.body;
            }
            assert!(
                Instant::now() < deadline,
                "the members were not all registered within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id`'s state machine has applied `index`, and returns its status.
    pub async fn wait_applied(&self, id: u64, index: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(status) = self.status(id).await {
                if status["applied_index"].as_u64() >= Some(index) {
                    return status;
                }
                last = Some(status);
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not apply index {index} within {within:?}; last status: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` follows another node in term `min_term` or later, and returns its
    /// status.
    pub async fn wait_follower(&self, id: u64, min_term: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(status) = self.status(id).await {
                let leader = status["leader"].as_u64();
                if status["role_name"] == "follower"
                    && leader.is_some()
                    && leader != Some(id)
                    && status["term"].as_u64() >= Some(min_term)
                {
                    return status;
                }
                last = Some(status);
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not follow a leader of term {min_term} or later within {within:?}; last status: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The commit index of the node leading now.
    pub async fn leader_commit(&self, among: &[u64]) -> u64 {
        let leader = self.wait_leader(among, Duration::from_secs(5)).await;
        let status = self.status(leader).await.expect("the leader's status");
        status["commit_index"].as_u64().expect("commit_index")
    }

    /// Prints the end of every node's stderr.
    pub fn print_logs(&self) {
        for node in self.nodes.values() {
            eprintln!(
                "---- node {} ({}), end of stderr:\n{}",
                node.id,
                node.log.display(),
                tail(&node.log, 60)
            );
        }
    }
}

impl Default for Cluster {
    fn default() -> Cluster {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for node in self.nodes.values_mut() {
            node.kill();
        }
    }
}

/// How a request ended, as far as its effect goes.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A 2xx answer, with its body.
    Done(Value),
    /// An answer that says the request had no effect (or a request that was never sent).
    NoEffect(String),
    /// Its effect is unknown: a write may have taken effect, or may still.
    Unknown(String),
}

/// Sorts an answer by what it says about the request's effect, as the error table of the
/// HTTP API (`raft_kv::http`) and `Client::call` define it.
pub fn classify(result: Result<Reply, String>) -> Outcome {
    match result {
        Ok(reply) if reply.status.is_success() => Outcome::Done(reply.body),
        Ok(reply) => {
            let code = reply.error().unwrap_or("").to_string();
            let what = format!("{} {code}", reply.status.as_u16());
            let no_effect = match reply.status.as_u16() {
                307 | 400 | 401 | 403 | 409 | 413 => true,
                503 => matches!(
                    code.as_str(),
                    "no_leader"
                        | "not_enough_replicas"
                        | "transfer_in_progress"
                        | "overloaded"
                        | "too_stale"
                ),
                _ => false,
            };
            if no_effect {
                Outcome::NoEffect(what)
            } else {
                Outcome::Unknown(what)
            }
        }
        Err(e) if e.contains("outcome unknown") => Outcome::Unknown(e),
        Err(e) => Outcome::NoEffect(e),
    }
}

/// Records operations into a history, with times in milliseconds since it was created. Every
/// event is recorded under one lock, with the time read under it, so the history orders events
/// as they happened (equal times in the order recorded).
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
    /// How many answers of each kind (`"put ok"`, `"get no effect: 503 no_leader"`, …) came
    /// back.
    pub tally: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            history: Mutex::new(History::new()),
            tally: Mutex::new(BTreeMap::new()),
        })
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).expect("milliseconds fit")
    }

    /// Records a call, now.
    pub fn call(&self, client: u64, operation: Operation) -> OperationId {
        let mut history = self.history();
        let now = self.now();
        history.call(client, operation, now)
    }

    /// Records an answer, now.
    pub fn complete(&self, id: OperationId, response: Response) {
        let mut history = self.history();
        let now = self.now();
        history.complete(id, response, now);
    }

    /// Records that `id` may or may not have taken effect.
    pub fn time_out(&self, id: OperationId) {
        self.history().time_out(id);
    }

    /// Records that `id` had no effect.
    pub fn fail(&self, id: OperationId) {
        self.history().fail(id);
    }

    /// Counts one answer of kind `what`.
    pub fn count(&self, what: impl Into<String>) {
        *self
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what.into())
            .or_default() += 1;
    }

    /// How many answers of kind `what` came back.
    pub fn counted(&self, what: &str) -> u64 {
        self.tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    /// Records how `outcome` ended operation `id`; `done` turns a 2xx body into the response.
    /// Returns the response, if any.
    pub fn finish(
        &self,
        id: OperationId,
        op: &str,
        outcome: Outcome,
        done: impl FnOnce(&Value) -> Response,
    ) -> Option<Response> {
        match outcome {
            Outcome::Done(body) => {
                let response = done(&body);
                self.complete(id, response.clone());
                self.count(format!("{op} ok"));
                Some(response)
            }
            Outcome::NoEffect(what) => {
                self.fail(id);
                self.count(format!("{op} no effect: {}", short(&what)));
                None
            }
            Outcome::Unknown(what) => {
                self.time_out(id);
                self.count(format!("{op} unknown: {}", short(&what)));
                None
            }
        }
    }

    /// Checks the history with raft-sim's checker; panics with its counterexample if it is not
    /// linearizable.
    pub fn assert_linearizable(&self) {
        let history = self.history().clone();
        let started = Instant::now();
        let result = check(&history);
        eprintln!(
            "checked the history in {:?}: {}",
            started.elapsed(),
            match &result {
                Verdict::Linearizable => "linearizable",
                Verdict::NotLinearizable(_) => "VIOLATION",
                Verdict::Undecided { .. } => "undecided",
            }
        );
        self.print_tally();
        assert!(
            result.is_linearizable(),
            "the history is not linearizable:\n{result}"
        );
    }

    /// Prints the tally of answers.
    pub fn print_tally(&self) {
        let tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        for (what, n) in tally.iter() {
            eprintln!("{n:>7}  {what}");
        }
    }
}

/// The kind of an error, without the parts that differ between requests (ports, details).
fn short(what: &str) -> String {
    if what.contains("outcome unknown") {
        "no answer (outcome unknown)".into()
    } else if what.starts_with("http://") {
        "not sent (no node answered or none led)".into()
    } else {
        what.to_string()
    }
}

/// The value in a `GET /kv/{key}` answer.
pub fn read_value(body: &Value) -> Response {
    Response::Value(body["value"].as_str().map(str::to_owned))
}

/// What a workload does.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients.
    pub clients: u64,
    /// Keys, `k0`, `k1`, …
    pub keys: u64,
    /// Nodes' HTTP addresses to send `?consistency=lease` reads to directly (one node each,
    /// no redirects); none if empty.
    pub lease_targets: Vec<String>,
    /// A pause between a client's requests.
    pub pause: Duration,
}

impl LoadOptions {
    /// `clients` clients on `keys` keys, no lease reads, a short pause.
    pub fn new(clients: u64, keys: u64) -> LoadOptions {
        LoadOptions {
            clients,
            keys,
            lease_targets: Vec::new(),
            pause: Duration::from_millis(2),
        }
    }

    /// The keys.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys).map(|k| format!("k{k}")).collect()
    }
}

/// Concurrent clients doing puts, linearizable gets, compare-and-swaps and a few deletes (and
/// lease reads, if asked) through a [`Client`] of the given nodes, recording everything.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A client with the timeouts the workloads use: an answer within 1.5 s, and 2 s of retrying
/// while no node answers or none leads.
pub fn load_client(endpoints: Vec<String>) -> Client {
    Client::new(endpoints)
        .expect("client")
        .with_timeout(Duration::from_millis(1500))
        .with_patience(Duration::from_secs(2))
}

impl Load {
    /// Starts the clients.
    pub fn start(endpoints: Vec<String>, options: LoadOptions, recorder: Arc<Recorder>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (1..=options.clients)
            .map(|client| {
                let worker = Worker {
                    id: client,
                    client: load_client(endpoints.clone()),
                    options: options.clone(),
                    recorder: recorder.clone(),
                    stop: stop.clone(),
                    rng: Rng::new(client.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ seed()),
                    seen: BTreeMap::new(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients and waits (up to 10 s) for their last requests; one still in flight
    /// after that stays pending in the history, which treats it as timed out.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if let Ok(joined) = tokio::time::timeout_at(deadline, task).await {
                joined.expect("a client task panicked");
            } else {
                abort.abort();
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A seed that differs between runs (printed by the tests that use it, to replay a failure's
/// sequence of operations, though not its timing).
pub fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("RAFT_KV_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("workload seed {seed} (set RAFT_KV_TEST_SEED to repeat it)");
        seed
    })
}

struct Worker {
    id: u64,
    client: Client,
    options: LoadOptions,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    rng: Rng,
    /// The value this client last saw at each key: what its swaps expect.
    seen: BTreeMap<String, Option<String>>,
}

impl Worker {
    async fn run(mut self) {
        let mut sequence = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            sequence += 1;
            let key = format!("k{}", self.rng.range(0, self.options.keys));
            let value = format!("c{}-{sequence}", self.id);
            match self.rng.range(0, 100) {
                0..35 => self.put(key, value).await,
                35..60 => self.get(key).await,
                60..80 => self.cas(key, value).await,
                80..85 => self.delete(key).await,
                _ if !self.options.lease_targets.is_empty() => self.lease_get(key).await,
                _ => self.cas(key, value).await,
            }
            tokio::time::sleep(self.options.pause).await;
        }
    }

    async fn put(&mut self, key: String, value: String) {
        let op = self.recorder.call(self.id, Operation::put(&key, &value));
        let body = json!({"value": value});
        let path = format!("/kv/{key}");
        let result = self.client.call(Method::PUT, &path, Some(&body)).await;
        let outcome = classify(result);
        if self
            .recorder
            .finish(op, "put", outcome, |_| Response::Done)
            .is_some()
        {
            self.seen.insert(key, Some(value));
        }
    }

    async fn get(&mut self, key: String) {
        let op = self.recorder.call(self.id, Operation::get(&key));
        let path = format!("/kv/{key}");
        let result = self.client.call(Method::GET, &path, None).await;
        let outcome = classify(result);
        if let Some(Response::Value(v)) = self.recorder.finish(op, "get", outcome, read_value) {
            self.seen.insert(key, v);
        }
    }

    async fn cas(&mut self, key: String, value: String) {
        let expect = self.seen.get(&key).cloned().flatten();
        let operation = Operation::cas(&key, expect.as_deref(), &value);
        let op = self.recorder.call(self.id, operation);
        let body = json!({"expect": expect, "value": value});
        let path = format!("/kv/{key}/cas");
        let result = self.client.call(Method::POST, &path, Some(&body)).await;
        let done = self.recorder.finish(op, "cas", classify(result), |b| {
            let swapped = b["ok"].as_bool().expect("a swap answers ok");
            Response::Cas {
                swapped,
                current: b["value"].as_str().map(str::to_owned),
            }
        });
        if let Some(Response::Cas { swapped, current }) = done {
            self.seen
                .insert(key, if swapped { Some(value) } else { current });
        }
    }

    async fn delete(&mut self, key: String) {
        let op = self.recorder.call(self.id, Operation::delete(&key));
        let path = format!("/kv/{key}");
        let result = self.client.call(Method::DELETE, &path, None).await;
        let outcome = classify(result);
        if self
            .recorder
            .finish(op, "delete", outcome, |_| Response::Done)
            .is_some()
        {
            self.seen.insert(key, None);
        }
    }

    /// A lease read sent to one node, which answers it only if it holds the lease.
    async fn lease_get(&mut self, key: String) {
        let targets = &self.options.lease_targets;
        let target = format!(
            "http://{}",
            targets[self.rng.range(0, targets.len() as u64) as usize]
        );
        let op = self.recorder.call(self.id, Operation::get(&key));
        let path = format!("/kv/{key}?consistency=lease");
        let result = self.client.send_to(&target, Method::GET, &path, None).await;
        // A read changes nothing: however it failed, it is left out.
        let outcome = match result {
            Ok(reply) => classify(Ok(reply)),
            Err(e) => Outcome::Unknown(format!("outcome unknown: {e}")),
        };
        if let Some(Response::Value(v)) = self.recorder.finish(op, "lease get", outcome, read_value)
        {
            self.seen.insert(key, v);
        }
    }
}

/// Reads every key back with linearizable reads, recorded as client 0, retrying each until it
/// is answered (up to 10 s); returns the values.
pub async fn read_back(
    client: &Client,
    keys: &[String],
    recorder: &Recorder,
) -> BTreeMap<String, Option<String>> {
    let mut values = BTreeMap::new();
    for key in keys {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let op = recorder.call(0, Operation::get(key));
            let result = client.call(Method::GET, &format!("/kv/{key}"), None).await;
            if let Some(Response::Value(v)) =
                recorder.finish(op, "final get", classify(result), read_value)
            {
                values.insert(key.clone(), v);
                break;
            }
            assert!(Instant::now() < deadline, "could not read {key} back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    values
}

/// Asserts that node `id` holds `values` (read with `?consistency=stale`, so from its own
/// state machine, after it has caught up).
pub async fn assert_holds(cluster: &Cluster, id: u64, values: &BTreeMap<String, Option<String>>) {
    let base = cluster.nodes[&id].base();
    let client = cluster.client();
    for (key, value) in values {
        let path = format!("/kv/{key}?consistency=stale");
        let reply = client
            .send_to(&base, Method::GET, &path, None)
            .await
            .unwrap_or_else(|e| panic!("stale read of {key} on node {id}: {e}"));
        assert!(reply.status.is_success(), "node {id}: {reply:?}");
        assert_eq!(
            reply.body["value"].as_str(),
            value.as_deref(),
            "node {id} holds another value at {key}"
        );
    }
}
