//! The client-server requests a reverse proxy routes here to be looked at and passed
//! to the homeserver: `login` (3PID logins), `register/{medium}/requestToken` and
//! `register` (the registration policy), `rooms/{roomId}/invite` (the 3PID invite
//! policy). What the homeserver answers is relayed as it is.

use super::relay;
use crate::error::Error;
use crate::http::reply::error_response;
use crate::model::Medium;
use crate::service::passthrough::ClientRequest;
use crate::service::{login, policy, Services};
use std::convert::Infallible;
use warp::reply::Response;

fn answer(result: Result<crate::federation::RawResponse, Error>) -> Result<Response, Infallible> {
    Ok(match result {
        Ok(answer) => relay(answer),
        Err(e) => error_response(&e),
    })
}

/// `GET|POST /_matrix/client/{version}/login`
pub async fn login(
    request: Result<ClientRequest, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    answer(match request {
        Ok(request) => login::login(&state, request).await,
        Err(e) => Err(e),
    })
}

/// `POST /_matrix/client/{version}/register/{medium}/requestToken`
pub async fn register_request_token(
    medium: Medium,
    request: Result<ClientRequest, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    answer(match request {
        Ok(request) => policy::register_request_token(&state, medium, request).await,
        Err(e) => Err(e),
    })
}

/// `POST /_matrix/client/{version}/register`
pub async fn register(
    request: Result<ClientRequest, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    answer(match request {
        Ok(request) => policy::register(&state, request).await,
        Err(e) => Err(e),
    })
}

/// `POST /_matrix/client/{version}/rooms/{roomId}/invite`
pub async fn room_invite(
    request: Result<ClientRequest, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    answer(match request {
        Ok(request) => policy::room_invite(&state, request).await,
        Err(e) => Err(e),
    })
}
