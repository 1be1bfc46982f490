//! The public listener's direct routes, taken before warp's filter tree (body guard,
//! preflight, prefix matching, then each route of the table in turn):
//! - `POST /_matrix/identity/v2/lookup`, the hottest request: [`answer`] reads the
//!   token, the body (limit, Content-Type) and calls the handler, with the same
//!   functions every warp route uses (`extract::access_token`,
//!   `middleware::refuse_oversized`, `body::read`, `middleware::with_cors`,
//!   `middleware::log_request`), so a fix lands once; the warp route of the same path
//!   (a trailing slash, say) calls [`answer`] too;
//! - the answers that never change while the server runs (the v2 and v1 pings,
//!   `/versions`, `/version`: what health probes, clients and homeservers call most
//!   after lookups), serialised once, for a body-less `GET` or `HEAD` of the exact path.
//!   Walking the filter tree cost `/versions` half again the CPU of the v2 ping.

use super::middleware::{log_request, refuse_oversized, with_cors};
use super::{body, extract, identity, reply::error_response};
use crate::service::Services;
use http::{header, HeaderMap, Method, Request};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use warp::reply::Response;

pub use crate::metrics::LOOKUP_PATH;

/// Whether `request` takes the direct lookup route.
pub fn is_lookup<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST && request.uri().path() == LOOKUP_PATH
}

/// The answers the listener gives without warp, built once per listener.
#[derive(Clone)]
pub struct Direct {
    state: Services,
    constants: Arc<[Constant]>,
}

/// One constant answer: its exact path, its metrics route, its JSON body.
struct Constant {
    path: &'static str,
    route: usize,
    body: bytes::Bytes,
}

impl Direct {
    pub fn new(state: Services) -> Self {
        let constants = identity::discovery::constant_answers(state.config().matrix.v1)
            .into_iter()
            .filter_map(|(path, value)| {
                let body = serde_json::to_vec(&value).ok()?;
                Some(Constant {
                    path,
                    route: state.metrics.route_id(path),
                    body: body.into(),
                })
            })
            .collect();
        Self { state, constants }
    }

    pub fn state(&self) -> &Services {
        &self.state
    }

    /// The constant answer to `request`, when it is a `GET` or `HEAD` of one of their
    /// exact paths without a body (a declared body goes the usual way, so an oversized
    /// one gets its 413).
    pub fn constant<B>(&self, request: &Request<B>) -> Option<Response> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let headers = request.headers();
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|n| n.as_bytes() != b"0");
        if declared || headers.contains_key(header::TRANSFER_ENCODING) {
            return None;
        }
        let path = request.uri().path();
        let constant = self.constants.iter().find(|c| c.path == path)?;
        let started = Instant::now();
        let mut response = Response::new(constant.body.clone().into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let response = with_cors(response);
        log_request(
            &self.state.metrics,
            crate::metrics::Listener::Public,
            constant.route,
            method.as_str(),
            constant.path,
            response.status().as_u16(),
            started.elapsed(),
        );
        Some(response)
    }
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
    let limit = body::Limit::of(&state.config().server);
    let length = header_text(header::CONTENT_LENGTH);
    if let Some(n) = length
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > limit.size)
    {
        return error_response(&refuse_oversized(n, limit.size, stream).await);
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
