//! `raft-bench`: measures a 3-node cluster in one process.
//!
//! ```text
//! raft-bench --case CASE [--nodes 3] [--clients N] [--ops M] [--payload BYTES]
//!            [--max-inflight N] [--tls] [--json]
//! ```
//!
//! Cases:
//! * `mem` — in-process transport, in-memory log and state machine, empty commands; a write is
//!   timed from `propose` until it is applied on the leader.
//! * `tcp` — the same over loopback TCP (the real transport), with 128-byte payloads by default.
//! * `tcp-durable` — the same with the durable stores (`FileLogStore`, `FileSnapshotStore`) in
//!   a scratch directory under `--dir` (the system's temporary directory by default): every
//!   write is synced to disk on a majority before it is acknowledged.
//! * `store` — the durable log store alone: `--clients` writers append one entry of
//!   `--payload` bytes (128) per call and wait until it is durable; group commit syncs the
//!   writes of all writers waiting together.
//! * `store-recovery` — writes `--ops` entries of `--payload` bytes to a durable log, then
//!   times reopening it and reading everything back; reports the disk space per entry.
//! * `lease-read`, `read-index` — reads on the leader (`Consistency::Lease`, `::Linearizable`).
//! * `read-index-spread` — linearizable reads spread over every node, clients assigned to the
//!   nodes in turn: followers ask the leader for a read index and serve the reads themselves.
//! * `snapshot-stream` — a 3-node TCP cluster whose state machine's snapshot image is
//!   `--image-mb` MiB (1,024 by default): the leader takes a snapshot and compacts its log, then a
//!   third node starts empty and is sent the snapshot while a client keeps writing; reports the
//!   streaming rate, and any election or request timeout during it.
//! * `failover` — the leader is stopped under load; the time until a new leader acknowledges a
//!   write, over 20 repetitions (p50 and max).
//! * `memory` — resident memory per log entry held by the protocol (`--clients 2`: plus a stored
//!   copy, as `MemLogStore` keeps), with `--ops` entries of `--payload` bytes.
//!
//! `--tls` runs the `tcp` cases with mutual TLS between the nodes (throw-away ECDSA P-256
//! certificates made at start).
//!
//! `--max-inflight` overrides the protocol's window of AppendEntries in flight per follower
//! (`Config::max_inflight_appends`); every other setting is the library's default.
//!
//! Clients are tokio tasks on a multi-thread runtime with 2 worker threads. Every run prints a
//! table row and, with `--json`, one JSON line, which includes the process's peak resident
//! memory (`max_rss_mb`).

mod cluster;
mod store;

use cluster::{Cluster, Wire};
use raft_core::node::{Ack, Consistency};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Args {
    case: String,
    nodes: u64,
    clients: u64,
    ops: u64,
    payload: Option<usize>,
    max_inflight: Option<usize>,
    image_mb: u64,
    snapshot_every: Option<u64>,
    dir: Option<std::path::PathBuf>,
    tls: bool,
    json: bool,
}

fn usage() -> String {
    "usage: raft-bench --case mem|tcp|tcp-durable|store|store-recovery|lease-read|read-index|read-index-spread|snapshot-stream|failover|memory [--nodes 3] [--clients N] [--ops M] [--payload BYTES] [--max-inflight N] [--image-mb N] [--snapshot-every N] [--dir DIR] [--tls] [--json]".to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        case: String::new(),
        nodes: 3,
        clients: 1,
        ops: 10_000,
        payload: None,
        max_inflight: None,
        image_mb: 1024,
        snapshot_every: None,
        dir: None,
        tls: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or(format!("{name} needs a value\n{}", usage()))
        };
        let number = |text: String, name: &str| {
            text.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {text}"))
        };
        match flag.as_str() {
            "--case" => args.case = value("--case")?,
            "--nodes" => args.nodes = number(value("--nodes")?, "--nodes")?,
            "--clients" => args.clients = number(value("--clients")?, "--clients")?,
            "--ops" => args.ops = number(value("--ops")?, "--ops")?,
            "--payload" => args.payload = Some(number(value("--payload")?, "--payload")? as usize),
            "--max-inflight" => {
                let window = number(value("--max-inflight")?, "--max-inflight")?;
                args.max_inflight = Some(window as usize);
            }
            "--image-mb" => args.image_mb = number(value("--image-mb")?, "--image-mb")?,
            "--snapshot-every" => {
                let every = number(value("--snapshot-every")?, "--snapshot-every")?;
                args.snapshot_every = Some(every);
            }
            "--dir" => args.dir = Some(value("--dir")?.into()),
            "--json" => args.json = true,
            "--tls" => args.tls = true,
            "--help" | "-h" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    if args.case.is_empty() {
        return Err(usage());
    }
    if args.nodes == 0 || args.clients == 0 || args.ops == 0 {
        return Err("--nodes, --clients and --ops must be at least 1".into());
    }
    Ok(args)
}

/// Latencies in microseconds, and the wall time of the run.
struct Measured {
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

struct Report {
    case: String,
    nodes: u64,
    clients: u64,
    ops: u64,
    payload: usize,
    ops_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

impl Report {
    fn new(args: &Args, payload: usize, mut measured: Measured) -> Report {
        measured.latencies_us.sort_unstable();
        let ops = measured.latencies_us.len() as u64;
        Report {
            case: if args.tls {
                format!("{}+tls", args.case)
            } else {
                args.case.clone()
            },
            nodes: args.nodes,
            clients: args.clients,
            ops,
            payload,
            ops_per_sec: ops as f64 / measured.elapsed.as_secs_f64().max(1e-9),
            p50_us: percentile(&measured.latencies_us, 0.50),
            p99_us: percentile(&measured.latencies_us, 0.99),
            max_us: measured.latencies_us.last().copied().unwrap_or(0),
        }
    }

    fn print(&self, json: bool) {
        let Report {
            case,
            nodes,
            clients,
            ops,
            payload,
            ops_per_sec,
            p50_us,
            p99_us,
            max_us,
        } = self;
        println!(
            "{case:<11} nodes {nodes} clients {clients:>5} ops {ops:>8} payload {payload:>4}  {ops_per_sec:>12.0} ops/s  p50 {p50_us:>7} us  p99 {p99_us:>7} us  max {max_us:>8} us"
        );
        if json {
            println!(
                "{{\"case\":\"{case}\",\"nodes\":{nodes},\"clients\":{clients},\"ops\":{ops},\"payload\":{payload},\"ops_per_sec\":{ops_per_sec:.0},\"p50_us\":{p50_us},\"p99_us\":{p99_us},\"max_us\":{max_us},\"max_rss_mb\":{}}}",
                max_rss_mb()
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Load {
    Write,
    Read(Consistency),
}

/// Runs `clients` tasks that share `ops` operations on the leader (or, with `spread`, on every
/// node in turn), timing each.
async fn drive(
    cluster: &Cluster,
    args: &Args,
    payload: usize,
    load: Load,
) -> Result<Measured, String> {
    drive_on(cluster, args, payload, load, false).await
}

async fn drive_on(
    cluster: &Cluster,
    args: &Args,
    payload: usize,
    load: Load,
    spread: bool,
) -> Result<Measured, String> {
    let leader = cluster.leader().await?;
    let targets = if spread {
        cluster.nodes()
    } else {
        vec![leader.clone()]
    };
    // Warm up: connections open, lease established.
    for _ in 0..100 {
        leader
            .propose(bytes::Bytes::from(vec![0u8; payload]), Ack::Quorum)
            .await
            .map_err(|e| e.to_string())?;
    }
    let remaining = Arc::new(AtomicU64::new(args.ops));
    // Clients claim operations a few at a time, so that they do not all write one shared
    // counter per operation; the chunk is small enough that they finish together.
    let chunk = (args.ops / args.clients / 8).clamp(1, 32);
    let per_client = usize::try_from(args.ops / args.clients + chunk).unwrap_or(0);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let leader = targets[client as usize % targets.len()].clone();
        let remaining = Arc::clone(&remaining);
        tasks.push(tokio::spawn(async move {
            // Microseconds fit in 32 bits (71 minutes): half the memory the recording touches.
            let mut latencies: Vec<u32> = Vec::with_capacity(per_client);
            let command = bytes::Bytes::from(vec![0u8; payload]);
            let mut claimed = 0u64;
            // One clock read per operation: the end of one is the start of the next (what
            // happens in between, claiming and recording, counts against the next: the
            // figures can only err on the slow side).
            let mut t0 = Instant::now();
            loop {
                if claimed == 0 {
                    claimed =
                        match remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            n.checked_sub(n.min(chunk)).filter(|_| n > 0)
                        }) {
                            Ok(before) => before.min(chunk),
                            Err(_) => break,
                        };
                }
                claimed -= 1;
                let result = match load {
                    Load::Write => leader
                        .propose(command.clone(), Ack::Quorum)
                        .await
                        .map(|_| ()),
                    Load::Read(consistency) => leader.query(consistency, ()).await.map(|_| ()),
                };
                result.map_err(|e| e.to_string())?;
                let t1 = Instant::now();
                let micros = t1.duration_since(t0).as_micros();
                latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                t0 = t1;
            }
            Ok::<Vec<u32>, String>(latencies)
        }));
    }
    let mut latencies_us = Vec::with_capacity(args.ops as usize);
    for task in tasks {
        let latencies = task.await.map_err(|e| e.to_string())??;
        latencies_us.extend(latencies.into_iter().map(u64::from));
    }
    Ok(Measured {
        latencies_us,
        elapsed: started.elapsed(),
    })
}

/// Stops the leader while `--clients` tasks keep writing, and measures how long until a write
/// is acknowledged by a new leader; repeated 20 times on fresh clusters (default timeouts).
async fn failover(args: &Args) -> Result<Measured, String> {
    let mut samples = Vec::new();
    let started = Instant::now();
    for round in 0..20u64 {
        let mut cluster =
            Cluster::start(Wire::Channel, args.nodes, round, args.max_inflight).await?;
        let leader = cluster.leader().await?;
        let old = leader.id();
        let nodes = cluster.nodes();
        // (the instant the leader was stopped, the instant a new leader acknowledged a write)
        let (tx, rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
        let acknowledged = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let mut load = Vec::new();
        for client in 0..args.clients {
            let nodes = nodes.clone();
            let rx = rx.clone();
            let acknowledged = Arc::clone(&acknowledged);
            load.push(tokio::spawn(async move {
                let mut next = client as usize;
                loop {
                    let stopped_at = *rx.borrow();
                    if let (Some(_), Some(_)) = (stopped_at, *acknowledged.lock().map_err(|_| ())?)
                    {
                        return Ok::<(), ()>(());
                    }
                    let node = &nodes[next % nodes.len()];
                    match node
                        .propose(bytes::Bytes::from_static(&[0u8; 16]), Ack::Quorum)
                        .await
                    {
                        Ok(_) if stopped_at.is_some() && node.id() != old => {
                            let mut slot = acknowledged.lock().map_err(|_| ())?;
                            slot.get_or_insert_with(Instant::now);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            next += 1;
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = Instant::now();
        cluster.stop(old).await;
        let _ = tx.send(Some(stopped));
        for task in load {
            let _ = task.await;
        }
        let at = acknowledged
            .lock()
            .map_err(|_| "poisoned")?
            .ok_or("no write acknowledged after the failover")?;
        samples.push(at.duration_since(stopped).as_micros() as u64);
        cluster.shutdown().await;
    }
    Ok(Measured {
        latencies_us: samples,
        elapsed: started.elapsed(),
    })
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`), or `None` elsewhere.
/// The process's peak resident memory so far, in MiB (0 where `/proc` does not say).
pub(crate) fn max_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// Streams a large snapshot to a node that starts empty (see the crate docs).
async fn snapshot_stream(args: &Args) -> Result<(), String> {
    use cluster::Options;
    use raft_core::NodeId;
    let image_bytes = args.image_mb << 20;
    let late = NodeId(3);
    let options = Options {
        image_bytes,
        snapshot_every: Some(0),
        deferred: Some(late),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(Wire::Tcp, 3, 1, options).await?;
    let leader = cluster.leader().await?;
    for _ in 0..100 {
        leader
            .propose(bytes::Bytes::from_static(b"w"), Ack::Quorum)
            .await
            .map_err(|e| e.to_string())?;
    }
    let built_at = Instant::now();
    let snapshot = leader.snapshot().await.map_err(|e| e.to_string())?;
    let build = built_at.elapsed();
    let term = leader.status().term;
    // A client keeps writing while the snapshot streams: none may time out.
    let stop = Arc::new(AtomicU64::new(0));
    let writer = {
        let (leader, stop) = (leader.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut written, mut failed) = (0u64, 0u64);
            while stop.load(Ordering::Relaxed) == 0 {
                match leader
                    .propose(bytes::Bytes::from_static(b"w"), Ack::Quorum)
                    .await
                {
                    Ok(_) => written += 1,
                    Err(_) => failed += 1,
                }
            }
            (written, failed)
        })
    };
    let started = Instant::now();
    cluster.start_node(late).await?;
    let node = cluster.node(late).ok_or("the late node did not start")?;
    let mut watch = node.watch_status();
    tokio::time::timeout(
        Duration::from_secs(600),
        watch.wait_for(|s| {
            s.snapshot
                .is_some_and(|(index, _)| index >= snapshot.last.index)
        }),
    )
    .await
    .map_err(|_| "the snapshot did not arrive within 10 minutes".to_string())?
    .map_err(|e| e.to_string())?;
    let streamed = started.elapsed();
    stop.store(1, Ordering::Relaxed);
    let (written, failed) = writer.await.map_err(|e| e.to_string())?;
    let terms: Vec<u64> = cluster.nodes().iter().map(|n| n.status().term.0).collect();
    let elections = terms.iter().filter(|&&t| t != term.0).count();
    let mb_per_s = image_bytes as f64 / (1 << 20) as f64 / streamed.as_secs_f64();
    println!(
        "snapshot-stream image {} MiB  built in {:.2} s  streamed in {:.2} s  {mb_per_s:.0} MiB/s  writes during it {written}, failed {failed}, nodes in a later term {elections}",
        args.image_mb,
        build.as_secs_f64(),
        streamed.as_secs_f64(),
    );
    if args.json {
        println!(
            "{{\"case\":\"snapshot-stream\",\"image_mb\":{},\"build_s\":{:.3},\"stream_s\":{:.3},\"mb_per_s\":{mb_per_s:.0},\"writes\":{written},\"failed_writes\":{failed},\"nodes_in_later_term\":{elections},\"max_rss_mb\":{}}}",
            args.image_mb,
            build.as_secs_f64(),
            streamed.as_secs_f64(),
            max_rss_mb()
        );
    }
    cluster.shutdown().await;
    Ok(())
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Memory per log entry: `--ops` entries of `--payload` bytes are proposed, made durable and
/// committed on a single-node protocol (the log the protocol keeps in memory), and optionally
/// also stored in a `MemLogStore` (which shares the payload bytes). Reported as the resident
/// memory growth per entry minus the payload.
fn memory(args: &Args) -> Result<(), String> {
    use raft_core::{Config, InitialState, NodeId, Raft, Time as At};
    let payload = args.payload.unwrap_or(128);
    let before = resident_bytes().ok_or("resident memory is only measured on Linux")?;
    let id = NodeId(1);
    let state = InitialState::new([id]);
    let mut raft = Raft::new(Config::new(id), state, 1, At(0)).map_err(|e| e.to_string())?;
    raft.tick(raft.next_deadline());
    let mut kept = Vec::new();
    for i in 0..args.ops {
        raft.propose(bytes::Bytes::from(vec![(i % 251) as u8; payload]))
            .map_err(|e| e.to_string())?;
        if i % 1024 == 1023 || i + 1 == args.ops {
            let actions = raft.take_actions();
            if let Some(last) = actions.entries.last() {
                raft.persisted(last.id());
            }
            // A store would keep these; the bench keeps them when asked to (`--clients 2`).
            if args.clients > 1 {
                kept.extend(actions.entries);
            }
            if let Some(range) = actions.committed {
                raft.applied(range.last);
            }
        }
    }
    let after = resident_bytes().ok_or("no resident memory")?;
    let per_entry = (after.saturating_sub(before)) as f64 / args.ops as f64;
    let what = if args.clients > 1 {
        "protocol log + a stored copy"
    } else {
        "protocol log"
    };
    println!(
        "memory      {} entries of {payload} bytes in the {what}: {:.1} bytes per entry, {:.1} above the payload (Entry is {} bytes)",
        args.ops,
        per_entry,
        per_entry - payload as f64,
        std::mem::size_of::<raft_core::Entry>()
    );
    if args.json {
        println!(
            "{{\"case\":\"memory\",\"entries\":{},\"payload\":{payload},\"stored_copy\":{},\"bytes_per_entry\":{per_entry:.1},\"overhead_bytes\":{:.1}}}",
            args.ops,
            args.clients > 1,
            per_entry - payload as f64
        );
    }
    drop(kept);
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    let (report, payload) = match args.case.as_str() {
        "mem" => {
            let payload = args.payload.unwrap_or(0);
            let options = cluster::Options {
                max_inflight: args.max_inflight,
                snapshot_every: args.snapshot_every,
                ..cluster::Options::default()
            };
            let cluster = Cluster::start_with(Wire::Channel, args.nodes, 1, options).await?;
            let measured = drive(&cluster, &args, payload, Load::Write).await?;
            cluster.shutdown().await;
            (measured, payload)
        }
        "tcp" | "tcp-durable" => {
            let payload = args.payload.unwrap_or(128);
            let scratch = store::Scratch::new(&args, "tcp-durable")?;
            let options = cluster::Options {
                max_inflight: args.max_inflight,
                snapshot_every: args.snapshot_every,
                durable: (args.case == "tcp-durable").then(|| scratch.path().to_path_buf()),
                tls: args.tls,
                ..cluster::Options::default()
            };
            let cluster = Cluster::start_with(Wire::Tcp, args.nodes, 1, options).await?;
            let before = cluster.tcp_messages_sent();
            let measured = drive(&cluster, &args, payload, Load::Write).await?;
            let messages = cluster.tcp_messages_sent() - before;
            if !args.json {
                let per_write = messages as f64 / measured.latencies_us.len().max(1) as f64;
                println!("  {messages} messages between the nodes, {per_write:.3} per write");
            }
            cluster.shutdown().await;
            (measured, payload)
        }
        "store" => {
            let payload = args.payload.unwrap_or(128);
            (store::store(&args, payload).await?, payload)
        }
        "store-recovery" => {
            return store::recovery(&args, args.payload.unwrap_or(128)).await;
        }
        "lease-read" | "read-index" => {
            let consistency = if args.case == "lease-read" {
                Consistency::Lease
            } else {
                Consistency::Linearizable
            };
            let cluster = Cluster::start(Wire::Channel, args.nodes, 1, args.max_inflight).await?;
            let measured = drive(&cluster, &args, 0, Load::Read(consistency)).await?;
            cluster.shutdown().await;
            (measured, 0)
        }
        "read-index-spread" => {
            let cluster = Cluster::start(Wire::Channel, args.nodes, 1, args.max_inflight).await?;
            let load = Load::Read(Consistency::Linearizable);
            let measured = drive_on(&cluster, &args, 0, load, true).await?;
            cluster.shutdown().await;
            (measured, 0)
        }
        "snapshot-stream" => return snapshot_stream(&args).await,
        "failover" => (failover(&args).await?, 16),
        "memory" => return memory(&args),
        other => return Err(format!("unknown case {other}\n{}", usage())),
    };
    Report::new(&args, payload, report).print(args.json);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raft-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
