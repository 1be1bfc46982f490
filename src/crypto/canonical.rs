//! Matrix canonical JSON (spec appendix "Canonical JSON"): keys sorted by code point,
//! no insignificant whitespace, raw UTF-8, minimal escapes, integers only and within
//! ±(2^53 − 1). The encoder refuses floats and out-of-range integers instead of
//! emitting bytes another server would hash differently.

use serde_json::Value;
use std::fmt::Write as _;

/// The largest integer canonical JSON allows: 2^53 − 1.
const MAX_SAFE_INT: i64 = (1 << 53) - 1;

/// Why a value cannot be written as canonical JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("floats are not allowed in canonical JSON")]
    Float,
    #[error("integer {0} is outside the canonical JSON range")]
    IntegerRange(String),
}

/// Encodes `value` as canonical JSON bytes.
pub fn to_canonical(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if !(-MAX_SAFE_INT..=MAX_SAFE_INT).contains(&i) {
                    return Err(CanonicalError::IntegerRange(i.to_string()));
                }
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                return Err(CanonicalError::IntegerRange(u.to_string()));
            } else {
                return Err(CanonicalError::Float);
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's default map is a BTreeMap over String, which orders keys by
            // their UTF-8 bytes: the same order as by Unicode code point. Sort anyway so
            // the result does not depend on that crate feature.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(text: &str) -> String {
        to_canonical(&serde_json::from_str(text).unwrap()).unwrap()
    }

    /// The examples of the spec's appendix, one by one.
    #[test]
    fn spec_examples() {
        assert_eq!(canon("{}"), "{}");
        assert_eq!(
            canon("{\n    \"one\": 1,\n    \"two\": \"Two\"\n}"),
            r#"{"one":1,"two":"Two"}"#
        );
        assert_eq!(canon(r#"{"b": "2", "a": "1"}"#), r#"{"a":"1","b":"2"}"#);
        assert_eq!(canon(r#"{"b":"2","a":"1"}"#), r#"{"a":"1","b":"2"}"#);
        assert_eq!(
            canon(
                r#"{"auth": {"success": true, "mxid": "@john.doe:example.com",
                "profile": {"display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}}"#
            ),
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
        );
        assert_eq!(canon(r#"{"a": "日本語"}"#), r#"{"a":"日本語"}"#);
        assert_eq!(canon(r#"{"本": 2, "日": 1}"#), r#"{"日":1,"本":2}"#);
        assert_eq!(canon(r#"{"a": "\u65E5"}"#), r#"{"a":"日"}"#);
        assert_eq!(canon(r#"{"a": null}"#), r#"{"a":null}"#);
    }

    #[test]
    fn escapes_are_minimal() {
        let v = json!({"s": "q\"b\\\u{8}\u{c}\n\r\t\u{1}\u{1f}/é"});
        assert_eq!(
            to_canonical(&v).unwrap(),
            r#"{"s":"q\"b\\\b\f\n\r\t\u0001\u001f/é"}"#
        );
    }

    #[test]
    fn numbers_are_integers_in_range() {
        assert_eq!(
            to_canonical(&json!([-9007199254740991i64, 0, 9007199254740991i64])).unwrap(),
            "[-9007199254740991,0,9007199254740991]"
        );
        assert!(matches!(
            to_canonical(&json!(9007199254740992i64)),
            Err(CanonicalError::IntegerRange(_))
        ));
        assert!(matches!(
            to_canonical(&json!(u64::MAX)),
            Err(CanonicalError::IntegerRange(_))
        ));
        assert_eq!(to_canonical(&json!(1.5)), Err(CanonicalError::Float));
    }
}
