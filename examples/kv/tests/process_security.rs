//! HTTPS and bearer tokens on a 3-node cluster of `raft-kv serve` processes, with certificates
//! from `raft-kv certs`: the client subcommands work with `--tls-ca` and `--token-file` (and
//! the nodes register themselves with their admin token over HTTPS); a request without a
//! token, or with an unknown one, is answered 401, and a read token on a write 403; plain
//! HTTP sent to the HTTPS port has its connection closed at once; a client that does not
//! trust the CA, or presents a certificate of another CA, is refused; and a certificate
//! replaced on disk is served without a restart, while a broken one is not.
//!
//! The peers talk to each other over plain TCP here: the transport's own TLS is separate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use raft_kv::client::ClientSecurity;
use raft_kv::{Client, Tokens};
use reqwest::Method;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Cluster, Finished, free_addr, ok, run, run_async};

const TOKENS: &str =
    "# the test cluster's tokens\nread=read-token\nwrite=write-token\nadmin=admin-token\n";

/// Runs `raft-kv args…`, which must fail with exit code 1 and no panic.
async fn fails(dir: &Path, args: &[&str]) -> Finished {
    let finished = run_async(dir, args, Duration::from_secs(20)).await;
    assert_eq!(
        finished.status.code(),
        Some(1),
        "raft-kv {args:?}\nstdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    finished
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The certificate the node at `addr` presents, as a client that trusts `ca` receives it.
async fn served_certificate(addr: &str, ca: &Path) -> Vec<u8> {
    let config = raft_kv::tls::client_config(ca, None).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The value of the metric line that starts with `series` (`0` if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Replaces `to` with the contents of `from` as an operator would: a new file renamed over it.
fn replace(from: &Path, to: &Path) {
    let temporary = to.with_extension("new");
    std::fs::copy(from, &temporary).unwrap();
    std::fs::rename(&temporary, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_https_with_tokens() {
    let mut cluster = Cluster::new();
    let dir = cluster.dir.path().to_path_buf();
    let dir = dir.as_path();
    let certs = dir.join("certs");
    let written = ok(dir, &["certs", "--out", &path(&certs), "--nodes", "1,2,3"]).await;
    for file in ["ca.pem", "ca.key", "1.pem", "1.key", "3.key", "client.pem"] {
        assert!(written.contains(&path(&certs.join(file))), "{written}");
    }
    // Nothing is overwritten.
    let again = fails(dir, &["certs", "--out", &path(&certs), "--nodes", "3"]).await;
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let ca = certs.join("ca.pem");

    let security = ClientSecurity {
        tls: Some(raft_kv::tls::client_config(&ca, None).await.unwrap()),
        tokens: Some(Tokens::parse(TOKENS).unwrap()),
    };
    let probe = Client::with_security(Vec::new(), security.clone()).unwrap();
    cluster.set_probe(probe, true);
    for id in 1..=3u64 {
        let node = cluster.define(id, &[]);
        let cert = path(&certs.join(format!("{id}.pem")));
        let key = path(&certs.join(format!("{id}.key")));
        node.args.extend(
            [
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ca",
                &path(&ca),
                "--token-file",
                &path(&tokens),
            ]
            .map(String::from),
        );
    }
    let peers = cluster.peers(&[1, 2, 3]);
    for id in 1..=3 {
        let node = cluster.node(id);
        node.args.extend(["--peers".to_string(), peers.clone()]);
        node.start();
    }
    // Ready means registered: the followers registered themselves with the leader over HTTPS,
    // with the admin token.
    let (_, follower) = cluster.wait_ready(3).await;

    // The client subcommands, pointed at a follower (so writes follow an https redirect).
    let f = cluster.nodes[&follower].http.clone();
    let all = cluster.endpoints().join(",");
    let (ca_flag, tokens_flag) = (path(&ca), path(&tokens));
    let secure = ["--tls-ca", &ca_flag, "--token-file", &tokens_flag];
    let cli = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(secure.iter().map(|a| a.to_string()));
        args
    };
    macro_rules! ok {
        ($($arg:expr),*) => {{
            let args = cli(&[$($arg,)*]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(dir, &args).await
        }};
    }
    let out = ok!("put", "fruit", "apple", "--http", &f);
    assert!(out.starts_with("ok, index "), "{out}");
    assert_eq!(ok!("get", "fruit", "--http", &f).trim(), "apple");
    let table = ok!("status", "--http", &all);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("127.0.0.1") && l.contains(" leader "))
            .count(),
        1,
        "{table}"
    );
    let members = ok!("members", "--http", &f);
    assert!(members.starts_with("voters [1,2,3]"), "{members}");
    // With a client certificate of the cluster's CA.
    let (client_cert, client_key) = (
        path(&certs.join("client.pem")),
        path(&certs.join("client.key")),
    );
    let out = ok!(
        "get",
        "fruit",
        "--http",
        &f,
        "--tls-cert",
        &client_cert,
        "--tls-key",
        &client_key
    );
    assert_eq!(out.trim(), "apple");
    // One token for everything.
    let out = ok(
        dir,
        &[
            "put",
            "veg",
            "leek",
            "--http",
            &f,
            "--tls-ca",
            &ca_flag,
            "--token",
            "write-token",
        ],
    )
    .await;
    assert!(out.starts_with("ok, index "), "{out}");
    // An admin command: leadership moves to the follower.
    let to = follower.to_string();
    let out = ok!("transfer-leader", "--to", &to, "--http", &f);
    assert_eq!(out.trim(), format!("handing leadership to node {follower}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster
        .status(follower)
        .await
        .is_none_or(|s| s["role_name"] != "leader")
    {
        assert!(
            Instant::now() < deadline,
            "node {follower} did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refusals: 401 without a known token, 403 with too little privilege.
    let https = raft_kv::tls::http_client_builder(security.tls.clone())
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let node = cluster.nodes[&follower].base();
    let send = |method: Method, route: &str, token: Option<&str>| {
        let mut request = https.request(method, format!("{node}{route}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if route.starts_with("/kv/") {
            request = request.json(&serde_json::json!({"value": "v"}));
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            let challenge = answer
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            (status, body, challenge)
        }
    };
    let (status, body, challenge) = send(Method::GET, "/kv/fruit", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert!(challenge.unwrap().starts_with("Bearer"));
    let (status, body, _) = send(Method::GET, "/kv/fruit", Some("wrong-token")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, _, _) = send(Method::GET, "/status", None).await;
    assert_eq!(status, 401, "/status needs a token without --open-status");
    let (status, body, _) = send(Method::PUT, "/kv/fruit", Some("read-token")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(body["needs"], "write", "{body}");
    let (status, body, _) = send(Method::POST, "/cluster/snapshot", Some("write-token")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body, _) = send(Method::GET, "/kv/fruit", Some("read-token")).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("apple")),
        "{body}"
    );
    let refused = fails(
        dir,
        &[
            "put",
            "fruit",
            "pear",
            "--http",
            &f,
            "--tls-ca",
            &ca_flag,
            "--token",
            "read-token",
        ],
    )
    .await;
    assert!(
        refused.stderr.contains("forbidden (403)"),
        "{}",
        refused.stderr
    );
    let refused = fails(dir, &["get", "fruit", "--http", &f, "--tls-ca", &ca_flag]).await;
    assert!(
        refused.stderr.contains("unauthorized (401)"),
        "{}",
        refused.stderr
    );

    // Plain HTTP to the HTTPS port: the connection is closed at once.
    let addr = cluster.nodes[&follower].http.clone();
    let plain = tokio::task::spawn_blocking(move || {
        let begun = Instant::now();
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: node\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        (read.map_err(|e| e.kind()), answer, begun.elapsed())
    })
    .await
    .unwrap();
    match &plain.0 {
        Ok(_) => assert!(plain.1.is_empty(), "an answer to plain HTTP: {:?}", plain.1),
        Err(kind) => assert!(
            !matches!(
                kind,
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "plain HTTP hung: {kind:?}"
        ),
    }
    assert!(
        plain.2 < Duration::from_secs(1),
        "plain HTTP took {:?}",
        plain.2
    );
    // One address holding idle connections gets at most MAX_HANDSHAKES_PER_ADDRESS handshake
    // slots: the next connection is closed at once, and once the idle ones are gone the API
    // answers again, without waiting for their handshake timeout.
    let addr = cluster.nodes[&follower].http.clone();
    let mut idle = Vec::new();
    for _ in 0..raft_kv::https::MAX_HANDSHAKES_PER_ADDRESS {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let begun = Instant::now();
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut extra, &mut byte),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the per-address limit was kept: {closed:?}"
    );
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "{:?}",
        begun.elapsed()
    );
    drop(idle);
    let begun = Instant::now();
    ok(
        dir,
        &[&["get", "fruit", "--http", &addr][..], &secure].concat(),
    )
    .await;
    assert!(
        begun.elapsed() < Duration::from_secs(4),
        "the API answered only after {:?}",
        begun.elapsed()
    );
    let plain_client = raft_kv::tls::http_client_builder(None)
        .unwrap()
        .build()
        .unwrap();
    let url = format!("http://{}/status", cluster.nodes[&follower].http);
    let plain = tokio::time::timeout(Duration::from_secs(3), plain_client.get(url).send()).await;
    assert!(matches!(plain, Ok(Err(_))), "plain HTTP: {plain:?}");

    // A client that does not trust the CA is refused, at once; so is a client certificate of
    // another CA.
    let other = dir.join("other");
    ok(dir, &["certs", "--out", &path(&other), "--nodes", "9"]).await;
    let other_ca = path(&other.join("ca.pem"));
    let begun = Instant::now();
    let get_fruit = ["get", "fruit", "--http", &f, "--token-file", &tokens_flag];
    let untrusting = fails(dir, &[&get_fruit[..], &["--tls-ca", &other_ca]].concat()).await;
    assert!(untrusting.stderr.contains("TLS"), "{}", untrusting.stderr);
    assert!(
        begun.elapsed() < Duration::from_secs(4),
        "a certificate error is not retried: {:?}",
        begun.elapsed()
    );
    let (stranger_cert, stranger_key) = (
        path(&other.join("client.pem")),
        path(&other.join("client.key")),
    );
    let stranger = ["--tls-cert", &stranger_cert, "--tls-key", &stranger_key];
    fails(
        dir,
        &[&get_fruit[..], &["--tls-ca", &ca_flag], &stranger].concat(),
    )
    .await;
    // The peers speak mutual TLS too: a plaintext Raft hello to the follower's Raft port is
    // refused and counted.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let raft = cluster.nodes[&follower].raft.clone();
        let mut stream = tokio::net::TcpStream::connect(&raft).await.unwrap();
        let mut hello = b"RAFT".to_vec();
        hello.extend_from_slice(&[0u8; 18]);
        stream.write_all(&hello).await.unwrap();
        let mut buf = [0u8; 64];
        // Closed (perhaps after a TLS alert), never answered with a Raft verdict.
        let answered = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap();
        assert!(
            !matches!(answered, Ok(n) if n >= 4 && &buf[..4] == b"RAFT"),
            "{answered:?}"
        );
    }
    let text = https
        .get(format!("{node}/metrics"))
        .bearer_auth("read-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&text, "raft_kv_http_auth_refusals_total{code=\"401\"}") >= 4.0,
        "{text}"
    );
    assert!(
        metric(&text, "raft_kv_http_auth_refusals_total{code=\"403\"}") >= 3.0,
        "{text}"
    );
    let series = "raft_kv_peer_handshakes_refused_total{cause=\"not a TLS handshake\"}";
    assert!(metric(&text, series) >= 1.0, "{series}:\n{text}");
    for cause in [
        "plaintext",
        "client_refused_certificate",
        "unknown_ca",
        "busy",
    ] {
        let series = format!("raft_kv_tls_handshake_failures_total{{cause=\"{cause}\"}}");
        assert!(metric(&text, &series) >= 1.0, "{series}:\n{text}");
    }
    let log = std::fs::read_to_string(&cluster.nodes[&follower].log).unwrap();
    assert!(log.contains("cause=plaintext"), "{log}");
    assert!(log.contains("cause=unknown_token"), "{log}");
    assert!(log.contains("cause=insufficient_role"), "{log}");
    // Three requests without a token, within a few seconds of each other.
    let lines = log.matches("cause=missing_token").count();
    assert!(
        (1..3).contains(&lines),
        "refusals of one cause from one address are logged once per 10 s ({lines} lines):\n{log}"
    );

    // A certificate replaced on disk is served without a restart.
    let node_addr = cluster.nodes[&1].http.clone();
    assert_eq!(
        served_certificate(&node_addr, &ca).await,
        der_of(&certs.join("1.pem"))
    );
    let renewed = dir.join("renewed");
    std::fs::create_dir_all(&renewed).unwrap();
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(certs.join(file), renewed.join(file)).unwrap();
    }
    ok(dir, &["certs", "--out", &path(&renewed), "--nodes", "1"]).await;
    let new = der_of(&renewed.join("1.pem"));
    assert_ne!(new, der_of(&certs.join("1.pem")));
    replace(&renewed.join("1.key"), &certs.join("1.key"));
    replace(&renewed.join("1.pem"), &certs.join("1.pem"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_certificate(&node_addr, &ca).await != new {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken replacement is refused, and the certificate served stays.
    let refusals = || {
        let log = cluster.nodes[&1].log_of_this_run();
        log.matches("still serving the previous one").count()
    };
    let before = refusals();
    std::fs::write(certs.join("1.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while refusals() == before {
        assert!(
            Instant::now() < deadline,
            "the broken certificate was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_certificate(&node_addr, &ca).await, new);

    // A clean stop is not held up by stalled clients: one that never starts its handshake,
    // one that sends half a request and waits.
    let _silent = tokio::net::TcpStream::connect(&node_addr).await.unwrap();
    let config = raft_kv::tls::client_config(&ca, None).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(&node_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut half = connector.connect(name, stream).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /status HTTP/1.1\r\nHost: n\r\n")
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut half).await.unwrap();
    let took = cluster.node(1).terminate(Duration::from_secs(10));
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
}

/// `raft-kv serve args…`, which must exit 1 at once with one line naming `what`.
fn assert_refused(dir: &Path, extra: &[&str], what: &str) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run_number = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = dir.join(format!("data-{run_number}"));
    let (raft, http) = (free_addr(), free_addr());
    let peers = format!("1={raft}");
    let data = path(&data);
    let mut args = vec![
        "serve",
        "--id",
        "1",
        "--listen",
        &raft,
        "--http",
        &http,
        "--data-dir",
        &data,
        "--peers",
        &peers,
    ];
    args.extend_from_slice(extra);
    let finished = run(dir, &args, Duration::from_secs(10));
    let context = format!("raft-kv {args:?}\nstderr:\n{}", finished.stderr);
    assert_eq!(finished.status.code(), Some(1), "{context}");
    let last = finished.stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("raft-kv: ") && last.contains(what),
        "expected {what:?}: {context}"
    );
    assert!(!finished.stderr.contains("panicked"), "{context}");
}

#[test]
fn serve_refuses_bad_security_flags_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let certs = dir.join("certs");
    raft_kv::certs::write_all(&certs, &[1, 2]).unwrap();
    let file = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (cert, key, ca) = (
        path(&certs.join("1.pem")),
        path(&certs.join("1.key")),
        path(&certs.join("ca.pem")),
    );
    let garbage = path(&file("garbage.pem", "this is not PEM\n"));
    let broken = path(&file("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n"));
    assert_refused(dir, &["--tls-cert", &cert], "go together");
    assert_refused(
        dir,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            "/nonexistent/ca.pem",
        ],
        "cannot read",
    );
    assert_refused(
        dir,
        &["--tls-cert", &garbage, "--tls-key", &key, "--tls-ca", &ca],
        "no certificate",
    );
    assert_refused(
        dir,
        &["--tls-cert", &broken, "--tls-key", &key, "--tls-ca", &ca],
        "not valid PEM",
    );
    assert_refused(
        dir,
        &["--tls-cert", &cert, "--tls-key", &garbage, "--tls-ca", &ca],
        "no private key",
    );
    let other_key = path(&certs.join("ca.key"));
    assert_refused(
        dir,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &other_key,
            "--tls-ca",
            &ca,
        ],
        "does not go with",
    );
    // Node 2's certificate cannot serve node 1: its peers would refuse it.
    let (cert2, key2) = (path(&certs.join("2.pem")), path(&certs.join("2.key")));
    assert_refused(
        dir,
        &["--tls-cert", &cert2, "--tls-key", &key2, "--tls-ca", &ca],
        "does not name this node",
    );
    for (text, what) in [
        ("reader=x\n", "unknown role"),
        ("admin=a\nadmin=b\n", "given twice"),
        ("admin=\n", "empty"),
        ("# nothing\n", "no token"),
        ("read=r\nwrite=w\n", "no admin token"),
    ] {
        let tokens = path(&file("tokens", text));
        assert_refused(dir, &["--token-file", &tokens], what);
    }
    assert_refused(
        dir,
        &["--open-status"],
        "--open-status goes with --token-file",
    );
}
