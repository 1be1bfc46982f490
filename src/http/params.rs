//! Reading request parameters from a parsed body (JSON object, or form fields as
//! strings), with the spec's errors: absent → `M_MISSING_PARAMS`, wrong type →
//! `M_INVALID_PARAM`. Parsing bodies is HTTP work: services get the typed requests
//! built from these.

use crate::error::Error;
use crate::service::session::is_session_id;
use serde_json::{Map, Value};

/// A required string.
pub fn string<'a>(body: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, Error> {
    optional_string(body, name)?.ok_or_else(|| Error::missing_params(&[name]))
}

/// An optional string (`null` counts as absent).
pub fn optional_string<'a>(
    body: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, Error> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid_param(format!("{name} must be a string"))),
    }
}

/// A required non-negative integer; digits in a string are accepted (form bodies, and
/// clients that send `"send_attempt": "1"`).
pub fn integer(body: &Map<String, Value>, name: &'static str) -> Result<u64, Error> {
    let bad = || Error::invalid_param(format!("{name} must be a non-negative integer"));
    match body.get(name) {
        None | Some(Value::Null) => Err(Error::missing_params(&[name])),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Every missing one of `names`, reported together as Sydent does.
pub fn require_all(body: &Map<String, Value>, names: &[&'static str]) -> Result<(), Error> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| matches!(body.get(*n), None | Some(Value::Null)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::missing_params(&missing))
    }
}

/// The spec's `client_secret` grammar: `[0-9a-zA-Z.=_-]{1,255}`.
pub fn client_secret(body: &Map<String, Value>) -> Result<&str, Error> {
    let secret = string(body, "client_secret")?;
    if is_session_id(secret) {
        Ok(secret)
    } else {
        Err(Error::invalid_param(
            "client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrCode;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn types_and_absence() {
        let b = obj(json!({"s": "x", "n": 3, "d": "7", "neg": -1, "f": 1.5, "o": {}, "z": null}));
        assert_eq!(string(&b, "s").unwrap(), "x");
        assert_eq!(string(&b, "z").unwrap_err().code, ErrCode::MissingParams);
        assert_eq!(string(&b, "n").unwrap_err().code, ErrCode::InvalidParam);
        assert_eq!(integer(&b, "n").unwrap(), 3);
        assert_eq!(integer(&b, "d").unwrap(), 7);
        for bad in ["neg", "f", "o", "s"] {
            assert_eq!(
                integer(&b, bad).unwrap_err().code,
                ErrCode::InvalidParam,
                "{bad}"
            );
        }
        let e = require_all(&b, &["s", "a", "b"]).unwrap_err();
        assert!(e.message.contains("a") && e.message.contains("b"));
    }

    #[test]
    fn client_secrets_follow_the_grammar() {
        assert!(client_secret(&obj(json!({"client_secret": "aB3.=_-"}))).is_ok());
        for bad in ["", "a b", "é", &"a".repeat(256)] {
            let e = client_secret(&obj(json!({"client_secret": bad}))).unwrap_err();
            assert_eq!(e.code, ErrCode::InvalidParam);
        }
    }
}
