//! A client of the HTTP API that finds the leader: it follows `307` redirects, tries the next
//! address when a node does not answer, and waits out an election (`503 no_leader`). Over
//! HTTPS and with bearer tokens if given a [`ClientSecurity`]: each request then carries the
//! least privileged token that suffices for it.

use crate::auth::{Access, required};
use crate::tokens::Tokens;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 5;

/// How a client reaches the nodes. The default: plain HTTP, no token.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// Speak HTTPS with this configuration (made by [`crate::tls::client_config`]); `None`:
    /// plain HTTP.
    pub tls: Option<rustls::ClientConfig>,
    /// The tokens to choose from: each request carries the least privileged one that
    /// suffices for it.
    pub tokens: Option<Tokens>,
}

/// A client of one cluster.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `http` or `https`: every node of a cluster speaks the same.
    scheme: &'static str,
    /// The tokens requests carry.
    tokens: Option<Tokens>,
    /// The addresses given (`HOST:PORT`), tried in turn.
    endpoints: Vec<String>,
    /// The base URL that last answered without redirecting: tried first.
    preferred: Mutex<Option<String>>,
    /// How long the client keeps retrying when no node answers or none leads.
    patience: Duration,
    /// How long one request may take.
    timeout: Duration,
}

/// An answer: its status and its JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl Reply {
    /// The `error` field of an error answer.
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// `Ok(body)` for a 2xx answer, otherwise a one-line description of the error.
    pub fn into_result(self) -> Result<Value, String> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let code = self.error().unwrap_or("error").to_string();
        let message = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("");
        Err(format!("{} ({}): {message}", code, self.status.as_u16()))
    }
}

/// Splits `HOST:PORT,HOST:PORT` into addresses. An entry may carry the scheme the client
/// speaks (`https://` when it has a CA to verify the nodes with, that is `https` is true;
/// `http://` otherwise), never the other one: an `https://` address asked over plain HTTP would
/// get the request, bearer token included, in the clear.
pub fn endpoints(list: &str, https: bool) -> Result<Vec<String>, String> {
    let mut endpoints = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (wrong, right) = match https {
            true => ("http://", "https://"),
            false => ("https://", "http://"),
        };
        if entry.starts_with(wrong) {
            return Err(match https {
                true => format!(
                    "{entry}: http:// with --tls-ca would send requests in the clear; write HOST:PORT or https://HOST:PORT"
                ),
                false => format!(
                    "{entry}: https:// needs --tls-ca, the CA that signed the nodes' certificates"
                ),
            });
        }
        let address = entry.trim_start_matches(right).trim_end_matches('/');
        endpoints.push(address.to_string());
    }
    if endpoints.is_empty() {
        return Err("--http needs at least one HOST:PORT".into());
    }
    Ok(endpoints)
}

impl Client {
    /// A client of the nodes at `endpoints` (`HOST:PORT` each), over plain HTTP without a
    /// token.
    pub fn new(endpoints: Vec<String>) -> Result<Client, String> {
        Client::with_security(endpoints, ClientSecurity::default())
    }

    /// A client of the nodes at `endpoints` (`HOST:PORT` each), over HTTPS if `security`
    /// has a TLS configuration, with its tokens.
    pub fn with_security(
        endpoints: Vec<String>,
        security: ClientSecurity,
    ) -> Result<Client, String> {
        let scheme = if security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let http = crate::tls::http_client_builder(security.tls)?
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            scheme,
            tokens: security.tokens,
            endpoints,
            preferred: Mutex::new(None),
            patience: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        })
    }

    /// Sets how long a request keeps trying while no node answers or none leads.
    pub fn with_patience(mut self, patience: Duration) -> Client {
        self.patience = patience;
        self
    }

    /// Sets how long one request may take before it fails with its outcome unknown.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Whether this client speaks HTTPS (it was given a CA to verify the nodes with).
    pub fn https(&self) -> bool {
        self.scheme == "https"
    }

    /// The base URL of the node at `endpoint` (`HOST:PORT`): `http://` or `https://` it.
    pub fn base(&self, endpoint: &str) -> String {
        format!("{}://{endpoint}", self.scheme)
    }

    fn bases(&self) -> Vec<String> {
        let preferred = self
            .preferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut bases: Vec<String> = preferred.into_iter().collect();
        for endpoint in &self.endpoints {
            let base = self.base(endpoint);
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
        bases
    }

    /// Sends one request to one node, without following anything. With tokens, it carries
    /// the least privileged one that suffices for the route (see [`crate::auth::required`]).
    pub async fn send_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let route = path.split_once('?').map_or(path, |(route, _)| route);
        let token = match required(&method, route, false) {
            Access::Open => None,
            Access::Needs(role) => self.tokens.as_ref().and_then(|t| t.for_request(role)),
        };
        let mut request = self
            .http
            .request(method, format!("{base}{path}"))
            .timeout(self.timeout);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// Sends a request to the cluster: to the node that answered last, then to the others,
    /// following redirects to the leader, and retrying while no node accepts a connection or
    /// none leads (both mean the request had no effect) until the client's patience runs out.
    ///
    /// An `Err` after the request was sent (a timeout, a connection lost mid-request) means
    /// its outcome is unknown: a write may have taken effect. Resend a write only with a
    /// `request_id`, which makes the resend take effect at most once.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut last_error = String::from("no node answered");
        loop {
            for base in self.bases() {
                let mut target = base;
                for _ in 0..=MAX_REDIRECTS {
                    let reply = match self.send_to(&target, method.clone(), path, body).await {
                        Ok(reply) => reply,
                        Err(e) if e.is_connect() && tls_refusal(&e) => {
                            // Never sent, and no other node will do better: every node's
                            // certificate comes from the same CA.
                            return Err(format!("{target}: TLS: {}", describe(&e)));
                        }
                        Err(e) if e.is_connect() => {
                            // Never sent: try the next node.
                            last_error = format!("{target}: {}", describe(&e));
                            break;
                        }
                        Err(e) => {
                            // Sent, but unanswered (a timeout, a connection lost mid-request):
                            // the outcome is unknown, and resending could apply it twice.
                            return Err(format!(
                                "{target}: no answer (outcome unknown): {}",
                                describe(&e)
                            ));
                        }
                    };
                    if reply.status == StatusCode::TEMPORARY_REDIRECT {
                        match reply.body.get("leader_http").and_then(Value::as_str) {
                            Some(leader) => {
                                target = self.base(leader);
                                continue;
                            }
                            None => return Ok(reply),
                        }
                    }
                    let retry = reply.status == StatusCode::SERVICE_UNAVAILABLE
                        && matches!(reply.error(), Some("no_leader" | "transfer_in_progress"));
                    if retry {
                        last_error = format!("{target}: {}", reply.error().unwrap_or(""));
                        break;
                    }
                    *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
                    return Ok(reply);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An error and its causes, on one line: reqwest's own message names only the URL, while
/// what went wrong (refused, reset, a certificate not trusted) is in its sources.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether a connection failed because TLS refused it (a certificate not trusted, no
/// protocol in common): a failure that trying again, or another node, will not cure.
fn tls_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        // `io::Error::source` skips the error it wraps (and the TLS glue wraps an `io::Error`
        // in another), so look inside each.
        let mut inner = Some(cause);
        while let Some(error) = inner {
            if error.is::<rustls::Error>() {
                return true;
            }
            inner = error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|e| e as &(dyn std::error::Error + 'static));
        }
        source = cause.source();
    }
    false
}

/// Percent-encodes a key for a URL path segment.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_one_path_segment() {
        assert_eq!(encode_key("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(encode_key("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_key("ü"), "%C3%BC");
    }

    #[test]
    fn endpoint_lists_are_split_and_trimmed() {
        let list = endpoints("http://a:1/, b:2,,", false).unwrap();
        assert_eq!(list, vec!["a:1".to_string(), "b:2".to_string()]);
        assert!(endpoints(" , ", false).is_err());
        let list = endpoints("https://a:1/,b:2", true).unwrap();
        assert_eq!(list, vec!["a:1".to_string(), "b:2".to_string()]);
    }

    /// A scheme the client would not speak is refused, never rewritten: `https://` without a CA
    /// would send the request (and its token) in the clear.
    #[test]
    fn an_endpoint_of_the_other_scheme_is_refused() {
        let error = endpoints("a:1,https://b:2", false).unwrap_err();
        assert!(error.contains("needs --tls-ca"), "{error}");
        let error = endpoints("http://b:2", true).unwrap_err();
        assert!(error.contains("in the clear"), "{error}");
    }
}
