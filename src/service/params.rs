//! Transitional: the two body readers `service::invite` still uses on this branch.
//! Body parsing moved to `crate::http::params`; delete this file (and its `mod` line)
//! once `service::invite` takes typed requests, and point its handler at
//! `crate::http::params`.

use crate::error::Error;
use serde_json::{Map, Value};

/// A required string (`null` counts as absent).
pub fn string<'a>(body: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, Error> {
    match body.get(name) {
        None | Some(Value::Null) => Err(Error::missing_params(&[name])),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::invalid_param(format!("{name} must be a string"))),
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
