//! Long-term public keys: `GET .../pubkey/{keyId}` and `GET .../pubkey/isvalid`, under
//! both `/_matrix/identity/v2` and `/_matrix/identity/api/v1`.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::Services;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use warp::reply::Response;

/// `GET /_matrix/identity/v2/pubkey/{keyId}`
pub async fn get_pubkey(key_id: String, state: Services) -> Result<Response, Infallible> {
    // warp hands path segments over still percent-encoded (`ed25519%3A0`).
    let key_id = percent_encoding::percent_decode_str(&key_id).decode_utf8_lossy();
    respond(
        state
            .keys
            .public_key(&key_id)
            .map(|public_key| json!({ "public_key": public_key }))
            .ok_or_else(|| Error::not_found("The public key was not found")),
    )
}

/// `GET /_matrix/identity/v2/pubkey/isvalid?public_key=`
pub async fn is_valid(
    query: HashMap<String, String>,
    state: Services,
) -> Result<Response, Infallible> {
    respond(match query.get("public_key") {
        Some(key) => Ok(json!({ "valid": state.keys.is_valid(key) })),
        None => Err(Error::missing_params(&["public_key"])),
    })
}
