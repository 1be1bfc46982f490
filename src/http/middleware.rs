//! What wraps every route, and what the fast lookup lane calls too so a fix lands once:
//! the declared-body limit, CORS headers, the request log line and metrics, and the
//! turning of warp's rejections into Matrix errors.

use super::reply::error_response;
use crate::error::Error;
use crate::service::Services;
use std::convert::Infallible;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// Refuses a declared body over the limit before routing, whatever the endpoint;
/// bodies without Content-Length (chunked) are capped while read (`body`).
pub(crate) fn body_guard(
    limit: u64,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-length")
        .and_then(move |declared: Option<String>| async move {
            match declared.and_then(|d| d.trim().parse::<u64>().ok()) {
                Some(n) if n > limit => Ok(n),
                _ => Err(warp::reject::not_found()),
            }
        })
        .and(warp::body::stream())
        .then(move |declared: u64, body| async move {
            error_response(&refuse_oversized(declared, limit, body).await)
        })
}

/// The answer to a body declared larger than `limit`: a moderately oversized body is
/// read and dropped first, so the client, still sending, gets the 413 instead of a
/// reset connection. The warp routes and the fast lookup lane both end here.
pub(crate) async fn refuse_oversized<S, B, E>(declared: u64, limit: u64, body: S) -> Error
where
    S: futures_util::Stream<Item = Result<B, E>>,
    B: bytes::Buf,
{
    if declared <= super::body::DRAIN_MAX {
        super::body::drain(body).await;
    }
    Error::too_large(format!("Request body is larger than {limit} bytes"))
}

/// Adds the request log.
pub(crate) fn logged(
    routes: BoxedFilter<(Response,)>,
    listener: crate::metrics::Listener,
    state: &Services,
) -> BoxedFilter<(Response,)> {
    let state = state.clone();
    routes
        .with(warp::log::custom(move |info| {
            let route = state.metrics.route_id(info.path());
            log_request(
                &state.metrics,
                listener,
                route,
                info.method().as_str(),
                info.path(),
                info.status().as_u16(),
                info.elapsed(),
            );
        }))
        .map(warp::Reply::into_response)
        .boxed()
}

/// Counts a request and writes its log line (method, path, status, time; never the
/// query string, which may hold an access token): for the warp routes and the fast
/// lookup lane alike.
pub(crate) fn log_request(
    metrics: &crate::metrics::Metrics,
    listener: crate::metrics::Listener,
    route: usize,
    method: &str,
    path: &str,
    status: u16,
    elapsed: std::time::Duration,
) {
    metrics.request(listener, route, status, elapsed);
    crate::logging::request(&crate::logging::RequestLine {
        listener: listener.as_str(),
        method,
        path,
        status,
        elapsed,
    });
}

/// Turns warp's routing rejections into Matrix errors. Handlers never reject, so only
/// "no route matched" cases reach this.
pub(crate) async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        Error::unrecognized_route()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        Error::method_not_allowed()
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        Error::too_large("Request body too large")
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::InvalidQuery>().is_some()
    {
        Error::invalid_param("Malformed request")
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        Error::unrecognized_route()
    };
    Ok(error_response(&error))
}

pub(crate) fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Origin, X-Requested-With, Content-Type, Accept, Authorization"),
    );
    response
}
