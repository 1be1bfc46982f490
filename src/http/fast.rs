//! A direct route for the hottest request, `POST /_matrix/identity/v2/lookup`: it skips
//! warp's filter tree (which every lookup would otherwise walk through body guard,
//! preflight and prefix matching) and reads headers in place. Everything else about
//! the request is as on the warp route: the same handler, the same body limit and
//! errors, CORS headers and the request log line. Any other request goes to warp.

use super::{body, identity, middleware::with_cors, reply::error_response};
use crate::service::Services;
use http::{header, Method, Request};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::time::Instant;
use warp::reply::Response;

pub use crate::metrics::LOOKUP_PATH;

/// Whether `request` takes the direct route.
pub fn is_lookup<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST && request.uri().path() == LOOKUP_PATH
}

/// Serves a lookup request.
pub async fn lookup(state: Services, request: Request<Incoming>) -> Result<Response, Infallible> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let header_text = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let query_token = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let token = crate::service::auth::extract_token(
        header_text(header::AUTHORIZATION),
        query_token.as_deref(),
    );
    let limit = state.config.server.max_body_size;
    let stream = http_body_util::BodyDataStream::new(body);
    // As on every other route: a declared oversized body is read and dropped (up to a
    // point) so the client, still sending, gets the 413.
    let declared = header_text(header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        if n <= body::DRAIN_MAX {
            body::drain(stream).await;
        }
        let error =
            crate::error::Error::too_large(format!("Request body is larger than {limit} bytes"));
        return Ok(finish(&state, with_cors(error_response(&error)), started));
    }
    let read = body::read(header_text(header::CONTENT_LENGTH), stream, limit).await;
    // The Content-Type verdict comes first, as on the warp routes.
    let bytes = body::check_content_type(header_text(header::CONTENT_TYPE)).and(read);
    let response = with_cors(identity::lookup::answer_lookup(token, bytes, &state).await?);
    Ok(finish(&state, response, started))
}

/// Counts and logs the request as the warp routes do.
fn finish(state: &Services, response: Response, started: Instant) -> Response {
    let metrics = &state.metrics;
    metrics.request(
        crate::metrics::Listener::Public,
        metrics.lookup_route(),
        response.status().as_u16(),
        started.elapsed(),
    );
    tracing::info!(
        target: "mxisd::http",
        listener = "public",
        method = "POST",
        path = LOOKUP_PATH,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
