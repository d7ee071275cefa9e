//! The client subcommands of the `raft-kv` binary against a 3-node cluster of `raft-kv serve`
//! processes, pointed at a follower: `put` (redirected to the leader), `get`, `cas`, `delete`,
//! `status` (a table with a header line), `members`, their `--json` output, and
//! `transfer-leader`, which moves leadership to the node named.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Cluster, Finished, ok, run_async};

/// Runs a subcommand with `--json`, which must succeed and print one JSON value.
async fn json_of(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(dir, &args).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// Runs a subcommand that must fail.
async fn fails(dir: &Path, args: &[&str]) -> Finished {
    let finished = run_async(dir, args, Duration::from_secs(20)).await;
    assert!(
        !finished.status.success(),
        "raft-kv {args:?} succeeded: {}",
        finished.stdout
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_subcommands_work_against_a_cluster() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let (_, follower) = cluster.wait_ready(3).await;
    let dir = cluster.dir.path().to_path_buf();
    let dir = dir.as_path();
    let f = cluster.nodes[&follower].http.clone();
    let all = cluster.endpoints().join(",");
    // Runs a subcommand against the follower; it must succeed.
    macro_rules! cli {
        ($($arg:expr),*) => {{
            let args: Vec<&str> = vec![$($arg,)* "--http", f.as_str()];
            ok(dir, &args).await
        }};
    }

    // Writes sent to a follower reach the leader.
    let out = cli!("put", "fruit", "apple");
    assert!(out.starts_with("ok, index "), "{out}");
    assert_eq!(cli!("get", "fruit").trim(), "apple");
    assert_eq!(
        cli!("get", "fruit", "--consistency", "lease").trim(),
        "apple"
    );
    assert_eq!(cli!("get", "missing").trim(), "(absent)");
    // Read your writes on the follower: a stale read at least at the write's index sees it.
    let index = out.trim().trim_start_matches("ok, index ");
    let read = cli!(
        "get",
        "fruit",
        "--consistency",
        "stale",
        "--min-index",
        index
    );
    assert_eq!(read.trim(), "apple");
    let read = cli!(
        "get",
        "fruit",
        "--consistency",
        "follower",
        "--max-staleness-ms",
        "5000"
    );
    assert_eq!(read.trim(), "apple");

    let out = cli!("cas", "fruit", "pear", "--expect", "apple");
    assert!(out.starts_with("swapped, index "), "{out}");
    let out = cli!("cas", "fruit", "plum", "--expect", "apple");
    assert_eq!(out.trim(), "not swapped: the key holds pear");
    let out = cli!("cas", "veg", "leek", "--expect-absent");
    assert!(out.starts_with("swapped"), "{out}");
    assert_eq!(cli!("get", "veg").trim(), "leek");
    let missing = fails(dir, &["cas", "veg", "kale", "--http", &f]).await;
    assert_eq!(
        missing.status.code(),
        Some(2),
        "cas needs --expect or --expect-absent"
    );

    let out = cli!("delete", "fruit");
    assert!(out.starts_with("ok, index "), "{out}");
    assert_eq!(cli!("get", "fruit").trim(), "(absent)");

    // A retried put with a request id is answered with the first one's index.
    let first = cli!("put", "once", "1", "--request-id", "cli-1");
    let again = cli!("put", "once", "1", "--request-id", "cli-1");
    assert_eq!(first, again);

    // An error answer is an error: exit code 1 and the API's code on stderr.
    let bad = fails(
        dir,
        &["get", "fruit", "--consistency", "bogus", "--http", &f],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stderr.contains("bad_request (400)"), "{}", bad.stderr);

    // JSON output.
    let put = json_of(dir, &["put", "j", "x", "--http", &f]).await;
    assert!(put["index"].is_u64(), "{put}");
    let get = json_of(dir, &["get", "j", "--http", &f]).await;
    assert_eq!(get["value"], "x", "{get}");
    let absent = json_of(dir, &["get", "nothing", "--http", &f]).await;
    assert_eq!(absent["value"], Value::Null, "{absent}");
    let cas = json_of(dir, &["cas", "j", "y", "--expect", "x", "--http", &f]).await;
    assert_eq!(cas["ok"], true, "{cas}");
    let members = json_of(dir, &["members", "--http", &f]).await;
    assert_eq!(members["voters"], json!([1, 2, 3]), "{members}");
    // One leader among the three statuses; asked again if a loaded machine caught the
    // cluster between leaders (a leader that missed its quorum's answers steps down).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let statuses = json_of(dir, &["status", "--http", &all]).await;
        let statuses = statuses.as_array().expect("an array of statuses");
        assert_eq!(statuses.len(), 3);
        let leaders = statuses
            .iter()
            .filter(|s| s["role_name"] == "leader")
            .count();
        if leaders == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Tables.
    let table = ok(dir, &["status", "--http", &all]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "node", "id", "role", "term", "leader", "commit", "applied", "last", "lease"
        ],
        "{table}"
    );
    let rows: Vec<&str> = lines.by_ref().take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for node in cluster.nodes.values() {
        assert!(rows.iter().any(|r| r.starts_with(&node.http)), "{table}");
    }
    assert_eq!(
        rows.iter().filter(|r| r.contains(" leader ")).count(),
        1,
        "{table}"
    );
    assert!(table.contains("the leader's peers:"), "{table}");
    let members = ok(dir, &["members", "--http", &f]).await;
    let mut lines = members.lines();
    assert_eq!(
        lines.next().unwrap().trim(),
        "voters [1,2,3]  learners []",
        "{members}"
    );
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["id", "raft", "http"], "{members}");
    for node in cluster.nodes.values() {
        let row = format!("{}  {}", node.id, node.raft);
        assert!(
            members.lines().any(|l| l.trim_start().starts_with(&row)),
            "{members}"
        );
        assert!(members.contains(&node.http), "{members}");
    }

    // Leadership moves to the follower named.
    let to = follower.to_string();
    let out = cli!("transfer-leader", "--to", to.as_str());
    assert_eq!(out.trim(), format!("handing leadership to node {follower}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = cluster.status(follower).await;
        if status.is_some_and(|s| s["role_name"] == "leader") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cli!("get", "j").trim(), "y");
    eprintln!("took {:?}", started.elapsed());
}
