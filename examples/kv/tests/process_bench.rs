//! `raft-kv bench` against a 3-node cluster of `raft-kv serve` processes, pointed at a follower:
//! with `--conns` below `--clients` the clients' requests are pipelined on shared connections,
//! redirected writes follow the leader, and every write the bench counts is one entry the
//! cluster committed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{Cluster, ok};

/// The leader's term and commit index.
async fn term_and_commit(cluster: &Cluster, among: &[u64]) -> (u64, u64) {
    let leader = cluster.wait_leader(among, Duration::from_secs(10)).await;
    let status = cluster.status(leader).await.expect("the leader's status");
    (
        status["term"].as_u64().expect("term"),
        status["commit_index"].as_u64().expect("commit_index"),
    )
}

/// Runs `raft-kv bench` with `args` and `--json`, and checks its count of writes against the
/// entries the cluster committed meanwhile: each write counted is one, and the others are
/// what an election adds (one entry per new term) or a write that timed out may have added.
/// The bench itself can cost this machine's nodes their leader (the tests' election timeout is
/// short): errors are allowed only when the term changed, and only of the kinds an election
/// causes. Returns the JSON line.
async fn bench_counts(cluster: &Cluster, args: &[&str]) -> Value {
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let (term, commit) = term_and_commit(cluster, &ids).await;
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(cluster.dir.path(), &args).await;
    let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    // Once the leader's commit index settles: a leader elected meanwhile may not yet have
    // committed what the one before acknowledged.
    let mut after = term_and_commit(cluster, &ids).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = term_and_commit(cluster, &ids).await;
        if again == after {
            break;
        }
        after = again;
    }
    let (term_after, commit_after) = after;
    let errors = result["errors"].as_object().expect("errors");
    if term_after == term {
        // No election: nothing excuses an error (an answer the node dropped among them).
        assert!(errors.is_empty(), "{result}");
    }
    for kind in errors.keys() {
        assert!(
            ["no_leader", "not_leader", "timeout"].contains(&kind.as_str()),
            "{result}"
        );
    }
    let timeouts = errors.get("timeout").and_then(Value::as_u64).unwrap_or(0);
    let writes = result["writes"].as_u64().expect("writes");
    let committed = commit_after - commit;
    eprintln!("terms {term} to {term_after}, {committed} entries committed: {result}");
    assert!(
        writes <= committed && committed <= writes + (term_after - term) + timeouts,
        "{committed} entries committed in terms {term} to {term_after}: {result}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_pipelined_connections_counts_what_the_cluster_committed() {
    let mut cluster = Cluster::start(3, &[]);
    let (_, follower) = cluster.wait_ready(3).await;
    let f = cluster.nodes[&follower].http.clone();
    // 7 clients on 3 connections (3, 2 and 2 requests in flight), half reads, all sent to a
    // follower first: the writes are redirected to the leader.
    let result = bench_counts(
        &cluster,
        &[
            "bench",
            "--http",
            &f,
            "--clients",
            "7",
            "--conns",
            "3",
            "--duration-s",
            "2",
            "--read-ratio",
            "0.5",
            "--keys",
            "50",
        ],
    )
    .await;
    assert_eq!(result["clients"], 7, "{result}");
    assert_eq!(result["conns"], 3, "{result}");
    assert!(result["writes"].as_u64() > Some(50), "{result}");
    assert!(result["reads"].as_u64() > Some(50), "{result}");

    // The same with one connection per client (the default): nothing pipelined.
    let result = bench_counts(
        &cluster,
        &["bench", "--http", &f, "--clients", "3", "--duration-s", "1"],
    )
    .await;
    assert_eq!(result["conns"], 3, "{result}");
    assert!(result["writes"].as_u64() > Some(10), "{result}");

    // --conns above --clients is refused.
    let refused = support::run(
        cluster.dir.path(),
        &["bench", "--http", &f, "--clients", "2", "--conns", "3"],
        Duration::from_secs(20),
    );
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("--conns"), "{}", refused.stderr);
}
