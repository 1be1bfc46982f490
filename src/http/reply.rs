//! Every response body is written here: a value as JSON, or an [`Error`] as the Matrix
//! `{"errcode", "error"}` object with the status its [`ErrCode`] maps to. This is the
//! one place where domain errors become HTTP.

use crate::error::{ErrCode, Error, Refusal};
use serde::Serialize;
use std::convert::Infallible;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(&Error::internal("serialising a response", e));
        }
    };
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The status and Matrix errcode of each kind of error: the one place they are chosen.
pub fn status_and_errcode(code: ErrCode) -> (StatusCode, &'static str) {
    use ErrCode as E;
    match code {
        E::Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
        E::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
        E::Unsupported => (StatusCode::BAD_REQUEST, "M_UNRECOGNIZED"),
        E::NotFound => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        E::NotJson => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        E::BadJson => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        E::MissingParams => (StatusCode::BAD_REQUEST, "M_MISSING_PARAMS"),
        E::MissingParam => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
        E::InvalidParam => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        E::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        E::Timeout => (StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN"),
        E::ReadOnly => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
        E::TooMany => (StatusCode::BAD_REQUEST, "M_TOO_LARGE"),
        E::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        E::Upstream => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        E::Conflict => (StatusCode::CONFLICT, "M_UNKNOWN"),
        E::Forbidden => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        E::NotYours => (StatusCode::FORBIDDEN, "M_UNAUTHORIZED"),
        E::TermsNotSigned => (StatusCode::FORBIDDEN, "M_TERMS_NOT_SIGNED"),
        E::GuestAccessForbidden => (StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
        E::Unauthorized => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
        E::MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        E::UnknownToken => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        E::LimitExceeded => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
        E::NoValidSession => (StatusCode::NOT_FOUND, "M_NO_VALID_SESSION"),
        E::InvalidPepper => (StatusCode::BAD_REQUEST, "M_INVALID_PEPPER"),
        E::InvalidEmail => (StatusCode::BAD_REQUEST, "M_INVALID_EMAIL"),
        E::InvalidAddress => (StatusCode::BAD_REQUEST, "M_INVALID_ADDRESS"),
        E::EmailSendError => (StatusCode::BAD_REQUEST, "M_EMAIL_SEND_ERROR"),
        E::SendError => (StatusCode::BAD_REQUEST, "M_SEND_ERROR"),
        E::SessionExpired => (StatusCode::BAD_REQUEST, "M_SESSION_EXPIRED"),
        E::SessionNotValidated => (StatusCode::BAD_REQUEST, "M_SESSION_NOT_VALIDATED"),
        E::ThreepidInUse => (StatusCode::BAD_REQUEST, "M_THREEPID_IN_USE"),
        E::TokenIncorrect => (StatusCode::BAD_REQUEST, "M_TOKEN_INCORRECT"),
        E::Refused {
            reason,
            unauthenticated,
        } => {
            let status = if unauthenticated {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            let errcode = match reason {
                Refusal::UnknownToken => "M_UNKNOWN_TOKEN",
                Refusal::MissingToken => "M_MISSING_TOKEN",
                Refusal::UserLocked => "M_USER_LOCKED",
                Refusal::UserSuspended => "M_USER_SUSPENDED",
                Refusal::UserDeactivated => "M_USER_DEACTIVATED",
                Refusal::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
                Refusal::Forbidden => "M_FORBIDDEN",
            };
            (status, errcode)
        }
    }
}

/// The `{"errcode", "error", ...}` body of an error.
pub fn error_body(error: &Error) -> serde_json::Value {
    let mut body = error.extra.clone();
    body.insert("errcode".into(), status_and_errcode(error.code).1.into());
    body.insert("error".into(), error.message.clone().into());
    serde_json::Value::Object(body)
}

pub fn error_response(error: &Error) -> Response {
    let mut response = json_response(status_and_errcode(error.code).0, &error_body(error));
    // A 429's wait also as the standard header (whole seconds, rounded up), for
    // proxies and clients that read no body.
    if let Some(ms) = error.extra.get("retry_after_ms").and_then(|v| v.as_u64()) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
    }
    response
}

/// 200 with the value, or the error.
pub fn respond<T: Serialize>(result: Result<T, Error>) -> Result<Response, Infallible> {
    Ok(match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => error_response(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_also_a_retry_after_header_in_whole_seconds() {
        let header_for = |ms: u64| {
            let e = Error::new(ErrCode::LimitExceeded, "slow down").with("retry_after_ms", ms);
            let response = error_response(&e);
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            response.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header_for(1), "1");
        assert_eq!(header_for(1000), "1");
        assert_eq!(header_for(1001), "2");
        assert_eq!(header_for(599_999), "600");
        let plain = error_response(&Error::new(ErrCode::NotFound, "no"));
        assert!(plain.headers().get(header::RETRY_AFTER).is_none());
    }
}
