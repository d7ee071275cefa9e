//! Membership changes through the HTTP API of `raft-kv serve` processes, under a load of
//! clients: a fourth node started with `--join` is added as a learner (`POST
//! /cluster/learners`, answered once it has caught up) and promoted (`POST
//! /cluster/membership`), `GET /cluster/members` then lists four voters with both addresses
//! each; then a follower is removed, and then the leader itself, which hands leadership over.
//! Proves the clients' history stays linearizable throughout (no acknowledged write lost, no
//! stale read), and that every change ends with the voters asked for and a leader among them.
//! Also: a learner request the cluster refuses (`409 membership`) changes nothing, not even
//! the directory of node addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_kv::client::Client;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Cluster, Load, LoadOptions, Recorder, read_back};

/// Sends a membership request through any node (the client follows redirects) until
/// `GET /cluster/members` shows `done`: retried while the previous change is still committing
/// (409 `membership`, no effect), while the cluster is between leaders, or when the outcome is
/// unknown (a leader change cut it off) and the change is not in place; panics on any other
/// answer, or after 10 s.
async fn change(client: &Client, path: &str, body: &Value, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.call(Method::POST, path, Some(body)).await;
        match &reply {
            Ok(reply) if reply.status.is_success() => return,
            Ok(reply) if reply.error() == Some("membership") => {}
            Ok(reply) if reply.status.is_server_error() => {}
            Err(_) => {}
            Ok(other) => panic!("{path} {body}: {other:?}"),
        }
        let members = client.call(Method::GET, "/cluster/members", None).await;
        if let Ok(members) = members
            && members.status.is_success()
            && done(&members.body)
        {
            return;
        }
        eprintln!("{path} {body}: {reply:?}; retrying");
        assert!(Instant::now() < deadline, "{path} {body} kept failing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a `GET /cluster/members` answer shows exactly `voters`, outside a joint
/// configuration.
fn voters_are(members: &Value, voters: &[u64]) -> bool {
    members["voters"] == json!(voters) && members["joint"] == json!(false)
}

/// Waits until `GET /cluster/members` on node `via` shows exactly `voters`, outside a joint
/// configuration, and returns it.
async fn wait_members(cluster: &Cluster, via: u64, voters: &[u64]) -> Value {
    let client = cluster.client();
    let base = cluster.nodes[&via].base();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client
            .send_to(&base, Method::GET, "/cluster/members", None)
            .await;
        if let Ok(reply) = &reply
            && reply.status.is_success()
            && voters_are(&reply.body, voters)
        {
            return reply.body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "node {via} did not show voters {voters:?}; last answer {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until node `id` reports `role`.
async fn wait_role(cluster: &Cluster, id: u64, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = cluster.status(id).await;
        if status.as_ref().is_some_and(|s| s["role_name"] == role) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} is not a {role}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_through_the_api_under_load() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    for id in 1..=3 {
        cluster.wait_up(id, Duration::from_secs(10)).await;
    }
    let first = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(10))
        .await;
    cluster
        .wait_registered(first, Duration::from_secs(10))
        .await;

    // Node 4's addresses are chosen now, so the clients know all four from the start.
    let peers = cluster.peers(&[1, 2, 3]);
    let newcomer = cluster.define(4, &["--join", "--peers", &peers]);
    let (raft4, http4) = (newcomer.raft.clone(), newcomer.http.clone());
    let recorder = Recorder::new();
    let options = LoadOptions::new(4, 5);
    let load = Load::start(cluster.endpoints(), options.clone(), recorder.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Node 4 joins as a learner, then votes.
    cluster.node(4).start();
    let status = cluster.wait_up(4, Duration::from_secs(10)).await;
    assert_eq!(
        status["membership"],
        Value::Null,
        "a joining node has no membership yet"
    );
    let admin = Client::new(cluster.endpoints())
        .expect("client")
        .with_timeout(Duration::from_secs(8))
        .with_patience(Duration::from_secs(3));
    let body = json!({"id": 4, "addr": raft4, "http": http4, "catch_up_within": 100});
    change(&admin, "/cluster/learners", &body, |m| {
        m["learners"] == json!([4])
    })
    .await;
    wait_role(&cluster, 4, "learner").await;
    let body = json!({"voters": [1, 2, 3, 4]});
    change(&admin, "/cluster/membership", &body, |m| {
        voters_are(m, &[1, 2, 3, 4])
    })
    .await;
    let members = wait_members(&cluster, 4, &[1, 2, 3, 4]).await;
    wait_role(&cluster, 4, "follower").await;
    assert_eq!(members["learners"], json!([]), "{members}");
    for id in 1..=4u64 {
        let node = &cluster.nodes[&id];
        let listed = &members["nodes"][id.to_string()];
        assert_eq!(listed["raft"], json!(node.raft), "node {id} in {members}");
        assert_eq!(listed["http"], json!(node.http), "node {id} in {members}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A follower leaves.
    let leader = cluster
        .wait_leader(&[1, 2, 3, 4], Duration::from_secs(5))
        .await;
    let removed = (1..=3).find(|&id| id != leader).expect("a follower");
    let voters: Vec<u64> = (1..=4).filter(|&id| id != removed).collect();
    change(
        &admin,
        "/cluster/membership",
        &json!({"voters": voters}),
        |m| voters_are(m, &voters),
    )
    .await;
    wait_members(&cluster, leader, &voters).await;
    let still = cluster.wait_leader(&voters, Duration::from_secs(5)).await;
    eprintln!("removed follower {removed}; node {still} leads");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The leader leaves: it must hand leadership to one of the remaining voters.
    let old_leader = cluster.wait_leader(&voters, Duration::from_secs(5)).await;
    let remaining: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|&id| id != old_leader)
        .collect();
    change(
        &admin,
        "/cluster/membership",
        &json!({"voters": remaining}),
        |m| voters_are(m, &remaining),
    )
    .await;
    let new_leader = cluster
        .wait_leader(&remaining, Duration::from_secs(5))
        .await;
    wait_members(&cluster, new_leader, &remaining).await;
    let status = cluster.status(new_leader).await.expect("status");
    let failovers = status["failovers"].as_array().expect("failovers");
    eprintln!(
        "removed leader {old_leader}; node {new_leader} leads: {}",
        failovers.last().expect("a failover")
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    load.stop().await;
    let client = Client::new(
        remaining
            .iter()
            .map(|id| cluster.nodes[id].http.clone())
            .collect(),
    )
    .expect("client")
    .with_timeout(Duration::from_secs(2))
    .with_patience(Duration::from_secs(3));
    read_back(&client, &options.key_names(), &recorder).await;
    recorder.assert_linearizable();
    assert!(
        recorder.counted("put ok") >= 20,
        "too few puts were acknowledged"
    );
    let status = cluster.status(old_leader).await.expect("old leader status");
    assert_ne!(
        status["role_name"], "leader",
        "the removed leader still leads: {status}"
    );
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_learner_request_changes_no_address() {
    let mut cluster = Cluster::start(3, &[]);
    for id in 1..=3 {
        cluster.wait_up(id, Duration::from_secs(10)).await;
    }
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(10))
        .await;
    let before = cluster
        .wait_registered(leader, Duration::from_secs(10))
        .await;
    // A voter that is down (so it cannot register itself again) is named in a learner request
    // with other addresses: the request is refused, as that node already votes.
    let down = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.node(down).kill();
    let client = cluster.client();
    let body = json!({"id": down, "addr": "127.0.0.1:1", "http": "127.0.0.1:2"});
    let reply = client
        .call(Method::POST, "/cluster/learners", Some(&body))
        .await
        .expect("an answer");
    assert_eq!(reply.status.as_u16(), 409, "{reply:?}");
    assert_eq!(reply.error(), Some("membership"), "{reply:?}");
    // 409 `membership` means no effect: the directory must still hold the node's addresses.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = client
        .call(Method::GET, "/cluster/members", None)
        .await
        .expect("an answer");
    let key = down.to_string();
    assert_eq!(
        after.body["nodes"][&key], before["nodes"][&key],
        "a refused POST /cluster/learners rewrote node {down}'s addresses"
    );
}
