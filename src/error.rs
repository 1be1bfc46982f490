//! The one domain error: what went wrong, as an [`ErrCode`], with a message for the
//! client and, where the spec wants them, extra fields (`mxid`, `retry_after_ms`, ...).
//! Nothing here knows HTTP: `http::reply` maps each code to its status and Matrix
//! errcode, in one place. Internal failures are logged with detail here and answered
//! with a generic message, so no store path, SQL or stack detail reaches a client.

use serde_json::{Map, Value};

/// What kind of failure an [`Error`] is. Each kind has one status and one errcode,
/// given by `http::reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrCode {
    /// No endpoint at this path, or an unknown token (invites).
    Unrecognized,
    /// An endpoint called with the wrong method.
    MethodNotAllowed,
    /// A request for something this server does not do (e.g. a non-e-mail invite).
    Unsupported,
    NotFound,
    NotJson,
    BadJson,
    /// Parameters missing from the request (`M_MISSING_PARAMS`).
    MissingParams,
    /// The singular form some endpoints answer with (`M_MISSING_PARAM`).
    MissingParam,
    InvalidParam,
    /// A request body over the size limit.
    TooLarge,
    /// A request body that did not arrive in time.
    Timeout,
    /// The store cannot take writes for now (disk full); reads go on.
    ReadOnly,
    /// A request asking for more than a limit allows (addresses per lookup, ...).
    TooMany,
    /// Ours, not the client's.
    Internal,
    /// A server we depend on (the homeserver, a directory) failed or did not answer.
    Upstream,
    /// The request conflicts with the current state.
    Conflict,
    Forbidden,
    /// Acting for another user than the caller.
    NotYours,
    TermsNotSigned,
    GuestAccessForbidden,
    Unauthorized,
    MissingToken,
    UnknownToken,
    LimitExceeded,
    NoValidSession,
    InvalidPepper,
    InvalidEmail,
    InvalidAddress,
    EmailSendError,
    SendError,
    SessionExpired,
    SessionNotValidated,
    ThreepidInUse,
    TokenIncorrect,
    /// The homeserver refused the caller's token; its reason is passed on, with a 401
    /// when the homeserver answered 401 and a 403 otherwise.
    Refused {
        reason: Refusal,
        unauthenticated: bool,
    },
}

/// Why the homeserver refused a token, for the reasons clients act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownToken,
    MissingToken,
    UserLocked,
    UserSuspended,
    UserDeactivated,
    GuestAccessForbidden,
    Forbidden,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrCode,
    pub message: String,
    /// Extra top-level fields of the error body.
    pub extra: Map<String, Value>,
}

impl Error {
    pub fn new(code: ErrCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a field to the error body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// A path that is not an endpoint.
    pub fn unrecognized_route() -> Self {
        Self::new(ErrCode::Unrecognized, "Unrecognized request")
    }

    /// An endpoint called with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            ErrCode::MethodNotAllowed,
            "Method not allowed for this endpoint",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrCode::NotFound, message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(ErrCode::NotJson, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrCode::BadJson, message)
    }

    pub fn missing_params(names: &[&str]) -> Self {
        Self::new(
            ErrCode::MissingParams,
            format!("Missing parameters: {}", names.join(",")),
        )
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrCode::InvalidParam, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrCode::TooLarge, message)
    }

    /// A failure that is ours, not the client's: logged in full, answered generically.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %detail, "internal error");
        Self::new(ErrCode::Internal, "Internal server error")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
