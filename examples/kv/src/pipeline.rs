//! `raft-kv bench --conns N` below `--clients`: several clients share one HTTP/1.1 connection
//! and their requests are pipelined on it (RFC 9112 §9.3): the connection writes the request
//! of every client that is ready in one write, and reads the answers, which come back in the
//! order the requests were sent. Each client still has one request in flight at a time.
//!
//! HTTP/1.1 is spoken by hand here, since hyper's client sends one request at a time per
//! connection. Answers are parsed with `httparse` and must carry a `Content-Length` (as the
//! nodes' answers do); anything else ends the connection as broken.

use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream a connection runs on: TCP, or TLS over TCP.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// The most headers an answer may carry.
const MAX_HEADERS: usize = 32;

/// The longest answer head accepted, in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The longest answer body accepted, in bytes.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One answer read off a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Its status code.
    pub status: u16,
    /// Its body: kept only for an answer that is not a success (the error's JSON).
    pub body: Vec<u8>,
    /// The node said it closes the connection after this answer (`Connection: close`).
    pub closes: bool,
}

/// The next complete answer at the start of `buf`, taken off it; `Ok(None)` if `buf` holds
/// only part of one.
pub(crate) fn take_answer(buf: &mut BytesMut) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err("an answer head longer than 16 KiB".into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("a malformed answer: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let mut length = None;
    let mut closes = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("an answer with a malformed Content-Length")?;
            if length.is_some_and(|l| l != value) {
                return Err("an answer with two Content-Lengths".into());
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("an answer with a Transfer-Encoding: only Content-Length is read".into());
        } else if header.name.eq_ignore_ascii_case("connection") {
            closes = header
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let length = match (length, status) {
        (Some(length), _) => length,
        // No body by definition (RFC 9112 §6.3).
        (None, 100..=199 | 204 | 304) => 0,
        (None, _) => return Err("an answer without a Content-Length".into()),
    };
    if status < 200 {
        return Err(format!(
            "an interim answer ({status}) to a request that asked for none"
        ));
    }
    if length > MAX_BODY_BYTES {
        return Err("an answer body above 16 MiB".into());
    }
    if buf.len() < head + length {
        buf.reserve(head + length - buf.len());
        return Ok(None);
    }
    let body = if (200..300).contains(&status) {
        Vec::new()
    } else {
        buf[head..head + length].to_vec()
    };
    buf.advance(head + length);
    Ok(Some(Answer {
        status,
        body,
        closes,
    }))
}

/// What one request is: a read or a write of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// A read (`GET`), or a write (`PUT`).
    pub read: bool,
    /// The key's number: the key is `k{number}`.
    pub key: u64,
}

/// The parts of the requests that do not change from one to the next.
#[derive(Clone, Debug)]
pub(crate) struct Templates {
    /// `?consistency=...` of reads.
    pub read_query: String,
    /// `?ack=...` of writes.
    pub write_query: String,
    /// The `Authorization` header's value for reads and for writes, if any.
    pub read_authorization: Option<String>,
    /// See `read_authorization`.
    pub write_authorization: Option<String>,
    /// The body of every write.
    pub write_body: Vec<u8>,
}

impl Templates {
    /// Appends `request` to `out`, for `host`.
    pub(crate) fn write(&self, request: Request, host: &str, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = if request.read {
            write!(
                out,
                "GET /kv/k{}?{} HTTP/1.1\r\nhost: {host}\r\n",
                request.key, self.read_query
            )
        } else {
            write!(
                out,
                "PUT /kv/k{}?{} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                request.key,
                self.write_query,
                self.write_body.len()
            )
        };
        let authorization = if request.read {
            &self.read_authorization
        } else {
            &self.write_authorization
        };
        if let Some(authorization) = authorization {
            out.extend_from_slice(b"authorization: ");
            out.extend_from_slice(authorization.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !request.read {
            out.extend_from_slice(&self.write_body);
        }
    }
}

/// Why a run of a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The deadline passed and every request sent was answered.
    Deadline,
    /// A node answered `307` naming this leader (`leader_http`); every request sent before
    /// was answered. The connection is still usable.
    Redirected(String),
    /// The node closed the connection (`Connection: close`, or end of stream) or it failed;
    /// the requests still in flight were counted as `no_answer`.
    Broken,
}

/// What the clients of one connection saw, as the caller tallies it.
pub(crate) trait Tally {
    /// A success: a read's or a write's latency.
    fn success(&mut self, read: bool, latency: Duration);
    /// An error of kind `code` (the JSON `error` field, or `no_answer`).
    fn error(&mut self, code: String, count: u64);
}

/// The `error` field of an error answer, and its `leader_http` if it names one.
pub(crate) fn error_of(body: &[u8]) -> (String, Option<String>) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = value["error"].as_str().unwrap_or("http_error").to_string();
    let leader = value["leader_http"].as_str().map(str::to_string);
    (code, leader)
}

/// Runs `depth` clients on `stream` (to `host`) until `deadline`, or until a node redirects
/// them or the connection breaks. Each client sends its next request (from `next`) only once
/// its previous one was answered; the requests of every client that is ready go out in one
/// write. After a redirect or past the deadline no request is sent and those in flight are
/// answered first, so that no answer is lost.
pub(crate) async fn run<S, T, N>(
    stream: &mut S,
    host: &str,
    depth: usize,
    deadline: Instant,
    templates: &Templates,
    next: &mut N,
    tally: &mut T,
) -> Ended
where
    S: Stream + ?Sized,
    T: Tally,
    N: FnMut() -> Request,
{
    let mut in_flight: VecDeque<(Request, Instant)> = VecDeque::with_capacity(depth);
    let mut out = Vec::with_capacity(depth * 256);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut redirected: Option<String> = None;
    // After a 503 (no leader yet, overloaded): no new request until then.
    let mut paused_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if paused_until.is_some_and(|until| now >= until) {
            paused_until = None;
        }
        if redirected.is_none() && paused_until.is_none() && now < deadline {
            while in_flight.len() < depth {
                let request = next();
                templates.write(request, host, &mut out);
                in_flight.push_back((request, now));
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return broken(in_flight.len(), tally);
            }
            out.clear();
        }
        if in_flight.is_empty() {
            if let Some(leader) = redirected {
                return Ended::Redirected(leader);
            }
            match paused_until {
                Some(until) if until < deadline => {
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
                _ => return Ended::Deadline,
            }
        }
        // At least one answer, and every other one already here.
        let mut answered = 0;
        while answered == 0 {
            loop {
                match take_answer(&mut input) {
                    Ok(Some(answer)) => {
                        answered += 1;
                        let Some((request, sent)) = in_flight.pop_front() else {
                            // An answer to no request.
                            return broken(0, tally);
                        };
                        let closes = answer.closes;
                        if (200..300).contains(&answer.status) {
                            tally.success(request.read, sent.elapsed());
                        } else {
                            let (code, leader) = error_of(&answer.body);
                            match (answer.status, leader) {
                                // Not counted: the client moves to the leader, as any client
                                // would.
                                (307, Some(leader)) => {
                                    redirected.get_or_insert(leader);
                                }
                                (status, _) => {
                                    tally.error(code, 1);
                                    if status == 503 {
                                        paused_until =
                                            Some(Instant::now() + Duration::from_millis(10));
                                    }
                                }
                            }
                        }
                        if closes {
                            return broken(in_flight.len(), tally);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return broken(in_flight.len(), tally),
                }
            }
            if answered == 0 {
                match stream.read_buf(&mut input).await {
                    Ok(0) | Err(_) => return broken(in_flight.len(), tally),
                    Ok(_) => {}
                }
            }
        }
    }
}

/// Counts the requests left unanswered on a connection that broke.
fn broken<T: Tally>(unanswered: usize, tally: &mut T) -> Ended {
    if unanswered > 0 {
        tally.error("no_answer".into(), unanswered as u64);
    }
    Ended::Broken
}

/// A tally of counts, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Reads and writes answered with success.
    pub reads: u64,
    /// See `reads`.
    pub writes: u64,
    /// Errors by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
impl Tally for Counts {
    fn success(&mut self, read: bool, _: Duration) {
        if read {
            self.reads += 1;
        } else {
            self.writes += 1;
        }
    }

    fn error(&mut self, code: String, count: u64) {
        *self.errors.entry(code).or_default() += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn templates() -> Templates {
        Templates {
            read_query: "consistency=lease".into(),
            write_query: "ack=quorum".into(),
            read_authorization: None,
            write_authorization: Some("Bearer w".into()),
            write_body: br#"{"value":"vvvv"}"#.to_vec(),
        }
    }

    /// A node that answers each request with what `answer` makes of it (its number from 0,
    /// whether it is a `GET`, and its path); `None` closes the connection. Returns the
    /// requests it read, as (is a `GET`, path).
    async fn node<S, F>(mut stream: S, mut answer: F) -> Vec<(bool, String)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: FnMut(usize, bool, &str) -> Option<String>,
    {
        let mut seen = Vec::new();
        let mut input = BytesMut::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut headers);
            let parsed = request.parse(&input).unwrap();
            let httparse::Status::Complete(head) = parsed else {
                if stream.read_buf(&mut input).await.unwrap() == 0 {
                    return seen;
                }
                continue;
            };
            let length: usize = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            let get = request.method == Some("GET");
            let path = request.path.unwrap().to_string();
            let authorized = request
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("authorization"));
            assert_eq!(authorized, !get, "{path}");
            while input.len() < head + length {
                assert_ne!(stream.read_buf(&mut input).await.unwrap(), 0);
            }
            if !get {
                assert_eq!(&input[head..head + length], br#"{"value":"vvvv"}"#);
            }
            input.advance(head + length);
            let Some(text) = answer(seen.len(), get, &path) else {
                return seen;
            };
            seen.push((get, path));
            stream.write_all(text.as_bytes()).await.unwrap();
        }
    }

    fn answer(status: &str, body: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Reads, writes, reads, reads, writes, ... with keys 0, 1, 2, ...
    fn requests() -> impl FnMut() -> Request {
        let mut n = 0;
        move || {
            n += 1;
            Request {
                read: n % 3 != 2,
                key: n - 1,
            }
        }
    }

    #[test]
    fn answers_are_taken_whole_and_in_order() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(answer("200 OK", r#"{"index":1}"#, "").as_bytes());
        buf.extend_from_slice(answer("409 Conflict", r#"{"error":"x"}"#, "").as_bytes());
        let third = answer("503 Service Unavailable", "{}", "connection: close\r\n");
        buf.extend_from_slice(&third.as_bytes()[..third.len() - 1]);
        let first = take_answer(&mut buf).unwrap().unwrap();
        assert_eq!(
            (first.status, first.body.len(), first.closes),
            (200, 0, false)
        );
        let second = take_answer(&mut buf).unwrap().unwrap();
        assert_eq!(
            (second.status, second.body),
            (409, br#"{"error":"x"}"#.to_vec())
        );
        assert_eq!(take_answer(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"}");
        let third = take_answer(&mut buf).unwrap().unwrap();
        assert_eq!((third.status, third.closes), (503, true));
        assert!(buf.is_empty());
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert!(take_answer(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
        assert!(take_answer(&mut buf).is_err(), "no Content-Length");
        let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]);
        assert_eq!(take_answer(&mut buf).unwrap().unwrap().status, 204);
    }

    #[tokio::test]
    async fn each_answer_is_counted_for_its_own_request() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        // Reads succeed and writes fail: an answer matched to the wrong request would count
        // a write as a success or a read as an error.
        let node = tokio::spawn(node(server, |_, get, _| {
            Some(match get {
                true => answer("200 OK", r#"{"value":"v"}"#, ""),
                false => answer("409 Conflict", r#"{"error":"conflict"}"#, ""),
            })
        }));
        let mut counts = Counts::default();
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut next = requests();
        let ended = run(
            &mut client,
            "h:1",
            4,
            deadline,
            &templates(),
            &mut next,
            &mut counts,
        )
        .await;
        assert_eq!(ended, Ended::Deadline);
        drop(client);
        let seen = node.await.unwrap();
        let gets = seen.iter().filter(|(get, _)| *get).count() as u64;
        assert!(gets > 100, "{gets}");
        assert_eq!(counts.reads, gets);
        assert_eq!(counts.writes, 0);
        let errors = BTreeMap::from([("conflict".to_string(), seen.len() as u64 - gets)]);
        assert_eq!(counts.errors, errors);
        // Requests went out in the order they were made.
        for (n, (get, path)) in seen.iter().enumerate() {
            let query = if *get {
                "consistency=lease"
            } else {
                "ack=quorum"
            };
            assert_eq!(path, &format!("/kv/k{n}?{query}"));
            assert_eq!(*get, n % 3 != 1);
        }
    }

    #[tokio::test]
    async fn a_redirect_is_followed_once_every_request_sent_is_answered() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let node = tokio::spawn(node(server, |n, _, _| {
            Some(match n {
                5 | 6 => answer(
                    "307 Temporary Redirect",
                    r#"{"error":"not_leader","leader_http":"leader:1"}"#,
                    "location: http://leader:1/kv/k\r\n",
                ),
                _ => answer("200 OK", r#"{"index":1}"#, ""),
            })
        }));
        let mut counts = Counts::default();
        let mut sent = 0;
        let mut made = requests();
        let mut next = || {
            sent += 1;
            made()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ended = run(
            &mut client,
            "h:1",
            4,
            deadline,
            &templates(),
            &mut next,
            &mut counts,
        )
        .await;
        assert_eq!(ended, Ended::Redirected("leader:1".into()));
        drop(client);
        let seen = node.await.unwrap();
        // Nothing is sent after the redirect is read, and every request sent was answered:
        // the redirected ones are not counted, the others are successes.
        assert!((7..=5 + 4).contains(&seen.len()), "{}", seen.len());
        assert_eq!(sent, seen.len());
        assert_eq!(counts.reads + counts.writes, seen.len() as u64 - 2);
        assert!(counts.errors.is_empty(), "{:?}", counts.errors);
    }

    #[tokio::test]
    async fn a_closing_node_leaves_the_requests_behind_unanswered() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let node = tokio::spawn(node(server, |n, _, _| match n {
            0 => Some(answer("200 OK", r#"{"index":1}"#, "")),
            1 => Some(answer("200 OK", r#"{"index":2}"#, "connection: close\r\n")),
            _ => None,
        }));
        let mut counts = Counts::default();
        let mut sent = 0;
        let mut made = requests();
        let mut next = || {
            sent += 1;
            made()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ended = run(
            &mut client,
            "h:1",
            4,
            deadline,
            &templates(),
            &mut next,
            &mut counts,
        )
        .await;
        assert_eq!(ended, Ended::Broken);
        assert_eq!(counts.reads + counts.writes, 2);
        let unanswered = counts.errors.get("no_answer").copied().unwrap_or(0);
        assert_eq!(unanswered, sent - 2);
        assert!(unanswered >= 2, "{unanswered}");
        drop(client);
        let _ = node.await;
    }
}
