//! Who may call which route: the table from a request's method and path to the [`Role`] it
//! needs, and the check `serve --token-file` puts in front of every route.
//!
//! | request | needs |
//! |---|---|
//! | `GET /kv/{key}`, `GET /cluster/members` | any token |
//! | `PUT`, `DELETE /kv/{key}`, `POST /kv/{key}/cas` | the write or admin token |
//! | every other `/cluster/*` route | the admin token |
//! | `GET /status`, `GET /metrics` | any token, none with `--open-status` |
//! | anything else (answered 404 or 405) | any token |
//!
//! No token, a malformed `Authorization` header or an unknown token is answered `401
//! unauthorized` with `WWW-Authenticate: Bearer`; a known token whose role is too low, `403
//! forbidden`. Each refusal is counted in `raft_kv_http_auth_refusals_total{code}` and logged,
//! at most once per remote address and cause every 10 seconds.

use crate::http::{Api, ApiError};
use crate::tokens::Role;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// What a request needs: nothing, or a token of at least some role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (`/status` and `/metrics` with `--open-status`).
    Open,
    /// A token of this role or a higher one.
    Needs(Role),
}

/// The role a request needs, from its method and path (the table in the module doc). Paths are
/// taken as the router matches them, undecoded.
pub fn required(method: &Method, path: &str, open_status: bool) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    if path.starts_with("/kv/") {
        return Access::Needs(if read { Role::Read } else { Role::Write });
    }
    match path {
        "/status" | "/metrics" if read && open_status => Access::Open,
        "/cluster/members" if read => Access::Needs(Role::Read),
        _ if path == "/cluster" || path.starts_with("/cluster/") => Access::Needs(Role::Admin),
        _ => Access::Needs(Role::Read),
    }
}

/// Why a request was refused: the log's and the answer's words for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not one `Bearer TOKEN`.
    Malformed,
    /// A token that is not in the token file.
    Unknown,
    /// A known token whose role is too low.
    Forbidden { has: Role, needs: Role },
}

impl Refusal {
    fn cause(self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Malformed => "malformed_authorization",
            Refusal::Unknown => "unknown_token",
            Refusal::Forbidden { .. } => "insufficient_role",
        }
    }

    fn answer(self) -> ApiError {
        let unauthorized = |message: &str, challenge: &'static str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
                .with_header(header::WWW_AUTHENTICATE, challenge)
        };
        match self {
            Refusal::Missing => unauthorized(
                "this node needs a bearer token: send Authorization: Bearer TOKEN",
                "Bearer realm=\"raft-kv\"",
            ),
            Refusal::Malformed => unauthorized(
                "the Authorization header is not one Bearer TOKEN",
                "Bearer realm=\"raft-kv\", error=\"invalid_request\"",
            ),
            Refusal::Unknown => unauthorized(
                "the bearer token is not one this node knows",
                "Bearer realm=\"raft-kv\", error=\"invalid_token\"",
            ),
            Refusal::Forbidden { has, needs } => {
                let allowed: Vec<&str> = Role::ALL
                    .iter()
                    .filter(|r| **r >= needs)
                    .map(|r| r.name())
                    .collect();
                let message = format!(
                    "a {} token may not do this: it needs the {} token",
                    has.name(),
                    allowed.join(" or ")
                );
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
                    .with("needs", serde_json::json!(needs.name()))
                    .with_header(
                        header::WWW_AUTHENTICATE,
                        "Bearer realm=\"raft-kv\", error=\"insufficient_scope\"",
                    )
            }
        }
    }
}

/// The token of a `Bearer` `Authorization` header: `Ok(None)` without one, `Err` for anything
/// but exactly one header `Bearer TOKEN` (the scheme's case does not matter, RFC 7235 §2.1).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(());
    }
    Ok(Some(token))
}

/// The middleware `Api::router` puts in front of every route when the node has tokens.
pub(crate) async fn authorize(
    State(api): State<Api>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let Some(tokens) = api.tokens() else {
        return next.run(request).await;
    };
    let needs = match required(request.method(), request.uri().path(), api.open_status()) {
        Access::Open => return next.run(request).await,
        Access::Needs(role) => role,
    };
    let refusal = match bearer(request.headers()) {
        Ok(None) => Refusal::Missing,
        Err(()) => Refusal::Malformed,
        Ok(Some(token)) => match tokens.role_of(token) {
            None => Refusal::Unknown,
            Some(has) if has >= needs => return next.run(request).await,
            Some(has) => Refusal::Forbidden { has, needs },
        },
    };
    let answer = refusal.answer();
    let code = answer.status_code();
    api.metrics()
        .count_auth_refusal(if code == StatusCode::FORBIDDEN {
            "403"
        } else {
            "401"
        });
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if api
        .refusal_log()
        .allow(remote.map(|r| r.ip()), refusal.cause())
    {
        tracing::warn!(
            remote = %remote.map_or("unknown".into(), |r| r.to_string()),
            cause = %refusal.cause(),
            method = %request.method(),
            path = %request.uri().path(),
            status = code.as_u16(),
            "refused an HTTP request (further refusals from this address for this cause are not logged for 10 s)"
        );
    }
    answer.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_of_the_table() {
        let get = Method::GET;
        let cases = [
            (Method::GET, "/kv/a", false, Access::Needs(Role::Read)),
            (Method::HEAD, "/kv/a", false, Access::Needs(Role::Read)),
            (Method::PUT, "/kv/a", false, Access::Needs(Role::Write)),
            (
                Method::DELETE,
                "/kv/a%2Fb",
                false,
                Access::Needs(Role::Write),
            ),
            (Method::POST, "/kv/a/cas", false, Access::Needs(Role::Write)),
            (
                Method::GET,
                "/cluster/members",
                false,
                Access::Needs(Role::Read),
            ),
            (
                Method::POST,
                "/cluster/members",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                Method::POST,
                "/cluster/learners",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                Method::DELETE,
                "/cluster/learners/4",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                Method::POST,
                "/cluster/membership",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                Method::POST,
                "/cluster/transfer-leader",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                Method::POST,
                "/cluster/nodes",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                Method::POST,
                "/cluster/snapshot",
                false,
                Access::Needs(Role::Admin),
            ),
            (
                get.clone(),
                "/cluster/snapshot",
                false,
                Access::Needs(Role::Admin),
            ),
            (get.clone(), "/cluster", false, Access::Needs(Role::Admin)),
            (get.clone(), "/status", false, Access::Needs(Role::Read)),
            (get.clone(), "/metrics", false, Access::Needs(Role::Read)),
            (get.clone(), "/status", true, Access::Open),
            (get.clone(), "/metrics", true, Access::Open),
            (Method::POST, "/status", true, Access::Needs(Role::Read)),
            (get.clone(), "/kv/a", true, Access::Needs(Role::Read)),
            (Method::PUT, "/kv/a", true, Access::Needs(Role::Write)),
            (
                Method::POST,
                "/cluster/nodes",
                true,
                Access::Needs(Role::Admin),
            ),
            (get.clone(), "/nowhere", false, Access::Needs(Role::Read)),
            (get.clone(), "/clusterx", false, Access::Needs(Role::Read)),
            (get, "/", true, Access::Needs(Role::Read)),
        ];
        for (method, path, open_status, access) in cases {
            assert_eq!(
                required(&method, path, open_status),
                access,
                "{method} {path} (open status: {open_status})"
            );
        }
    }

    #[test]
    fn only_one_bearer_header_carries_a_token() {
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for v in values {
                map.append(header::AUTHORIZATION, v.parse().unwrap());
            }
            map
        };
        assert_eq!(bearer(&headers(&[])), Ok(None));
        assert_eq!(bearer(&headers(&["Bearer t0k"])), Ok(Some("t0k")));
        assert_eq!(bearer(&headers(&["bearer t0k"])), Ok(Some("t0k")));
        for bad in [
            &["Bearer"][..],
            &["Bearer "],
            &["Basic dXNlcjpwYXNz"],
            &["Bearer a b"],
            &["t0k"],
            &["Bearer a", "Bearer a"],
        ] {
            assert_eq!(bearer(&headers(bad)), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn refusals_are_401_without_a_known_token_and_403_with_too_little_privilege() {
        for refusal in [Refusal::Missing, Refusal::Malformed, Refusal::Unknown] {
            let response = refusal.answer().into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
        let forbidden = Refusal::Forbidden {
            has: Role::Read,
            needs: Role::Write,
        };
        assert_eq!(
            forbidden.answer().into_response().status(),
            StatusCode::FORBIDDEN
        );
    }
}
