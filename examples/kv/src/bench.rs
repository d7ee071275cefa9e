//! `raft-kv bench`: a load generator for a running cluster. Each client sends one request at a
//! time (reads or writes of random keys, with values of a fixed size) for a fixed duration,
//! following redirects to the leader; a progress line shows the rate, and a closing table the
//! throughput, latency percentiles and errors by kind.
//!
//! By default each client holds an HTTP/1.1 connection of its own, spoken through `hyper`
//! directly (over `tokio-rustls` for HTTPS), so that the generator costs less CPU than the
//! cluster it measures. With `--conns` below `--clients` the clients share the connections, as
//! etcd's benchmark separates `--clients` from `--conns`: the requests of the clients of one
//! connection are pipelined on it (see `pipeline.rs`).

use crate::cli::ClientSecurityArgs;
use crate::client::{Client, endpoints};
use crate::pipeline;
use crate::tokens::{Role, Tokens};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `raft-kv bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// The nodes' HTTP addresses, as `HOST:PORT,HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub http: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// HTTP/1.1 connections the clients share (1 to --clients; by default one per client).
    /// Below --clients, the clients are spread evenly over the connections and the requests
    /// of the clients of one connection are pipelined on it: written together, answered in
    /// order. Each client still waits for its answer before its next request.
    #[arg(long)]
    pub conns: Option<usize>,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// The share of requests that are reads (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Acknowledgement level of writes: local, quorum or all.
    #[arg(long, default_value = "quorum")]
    pub ack: String,
    /// Consistency of reads: linearizable, lease, stale.
    #[arg(long, default_value = "lease")]
    pub consistency: String,
    /// The size of each value written.
    #[arg(long, default_value_t = 128)]
    pub value_bytes: usize,
    /// How many distinct keys are written and read.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// HTTPS and tokens.
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

/// How the clients reach the nodes: over TLS or not, and the `Authorization` header of reads
/// and of writes (each the least privileged token that suffices).
#[derive(Clone, Default)]
struct Reach {
    tls: Option<tokio_rustls::TlsConnector>,
    read_authorization: Option<String>,
    write_authorization: Option<String>,
}

impl Reach {
    fn new(tls: Option<rustls::ClientConfig>, tokens: Option<&Tokens>) -> Reach {
        let header = |role| {
            tokens
                .and_then(|t| t.for_request(role))
                .map(|token| format!("Bearer {token}"))
        };
        Reach {
            tls: tls.map(|config| tokio_rustls::TlsConnector::from(Arc::new(config))),
            read_authorization: header(Role::Read),
            write_authorization: header(Role::Write),
        }
    }
}

/// Latencies in microseconds, for percentiles.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// Records one.
    pub fn record(&mut self, elapsed: Duration) {
        self.0
            .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds another's.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`th percentile (0 to 100), in microseconds; 0 when empty.
    pub fn percentile(&mut self, p: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)]
    }
}

/// Formats microseconds for people.
pub fn format_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    reads: Latencies,
    writes: Latencies,
    errors: BTreeMap<String, u64>,
}

/// One client's connection: to the node it was last sent to.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(host: &str, reach: &Reach) -> Result<Connection, String> {
        let stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let sender = match &reach.tls {
            None => http1(host, stream).await?,
            Some(tls) => {
                let name = server_name(host)?;
                let stream = tls
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("{host}: TLS: {e}"))?;
                http1(host, stream).await?
            }
        };
        Ok(Connection {
            sender,
            host: host.to_string(),
        })
    }

    /// Sends one request; the answer's status and body.
    async fn send(
        &mut self,
        method: &Method,
        path: &str,
        body: &Bytes,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(authorization) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("{}: {e}", self.host))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("{}: {e}", self.host))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{}: {e}", self.host))?
            .to_bytes();
        Ok((status, body))
    }
}

/// An HTTP/1.1 connection over `stream` (TCP, or TLS over TCP), driven by a task of its own.
async fn http1<S>(
    host: &str,
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{host}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The name a TLS client checks the certificate of `host` (`HOST:PORT`) against.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("{host}: not a name TLS can check: {e}"))
}

/// A connection of `--conns` (a byte stream; HTTP/1.1 is spoken on it by `pipeline.rs`).
async fn connect(host: &str, reach: &Reach) -> Result<Box<dyn pipeline::Stream>, String> {
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let _ = stream.set_nodelay(true);
    match &reach.tls {
        None => Ok(Box::new(stream)),
        Some(tls) => {
            let name = server_name(host)?;
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("{host}: TLS: {e}"))?;
            Ok(Box::new(stream))
        }
    }
}

/// Counts what the clients of a pipelined connection see into a [`Tally`], and successes
/// into the progress counter.
struct Counting<'a> {
    tally: &'a mut Tally,
    done: &'a AtomicU64,
}

impl pipeline::Tally for Counting<'_> {
    fn success(&mut self, read: bool, latency: Duration) {
        let latencies = if read {
            &mut self.tally.reads
        } else {
            &mut self.tally.writes
        };
        latencies.record(latency);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&mut self, code: String, count: u64) {
        *self.tally.errors.entry(code).or_default() += count;
    }
}

/// The `depth` clients of connection `index` (`--conns` below `--clients`): one connection,
/// their requests pipelined on it, following redirects to the leader by reconnecting.
async fn pipelined_loop(
    index: usize,
    depth: usize,
    hosts: Vec<String>,
    args: BenchArgs,
    reach: Reach,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> Tally {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(index as u64);
    let mut tally = Tally::default();
    let templates = pipeline::Templates {
        read_query: format!("consistency={}", args.consistency),
        write_query: format!("ack={}", args.ack),
        read_authorization: reach.read_authorization.clone(),
        write_authorization: reach.write_authorization.clone(),
        write_body: json!({ "value": "v".repeat(args.value_bytes) })
            .to_string()
            .into_bytes(),
    };
    let mut next = || pipeline::Request {
        key: rng.random_range(0..args.keys),
        read: rng.random_bool(args.read_ratio),
    };
    let mut next_host = index % hosts.len();
    let mut connection: Option<(Box<dyn pipeline::Stream>, String)> = None;
    while Instant::now() < deadline {
        let (mut stream, host) = match connection.take() {
            Some(open) => open,
            None => {
                let host = &hosts[next_host];
                match connect(host, &reach).await {
                    Ok(stream) => (stream, host.clone()),
                    Err(_) => {
                        *tally.errors.entry("unreachable".into()).or_default() += 1;
                        next_host = (next_host + 1) % hosts.len();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
        };
        let mut counting = Counting {
            tally: &mut tally,
            done: &done,
        };
        let ended = pipeline::run(
            &mut stream,
            &host,
            depth,
            deadline,
            &templates,
            &mut next,
            &mut counting,
        )
        .await;
        match ended {
            pipeline::Ended::Deadline => break,
            pipeline::Ended::Redirected(leader) => match connect(&leader, &reach).await {
                Ok(moved) => connection = Some((moved, leader)),
                Err(_) => {
                    *tally.errors.entry("not_leader".into()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    connection = Some((stream, host));
                }
            },
            // The connection broke: its node may be down; try the next one.
            pipeline::Ended::Broken => next_host = (next_host + 1) % hosts.len(),
        }
    }
    tally
}

/// How many clients each of `conns` connections carries: `clients` spread evenly.
fn spread(clients: usize, conns: usize) -> Vec<usize> {
    (0..conns)
        .map(|i| clients / conns + usize::from(i < clients % conns))
        .collect()
}

/// One client: a connection of its own (as `wrk` opens), one request at a time, following
/// redirects to the leader by reconnecting.
async fn client_loop(
    worker: usize,
    hosts: Vec<String>,
    args: BenchArgs,
    reach: Reach,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> Tally {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(worker as u64);
    let mut tally = Tally::default();
    let write_body = Bytes::from(json!({ "value": "v".repeat(args.value_bytes) }).to_string());
    let empty = Bytes::new();
    let mut next_host = worker % hosts.len();
    let mut connection: Option<Connection> = None;
    while Instant::now() < deadline {
        let mut open = match connection.take() {
            Some(open) => open,
            None => match Connection::open(&hosts[next_host], &reach).await {
                Ok(open) => open,
                Err(_) => {
                    *tally.errors.entry("unreachable".into()).or_default() += 1;
                    next_host = (next_host + 1) % hosts.len();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let key = rng.random_range(0..args.keys);
        let read = rng.random_bool(args.read_ratio);
        let (method, path, body, authorization) = if read {
            let path = format!("/kv/k{key}?consistency={}", args.consistency);
            (Method::GET, path, &empty, &reach.read_authorization)
        } else {
            (
                Method::PUT,
                format!("/kv/k{key}?ack={}", args.ack),
                &write_body,
                &reach.write_authorization,
            )
        };
        let begun = Instant::now();
        match open
            .send(&method, &path, body, authorization.as_deref())
            .await
        {
            Ok((status, _)) if status.is_success() => {
                let latencies = if read {
                    &mut tally.reads
                } else {
                    &mut tally.writes
                };
                latencies.record(begun.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                connection = Some(open);
            }
            Ok((status, body)) => {
                let (code, leader) = pipeline::error_of(&body);
                if status == StatusCode::TEMPORARY_REDIRECT
                    && let Some(leader) = leader
                {
                    // Not counted: the client moves to the leader, as any client would.
                    if let Ok(moved) = Connection::open(&leader, &reach).await {
                        connection = Some(moved);
                        continue;
                    }
                }
                *tally.errors.entry(code).or_default() += 1;
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                connection = Some(open);
            }
            Err(_) => {
                // The connection broke: its node may be down; try the next one.
                *tally.errors.entry("no_answer".into()).or_default() += 1;
                next_host = (next_host + 1) % hosts.len();
            }
        }
    }
    tally
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    if args.clients == 0 || args.duration_s == 0 || args.keys == 0 {
        return Err("--clients, --duration-s and --keys must be at least 1".into());
    }
    let conns = args.conns.unwrap_or(args.clients);
    if conns == 0 || conns > args.clients {
        return Err("--conns must be between 1 and --clients".into());
    }
    crate::http::parse_ack(&args.ack).map_err(|e| format!("--ack: {e}"))?;
    if !["linearizable", "lease", "stale"].contains(&args.consistency.as_str()) {
        return Err("--consistency must be linearizable, lease or stale".into());
    }
    let security = args.security.load().await?;
    let hosts = endpoints(&args.http, security.tls.is_some())?;
    let reach = Reach::new(security.tls.clone(), security.tokens.as_ref());
    // Find the cluster before the clock starts.
    Client::with_security(hosts.clone(), security)?
        .call(Method::GET, "/kv/bench-warmup?consistency=stale", None)
        .await?
        .into_result()?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    let mut tasks = Vec::new();
    if conns == args.clients {
        for worker in 0..args.clients {
            let (hosts, args, reach, done) =
                (hosts.clone(), args.clone(), reach.clone(), done.clone());
            tasks.push(tokio::spawn(client_loop(
                worker, hosts, args, reach, deadline, done,
            )));
        }
    } else {
        for (index, depth) in spread(args.clients, conns).into_iter().enumerate() {
            let (hosts, args, reach, done) =
                (hosts.clone(), args.clone(), reach.clone(), done.clone());
            tasks.push(tokio::spawn(pipelined_loop(
                index, depth, hosts, args, reach, deadline, done,
            )));
        }
    }
    let progress = tokio::spawn({
        let (done, quiet, total) = (done.clone(), args.json, args.duration_s);
        async move {
            let mut last = 0;
            for second in 1..=total {
                tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
                let now = done.load(Ordering::Relaxed);
                if !quiet {
                    let filled = (second * 30 / total) as usize;
                    eprint!(
                        "\r[{}{}] {second:>3}/{total} s  {:>9} ops/s ",
                        "=".repeat(filled),
                        " ".repeat(30 - filled),
                        now - last
                    );
                    let _ = std::io::stderr().flush();
                }
                last = now;
            }
            if !quiet {
                eprintln!();
            }
        }
    });
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(|e| e.to_string())?;
        total.reads.merge(tally.reads);
        total.writes.merge(tally.writes);
        for (kind, n) in tally.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.abort();
    report(&args, conns, total, elapsed);
    Ok(ExitCode::SUCCESS)
}

fn report(args: &BenchArgs, conns: usize, mut total: Tally, elapsed: f64) {
    let ops = (total.reads.len() + total.writes.len()) as f64;
    let mut all = total.reads.clone();
    all.merge(total.writes.clone());
    let errors: u64 = total.errors.values().sum();
    if args.json {
        let line = json!({
            "case": "raft-kv-http",
            "clients": args.clients,
            "conns": conns,
            "read_ratio": args.read_ratio,
            "ack": args.ack,
            "consistency": args.consistency,
            "value_bytes": args.value_bytes,
            "ops_per_sec": (ops / elapsed).round(),
            "writes": total.writes.len(),
            "reads": total.reads.len(),
            "p50_us": all.percentile(50.0),
            "p99_us": all.percentile(99.0),
            "writes_per_sec": (total.writes.len() as f64 / elapsed).round(),
            "write_p50_us": total.writes.percentile(50.0),
            "write_p99_us": total.writes.percentile(99.0),
            "reads_per_sec": (total.reads.len() as f64 / elapsed).round(),
            "read_p50_us": total.reads.percentile(50.0),
            "read_p99_us": total.reads.percentile(99.0),
            "errors": total.errors,
        });
        println!("{line}");
        return;
    }
    let shared = if conns == args.clients {
        String::new()
    } else {
        format!(" on {conns} connections (pipelined)")
    };
    println!(
        "{} clients{shared}, {:.1} s, {}-byte values, read ratio {}, writes ack={}, reads {}",
        args.clients, elapsed, args.value_bytes, args.read_ratio, args.ack, args.consistency
    );
    println!(
        "{:<7} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "ops", "ops/s", "p50", "p99", "max"
    );
    for (name, latencies) in [
        ("writes", &mut total.writes),
        ("reads", &mut total.reads),
        ("all", &mut all),
    ] {
        if latencies.is_empty() {
            continue;
        }
        println!(
            "{name:<7} {:>10} {:>10.0} {:>10} {:>10} {:>10}",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            format_us(latencies.percentile(50.0)),
            format_us(latencies.percentile(99.0)),
            format_us(latencies.percentile(100.0)),
        );
    }
    if errors == 0 {
        println!("errors: none");
    } else {
        let kinds: Vec<String> = total
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        println!("errors: {errors} ({})", kinds.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile(50.0), 0);
        for us in [5, 1, 4, 2, 3] {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(0.0), 1);
        assert_eq!(l.percentile(50.0), 3);
        assert_eq!(l.percentile(100.0), 5);
    }

    #[test]
    fn clients_are_spread_evenly_over_connections() {
        assert_eq!(spread(1024, 256), vec![4; 256]);
        assert_eq!(spread(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(spread(3, 3), vec![1, 1, 1]);
        assert_eq!(spread(5, 1), vec![5]);
    }
}
