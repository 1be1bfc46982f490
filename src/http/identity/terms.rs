//! Terms of service: `GET /v2/terms`, `POST /v2/terms`.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::auth::{authenticate, Gate};
use crate::service::terms;
use crate::service::Services;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use warp::reply::Response;

/// `GET /_matrix/identity/v2/terms`
pub async fn get_terms(state: Services) -> Result<Response, Infallible> {
    let config = state.config();
    respond(Ok(terms::policies(&config)))
}

/// `POST /_matrix/identity/v2/terms` with `{"user_accepts": [url, ...]}` (a single URL
/// string is accepted too, as ma1sd did).
pub async fn post_terms(
    token: Option<String>,
    body: Result<Map<String, Value>, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let caller = authenticate(&state, token, Gate::NoTerms)?;
        let body = body?;
        let urls = match body.get("user_accepts") {
            None | Some(Value::Null) => return Err(Error::missing_params(&["user_accepts"])),
            Some(Value::String(u)) => vec![u.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::invalid_param("user_accepts must be a list of URLs"))?,
            Some(_) => return Err(Error::invalid_param("user_accepts must be a list of URLs")),
        };
        terms::accept(&state, caller.user_id(), urls).await?;
        Ok(json!({}))
    }
    .await;
    respond(result)
}
