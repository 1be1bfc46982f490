//! The client-server endpoints a reverse proxy routes to us instead of the homeserver:
//! `POST /_matrix/client/{r0,v3}/user_directory/search` and everything under
//! `/_matrix/client/{r0,v3}/profile/`.

use crate::error::Error;
use crate::http::reply::{error_response, respond};
use crate::service::directory::{self, ProfileRequest};
use crate::service::Services;
use serde_json::{Map, Value};
use std::convert::Infallible;
use warp::http::{header, HeaderValue, StatusCode};
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
        (Some(token), Ok(body)) => directory::search(&state, token, host, &version, body).await,
        (Some(_), Err(e)) => Err(e),
    };
    respond(result)
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
        Ok(answer) => {
            let mut response = Response::new(answer.body.into());
            *response.status_mut() =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(ct) = answer
                .content_type
                .and_then(|ct| HeaderValue::from_str(&ct).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Err(e) => error_response(&e),
    })
}
