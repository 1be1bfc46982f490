//! `GET /_matrix-internal/profile/v1/{userId}`: the roles a user holds, as ma1sd
//! answered them (`{"roles": [...]}`), for homeserver modules and bridges. Served on
//! the internal listener only (ma1sd served it to anyone).

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::{policy, Services};
use serde::Serialize;
use std::convert::Infallible;
use warp::reply::Response;

#[derive(Serialize)]
struct Roles {
    roles: Vec<String>,
}

/// `GET /_matrix-internal/profile/v1/{userId}`
pub async fn roles(user_id: String, state: Services) -> Result<Response, Infallible> {
    let user_id = percent_encoding::percent_decode_str(&user_id)
        .decode_utf8_lossy()
        .into_owned();
    let result = match crate::model::Mxid::parse(&user_id) {
        Some(mxid) => policy::roles(&state, mxid.as_str()).map(|roles| Roles { roles }),
        None => Err(Error::invalid_param("Not a valid Matrix user ID")),
    };
    respond(result)
}
