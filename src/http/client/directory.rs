//! The client-server endpoints a reverse proxy routes to us instead of the homeserver:
//! `POST /_matrix/client/{r0,v3}/user_directory/search` and everything under
//! `/_matrix/client/{r0,v3}/profile/`.

use crate::error::{ErrCode, Error};
use crate::http::reply::{error_response, respond};
use crate::service::directory::{self, ProfileRequest, SearchRequest, MAX_LIMIT};
use crate::service::Services;
use serde_json::{Map, Value};
use std::convert::Infallible;
use warp::reply::Response;

/// `POST /_matrix/client/{version}/user_directory/search`
pub async fn search(
    version: String,
    token: Option<String>,
    host: Option<String>,
    body: Result<Map<String, Value>, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    // No token, no answer: not even about the body.
    let result = match (token, body) {
        (None, _) => Err(directory::missing_token()),
        (Some(token), Ok(body)) => match parse_search(&body) {
            Ok(request) => directory::search(&state, token, host, &version, request).await,
            Err(e) => Err(e),
        },
        (Some(_), Err(e)) => Err(e),
    };
    respond(result)
}

const DEFAULT_LIMIT: usize = 10;

fn missing_param(name: &str) -> Error {
    Error::new(ErrCode::MissingParam, format!("Missing parameter: {name}"))
}

/// Reads the body: `search_term` (a string) and `limit` (an integer, default 10,
/// clamped to 0..=50 as Synapse does). The body itself goes on to the homeserver.
fn parse_search(body: &Map<String, Value>) -> Result<SearchRequest, Error> {
    let term = match body.get("search_term") {
        None | Some(Value::Null) => return Err(missing_param("search_term")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Error::invalid_param("search_term must be a string")),
    };
    let limit = match body.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (_, Some(u)) => usize::try_from(u).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
            (Some(_), None) => 0,
            _ => return Err(Error::invalid_param("limit must be an integer")),
        },
        Some(_) => return Err(Error::invalid_param("limit must be an integer")),
    };
    let forward = serde_json::to_vec(body)
        .map_err(|e| Error::internal("passing a directory search on", e))?;
    Ok(SearchRequest {
        term,
        limit,
        forward: forward.into(),
    })
}

/// `* /_matrix/client/{version}/profile/{userId}[/{field}]`, passed to the homeserver.
pub async fn profile(
    request: Result<ProfileRequest, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let answer = match request {
        Ok(request) => directory::profile(&state, request).await,
        Err(e) => Err(e),
    };
    Ok(match answer {
        Ok(answer) => super::relay(answer),
        Err(e) => error_response(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn search_bodies_are_checked_and_limits_clamped() {
        let p = |v| parse_search(&obj(v));
        let request = p(json!({"search_term": "ali"})).unwrap();
        assert_eq!((request.term.as_str(), request.limit), ("ali", 10));
        assert_eq!(request.forward.as_ref(), br#"{"search_term":"ali"}"#);
        assert_eq!(p(json!({"search_term": "a", "limit": 3})).unwrap().limit, 3);
        assert_eq!(
            p(json!({"search_term": "a", "limit": -5})).unwrap().limit,
            0
        );
        assert_eq!(
            p(json!({"search_term": "a", "limit": 1e300}))
                .map_err(|e| e.code)
                .unwrap_err(),
            ErrCode::InvalidParam
        );
        assert_eq!(
            p(json!({"search_term": "a", "limit": u64::MAX}))
                .unwrap()
                .limit,
            MAX_LIMIT
        );
        assert_eq!(p(json!({})).unwrap_err().code, ErrCode::MissingParam);
        assert_eq!(
            p(json!({"search_term": 5})).unwrap_err().code,
            ErrCode::InvalidParam
        );
        assert_eq!(
            p(json!({"search_term": "a", "limit": "5"}))
                .unwrap_err()
                .code,
            ErrCode::InvalidParam
        );
    }
}
