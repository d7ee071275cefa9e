//! Bad requests against a one-node `raft-kv serve` process (`--peers` naming only itself):
//! malformed or mistyped JSON, unknown fields and parameters, oversized keys, values and
//! bodies, bad consistency levels and indexes, misused request ids, unknown routes and methods.
//! Proves each is refused with the status and JSON `error` code the API documents, changes
//! nothing, and leaves the node serving; and that request ids make a retried write (a swap
//! included) take effect once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use support::Cluster;

/// A one-node cluster with small key and value limits, up and leading.
async fn single_node() -> Cluster {
    let mut cluster = Cluster::start(1, &["--max-key-bytes", "16", "--max-value-bytes", "32"]);
    cluster.wait_up(1, Duration::from_secs(10)).await;
    cluster.wait_leader(&[1], Duration::from_secs(10)).await;
    cluster.wait_registered(1, Duration::from_secs(10)).await;
    cluster
}

/// Sends `body` as is (not necessarily JSON) and returns the status and the JSON answer
/// (`Value::Null` if the answer is not JSON).
async fn raw(cluster: &Cluster, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
    // Through raft-kv's builder: reqwest has no TLS provider of its own here.
    let http = raft_kv::tls::http_client_builder(None)
        .expect("client builder")
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client");
    let url = format!("{}{path}", cluster.nodes[&1].base());
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Asserts an error answer: this status, this `error` code, and a `message`.
#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "no message in {body}");
}

/// The value at `key` (linearizable read).
async fn value_of(cluster: &Cluster, key: &str) -> Value {
    let (status, body) = raw(cluster, Method::GET, &format!("/kv/{key}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["value"].clone()
}

/// The node still takes a write and serves it back.
async fn assert_still_serves(cluster: &Cluster) {
    let put = raw(
        cluster,
        Method::PUT,
        "/kv/alive",
        Some(r#"{"value":"yes"}"#),
    )
    .await;
    assert_eq!(put.0, 200, "{}", put.1);
    assert_eq!(value_of(cluster, "alive").await, "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_mistyped_bodies_are_400() {
    let cluster = single_node().await;
    let cases: [(Method, &str, &str); 9] = [
        (Method::PUT, "/kv/a", r#"{"value":"#),
        (Method::PUT, "/kv/a", "not json"),
        (Method::PUT, "/kv/a", ""),
        (Method::PUT, "/kv/a", r#"{"value": 1}"#),
        (Method::PUT, "/kv/a", r#"{"value": "x", "colour": "red"}"#),
        (Method::POST, "/kv/a/cas", r#"{"expect": 5, "value": "x"}"#),
        (
            Method::POST,
            "/kv/a/cas",
            r#"{"value": "x", "extra": true}"#,
        ),
        (Method::POST, "/cluster/membership", r#"{"voters": "1"}"#),
        (Method::POST, "/cluster/transfer-leader", r#"{"to": "two"}"#),
    ];
    for (method, path, body) in cases {
        let answer = raw(&cluster, method.clone(), path, Some(body)).await;
        assert_eq!(answer.0, 400, "{method} {path} {body:?}: {}", answer.1);
        assert_error(&answer, 400, "bad_request");
    }
    assert_eq!(
        value_of(&cluster, "a").await,
        Value::Null,
        "a refused write took effect"
    );
    assert_still_serves(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_keys_values_and_bodies_are_413() {
    let cluster = single_node().await;
    let long_key = "k".repeat(17);
    let long_value = "v".repeat(33);
    let put = |key: &str, value: &str| {
        let body = json!({"value": value}).to_string();
        let path = format!("/kv/{key}");
        let cluster = &cluster;
        async move { raw(cluster, Method::PUT, &path, Some(&body)).await }
    };
    assert_error(&put(&long_key, "v").await, 413, "too_large");
    assert_error(&put("a", &long_value).await, 413, "too_large");
    let path = format!("/kv/{long_key}");
    assert_error(
        &raw(&cluster, Method::GET, &path, None).await,
        413,
        "too_large",
    );
    assert_error(
        &raw(&cluster, Method::DELETE, &path, None).await,
        413,
        "too_large",
    );
    let cas = json!({"expect": long_value, "value": "x"}).to_string();
    let answer = raw(&cluster, Method::POST, "/kv/a/cas", Some(&cas)).await;
    assert_error(&answer, 413, "too_large");
    // A body far above the limit is refused before it is parsed.
    let huge = json!({"value": "v".repeat(200_000)}).to_string();
    let answer = raw(&cluster, Method::PUT, "/kv/a", Some(&huge)).await;
    assert_error(&answer, 413, "too_large");
    // At the limits exactly, all is well.
    let (key, value) = ("k".repeat(16), "v".repeat(32));
    assert_eq!(put(&key, &value).await.0, 200);
    assert_eq!(value_of(&cluster, &key).await, json!(value));
    assert_eq!(
        value_of(&cluster, "a").await,
        Value::Null,
        "a refused write took effect"
    );
    assert_still_serves(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400() {
    let cluster = single_node().await;
    let gets = [
        "/kv/a?consistency=bogus",
        "/kv/a?consistency=",
        "/kv/a?min_index=abc",
        "/kv/a?min_index=-1",
        "/kv/a?consistency=follower",
        "/kv/a?consistency=lease&max_staleness_ms=100",
        "/kv/a?max_staleness_ms=ten&consistency=follower",
        "/kv/a?colour=red",
        "/kv/a?consistency=lease&consistency=stale",
    ];
    for path in gets {
        let answer = raw(&cluster, Method::GET, path, None).await;
        assert_eq!(answer.0, 400, "GET {path}: {}", answer.1);
        assert_error(&answer, 400, "bad_request");
    }
    let body = r#"{"value":"x"}"#;
    let writes = [
        (Method::PUT, "/kv/a?colour=red", Some(body)),
        (Method::PUT, "/kv/a?ack=most", Some(body)),
        (Method::DELETE, "/kv/a?consistency=lease", None),
        (Method::POST, "/kv/a/cas?ack=local", Some(body)),
        (
            Method::PUT,
            "/kv/a?request_id=q",
            Some(r#"{"value":"x","request_id":"b"}"#),
        ),
    ];
    for (method, path, body) in writes {
        let answer = raw(&cluster, method.clone(), path, body).await;
        assert_eq!(answer.0, 400, "{method} {path}: {}", answer.1);
        assert_error(&answer, 400, "bad_request");
    }
    assert_eq!(
        value_of(&cluster, "a").await,
        Value::Null,
        "a refused write took effect"
    );
    // The valid forms of the same parameters are served.
    for path in [
        "/kv/a?consistency=lease",
        "/kv/a?consistency=stale",
        "/kv/a?consistency=follower&max_staleness_ms=5000",
        "/kv/a?min_index=0",
        "/kv/a?min_index=1",
    ] {
        let (status, body) = raw(&cluster, Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    assert_still_serves(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_checked_and_make_retries_take_effect_once() {
    let cluster = single_node().await;
    let put = |key: &'static str, body: Value| {
        let cluster = &cluster;
        async move {
            let path = format!("/kv/{key}");
            raw(cluster, Method::PUT, &path, Some(&body.to_string())).await
        }
    };

    // Too long (and empty) ids are refused; 128 bytes is fine.
    let answer = put("a", json!({"value": "x", "request_id": "r".repeat(129)})).await;
    assert_error(&answer, 400, "bad_request");
    let answer = put("a", json!({"value": "x", "request_id": ""})).await;
    assert_error(&answer, 400, "bad_request");
    let path = format!("/kv/a?request_id={}", "q".repeat(129));
    assert_error(
        &raw(&cluster, Method::DELETE, &path, None).await,
        400,
        "bad_request",
    );
    assert_eq!(value_of(&cluster, "a").await, Value::Null);
    let (status, body) = put("a", json!({"value": "x", "request_id": "r".repeat(128)})).await;
    assert_eq!(status, 200, "{body}");

    // A retried put answers the first one's index and is not applied again.
    let (status, first) = put("b", json!({"value": "one", "request_id": "put-1"})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first.get("repeated"), None, "{first}");
    let (status, _) = put("b", json!({"value": "two"})).await;
    assert_eq!(status, 200);
    let (status, retry) = put("b", json!({"value": "one", "request_id": "put-1"})).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["index"], first["index"], "{retry}");
    assert_eq!(retry["repeated"], true, "{retry}");
    assert_eq!(
        value_of(&cluster, "b").await,
        "two",
        "the retried put was applied again"
    );

    // The same id with another write is refused, and changes nothing.
    let (status, reused) = put("b", json!({"value": "three", "request_id": "put-1"})).await;
    assert_error(&(status, reused.clone()), 409, "request_id_reused");
    assert_eq!(reused["index"], first["index"], "{reused}");
    let answer = raw(&cluster, Method::DELETE, "/kv/b?request_id=put-1", None).await;
    assert_error(&answer, 409, "request_id_reused");
    assert_eq!(
        value_of(&cluster, "b").await,
        "two",
        "a refused write took effect"
    );

    // A retried swap answers as the first did and does not swap again, though it would now.
    let cas = json!({"expect": null, "value": "won", "request_id": "cas-1"}).to_string();
    let (status, first) = raw(&cluster, Method::POST, "/kv/c/cas", Some(&cas)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["ok"], true, "{first}");
    let (status, _) = raw(&cluster, Method::DELETE, "/kv/c", None).await;
    assert_eq!(status, 200);
    let (status, retry) = raw(&cluster, Method::POST, "/kv/c/cas", Some(&cas)).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["repeated"], true, "{retry}");
    assert_eq!(retry["index"], first["index"], "{retry}");
    assert_eq!(retry["ok"], true, "{retry}");
    assert_eq!(
        value_of(&cluster, "c").await,
        Value::Null,
        "the retried swap swapped again"
    );

    // A retried delete, with the id in the query string.
    let (status, first) = raw(&cluster, Method::DELETE, "/kv/b?request_id=del-1", None).await;
    assert_eq!(status, 200, "{first}");
    put("b", json!({"value": "back"})).await;
    let (status, retry) = raw(&cluster, Method::DELETE, "/kv/b?request_id=del-1", None).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["repeated"], true, "{retry}");
    assert_eq!(
        value_of(&cluster, "b").await,
        "back",
        "the retried delete was applied again"
    );

    // With ack=local the node would answer before knowing whether the id was used: refused.
    let answer = raw(
        &cluster,
        Method::PUT,
        "/kv/b?ack=local",
        Some(r#"{"value":"other","request_id":"put-1"}"#),
    )
    .await;
    assert_error(&answer, 400, "bad_request");
    let answer = raw(
        &cluster,
        Method::DELETE,
        "/kv/b?ack=local&request_id=x",
        None,
    )
    .await;
    assert_error(&answer, 400, "bad_request");
    assert_eq!(value_of(&cluster, "b").await, "back");

    // Two ids that decode to the same text only if invalid UTF-8 were replaced: refused.
    let answer = raw(&cluster, Method::DELETE, "/kv/b?request_id=%FF", None).await;
    assert_error(&answer, 400, "bad_request");
    assert_still_serves(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let cluster = single_node().await;
    for path in [
        "/nope",
        "/kv",
        "/kv/a/b",
        "/cluster",
        "/cluster/learners/4/x",
    ] {
        let answer = raw(&cluster, Method::GET, path, None).await;
        assert_error(&answer, 404, "not_found");
    }
    let wrong = [
        (Method::POST, "/kv/a"),
        (Method::PATCH, "/kv/a"),
        (Method::GET, "/kv/a/cas"),
        (Method::PUT, "/kv/a/cas"),
        (Method::DELETE, "/status"),
        (Method::POST, "/status"),
        (Method::GET, "/cluster/membership"),
        (Method::PUT, "/cluster/members"),
    ];
    for (method, path) in wrong {
        let answer = raw(&cluster, method.clone(), path, None).await;
        assert_eq!(answer.0, 405, "{method} {path}: {}", answer.1);
        assert_error(&answer, 405, "method_not_allowed");
    }
    assert_still_serves(&cluster).await;
}
