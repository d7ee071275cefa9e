//! `raft-kv serve`'s command line and lifecycle, as an operator meets them: a missing flag is a
//! usage error (exit code 2); bad `--peers`, a node missing from its own `--peers`, impossible
//! timing, a data directory in use by a running node or belonging to another node or cluster
//! are each refused with exit code 1 and a one-line message (never a panic); and SIGTERM stops
//! a node with exit code 0, its data still there when it restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::{Cluster, Finished, free_addr, run};

/// `raft-kv serve` for node `id` in `data_dir` on fresh ports, with `peers` (or itself alone).
fn serve_args(id: u64, data_dir: &Path, peers: Option<&str>, extra: &[&str]) -> Vec<String> {
    let (raft, http) = (free_addr(), free_addr());
    let peers = peers.map_or(format!("{id}={raft}"), str::to_string);
    let mut args: Vec<String> = [
        "serve",
        "--id",
        &id.to_string(),
        "--listen",
        &raft,
        "--http",
        &http,
        "--data-dir",
        &data_dir.display().to_string(),
        "--peers",
        &peers,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `args`, which must fail with exit code 1 and one line on stderr naming `what`.
#[track_caller]
fn assert_refused(dir: &Path, args: &[String], what: &str) -> Finished {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let finished = run(dir, &args, Duration::from_secs(10));
    let context = format!("raft-kv {args:?}\nstderr:\n{}", finished.stderr);
    assert_eq!(finished.status.code(), Some(1), "{context}");
    assert!(!finished.stderr.contains("panicked"), "{context}");
    let last = finished.stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("raft-kv: "), "{context}");
    assert!(
        last.contains(what),
        "expected {what:?} in the message; {context}"
    );
    finished
}

/// As [`assert_refused`], and the message is the only line on stderr.
fn assert_refused_in_one_line(dir: &Path, args: &[String], what: &str) {
    let finished = assert_refused(dir, args, what);
    let lines = finished.stderr.trim_end().lines().count();
    assert_eq!(lines, 1, "{}", finished.stderr);
}

#[test]
fn a_missing_or_unknown_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let http = free_addr();
    let cases: [&[&str]; 4] = [
        &["serve", "--id", "1", "--http", &http, "--data-dir", &data],
        &[
            "serve",
            "--listen",
            &http,
            "--http",
            &http,
            "--data-dir",
            &data,
        ],
        &["serve", "--id", "1", "--listen", &http, "--http", &http],
        &[
            "serve",
            "--id",
            "one",
            "--listen",
            &http,
            "--http",
            &http,
            "--data-dir",
            &data,
        ],
    ];
    for args in cases {
        let finished = run(dir.path(), args, Duration::from_secs(10));
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{args:?}: {}",
            finished.stderr
        );
        assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    }
    assert!(
        !Path::new(&data).exists(),
        "a refused command line created the data directory"
    );
}

#[test]
fn bad_peers_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let me = free_addr();
    for peers in [
        "1=nohost".to_string(),
        "0=h:1".to_string(),
        format!("1={me},1=127.0.0.1:9"),
        "one=h:1".to_string(),
        "1".to_string(),
    ] {
        let args = serve_args(1, &data, Some(&peers), &[]);
        assert_refused_in_one_line(dir.path(), &args, "--peers");
    }
}

#[test]
fn a_node_missing_from_its_peers_needs_join() {
    let dir = tempfile::tempdir().unwrap();
    let peers = format!("1={},3={}", free_addr(), free_addr());
    let args = serve_args(2, &dir.path().join("data"), Some(&peers), &[]);
    assert_refused_in_one_line(dir.path(), &args, "--join");
}

#[test]
fn impossible_timing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for extra in [
        &["--lease-ms", "1000"][..],
        &["--heartbeat-ms", "400"][..],
        &["--election-timeout-ms", "50"][..],
    ] {
        let args = serve_args(1, &data, None, extra);
        assert_refused_in_one_line(dir.path(), &args, "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_in_use_is_refused() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_up(1, Duration::from_secs(10)).await;
    let data = cluster.nodes[&1].data_dir.clone();
    let dir = cluster.dir.path().to_path_buf();
    let args = serve_args(1, &data, None, &[]);
    let finished = tokio::task::spawn_blocking(move || assert_refused(&dir, &args, "in use"))
        .await
        .unwrap();
    assert!(
        finished.stderr.contains(&data.display().to_string()),
        "{}",
        finished.stderr
    );
    // The node that holds it is undisturbed.
    cluster.wait_leader(&[1], Duration::from_secs(5)).await;
    let client = cluster.client();
    let reply = client
        .call(Method::PUT, "/kv/a", Some(&json!({"value": "1"})))
        .await
        .unwrap();
    assert!(reply.status.is_success(), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_with_code_0_and_the_data_survives_a_restart() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_up(1, Duration::from_secs(10)).await;
    cluster.wait_leader(&[1], Duration::from_secs(10)).await;
    let client = cluster.client();
    for i in 0..20 {
        let body = json!({"value": format!("v{i}")});
        let reply = client
            .call(Method::PUT, &format!("/kv/k{i}"), Some(&body))
            .await;
        assert!(reply.unwrap().status.is_success());
    }
    let node = cluster.node(1);
    node.terminate(Duration::from_secs(5));

    node.start();
    cluster.wait_up(1, Duration::from_secs(10)).await;
    cluster.wait_leader(&[1], Duration::from_secs(10)).await;
    for i in 0..20 {
        let reply = client
            .call(Method::GET, &format!("/kv/k{i}"), None)
            .await
            .unwrap();
        assert_eq!(
            reply.body["value"],
            format!("v{i}"),
            "k{i} after the restart: {reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_node_or_cluster_is_refused() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_up(1, Duration::from_secs(10)).await;
    cluster.wait_leader(&[1], Duration::from_secs(10)).await;
    let node = cluster.node(1);
    node.terminate(Duration::from_secs(5));
    let data = node.data_dir.clone();
    let dir = cluster.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let other_node = serve_args(2, &data, None, &[]);
        assert_refused(&dir, &other_node, "belongs to another");
        let other_cluster = serve_args(1, &data, None, &["--cluster-id", "9"]);
        assert_refused(&dir, &other_cluster, "belongs to another");
    })
    .await
    .unwrap();
    // Its own node still starts on it.
    cluster.node(1).start();
    cluster.wait_up(1, Duration::from_secs(10)).await;
    cluster.wait_leader(&[1], Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_held_up_by_a_stalled_client() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_up(1, Duration::from_secs(10)).await;
    cluster.wait_leader(&[1], Duration::from_secs(10)).await;
    // A request whose body never finishes arriving.
    let http = cluster.node(1).http.clone();
    let mut stalled = std::net::TcpStream::connect(&http).unwrap();
    use std::io::Write as _;
    let head = format!(
        "PUT /kv/stalled HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"value\":"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let node = cluster.node(1);
    // The drain gives requests in flight five seconds, no more.
    node.terminate(Duration::from_secs(9));
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over() {
    let mut cluster = Cluster::start(3, &[]);
    for id in 1..=3 {
        cluster.wait_up(id, Duration::from_secs(10)).await;
    }
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(10))
        .await;
    cluster
        .wait_registered(leader, Duration::from_secs(10))
        .await;
    let client = cluster.client();
    let reply = client
        .call(Method::PUT, "/kv/before", Some(&json!({"value": "1"})))
        .await
        .unwrap();
    assert!(reply.status.is_success(), "{reply:?}");
    let node = cluster.node(leader);
    node.terminate(Duration::from_secs(8));
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let successor = cluster.wait_leader(&others, Duration::from_secs(5)).await;
    // The new leader took over by a transfer, not by an election after a timeout.
    let status = cluster.status(successor).await.unwrap();
    let last = status["failovers"].as_array().unwrap().last().cloned();
    let last = last.unwrap_or_default();
    assert_eq!(last["trigger"], "Transfer", "{status}");
    assert_eq!(last["old_leader"], leader, "{status}");
}
