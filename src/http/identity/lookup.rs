//! Lookups: `GET /v2/hash_details`, `POST /v2/lookup`, and the legacy v1
//! `GET /api/v1/lookup` and `POST /api/v1/bulk_lookup`.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::auth::{authenticate, Gate};
use crate::service::lookup;
use crate::service::Services;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reply::Response;

/// `GET /_matrix/identity/v2/hash_details`
pub async fn hash_details(token: Option<String>, state: Services) -> Result<Response, Infallible> {
    respond(authenticate(&state, token, Gate::Terms).map(|_| lookup::hash_details(&state)))
}

/// The body as a client sends it: parsed borrowing from the request bytes, the common
/// case costs almost no allocation.
#[derive(Deserialize)]
struct FastBody<'a> {
    #[serde(borrow)]
    algorithm: Cow<'a, str>,
    #[serde(borrow)]
    pepper: Cow<'a, str>,
    #[serde(borrow)]
    addresses: Vec<Cow<'a, str>>,
}

/// `POST /_matrix/identity/v2/lookup`
pub async fn lookup(
    token: Option<String>,
    body: Result<bytes::Bytes, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    answer_lookup(token, body, &state).await
}

/// [`lookup`] on a borrowed state (the direct route keeps it for counting).
pub async fn answer_lookup(
    token: Option<String>,
    body: Result<bytes::Bytes, Error>,
    state: &Services,
) -> Result<Response, Infallible> {
    let allowed = authenticate(state, token, Gate::Terms)
        .and_then(|caller| state.limits.lookup(&caller.token));
    let bytes = match allowed.and(body) {
        Ok(bytes) => bytes,
        Err(e) => return Ok(crate::http::reply::error_response(&e)),
    };
    let answer = |request: &lookup::LookupRequest<'_>| {
        lookup::lookup(state, request)
            .map(|m| crate::http::reply::json_response(StatusCode::OK, &m))
    };
    let result = match serde_json::from_slice::<FastBody<'_>>(&bytes) {
        Ok(fast) => answer(&lookup::LookupRequest {
            algorithm: &fast.algorithm,
            pepper: &fast.pepper,
            addresses: fast.addresses.iter().map(|a| a.as_ref()).collect(),
        }),
        // Not the usual shape: parse it generically to say precisely what is wrong.
        Err(_) => crate::http::body::parse_object::<Map<String, Value>>(None, &bytes)
            .and_then(|object| answer(&lookup::LookupRequest::from_object(&object)?)),
    };
    Ok(result.unwrap_or_else(|e| crate::http::reply::error_response(&e)))
}

/// `GET /_matrix/identity/api/v1/lookup?medium=&address=`
pub async fn lookup_v1(
    query: HashMap<String, String>,
    state: Services,
) -> Result<Response, Infallible> {
    respond(lookup::lookup_v1(
        &state,
        query.get("medium").map(String::as_str),
        query.get("address").map(String::as_str),
    ))
}

/// `POST /_matrix/identity/api/v1/bulk_lookup`
pub async fn bulk_lookup_v1(
    body: Result<Map<String, Value>, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    respond(body.and_then(|body| lookup::bulk_lookup_v1(&state, &body)))
}
