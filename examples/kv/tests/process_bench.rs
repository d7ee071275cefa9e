//! `raft-kv bench` against a 3-node cluster of `raft-kv serve` processes, pointed at a follower:
//! with `--conns` below `--clients` the clients' requests are pipelined on shared connections,
//! redirected writes follow the leader, and every write the bench counts is one entry the
//! cluster committed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use serde_json::Value;
use support::{Cluster, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_pipelined_connections_counts_what_the_cluster_committed() {
    let mut cluster = Cluster::start(3, &[]);
    let (leader, follower) = cluster.wait_ready(3).await;
    let dir = cluster.dir.path().to_path_buf();
    let f = cluster.nodes[&follower].http.clone();
    let before = cluster.leader_commit(&[leader]).await;
    // 7 clients on 3 connections (3, 2 and 2 requests in flight), half reads, all sent to a
    // follower first: the writes are redirected to the leader.
    let out = ok(
        &dir,
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
            "--json",
        ],
    )
    .await;
    let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["clients"], 7, "{result}");
    assert_eq!(result["conns"], 3, "{result}");
    assert_eq!(result["errors"], serde_json::json!({}), "{result}");
    let writes = result["writes"].as_u64().unwrap();
    let reads = result["reads"].as_u64().unwrap();
    assert!(writes > 50 && reads > 50, "{result}");
    // Each write the bench counted is one committed entry, and no other entry was made.
    let after = cluster.leader_commit(&[leader]).await;
    assert_eq!(after - before, writes, "{result}");

    // The same with one connection per client (the default): nothing pipelined.
    let out = ok(
        &dir,
        &[
            "bench",
            "--http",
            &f,
            "--clients",
            "3",
            "--duration-s",
            "1",
            "--json",
        ],
    )
    .await;
    let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["conns"], 3, "{result}");
    assert_eq!(result["errors"], serde_json::json!({}), "{result}");
    let writes = result["writes"].as_u64().unwrap();
    assert!(writes > 10, "{result}");
    assert_eq!(
        cluster.leader_commit(&[leader]).await - after,
        writes,
        "{result}"
    );

    // --conns above --clients is refused.
    let refused = support::run(
        &dir,
        &["bench", "--http", &f, "--clients", "2", "--conns", "3"],
        std::time::Duration::from_secs(20),
    );
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("--conns"), "{}", refused.stderr);
}
