//! Lookups: `GET /v2/hash_details`, `POST /v2/lookup`, and the legacy v1
//! `GET /api/v1/lookup` and `POST /api/v1/bulk_lookup`.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::auth::{authenticate, Gate};
use crate::service::lookup;
use crate::service::recursion;
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

fn param_str<'a>(body: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, Error> {
    match body.get(name) {
        None | Some(Value::Null) => Err(Error::missing_params(&[name])),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::invalid_param(format!("{name} must be a string"))),
    }
}

/// A `/v2/lookup` body not of the usual shape, validated field by field for a precise
/// error on bad input.
fn lookup_request(body: &Map<String, Value>) -> Result<lookup::LookupRequest<'_>, Error> {
    let algorithm = param_str(body, "algorithm")?;
    let pepper = param_str(body, "pepper")?;
    let list = match body.get("addresses") {
        None | Some(Value::Null) => return Err(Error::missing_params(&["addresses"])),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Error::invalid_param("addresses must be a list of strings")),
    };
    let mut addresses = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        match a {
            Value::String(s) => addresses.push(s.as_str()),
            _ => {
                return Err(Error::invalid_param(format!(
                    "addresses[{i}] is not a string"
                )))
            }
        }
    }
    Ok(lookup::LookupRequest {
        algorithm,
        pepper,
        addresses,
    })
}

/// `POST /_matrix/identity/v2/lookup` once its token and body are read (by
/// `http::fast::answer`, the route's one entrance). `requester`: the client's address
/// when recursion is on.
pub async fn answer_lookup(
    token: Option<String>,
    body: Result<bytes::Bytes, Error>,
    state: &Services,
    requester: Option<std::net::IpAddr>,
) -> Response {
    let allowed = authenticate(state, token, Gate::Terms)
        .and_then(|caller| state.limits().lookup(&caller.token));
    let bytes = match allowed.and(body) {
        Ok(bytes) => bytes,
        Err(e) => return crate::http::reply::error_response(&e),
    };
    let result = match serde_json::from_slice::<FastBody<'_>>(&bytes) {
        Ok(fast) => {
            let request = lookup::LookupRequest {
                algorithm: &fast.algorithm,
                pepper: &fast.pepper,
                addresses: fast.addresses.iter().map(|a| a.as_ref()).collect(),
            };
            answer_request(state, &request, requester).await
        }
        // Not the usual shape: parse it generically to say precisely what is wrong.
        Err(_) => match crate::http::body::parse_object::<Map<String, Value>>(None, &bytes) {
            Ok(object) => match lookup_request(&object) {
                Ok(request) => answer_request(state, &request, requester).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    result.unwrap_or_else(|e| crate::http::reply::error_response(&e))
}

async fn answer_request(
    state: &Services,
    request: &lookup::LookupRequest<'_>,
    requester: Option<std::net::IpAddr>,
) -> Result<Response, Error> {
    // Hashed lookups never recurse: answered without leaving this thread.
    let mappings = if request.algorithm == "sha256" || requester.is_none() {
        lookup::lookup(state, request)?
    } else {
        recursion::lookup_v2(state, request, requester).await?
    };
    Ok(crate::http::reply::json_response(StatusCode::OK, &mappings))
}

/// `GET /_matrix/identity/api/v1/lookup?medium=&address=`
pub async fn lookup_v1(
    query: HashMap<String, String>,
    requester: Option<std::net::IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let medium = query.get("medium").map(String::as_str);
    let address = query.get("address").map(String::as_str);
    respond(match (medium, address) {
        (Some(m), Some(a)) => recursion::lookup_v1(&state, m, a, requester).await,
        (None, None) => Err(Error::missing_params(&["medium", "address"])),
        (None, _) => Err(Error::missing_params(&["medium"])),
        (_, None) => Err(Error::missing_params(&["address"])),
    })
}

/// The `(medium, address)` pairs of a bulk lookup body, `{"threepids": [[m, a], ...]}`.
/// A list longer than `max` is refused before its entries are looked at.
fn bulk_pairs(body: &Map<String, Value>, max: usize) -> Result<Vec<(&str, &str)>, Error> {
    let list = match body.get("threepids") {
        None | Some(Value::Null) => return Err(Error::missing_params(&["threepids"])),
        Some(Value::Array(l)) => l,
        Some(_) => {
            return Err(Error::invalid_param(
                "threepids must be a list of [medium, address] pairs",
            ))
        }
    };
    if list.len() > max {
        return Err(lookup::too_many_threepids(max));
    }
    let mut pairs = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match item.as_array().map(Vec::as_slice) {
            Some([Value::String(m), Value::String(a)]) => pairs.push((m.as_str(), a.as_str())),
            _ => {
                return Err(Error::invalid_param(format!(
                    "threepids[{i}] is not a [medium, address] pair of strings"
                )))
            }
        }
    }
    Ok(pairs)
}

/// `POST /_matrix/identity/api/v1/bulk_lookup`
pub async fn bulk_lookup_v1(
    body: Result<Map<String, Value>, Error>,
    requester: Option<std::net::IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let body = match body {
        Ok(body) => body,
        Err(e) => return Ok(crate::http::reply::error_response(&e)),
    };
    let pairs = match bulk_pairs(&body, lookup::bulk_max(&state)) {
        Ok(pairs) => pairs,
        Err(e) => return Ok(crate::http::reply::error_response(&e)),
    };
    respond(recursion::bulk_lookup_v1(&state, &pairs, requester).await)
}
