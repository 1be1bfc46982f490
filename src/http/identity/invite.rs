//! 3PID room invites: `POST /v2/store-invite`, `POST .../sign-ed25519` (the sign link in
//! invitation mails POSTs with its parameters in the query string and no access token),
//! `GET .../pubkey/ephemeral/isvalid`.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::auth::{authenticate, Gate};
use crate::service::invite;
use crate::service::Services;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use warp::reply::Response;

/// `POST /_matrix/identity/v2/store-invite`
pub async fn store_invite(
    token: Option<String>,
    body: Result<Map<String, Value>, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let caller = authenticate(&state, token, Gate::Terms)?;
        invite::store_invite(&state, caller.user_id(), &body?).await
    };
    respond(result.await)
}

/// `POST .../sign-ed25519`: parameters from the JSON body, or from the query string
/// when there is no body (Element's sign link). On v2 an access token, when sent, must
/// be valid; the private key itself is what authorises the signature.
pub async fn sign_ed25519(
    token: Option<String>,
    v2: bool,
    query: HashMap<String, String>,
    raw: Result<bytes::Bytes, Error>,
    content_type: Option<String>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = (|| {
        if v2 {
            if let Some(t) = token {
                authenticate(&state, Some(t), Gate::Terms)?;
            }
        }
        let raw = raw?;
        let body_empty = raw.iter().all(u8::is_ascii_whitespace) || raw.as_ref() == b"null";
        let params: Map<String, Value> = if body_empty {
            query
                .into_iter()
                .filter(|(k, _)| k != "access_token")
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        } else {
            let mut body = crate::http::body::parse_params(content_type.as_deref(), &raw)?;
            // The sign link's parameters fill in what the body lacks.
            for (k, v) in query {
                if k != "access_token" {
                    body.entry(k).or_insert(Value::String(v));
                }
            }
            body
        };
        invite::sign_ed25519(&state, &params)
    })();
    respond(result)
}

/// `GET .../pubkey/ephemeral/isvalid?public_key=`
pub async fn ephemeral_is_valid(
    query: HashMap<String, String>,
    state: Services,
) -> Result<Response, Infallible> {
    respond(match query.get("public_key") {
        Some(key) => invite::ephemeral_is_valid(&state, key),
        None => Err(Error::missing_params(&["public_key"])),
    })
}
