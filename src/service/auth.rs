//! Who is calling: identity-server access tokens from `Authorization: Bearer` or the
//! `access_token` query parameter (Synapse still sends it on `hash_details`), and the
//! terms gate every authenticated endpoint but logout and `POST /terms` sits behind.

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

/// Picks the token out of the header value or the query parameter (header first).
pub fn extract_token(authorization: Option<&str>, query_token: Option<&str>) -> Option<String> {
    if let Some(header) = authorization {
        let mut parts = header.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default().trim();
        if scheme.eq_ignore_ascii_case("bearer") && !value.is_empty() {
            return Some(value.to_owned());
        }
    }
    query_token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        assert_eq!(
            extract_token(Some("Bearer abc"), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            extract_token(Some("bearer  abc "), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            extract_token(Some("Bearer abc"), Some("q")).as_deref(),
            Some("abc")
        );
        assert_eq!(extract_token(None, Some("q")).as_deref(), Some("q"));
        assert_eq!(
            extract_token(Some("X-Matrix origin=x"), Some("q")).as_deref(),
            Some("q")
        );
        assert_eq!(extract_token(Some("Bearer"), None), None);
        assert_eq!(extract_token(None, Some(" ")), None);
        assert_eq!(extract_token(None, None), None);
    }
}
