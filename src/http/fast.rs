//! The one entrance of the hottest request, `POST /_matrix/identity/v2/lookup`.
//! [`answer`] reads the token, the body (limit, Content-Type) and calls the handler,
//! with the same functions every warp route uses (`extract::access_token`,
//! `middleware::refuse_oversized`, `body::read`, `middleware::with_cors`,
//! `middleware::log_request`), so a fix lands once. The listener sends an exact
//! `POST` to that path here directly ([`lookup`]), bypassing warp's filter tree (body
//! guard, preflight, prefix matching) that every lookup would otherwise walk; the warp
//! route of the same path (a trailing slash, say) calls [`answer`] too.

use super::middleware::{log_request, refuse_oversized, with_cors};
use super::{body, extract, identity, reply::error_response};
use crate::service::Services;
use http::{header, HeaderMap, Method, Request};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::time::Instant;
use warp::reply::Response;

pub use crate::metrics::LOOKUP_PATH;

/// Whether `request` takes the direct route.
pub fn is_lookup<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST && request.uri().path() == LOOKUP_PATH
}

/// Serves a lookup from the listener, without warp: [`answer`], CORS and the log line.
pub async fn lookup(
    state: Services,
    request: Request<Incoming>,
    peer: Option<std::net::SocketAddr>,
) -> Result<Response, Infallible> {
    let started = Instant::now();
    let (parts, incoming) = request.into_parts();
    let stream = http_body_util::BodyDataStream::new(incoming);
    let response = with_cors(answer(&parts.headers, parts.uri.query(), stream, &state, peer).await);
    let metrics = &state.metrics;
    log_request(
        metrics,
        crate::metrics::Listener::Public,
        metrics.lookup_route(),
        "POST",
        LOOKUP_PATH,
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}

/// `POST /_matrix/identity/v2/lookup`, from the request's headers, raw query string,
/// body stream and TCP peer.
pub async fn answer<S, B, E>(
    headers: &HeaderMap,
    query: Option<&str>,
    stream: S,
    state: &Services,
    peer: Option<std::net::SocketAddr>,
) -> Response
where
    S: futures_util::Stream<Item = Result<B, E>>,
    B: bytes::Buf,
{
    let header_text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let token = extract::access_token(header_text(header::AUTHORIZATION), query);
    let limit = state.config().server.max_body_size;
    let length = header_text(header::CONTENT_LENGTH);
    if let Some(n) = length
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > limit)
    {
        return error_response(&refuse_oversized(n, limit, stream).await);
    }
    let read = body::read(length, stream, limit).await;
    // The Content-Type verdict comes first, as on the other routes.
    let bytes = body::check_content_type(header_text(header::CONTENT_TYPE)).and(read);
    // Who asks matters only to recursion (off by default).
    let requester = if state.config().lookup.recursive.enabled {
        extract::requester(
            peer.map(|p| p.ip()),
            header_text(http::HeaderName::from_static("x-forwarded-for")),
            &state.config().rate_limit.trusted_proxies,
        )
    } else {
        None
    };
    identity::lookup::answer_lookup(token, bytes, state, requester).await
}
