//! The HTTP servers: the public identity API and the admin listener. Builds the warp
//! routes, adds CORS to every response, answers preflights, turns routing failures into
//! Matrix errors, logs each request (method, path, status, time; never the query string,
//! which may hold an access token), and serves them with graceful shutdown.

pub mod listen;

use crate::api::{self, admin, discovery, pubkey};
use crate::error::Error;
use crate::state::AppState;
use std::convert::Infallible;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// `/_matrix/identity/v2/...`, and `/_matrix/identity/api/v1/...` when v1 is enabled.
fn api_prefix(v1: bool) -> BoxedFilter<()> {
    let v2 = warp::path!("_matrix" / "identity" / "v2" / ..).boxed();
    if v1 {
        v2.or(warp::path!("_matrix" / "identity" / "api" / "v1" / ..))
            .unify()
            .boxed()
    } else {
        v2
    }
}

/// Every route of the public listener, with CORS, logging and error rendering.
pub fn public_routes(state: AppState) -> BoxedFilter<(Response,)> {
    let prefix = api_prefix(state.config.matrix.v1);
    let st = api::with_state(state.clone());

    let versions = warp::path!("_matrix" / "identity" / "versions")
        .and(warp::get())
        .and_then(discovery::versions);
    let ping = prefix
        .clone()
        .and(warp::path::end())
        .and(warp::get())
        .and_then(discovery::ping);
    let pubkey_isvalid = prefix
        .clone()
        .and(warp::path!("pubkey" / "isvalid"))
        .and(warp::get())
        .and(api::query())
        .and(st.clone())
        .and_then(pubkey::is_valid);
    let pubkey_get = prefix
        .clone()
        .and(warp::path!("pubkey" / String))
        .and(warp::get())
        .and(st.clone())
        .and_then(pubkey::get_pubkey);
    let version = warp::path!("version")
        .and(warp::get())
        .and_then(discovery::version);
    let status = warp::path!("status")
        .and(warp::get())
        .and(st.clone())
        .and_then(discovery::status);

    let routes = versions
        .or(ping)
        .unify()
        .or(pubkey_isvalid)
        .unify()
        .or(pubkey_get)
        .unify()
        .or(version)
        .unify()
        .or(status)
        .unify();
    finish(routes.boxed(), "public", state.config.server.max_body_size)
}

/// The admin listener's routes.
pub fn admin_routes(state: AppState) -> BoxedFilter<(Response,)> {
    let max_body = state.config.server.max_body_size;
    let st = api::with_state(state);
    let status = warp::path!("_mxisd" / "admin" / "v1" / "status")
        .and(warp::get())
        .and(st)
        .and_then(admin::status);
    finish(status.boxed(), "admin", max_body)
}

/// Wraps routes with the body-size guard, the preflight answer, error rendering, CORS and
/// the request log.
fn finish(
    routes: BoxedFilter<(Response,)>,
    listener: &'static str,
    max_body: u64,
) -> BoxedFilter<(Response,)> {
    // A declared body over the limit is refused before routing, whatever the endpoint;
    // bodies without Content-Length (chunked) are capped while read (api::body).
    let too_large = warp::header::optional::<String>("content-length").and_then(
        move |declared: Option<String>| async move {
            match declared.and_then(|d| d.trim().parse::<u64>().ok()) {
                Some(n) if n > max_body => Ok(api::error_response(&Error::too_large(format!(
                    "Request body is larger than {max_body} bytes"
                )))),
                _ => Err(warp::reject::not_found()),
            }
        },
    );
    // Not `warp::options()`: its "method not allowed" rejection would turn every unknown
    // path into a 405.
    let preflight = warp::method().and_then(|method: warp::http::Method| async move {
        if method == warp::http::Method::OPTIONS {
            Ok(api::json_response(
                warp::http::StatusCode::OK,
                &serde_json::json!({}),
            ))
        } else {
            Err(warp::reject::not_found())
        }
    });
    too_large
        .or(preflight)
        .unify()
        .or(routes)
        .unify()
        .recover(recover)
        .unify()
        .map(with_cors)
        .with(warp::log::custom(move |info| {
            tracing::info!(
                target: "mxisd::http",
                listener,
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                ms = info.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }))
        .map(warp::Reply::into_response)
        .boxed()
}

/// Turns warp's routing rejections into Matrix errors. Handlers never reject, so only
/// "no route matched" cases reach this.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        Error::unrecognized_route()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        Error::method_not_allowed()
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        Error::too_large("Request body too large")
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        Error::not_json("Unsupported Content-Type")
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::InvalidQuery>().is_some()
    {
        Error::invalid_param("Malformed request")
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        Error::unrecognized_route()
    };
    Ok(api::error_response(&error))
}

fn with_cors(mut response: Response) -> Response {
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
