//! Request bodies: read with a size cap (also for chunked bodies, which carry no
//! Content-Length), then parsed as a JSON object. Every failure is a Matrix error:
//! too large → 413 `M_TOO_LARGE`, not JSON → `M_NOT_JSON`, JSON of the wrong shape →
//! `M_BAD_JSON`, a missing field → `M_MISSING_PARAMS`.

use crate::error::Error;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use serde::de::DeserializeOwned;
use serde_json::Value;
use warp::Filter;

/// The raw body, at most `limit` bytes; never rejects for size.
pub fn limited(
    limit: u64,
) -> impl Filter<Extract = (Result<Bytes, Error>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-length")
        .and(warp::body::stream())
        .then(move |declared: Option<String>, stream| async move {
            read(declared.as_deref(), stream, limit).await
        })
}

/// Oversized bodies up to this size are read and dropped before the 413 goes out, so
/// the client sees the answer; larger ones get the answer and a closed connection.
pub const DRAIN_MAX: u64 = 8 << 20;

/// Reads and discards a body, at most [`DRAIN_MAX`] bytes and 10 seconds.
pub async fn drain<S, B, E>(stream: S)
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut seen = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.remaining() as u64;
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// Reads a body of at most `limit` bytes (`declared`: its Content-Length, if any).
pub async fn read<S, B, E>(declared: Option<&str>, stream: S, limit: u64) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let too_large = || Error::too_large(format!("Request body is larger than {limit} bytes"));
    if let Some(declared) = declared {
        match declared.trim().parse::<u64>() {
            Ok(n) if n > limit => return Err(too_large()),
            Ok(_) => {}
            Err(_) => return Err(Error::bad_json("Content-Length is not a number")),
        }
    }
    let mut stream = std::pin::pin!(stream);
    // A small body usually arrives as one chunk: keep it as is, copy only when more come.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| Error::bad_json("The request body could not be read"))?;
        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if (held + chunk.remaining()) as u64 > limit {
            drain(stream).await;
            return Err(too_large());
        }
        if held == 0 {
            first = Some(chunk.copy_to_bytes(chunk.remaining()));
            continue;
        }
        if let Some(f) = first.take() {
            buf.extend_from_slice(&f);
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            buf.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// True when a Content-Type names JSON (`application/json`, `*/*+json`), ignoring
/// parameters such as `charset`.
pub(crate) fn is_json_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

/// A missing Content-Type is fine; a declared one must name JSON.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), Error> {
    match content_type {
        Some(ct) if !is_json_type(ct) => Err(Error::not_json(format!(
            "Content-Type must be application/json, not {}",
            ct.chars().take(64).collect::<String>()
        ))),
        _ => Ok(()),
    }
}

/// Parses a body that must be a JSON object into `T`. A missing Content-Type is
/// accepted (the spec only says clients *should* send one); any other type is refused.
pub fn parse_object<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, Error> {
    check_content_type(content_type)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::not_json(
            "The request body is empty; send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::not_json(format!("The request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::bad_json("The request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        match message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            Some(field) => Error::missing_params(&[field]),
            None => Error::bad_json(format!("Malformed request body: {message}")),
        }
    })
}

/// True for `application/x-www-form-urlencoded` (the legacy encoding requestToken,
/// submitToken, bind and store-invite still accept).
pub fn is_form_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// A JSON object body, or a form-encoded one whose values all become strings.
pub fn parse_params(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, Error> {
    if content_type.is_some_and(is_form_type) {
        return Ok(form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    parse_object(content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Req {
        name: String,
        count: Option<u32>,
    }

    fn code(r: Result<Req, Error>) -> (u16, &'static str) {
        let e = r.unwrap_err();
        let (status, errcode) = crate::http::reply::status_and_errcode(e.code);
        (status.as_u16(), errcode)
    }

    #[test]
    fn good_bodies_parse() {
        let r: Req = parse_object(
            Some("application/json; charset=utf-8"),
            br#"{"name":"a","count":2}"#,
        )
        .unwrap();
        assert_eq!((r.name.as_str(), r.count), ("a", Some(2)));
        let r: Req = parse_object(None, br#"{"name":"a","extra":[1]}"#).unwrap();
        assert_eq!(r.count, None);
    }

    #[test]
    fn bad_bodies_are_matrix_errors() {
        assert_eq!(code(parse_object(None, b"{not json")), (400, "M_NOT_JSON"));
        assert_eq!(code(parse_object(None, b"")), (400, "M_NOT_JSON"));
        assert_eq!(code(parse_object(None, b"[1,2]")), (400, "M_BAD_JSON"));
        assert_eq!(code(parse_object(None, b"\"str\"")), (400, "M_BAD_JSON"));
        assert_eq!(
            code(parse_object(None, br#"{"count":1}"#)),
            (400, "M_MISSING_PARAMS")
        );
        assert_eq!(
            code(parse_object(None, br#"{"name":5}"#)),
            (400, "M_BAD_JSON")
        );
        assert_eq!(
            code(parse_object(None, br#"{"name":"a","count":-1}"#)),
            (400, "M_BAD_JSON")
        );
        assert_eq!(
            code(parse_object(Some("text/plain"), br#"{"name":"a"}"#)),
            (400, "M_NOT_JSON")
        );
        let e = parse_object::<Req>(None, br#"{"count":1}"#).unwrap_err();
        assert_eq!(e.message, "Missing parameters: name");
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, warp::Error>> {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn the_size_cap_holds_with_and_without_content_length() {
        let body = read(None, chunks(&[b"12345", b"67890"]), 10).await.unwrap();
        assert_eq!(&body[..], b"1234567890");
        let e = read(None, chunks(&[b"12345", b"678901"]), 10)
            .await
            .unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code),
            (warp::http::StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE")
        );
        let e = read(Some("11"), chunks(&[]), 10).await.unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code).0.as_u16(),
            413
        );
        // A lying Content-Length does not get past the cap either.
        let e = read(Some("3"), chunks(&[b"12345678901"]), 10)
            .await
            .unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code).0.as_u16(),
            413
        );
        let e = read(Some("x"), chunks(&[]), 10).await.unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code).0.as_u16(),
            400
        );
    }
}
