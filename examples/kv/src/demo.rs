//! `raft-kv demo`: a 3-node cluster in this process on loopback TCP, with durable storage in a
//! temporary directory, under a mixed workload from concurrent HTTP clients: the leader is
//! killed and the failover timed, the old leader restarts and rejoins as a follower, a fourth
//! node joins as a learner and is promoted to voter, and at the end every acknowledged write is
//! read back. Exits non-zero if any was lost or any read saw a value it should not have.
//!
//! Each client owns its keys, so it knows the value each of them must hold: the value of its
//! last acknowledged write. Every write carries a `request_id` and is retried with the same id
//! until it is answered, so a write whose first attempt timed out still has a known outcome.

use crate::bench::{Latencies, format_us};
use crate::client::{Client, Reply};
use crate::server::{ServeOptions, Server};
use raft_core::node::NodeConfig;
use raft_core::{NodeId, Role};
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Keys per client.
const KEYS_PER_CLIENT: usize = 64;
/// When, from the start of the workload, each event happens.
const KILL_AT: Duration = Duration::from_secs(4);
const RESTART_AT: Duration = Duration::from_secs(7);
const GROW_AT: Duration = Duration::from_secs(9);
const STOP_AT: Duration = Duration::from_secs(13);

/// One node's addresses, chosen before it starts.
#[derive(Clone)]
struct Slot {
    id: NodeId,
    raft: String,
    http: String,
}

/// What the clients saw, shared with the progress line.
#[derive(Default)]
struct Shared {
    ops: AtomicU64,
    acknowledged_writes: AtomicU64,
    retries: AtomicU64,
    latencies: Mutex<Latencies>,
    /// Every latency of the run, merged from the progress windows.
    all_latencies: Mutex<Latencies>,
    /// Reads or swaps that contradicted what a client knew: lost or phantom writes.
    anomalies: Mutex<Vec<String>>,
    stop: AtomicBool,
    /// When the last write was acknowledged.
    last_ack: Mutex<Option<Instant>>,
}

/// A client's knowledge of its keys: the value each must hold (`None`: absent).
type Known = BTreeMap<String, Option<String>>;

/// `n` distinct free ports: each stays bound until all are chosen, so none is handed out twice.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(|e| e.to_string())?.port()))
        .collect()
}

fn options(slot: &Slot, voters: &[Slot], dir: &Path, join: bool) -> ServeOptions {
    let peers = voters
        .iter()
        .map(|s| (s.id, s.raft.clone()))
        .collect::<BTreeMap<_, _>>();
    let mut options = ServeOptions::new(
        slot.id,
        slot.raft.clone(),
        slot.http.clone(),
        dir.join(format!("node-{}", slot.id.0)),
        peers,
    );
    options.join = join;
    let mut node = NodeConfig::new(slot.id, []);
    // Snapshots every few thousand entries, so that the demo shows log compaction at work and
    // the new node catches up from a snapshot.
    node.snapshot_every = 5_000;
    node.snapshot_keep_entries = 500;
    options.node = node;
    options
}

/// Prints a line stamped with the time since `start`.
fn say(start: Instant, line: impl AsRef<str>) {
    println!("{:>6.2}s  {}", start.elapsed().as_secs_f64(), line.as_ref());
}

/// The leader among `servers`, once it has registered its HTTP address.
async fn leader_of(servers: &BTreeMap<NodeId, Server>, within: Duration) -> Option<NodeId> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for (id, server) in servers {
            let status = server.node().status();
            if status.role == Role::Leader && server.directory().get(*id).is_some() {
                return Some(*id);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Runs the demo.
pub async fn run() -> Result<ExitCode, String> {
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let ports = free_ports(8)?;
    let slots: Vec<Slot> = (0..4)
        .map(|i| Slot {
            id: NodeId(i as u64 + 1),
            raft: format!("127.0.0.1:{}", ports[2 * i]),
            http: format!("127.0.0.1:{}", ports[2 * i + 1]),
        })
        .collect();
    let (voters, newcomer) = (slots[..3].to_vec(), slots[3].clone());
    println!(
        "raft-kv demo: 3 nodes on 127.0.0.1, each with a write-ahead log in {}",
        dir.path().display()
    );
    let start = Instant::now();
    let mut servers = BTreeMap::new();
    for slot in &voters {
        let server = Server::start(options(slot, &voters, dir.path(), false)).await?;
        servers.insert(slot.id, server);
    }
    let first = leader_of(&servers, Duration::from_secs(10))
        .await
        .ok_or("no leader elected within 10 s")?;
    say(
        start,
        format!(
            "node {} elected leader; starting {CLIENTS} clients (40% put, 20% compare-and-swap, 40% linearizable get)",
            first.0
        ),
    );
    let endpoints: Vec<String> = slots.iter().map(|s| s.http.clone()).collect();
    let shared = Arc::new(Shared::default());
    let load_start = Instant::now();
    let mut clients = Vec::new();
    for worker in 0..CLIENTS {
        let client = Client::new(endpoints.clone())?.with_patience(Duration::from_secs(3));
        let shared = shared.clone();
        clients.push(tokio::spawn(work(worker, client, shared)));
    }
    let progress = tokio::spawn(progress(shared.clone(), start));

    // The leader dies.
    tokio::time::sleep_until((load_start + KILL_AT).into()).await;
    let victim = leader_of(&servers, Duration::from_secs(5))
        .await
        .ok_or("no leader to kill")?;
    let before = servers[&victim].node().status();
    let server = servers.remove(&victim).ok_or("the leader vanished")?;
    let killed_at = Instant::now();
    server.kill().await;
    say(
        start,
        format!(
            "killed the leader, node {} (term {}, commit index {}, last log index {})",
            victim.0, before.term.0, before.commit_index.0, before.last_log_index.0
        ),
    );
    let (new_leader, failover) = first_write_after(&servers, killed_at).await?;
    let term = servers[&new_leader].node().status().term.0;
    say(
        start,
        format!(
            "failover: node {} leads term {term}; first write acknowledged {} after the kill",
            new_leader.0,
            format_ms(failover)
        ),
    );

    // The old leader comes back.
    tokio::time::sleep_until((load_start + RESTART_AT).into()).await;
    let slot = &voters[(victim.0 - 1) as usize];
    let restarted = Server::start(options(slot, &voters, dir.path(), false)).await?;
    servers.insert(victim, restarted);
    let rejoined = wait_caught_up(&servers, victim, Duration::from_secs(5)).await;
    let status = servers[&victim].node().status();
    let uncommitted = before
        .last_log_index
        .0
        .saturating_sub(before.commit_index.0);
    say(
        start,
        format!(
            "node {} restarted from its log: {} in term {}, leader node {}, applied index {}{} ({} uncommitted entries when it died: any the new leader lacked were truncated)",
            victim.0,
            role_word(status.role),
            status.term.0,
            status.leader.map_or("none".into(), |l| l.0.to_string()),
            status.applied_index.0,
            if rejoined {
                ", caught up"
            } else {
                ", still catching up"
            },
            uncommitted,
        ),
    );

    // A fourth node joins while the load runs.
    tokio::time::sleep_until((load_start + GROW_AT).into()).await;
    let joined = Server::start(options(&newcomer, &voters, dir.path(), true)).await?;
    servers.insert(newcomer.id, joined);
    let admin = Client::new(endpoints.clone())?.with_patience(Duration::from_secs(5));
    let grow_start = Instant::now();
    let body = json!({"id": newcomer.id.0, "addr": newcomer.raft, "http": newcomer.http, "catch_up_within": 100});
    admin
        .call(Method::POST, "/cluster/learners", Some(&body))
        .await?
        .into_result()
        .map_err(|e| format!("adding node 4 as a learner: {e}"))?;
    say(
        start,
        format!(
            "node 4 added as a learner and caught up in {}",
            format_ms(grow_start.elapsed())
        ),
    );
    let body = json!({"voters": [1, 2, 3, 4]});
    let promoted = admin
        .call(Method::POST, "/cluster/membership", Some(&body))
        .await?
        .into_result()
        .map_err(|e| format!("promoting node 4: {e}"))?;
    say(
        start,
        format!(
            "node 4 promoted: voters are 1, 2, 3, 4 (joint consensus done at index {})",
            promoted["index"]
        ),
    );

    // Stop the load and check every acknowledged write.
    tokio::time::sleep_until((load_start + STOP_AT).into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    // A cluster that had stopped taking writes would leave every key as it was: that is a
    // failure too, not a pass.
    let last_ack = *lock(&shared.last_ack);
    if last_ack.is_none_or(|at| at.elapsed() > Duration::from_secs(2)) {
        anomaly(
            &shared,
            "no write was acknowledged in the last two seconds of the load".to_string(),
        );
    }
    let mut known = Known::new();
    for client in clients {
        known.extend(client.await.map_err(|e| e.to_string())?);
    }
    let load_time = load_start.elapsed();
    progress.abort();
    say(start, "load stopped; reading back every key");
    let lost = verify(&admin, &servers, &known, &shared).await?;

    summary(&shared, load_time, failover, &servers, &known);
    for (_, server) in std::mem::take(&mut servers) {
        server.shutdown().await;
    }
    let anomalies = shared
        .anomalies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if lost == 0 && anomalies.is_empty() {
        println!(
            "\nOK: no acknowledged write was lost and every read saw the latest acknowledged value."
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nFAILED: {lost} keys lost an acknowledged write; anomalies:");
        for anomaly in anomalies.iter().take(20) {
            println!("  {anomaly}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn format_ms(elapsed: Duration) -> String {
    format!("{} ms", elapsed.as_millis())
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate | Role::PreCandidate => "candidate",
    }
}

/// Proposes through whichever node leads until a write is acknowledged: the failover time as
/// a client sees it.
async fn first_write_after(
    servers: &BTreeMap<NodeId, Server>,
    killed_at: Instant,
) -> Result<(NodeId, Duration), String> {
    let command = crate::store::KvCommand::Put {
        key: "demo-failover-probe".into(),
        value: "written by the new leader".into(),
    };
    while killed_at.elapsed() < Duration::from_secs(10) {
        for (id, server) in servers {
            if server.node().status().role != Role::Leader {
                continue;
            }
            let written = server
                .node()
                .propose(command.clone(), raft_core::node::Ack::Quorum)
                .await;
            if written.is_ok() {
                return Ok((*id, killed_at.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err("no write was acknowledged within 10 s of the kill".into())
}

/// Waits until node `id` follows a leader and has applied what that leader had committed.
async fn wait_caught_up(servers: &BTreeMap<NodeId, Server>, id: NodeId, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let status = servers[&id].node().status();
        let leader_commit = status
            .leader
            .and_then(|l| servers.get(&l))
            .map(|l| l.node().status().commit_index);
        if status.role == Role::Follower && leader_commit.is_some_and(|c| status.applied_index >= c)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn progress(shared: Arc<Shared>, start: Instant) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ops = shared.ops.load(Ordering::Relaxed);
        let mut window =
            std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|p| p.into_inner()));
        let line = format!(
            "{:>7} ops/s   p50 {:>8}   p99 {:>8}   {} writes acknowledged",
            ops - last,
            format_us(window.percentile(50.0)),
            format_us(window.percentile(99.0)),
            shared.acknowledged_writes.load(Ordering::Relaxed),
        );
        say(start, line);
        lock(&shared.all_latencies).merge(window);
        last = ops;
    }
}

/// One client: a loop of random operations on its own keys, checking each answer against
/// what it knows. Returns what it knows at the end.
async fn work(worker: usize, client: Client, shared: Arc<Shared>) -> Known {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(worker as u64);
    let mut known = Known::new();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let key = format!("c{worker}-k{}", rng.random_range(0..KEYS_PER_CLIENT));
        let expected = known.get(&key).cloned().flatten();
        let roll = rng.random_range(0..10);
        let began = Instant::now();
        let path = format!("/kv/{key}");
        let done = if roll < 4 {
            seq += 1;
            let value = format!("{worker}-{seq}");
            let body = json!({"value": value, "request_id": format!("c{worker}-{seq}")});
            match write(&client, &shared, Method::PUT, &path, &body).await {
                Some(_) => {
                    known.insert(key, Some(value));
                    true
                }
                None => {
                    // Its outcome is unknown: the key is no longer checked.
                    known.remove(&key);
                    false
                }
            }
        } else if roll < 6 {
            seq += 1;
            let value = format!("{worker}-{seq}");
            let body = json!({"expect": expected, "value": value, "request_id": format!("c{worker}-{seq}")});
            match write(
                &client,
                &shared,
                Method::POST,
                &format!("{path}/cas"),
                &body,
            )
            .await
            {
                Some(answer) if answer["ok"] == Value::Bool(true) => {
                    known.insert(key, Some(value));
                    true
                }
                Some(answer) => {
                    let found = answer["value"].clone();
                    anomaly(
                        &shared,
                        format!("cas on {key} expected {expected:?}, found {found}"),
                    );
                    known.insert(key, found.as_str().map(str::to_string));
                    true
                }
                None => {
                    // Its outcome is unknown: the key is no longer checked.
                    known.remove(&key);
                    false
                }
            }
        } else {
            match client
                .call(Method::GET, &path, None)
                .await
                .map(Reply::into_result)
            {
                Ok(Ok(answer)) => {
                    let found = answer["value"].as_str().map(str::to_string);
                    if found != expected {
                        anomaly(
                            &shared,
                            format!("read {key}: {found:?}, expected {expected:?}"),
                        );
                    }
                    true
                }
                _ => false,
            }
        };
        if done {
            shared.ops.fetch_add(1, Ordering::Relaxed);
            shared
                .latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(began.elapsed());
        }
    }
    known
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn anomaly(shared: &Shared, what: String) {
    lock(&shared.anomalies).push(what);
}

/// Sends a write until it is answered: every attempt carries the same `request_id`, so the
/// write takes effect once however many attempts reach the cluster. `None` if the load
/// stopped first (the write's outcome is then unknown, and the caller stops checking the key).
async fn write(
    client: &Client,
    shared: &Shared,
    method: Method,
    path: &str,
    body: &Value,
) -> Option<Value> {
    loop {
        if let Ok(reply) = client.call(method.clone(), path, Some(body)).await
            && reply.status.is_success()
        {
            shared.acknowledged_writes.fetch_add(1, Ordering::Relaxed);
            *lock(&shared.last_ack) = Some(Instant::now());
            return Some(reply.body);
        }
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        shared.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every key back, linearizably through the leader and from every node once it has
/// applied the last write; returns how many keys lost their acknowledged value.
async fn verify(
    client: &Client,
    servers: &BTreeMap<NodeId, Server>,
    known: &Known,
    shared: &Shared,
) -> Result<usize, String> {
    let mut lost = 0;
    let mut last_index = 0u64;
    for (key, expected) in known {
        let answer = client
            .call(Method::GET, &format!("/kv/{key}"), None)
            .await?
            .into_result()?;
        let found = answer["value"].as_str().map(str::to_string);
        last_index = last_index.max(answer["applied_index"].as_u64().unwrap_or(0));
        if &found != expected {
            lost += 1;
            anomaly(
                shared,
                format!("final read of {key}: {found:?}, expected {expected:?}"),
            );
        }
    }
    // Every replica holds the same values once it has applied as far as the leader had.
    for (id, server) in servers {
        for (key, expected) in known {
            let read = server
                .node()
                .query(
                    raft_core::node::Consistency::AtLeast(raft_core::LogIndex(last_index)),
                    key.clone(),
                )
                .await
                .map_err(|e| format!("reading {key} on node {}: {e}", id.0))?;
            if &read.response != expected {
                lost += 1;
                anomaly(
                    shared,
                    format!(
                        "node {} holds {:?} for {key}, expected {expected:?}",
                        id.0, read.response
                    ),
                );
            }
        }
    }
    println!(
        "        read back {} keys on the leader and on each of {} nodes: {}",
        known.len(),
        servers.len(),
        if lost == 0 {
            "all as acknowledged"
        } else {
            "MISMATCHES"
        }
    );
    Ok(lost)
}

fn summary(
    shared: &Shared,
    load_time: Duration,
    failover: Duration,
    servers: &BTreeMap<NodeId, Server>,
    known: &Known,
) {
    let mut all = std::mem::take(&mut *lock(&shared.all_latencies));
    all.merge(std::mem::take(
        &mut *shared.latencies.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let ops = shared.ops.load(Ordering::Relaxed);
    println!("\nsummary");
    println!(
        "  {ops} operations in {:.1} s: {:.0} ops/s; latency p50 {}, p90 {}, p99 {}, max {}",
        load_time.as_secs_f64(),
        ops as f64 / load_time.as_secs_f64(),
        format_us(all.percentile(50.0)),
        format_us(all.percentile(90.0)),
        format_us(all.percentile(99.0)),
        format_us(all.percentile(100.0)),
    );
    println!(
        "  {} writes acknowledged ({} retried with their request_id), {} keys checked",
        shared.acknowledged_writes.load(Ordering::Relaxed),
        shared.retries.load(Ordering::Relaxed),
        known.len()
    );
    println!(
        "  failover (leader killed -> first write acknowledged): {}",
        format_ms(failover)
    );
    let leader_status = servers
        .values()
        .map(|s| s.node().status())
        .find(|s| s.role == Role::Leader);
    println!(
        "  {:>4}  {:<9} {:>5} {:>9} {:>9} {:>12}",
        "node", "role", "term", "commit", "applied", "lag entries"
    );
    for (id, server) in servers {
        let status = server.node().status();
        let lag = leader_status
            .as_ref()
            .and_then(|l| l.peers.iter().find(|p| p.id == *id))
            .map_or("-".to_string(), |p| p.lag_entries.to_string());
        println!(
            "  {:>4}  {:<9} {:>5} {:>9} {:>9} {:>12}",
            id.0,
            crate::metrics::role_name(&status),
            status.term.0,
            status.commit_index.0,
            status.applied_index.0,
            lag
        );
    }
}
