//! 3PID room invites: `POST /v2/store-invite` (and v1's, without an account),
//! `POST .../sign-ed25519` (the sign link in
//! invitation mails POSTs with its parameters in the query string and no access token),
//! `GET .../pubkey/ephemeral/isvalid`.

use crate::error::Error;
use crate::http::params;
use crate::http::reply::respond;
use crate::model::Mxid;
use crate::service::auth::{authenticate, Gate};
use crate::service::invite::{self, Inviter, SignRequest, StoreInviteRequest};
use crate::service::Services;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
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
        let request = store_invite_request(&body?)?;
        invite::store_invite(&state, Inviter::Account(caller.user_id()), request).await
    };
    respond(result.await)
}

/// `POST /_matrix/identity/api/v1/store-invite`: no access token (as Sydent); the
/// body is the same.
pub async fn store_invite_v1(
    body: Result<Map<String, Value>, Error>,
    ip: Option<std::net::IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let request = store_invite_request(&body?)?;
        invite::store_invite(&state, Inviter::V1 { ip }, request).await
    };
    respond(result.await)
}

/// Reads a `store-invite` body: the four required strings (all missing ones reported
/// together), and every other string field as a detail.
fn store_invite_request(body: &Map<String, Value>) -> Result<StoreInviteRequest, Error> {
    const REQUIRED: [&str; 4] = ["medium", "address", "room_id", "sender"];
    params::require_all(body, &REQUIRED)?;
    let medium = params::string(body, "medium")?.to_owned();
    let address = params::string(body, "address")?.to_owned();
    let room_id = params::string(body, "room_id")?.to_owned();
    let sender = params::string(body, "sender")?.to_owned();
    let mut details = BTreeMap::new();
    for (k, v) in body {
        if let (false, Value::String(v)) = (REQUIRED.contains(&k.as_str()), v) {
            if details.len() < 32 && k.len() <= 64 && v.len() <= 2048 {
                details.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(StoreInviteRequest {
        medium,
        address,
        room_id,
        sender,
        details,
    })
}

/// Reads a `sign-ed25519` request's parameters.
fn sign_request(fields: &Map<String, Value>) -> Result<SignRequest, Error> {
    params::require_all(fields, &["mxid", "token", "private_key"])?;
    let mxid = Mxid::parse(params::string(fields, "mxid")?)
        .ok_or_else(|| Error::invalid_param("mxid is not a valid Matrix user ID"))?;
    Ok(SignRequest {
        mxid,
        token: params::string(fields, "token")?.to_owned(),
        private_key: params::string(fields, "private_key")?.to_owned(),
    })
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
        let fields: Map<String, Value> = if body_empty {
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
        invite::sign_ed25519(&state, &sign_request(&fields)?)
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
