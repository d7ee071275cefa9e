//! The HTTP/JSON API: `/kv/{key}` for the data, `/status`, `/metrics`, and `/cluster/*` for
//! membership. Every error is a JSON object with an `error` field (a stable code) and a
//! `message` (for people), with a 4xx or 5xx status.
//!
//! | error | status | meaning |
//! |---|---|---|
//! | `not_leader` | 307 | only the leader does this: the `Location` header and `leader_http` name it |
//! | `no_leader` | 503 | no leader known (an election is under way): retry shortly |
//! | `timeout` | 504 | no answer in time: **a write may or may not have taken effect** |
//! | `unauthorized` | 401 | with `--token-file`: no token, a malformed `Authorization` header, or a token the node does not know (`WWW-Authenticate: Bearer`); no effect |
//! | `forbidden` | 403 | with `--token-file`: the token's role may not do this (a read token on a write; `needs` names the role); no effect |
//! | `bad_request` | 400 | malformed JSON, a wrong type, an unknown parameter or level |
//! | `too_large` | 413 | a key, value or body above the configured limits |
//! | `request_id_reused` | 409 | the `request_id` was used for another write: no effect |
//! | `membership` | 409 | a membership change refused (no effect) |
//! | `not_enough_replicas`, `transfer_in_progress`, `overloaded`, `too_stale` | 503 | refused (no effect for a write); retry |
//! | `shutting_down` | 503 | the node is stopping: **a write it had taken may or may not take effect** (other nodes may commit it); retry elsewhere only with a `request_id` |
//! | `storage` | 500 | the node's disk failed; it stopped: as with `shutting_down`, a write's outcome is unknown |
//! | `not_found`, `method_not_allowed` | 404, 405 | no such route |
//!
//! Beyond the data routes: `GET /status`, `GET /metrics`, `GET /cluster/members`,
//! `POST /cluster/learners`, `DELETE /cluster/learners/{id}`, `POST /cluster/membership`,
//! `POST /cluster/transfer-leader`, `POST /cluster/nodes` (a node registering its addresses)
//! and `POST /cluster/snapshot` (this node takes a snapshot now: for backups).
//!
//! Which token each route needs is [`crate::auth`]'s table.

use crate::metrics::{Metrics, role_name};
use crate::rate_limit::LogLimiter;
use crate::store::{Directory, KvCommand, KvResponse, KvStore, MAX_REQUEST_ID_BYTES};
use crate::tokens::Tokens;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use raft_core::node::{Ack, Consistency, Error, NodeHandle};
use raft_core::{LogIndex, NodeId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits on what clients may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest key, in bytes.
    pub max_key_bytes: usize,
    /// The longest value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
        }
    }
}

/// Who may use the API, and how it is reached: what `serve`'s security flags set. The
/// default is an open API over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The bearer tokens (`--token-file`); `None`: every request is served.
    pub tokens: Option<Tokens>,
    /// `GET /status` and `GET /metrics` need no token (`--open-status`, for scrapers).
    pub open_status: bool,
    /// The API is served over HTTPS, so redirects name `https://` URLs.
    pub https: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub struct Api(Arc<ApiInner>);

struct ApiInner {
    node: NodeHandle<KvStore>,
    directory: Directory,
    metrics: Arc<Metrics>,
    limits: Limits,
    default_ack: Ack,
    security: Security,
    /// Which refusals were logged lately (see `auth.rs`).
    refusal_log: LogLimiter,
}

impl Api {
    /// The API of `node`, whose state machine shares `directory`.
    pub fn new(
        node: NodeHandle<KvStore>,
        directory: Directory,
        metrics: Arc<Metrics>,
        limits: Limits,
        default_ack: Ack,
    ) -> Api {
        Api(Arc::new(ApiInner {
            node,
            directory,
            metrics,
            limits,
            default_ack,
            security: Security::default(),
            refusal_log: LogLimiter::default(),
        }))
    }

    /// The same API with `security`: tokens checked in front of every route, and redirects
    /// to `https://` URLs if it is served over HTTPS.
    pub fn with_security(self, security: Security) -> Api {
        let inner = &self.0;
        Api(Arc::new(ApiInner {
            node: inner.node.clone(),
            directory: inner.directory.clone(),
            metrics: inner.metrics.clone(),
            limits: inner.limits,
            default_ack: inner.default_ack,
            security,
            refusal_log: LogLimiter::default(),
        }))
    }

    pub(crate) fn tokens(&self) -> Option<&Tokens> {
        self.0.security.tokens.as_ref()
    }

    pub(crate) fn open_status(&self) -> bool {
        self.0.security.open_status
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn refusal_log(&self) -> &LogLimiter {
        &self.0.refusal_log
    }

    /// The routes, behind the token check if the API has tokens.
    pub fn router(self) -> Router {
        // Room for a CAS's expected and new values, JSON escapes and the other fields.
        let body_limit = self
            .0
            .limits
            .max_value_bytes
            .saturating_mul(2)
            .saturating_add(self.0.limits.max_key_bytes)
            .saturating_add(64 * 1024);
        let guarded = self.tokens().is_some();
        let router = Router::new()
            .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
            .route("/kv/{key}/cas", post(cas_key))
            .route("/status", get(status))
            .route("/metrics", get(metrics))
            .route("/cluster/members", get(members))
            .route("/cluster/learners", post(add_learner))
            .route("/cluster/learners/{id}", delete(remove_learner))
            .route("/cluster/membership", post(change_membership))
            .route("/cluster/transfer-leader", post(transfer_leader))
            .route("/cluster/nodes", post(register_node))
            .route("/cluster/snapshot", post(take_snapshot))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(body_limit))
            .with_state(self.clone());
        if guarded {
            // Around every route and the fallbacks: an unknown path is not answered before
            // the token is checked.
            router.layer(axum::middleware::from_fn_with_state(
                self,
                crate::auth::authorize,
            ))
        } else {
            router
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Vec<(&'static str, Value)>,
    /// `Location` for a redirect, `WWW-Authenticate` for a refusal.
    headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The answer's HTTP status.
    pub(crate) fn status_code(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn with(mut self, field: &'static str, value: Value) -> ApiError {
        self.extra.push((field, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), Value::from(self.code));
        body.insert("message".into(), Value::from(self.message));
        for (field, value) in self.extra {
            body.insert(field.into(), value);
        }
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

type Answer = Result<axum::Json<Value>, ApiError>;

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Decodes one `application/x-www-form-urlencoded` component, refusing invalid UTF-8 (which
/// a lossy decoding would turn into U+FFFD, making two different request ids equal).
fn decode_component(raw: &str) -> Result<String, ApiError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("the query string is not valid UTF-8"))
}

/// At most 64 characters of `text`, for error messages that quote what a client sent.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}...", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// The query parameters of a request, each at most once, and only those the route takes.
fn parameters(
    query: Option<String>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let query = query.unwrap_or_default();
    let mut out = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode_component(name)?, decode_component(value)?);
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {} (this route takes: {})",
                quoted(&name),
                allowed.join(", ")
            )));
        }
        if out.contains_key(&name) {
            return Err(ApiError::bad_request(format!(
                "parameter {} given twice",
                quoted(&name)
            )));
        }
        out.insert(name, value);
    }
    Ok(out)
}

fn number(params: &BTreeMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} must be a whole number of at least 0, not {}",
                    quoted(v)
                ))
            })
        })
        .transpose()
}

fn body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text())
        } else {
            ApiError::bad_request(e.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

impl Api {
    fn key(&self, key: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
        let Path(key) = key.map_err(|e| ApiError::bad_request(e.body_text()))?;
        if key.is_empty() {
            return Err(ApiError::bad_request("the key is empty"));
        }
        if key.len() > self.0.limits.max_key_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "key of {} bytes, limit {}",
                    key.len(),
                    self.0.limits.max_key_bytes
                ),
            ));
        }
        Ok(key)
    }

    fn value(&self, value: &str) -> Result<(), ApiError> {
        if value.len() > self.0.limits.max_value_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "value of {} bytes, limit {}",
                    value.len(),
                    self.0.limits.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// What every write route takes from its path and query string: the key, the `ack` level,
    /// and the parameters left (for the `request_id`).
    fn write_target(
        &self,
        key: Result<Path<String>, PathRejection>,
        query: Option<String>,
    ) -> Result<(String, Ack, BTreeMap<String, String>), ApiError> {
        let key = self.key(key)?;
        let params = parameters(query, &["ack", "request_id"])?;
        let ack = self.ack(&params)?;
        Ok((key, ack, params))
    }

    fn ack(&self, params: &BTreeMap<String, String>) -> Result<Ack, ApiError> {
        match params.get("ack").map(String::as_str) {
            None => Ok(self.0.default_ack),
            Some(level) => parse_ack(level).map_err(ApiError::bad_request),
        }
    }

    /// The answer to a failed request: a redirect to the leader when that is what would help.
    fn failed(&self, error: Error, uri: &Uri) -> ApiError {
        let message = error.to_string();
        let unavailable = |code| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, &message);
        match error {
            Error::NotLeader { leader_hint } => {
                let leader = leader_hint.filter(|&l| l != self.0.node.id());
                let http = leader.and_then(|l| self.0.directory.get(l)).map(|a| a.http);
                match (leader, http) {
                    (Some(leader), Some(http)) => {
                        let path = uri.path_and_query().map_or("/", |p| p.as_str());
                        let scheme = if self.0.security.https {
                            "https"
                        } else {
                            "http"
                        };
                        ApiError::new(StatusCode::TEMPORARY_REDIRECT, "not_leader", &message)
                            .with("leader_id", json!(leader.0))
                            .with("leader_http", json!(http))
                            .with_header(header::LOCATION, format!("{scheme}://{http}{path}"))
                    }
                    (leader, _) => {
                        unavailable("no_leader").with("leader_id", json!(leader.map(|l| l.0)))
                    }
                }
            }
            Error::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", &message),
            Error::NotEnoughReplicas { .. } => unavailable("not_enough_replicas"),
            Error::TransferInProgress => unavailable("transfer_in_progress"),
            Error::UncommittedLimit { .. } => unavailable("overloaded"),
            Error::TooStale { leader_hint } => {
                unavailable("too_stale").with("leader_id", json!(leader_hint.map(|l| l.0)))
            }
            Error::Shutdown => unavailable("shutting_down"),
            Error::Storage { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", &message)
            }
            Error::Membership(_) => ApiError::new(StatusCode::CONFLICT, "membership", &message),
            _ => ApiError::bad_request(message),
        }
    }

    /// Proposes `command` (under `request_id`, if any) and returns the index where it took
    /// effect and what it returned (`None` for `Ack::Local`).
    async fn write(
        &self,
        op: &'static str,
        command: KvCommand,
        request_id: Option<String>,
        ack: Ack,
        uri: &Uri,
    ) -> Result<(LogIndex, Option<KvResponse>, bool), ApiError> {
        let command = match request_id {
            None => command,
            Some(_) if ack == Ack::Local => {
                let error = ApiError::bad_request(
                    "request_id needs ack=quorum or ack=all: with ack=local the node answers before it knows whether the id was used already",
                );
                return Err(self.counted(op, error));
            }
            Some(id) if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES => {
                let error = ApiError::bad_request(format!(
                    "request_id must be 1 to {MAX_REQUEST_ID_BYTES} bytes"
                ));
                return Err(self.counted(op, error));
            }
            Some(request_id) => KvCommand::Once {
                request_id,
                command: Box::new(command),
            },
        };
        let started = Instant::now();
        let outcome = match self.0.node.propose(command, ack).await {
            Ok(outcome) => outcome,
            Err(e) => return Err(self.counted(op, self.failed(e, uri))),
        };
        self.0.metrics.observe_proposal(started.elapsed());
        match outcome.response {
            Some(KvResponse::IdReused { index }) => {
                let error = ApiError::new(
                    StatusCode::CONFLICT,
                    "request_id_reused",
                    format!("request_id was used at index {} for another write", index.0),
                )
                .with("index", json!(index.0));
                Err(self.counted(op, error))
            }
            Some(KvResponse::Repeated { index }) => {
                self.0.metrics.count(op, "ok");
                Ok((index, None, true))
            }
            response => {
                self.0.metrics.count(op, "ok");
                Ok((outcome.index, response, false))
            }
        }
    }

    fn counted(&self, op: &'static str, error: ApiError) -> ApiError {
        self.0.metrics.count(op, error.code);
        error
    }
}

/// Parses an acknowledgement level as the API and the command line spell it.
pub fn parse_ack(level: &str) -> Result<Ack, String> {
    match level {
        "local" => Ok(Ack::Local),
        "quorum" => Ok(Ack::Quorum),
        "all" => Ok(Ack::All),
        other => Err(format!(
            "unknown ack level {other:?} (expected local, quorum or all)"
        )),
    }
}

fn write_answer(index: LogIndex, repeated: bool) -> axum::Json<Value> {
    if repeated {
        axum::Json(json!({"index": index.0, "repeated": true}))
    } else {
        axum::Json(json!({"index": index.0}))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
    #[serde(default)]
    request_id: Option<String>,
}

/// Takes the `request_id` from the body or the query string, not both.
fn request_id(
    in_body: Option<String>,
    params: &mut BTreeMap<String, String>,
) -> Result<Option<String>, ApiError> {
    match (in_body, params.remove("request_id")) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "request_id given in both the body and the query string",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

async fn put_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let op = "put";
    let checked = (|| {
        let (key, ack, mut params) = api.write_target(key, query)?;
        let put: PutBody = body(raw)?;
        api.value(&put.value)?;
        let id = request_id(put.request_id, &mut params)?;
        Ok((key, put.value, ack, id))
    })();
    let (key, value, ack, id) = checked.map_err(|e| api.counted(op, e))?;
    let (index, _, repeated) = api
        .write(op, KvCommand::Put { key, value }, id, ack, &uri)
        .await?;
    Ok(write_answer(index, repeated))
}

async fn delete_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Answer {
    let op = "delete";
    let checked = (|| {
        let (key, ack, mut params) = api.write_target(key, query)?;
        let id = request_id(None, &mut params)?;
        Ok((key, ack, id))
    })();
    let (key, ack, id) = checked.map_err(|e| api.counted(op, e))?;
    let (index, _, repeated) = api
        .write(op, KvCommand::Delete { key }, id, ack, &uri)
        .await?;
    Ok(write_answer(index, repeated))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    #[serde(default)]
    expect: Option<String>,
    value: String,
    #[serde(default)]
    request_id: Option<String>,
}

async fn cas_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let op = "cas";
    let checked = (|| {
        let (key, ack, mut params) = api.write_target(key, query)?;
        if ack == Ack::Local {
            return Err(ApiError::bad_request(
                "a compare-and-swap needs ack=quorum or ack=all: with ack=local its outcome is not known yet",
            ));
        }
        let cas: CasBody = body(raw)?;
        api.value(&cas.value)?;
        if let Some(expect) = &cas.expect {
            api.value(expect)?;
        }
        let id = request_id(cas.request_id.clone(), &mut params)?;
        Ok((key, cas, ack, id))
    })();
    let (key, cas, ack, id) = checked.map_err(|e| api.counted(op, e))?;
    let command = KvCommand::Cas {
        key,
        expect: cas.expect,
        new: cas.value.clone(),
    };
    let (index, response, repeated) = api.write(op, command, id, ack, &uri).await?;
    // A repeated request id: this swap took effect before, at `index`.
    let response = match response {
        None if repeated => Some(KvResponse::Cas {
            swapped: true,
            current: None,
        }),
        other => other,
    };
    let Some(KvResponse::Cas { swapped, current }) = response else {
        let error = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the state machine answered a compare-and-swap with something else",
        );
        return Err(error);
    };
    let value = if swapped { Some(cas.value) } else { current };
    let mut answer = json!({"ok": swapped, "value": value, "index": index.0});
    if repeated {
        answer["repeated"] = json!(true);
    }
    Ok(axum::Json(answer))
}

/// The read a `GET /kv/{key}` asks for.
fn read_level(params: &BTreeMap<String, String>) -> Result<Consistency, ApiError> {
    let staleness = number(params, "max_staleness_ms")?;
    let level = params
        .get("consistency")
        .map_or("linearizable", String::as_str);
    match (level, staleness) {
        ("linearizable", None) => Ok(Consistency::Linearizable),
        ("lease", None) => Ok(Consistency::Lease),
        ("stale", None) => Ok(Consistency::Stale),
        ("follower", Some(ms)) => Ok(Consistency::BoundedStaleness(Duration::from_millis(ms))),
        ("follower", None) => Err(ApiError::bad_request(
            "consistency=follower needs max_staleness_ms",
        )),
        ("linearizable" | "lease" | "stale", Some(_)) => Err(ApiError::bad_request(
            "max_staleness_ms goes with consistency=follower only",
        )),
        (other, _) => Err(ApiError::bad_request(format!(
            "unknown consistency {other:?} (expected linearizable, lease, stale or follower)"
        ))),
    }
}

async fn get_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Answer {
    let op = "get";
    let checked = (|| {
        let key = api.key(key)?;
        let params = parameters(query, &["consistency", "min_index", "max_staleness_ms"])?;
        let level = read_level(&params)?;
        let min_index = number(&params, "min_index")?;
        Ok((key, level, min_index))
    })();
    let (key, level, min_index) = checked.map_err(|e| api.counted(op, e))?;
    // Read-your-writes first: the node must have applied the client's last write.
    if let Some(min) = min_index.filter(|&m| m > 0) {
        let barrier = api.0.node.read(Consistency::AtLeast(LogIndex(min))).await;
        barrier.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    }
    let read = api.0.node.query(level, key).await;
    let read = read.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    api.0.metrics.count(op, "ok");
    Ok(axum::Json(
        json!({"value": read.response, "applied_index": read.applied_index.0}),
    ))
}

async fn status(State(api): State<Api>) -> Answer {
    let status = api.0.node.status();
    let mut value = serde_json::to_value(&status)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    value["role_name"] = json!(role_name(&status));
    Ok(axum::Json(value))
}

async fn metrics(State(api): State<Api>) -> Response {
    let text = api.0.metrics.render(&api.0.node.status());
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn members(State(api): State<Api>) -> Answer {
    let status = api.0.node.status();
    let Some(membership) = status.membership else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_membership",
            "this node has not joined a cluster yet",
        ));
    };
    let directory = api.0.directory.all();
    let mut nodes = serde_json::Map::new();
    for id in membership.members() {
        let registered = directory.get(&id);
        let raft = membership
            .addresses()
            .get(&id)
            .cloned()
            .or_else(|| registered.map(|a| a.raft.clone()));
        let http = registered.map(|a| a.http.clone());
        nodes.insert(id.0.to_string(), json!({"raft": raft, "http": http}));
    }
    let ids =
        |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|n| n.0).collect::<Vec<_>>();
    Ok(axum::Json(json!({
        "voters": ids(membership.voters()),
        "outgoing_voters": ids(membership.outgoing_voters()),
        "learners": ids(membership.learners()),
        "joint": membership.is_joint(),
        "index": status.membership_index.0,
        "nodes": nodes,
    })))
}

/// A node and where it listens: the body of `POST /cluster/learners` (which names the Raft
/// address `addr`) and of `POST /cluster/nodes` (which names it `raft`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    id: u64,
    #[serde(alias = "addr")]
    raft: String,
    http: String,
    /// For a learner: answer once it is within this many entries of the leader, rather than
    /// as soon as the change commits.
    #[serde(default)]
    catch_up_within: Option<u64>,
}

/// The node a body names, checked.
fn node_body(raw: Result<Bytes, BytesRejection>) -> Result<(NodeId, NodeBody), ApiError> {
    let node: NodeBody = body(raw)?;
    let id = node_id(node.id)?;
    address("raft address", &node.raft)?;
    address("http", &node.http)?;
    Ok((id, node))
}

fn node_id(id: u64) -> Result<NodeId, ApiError> {
    if id == 0 {
        return Err(ApiError::bad_request(
            "node id 0 is reserved; ids start at 1",
        ));
    }
    Ok(NodeId(id))
}

fn address(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 512 || !value.contains(':') {
        return Err(ApiError::bad_request(format!(
            "{field} must be HOST:PORT, not {value:?}"
        )));
    }
    Ok(())
}

async fn add_learner(
    State(api): State<Api>,
    uri: Uri,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let op = "cluster";
    let (id, learner) = node_body(raw).map_err(|e| api.counted(op, e))?;
    let added = api
        .0
        .node
        .add_learner(id, Some(learner.raft.clone()), learner.catch_up_within)
        .await;
    let index = added.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    // Then its addresses, so that every node can send clients to it once it leads. Only once
    // the change took effect: a refused change must leave the directory as it was. Should this
    // fail, the new node registers itself once it hears from the leader.
    let register = KvCommand::Register {
        id,
        raft: learner.raft,
        http: learner.http,
    };
    if let Err(e) = api.0.node.propose(register, Ack::Quorum).await {
        tracing::debug!(error = %e, "registering the new learner's addresses failed");
    }
    api.0.metrics.count(op, "ok");
    Ok(axum::Json(json!({"index": index.0})))
}

async fn remove_learner(
    State(api): State<Api>,
    id: Result<Path<u64>, PathRejection>,
    uri: Uri,
) -> Answer {
    let op = "cluster";
    let id = id
        .map_err(|e| ApiError::bad_request(e.body_text()))
        .and_then(|Path(id)| node_id(id))
        .map_err(|e| api.counted(op, e))?;
    let removed = api.0.node.remove_learner(id).await;
    let index = removed.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    api.0.metrics.count(op, "ok");
    Ok(axum::Json(json!({"index": index.0})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipBody {
    voters: Vec<u64>,
}

async fn change_membership(
    State(api): State<Api>,
    uri: Uri,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let op = "cluster";
    let checked = (|| {
        let change: MembershipBody = body(raw)?;
        change
            .voters
            .into_iter()
            .map(node_id)
            .collect::<Result<Vec<_>, _>>()
    })();
    let voters = checked.map_err(|e| api.counted(op, e))?;
    let changed = api.0.node.change_membership(voters).await;
    let index = changed.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    api.0.metrics.count(op, "ok");
    Ok(axum::Json(json!({"index": index.0})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: u64,
}

async fn transfer_leader(
    State(api): State<Api>,
    uri: Uri,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let op = "cluster";
    let to = body::<TransferBody>(raw)
        .and_then(|t| node_id(t.to))
        .map_err(|e| api.counted(op, e))?;
    let transfer = api.0.node.transfer_leadership(to).await;
    transfer.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    api.0.metrics.count(op, "ok");
    Ok(axum::Json(json!({"transferring_to": to.0})))
}

/// A node registers where it listens (each node does so on its own once it knows its leader).
async fn register_node(
    State(api): State<Api>,
    uri: Uri,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let op = "cluster";
    let (id, node) = node_body(raw).map_err(|e| api.counted(op, e))?;
    let register = KvCommand::Register {
        id,
        raft: node.raft,
        http: node.http,
    };
    let (index, _, _) = api.write(op, register, None, Ack::Quorum, &uri).await?;
    Ok(axum::Json(json!({"index": index.0})))
}

/// This node takes a snapshot of its state now (on any node: each keeps its own), so that an
/// operator can copy the newest file from its `snapshots/` directory as a backup.
async fn take_snapshot(State(api): State<Api>, uri: Uri) -> Answer {
    let op = "cluster";
    let taken = api.0.node.snapshot().await;
    let meta = taken.map_err(|e| api.counted(op, api.failed(e, &uri)))?;
    api.0.metrics.count(op, "ok");
    Ok(axum::Json(
        json!({"index": meta.last.index.0, "term": meta.last.term.0}),
    ))
}
