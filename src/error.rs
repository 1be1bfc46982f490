//! The one error type of the HTTP surface. Services return [`Error`]; the server renders
//! it once as `{"errcode", "error"}` (plus extra fields such as `mxid` where the spec
//! wants them). Internal failures are logged with detail here and answered with a
//! generic message, so no store path, SQL or stack detail reaches a client.

use http::StatusCode;
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Error {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// Extra top-level fields of the error body.
    pub extra: Map<String, Value>,
}

impl Error {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a field to the error body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// 404 for a path that is not an endpoint.
    pub fn unrecognized_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// 405 for an endpoint called with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Method not allowed for this endpoint",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    pub fn missing_params(names: &[&str]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAMS",
            format!("Missing parameters: {}", names.join(",")),
        )
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", message)
    }

    /// A failure that is ours, not the client's: logged in full, answered generically.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert("errcode".into(), Value::from(self.errcode));
        body.insert("error".into(), Value::from(self.message.clone()));
        Value::Object(body)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal("store", e)
    }
}
