//! Endpoints for Matrix clients beyond the identity API, which a reverse proxy routes
//! here instead of to the homeserver: the user directory search and profiles, logins
//! by 3PID, and the registration and 3PID invite policies.

pub mod directory;
pub mod policy;

use super::extract as api;
use crate::error::Error;
use crate::service::passthrough::ClientRequest;
use warp::http::Method;
use warp::Filter;

fn header(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<String>(name)
        .or(warp::any().map(|| None))
        .unify()
}

/// The client's request, for passing on: method, query, the headers kept, the client's
/// address and the body (capped at `limit`). The path is added by the route, rebuilt
/// from checked segments, never copied from the client.
pub fn client_request(
    limit: super::body::Limit,
    trusted_proxies: Vec<ipnet::IpNet>,
) -> impl Filter<Extract = (Result<ClientRequest, Error>,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(header("authorization"))
        .and(api::token())
        .and(header("content-type"))
        .and(header("host"))
        .and(header("user-agent"))
        .and(api::client_ip(std::sync::Arc::new(trusted_proxies)))
        .and(super::body::limited(limit))
        .map(
            |method: Method,
             query: String,
             authorization: Option<String>,
             token: Option<String>,
             content_type: Option<String>,
             host: Option<String>,
             user_agent: Option<String>,
             ip: Option<std::net::IpAddr>,
             body: Result<bytes::Bytes, Error>| {
                Ok(ClientRequest {
                    method,
                    path_and_query: if query.is_empty() {
                        String::new()
                    } else {
                        format!("?{query}")
                    },
                    authorization,
                    token,
                    content_type,
                    host,
                    user_agent,
                    ip,
                    body: body?,
                })
            },
        )
}

/// The homeserver's answer, as it gave it: status, content type and body.
pub fn relay(answer: crate::federation::RawResponse) -> warp::reply::Response {
    use warp::http::{header, HeaderValue, StatusCode};
    let mut response = warp::reply::Response::new(answer.body.into());
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(ct) = answer
        .content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}
