//! Who is calling: the identity-server access token (taken from the request by
//! `http::extract`) resolved to its account, and the terms gate every authenticated
//! endpoint but logout and `POST /terms` sits behind.

use crate::error::{ErrCode, Error};
use crate::service::Services;

/// Whether an endpoint requires the current terms to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Terms,
    NoTerms,
}

/// The caller, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    owner: std::sync::Arc<crate::store::accounts::TokenRecord>,
    /// The token used, for logout.
    pub token: String,
}

impl Caller {
    pub fn user_id(&self) -> &str {
        &self.owner.user_id
    }
}

pub fn unauthorized(message: &str) -> Error {
    Error::new(ErrCode::Unauthorized, message)
}

/// Resolves the token to its user and applies the terms gate.
pub fn authenticate(state: &Services, token: Option<String>, gate: Gate) -> Result<Caller, Error> {
    let token = token.ok_or_else(|| unauthorized("Missing access token"))?;
    // Tokens are looked up by their SHA-256 digest, so no comparison of the secret
    // itself happens here (nothing to time).
    let owner = state
        .store
        .token_owner(&token)?
        .ok_or_else(|| unauthorized("Unrecognised access token"))?;
    if gate == Gate::Terms && !super::terms::satisfied(state, &owner.user_id)? {
        return Err(Error::new(
            ErrCode::TermsNotSigned,
            "Terms of service have not been accepted",
        ));
    }
    Ok(Caller { owner, token })
}
