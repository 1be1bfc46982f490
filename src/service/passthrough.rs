//! Client-server requests a reverse proxy routes to us only so that we can look at
//! them (login, registration, room invites): what is kept of the client's request, and
//! the one call that passes it to our homeserver and brings the answer back as the
//! homeserver gave it. It must not change a byte of what it was not asked to change.

use crate::error::{ErrCode, Error};
use crate::federation::{ClientHeaders, RawRequest, RawResponse};
use crate::service::Services;
use bytes::Bytes;

/// Largest homeserver answer passed back (a login or registration answer is small;
/// a `/register` 401 with its flows and terms is a few KiB).
const MAX_ANSWER: usize = 1024 * 1024;

/// A client's request, kept for passing on.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub method: http::Method,
    /// Path and query as the client sent them.
    pub path_and_query: String,
    pub authorization: Option<String>,
    /// The access token, from the header or the `access_token` query parameter.
    pub token: Option<String>,
    pub content_type: Option<String>,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// The client's address (`X-Forwarded-For` from a trusted proxy, else the peer).
    pub ip: Option<std::net::IpAddr>,
    pub body: Bytes,
}

impl ClientRequest {
    /// The body as a JSON object, if it is one.
    pub fn json_object(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match serde_json::from_slice(&self.body) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => None,
        }
    }
}

/// Passes `request` to our homeserver, with `body` instead of the client's when given.
pub async fn pass_on(
    state: &Services,
    request: &ClientRequest,
    body: Option<Bytes>,
) -> Result<RawResponse, Error> {
    let base = state
        .homeserver
        .base(&state.federation, request.host.as_deref())
        .await;
    let body = body.unwrap_or_else(|| request.body.clone());
    let body = (!body.is_empty()).then_some((body, request.content_type.as_deref()));
    state
        .homeserver
        .send(
            &state.federation,
            &base,
            RawRequest {
                method: request.method.clone(),
                path_and_query: &request.path_and_query,
                authorization: request.authorization.as_deref(),
                body,
                timeout: None,
                client: Some(ClientHeaders {
                    ip: request.ip,
                    user_agent: request.user_agent.as_deref(),
                }),
            },
            MAX_ANSWER,
        )
        .await
        .map_err(|e| {
            tracing::warn!(homeserver = %base.url, error = %e, path = %path_only(&request.path_and_query), "cannot pass a client request to the homeserver");
            Error::new(
                ErrCode::Upstream,
                "The homeserver could not be reached; try again later",
            )
        })
}

/// The path without its query (which may hold an access token), for logs.
pub fn path_only(path_and_query: &str) -> &str {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p)
}
