//! Accounts via OpenID (`/v2/account/register`): the client hands us an OpenID token
//! from its homeserver, we ask that homeserver who it belongs to, and issue our own
//! access token. Our tokens do not expire with the OpenID token (ma1sd's did, and
//! clients got 401 floods); they live until logout.

use crate::error::{ErrCode, Error};
use crate::federation::OutboundError;
use crate::model::Mxid;
use crate::service::Services;
use serde::Deserialize;
use serde_json::Value;

/// Largest userinfo answer read (Sydent: 5 KiB).
const USERINFO_MAX: usize = 64 * 1024;

/// The OpenID credentials a client got from its homeserver. `token_type` and
/// `expires_in` are accepted but not required (Sydent reads neither).
#[derive(Debug, Deserialize)]
pub struct OpenIdToken {
    pub access_token: String,
    pub matrix_server_name: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<Value>,
}

fn forbidden(message: impl Into<String>) -> Error {
    Error::new(ErrCode::Forbidden, message)
}

fn bad_gateway(message: impl Into<String>) -> Error {
    Error::new(ErrCode::Upstream, message)
}

/// The `/v2/account/register` answer: our new access token, under both names (the spec
/// says `token`; Sydent and older clients use `access_token`). Fields in alphabetical
/// order, as on the wire before.
#[derive(Debug, serde::Serialize)]
pub struct Registered {
    pub access_token: String,
    pub token: String,
}

/// `POST /v2/account/register` from `ip`: returns `{token, access_token}`.
pub async fn register(
    state: &Services,
    openid: OpenIdToken,
    ip: Option<std::net::IpAddr>,
) -> Result<Registered, Error> {
    let server = openid.matrix_server_name.trim().to_ascii_lowercase();
    if !crate::model::is_server_name(&server) {
        return Err(Error::invalid_param(
            "matrix_server_name is not a valid server name",
        ));
    }
    if openid.access_token.is_empty() || openid.access_token.len() > 4096 {
        return Err(Error::invalid_param("access_token is empty or too long"));
    }
    if let Some(kind) = &openid.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(Error::invalid_param("token_type must be Bearer"));
        }
    }
    let domain = &state.config().matrix.domain;
    if state.config().accounts.allow_only_trust_domains && !server.eq_ignore_ascii_case(domain) {
        return Err(forbidden(format!(
            "This identity server only accepts users of {domain}"
        )));
    }
    // Counted once it would cost an outbound call (refusals above cost nothing).
    state.limits().register(ip)?;
    let path = format!(
        "/_matrix/federation/v1/openid/userinfo?access_token={}",
        form_urlencoded::byte_serialize(openid.access_token.as_bytes()).collect::<String>()
    );
    let (status, body) = state
        .federation
        .get_json(&server, &path, USERINFO_MAX)
        .await
        .map_err(|e| {
            tracing::info!(homeserver = %server, error = %e, "OpenID userinfo failed");
            match e {
                OutboundError::Refused(_) => forbidden(format!(
                    "The homeserver {server} resolves to an address this identity server may not contact"
                )),
                OutboundError::InvalidName(_) => {
                    Error::invalid_param("matrix_server_name is not a valid server name")
                }
                OutboundError::Timeout(_) => bad_gateway(format!("The homeserver {server} did not answer in time")),
                OutboundError::Unreachable(_) | OutboundError::Status { .. } => {
                    bad_gateway(format!("Could not reach the homeserver {server}"))
                }
                OutboundError::TooLarge(_)
                | OutboundError::NotJson(_)
                | OutboundError::NotJsonStatus(_) => {
                    bad_gateway(format!("The homeserver {server} sent an invalid answer"))
                }
            }
        })?;
    match status {
        200 => {}
        // The homeserver's verdict on the token, whatever its body says (or fails to).
        401 | 403 => {
            tracing::info!(homeserver = %server, status, "OpenID userinfo: token refused");
            return Err(crate::service::auth::unauthorized(&format!(
                "The homeserver {server} refused the OpenID token (HTTP {status}); get a new one from it"
            )));
        }
        other => {
            tracing::info!(homeserver = %server, status = other, "OpenID userinfo refused");
            return Err(bad_gateway(format!(
                "The homeserver {server} answered HTTP {other}"
            )));
        }
    }
    let sub = body
        .get("sub")
        .and_then(Value::as_str)
        .and_then(Mxid::parse)
        .ok_or_else(|| bad_gateway(format!("The homeserver {server} sent an invalid answer")))?;
    if !sub.server().eq_ignore_ascii_case(&server) {
        tracing::warn!(homeserver = %server, "OpenID userinfo named a user of another server");
        return Err(crate::service::auth::unauthorized(
            "The OpenID token belongs to a user of another server",
        ));
    }
    let token =
        crate::crypto::random_alphanumeric(64).map_err(|e| Error::internal("random token", e))?;
    state.store.create_token(sub.as_str(), &token).await?;
    tracing::info!(homeserver = %server, "account token issued");
    Ok(Registered {
        access_token: token.clone(),
        token,
    })
}

/// `POST /v2/account/logout`: revokes the token used, and only it.
pub async fn logout(state: &Services, token: Option<String>) -> Result<(), Error> {
    let caller =
        crate::service::auth::authenticate(state, token, crate::service::auth::Gate::NoTerms)?;
    state.store.revoke_token(&caller.token).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_register_answer_keeps_its_wire_bytes() {
        let registered = Registered {
            access_token: "t".into(),
            token: "t".into(),
        };
        assert_eq!(
            serde_json::to_string(&registered).unwrap(),
            json!({ "token": "t", "access_token": "t" }).to_string()
        );
    }
}
