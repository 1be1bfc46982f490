//! Request bodies: read with a size cap (also for chunked bodies, which carry no
//! Content-Length), then parsed as a JSON object. Every failure is a Matrix error:
//! too large → 413 `M_TOO_LARGE`, not JSON → `M_NOT_JSON`, JSON of the wrong shape →
//! `M_BAD_JSON`, a missing field → `M_MISSING_PARAMS`.

use crate::error::Error;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;
use warp::Filter;

/// How much of a body is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// `server.maxBodySize`.
    pub size: u64,
    /// `server.connections.bodyTimeout`: the whole body must arrive within it.
    pub time: Duration,
}

impl Limit {
    pub fn of(server: &crate::config::ServerConfig) -> Self {
        Self {
            size: server.max_body_size,
            time: server.connections.body_timeout,
        }
    }
}

/// The raw body, at most `limit.size` bytes; never rejects for size.
pub fn limited(
    limit: Limit,
) -> impl Filter<Extract = (Result<Bytes, Error>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-length")
        .and(warp::body::stream())
        .then(move |declared: Option<String>, stream| async move {
            read(declared.as_deref(), stream, limit).await
        })
}

/// A body that did not arrive in time (a stalled or trickling client).
fn too_slow(time: Duration) -> Error {
    Error::new(
        crate::error::ErrCode::Timeout,
        format!(
            "The request body did not arrive within {} s",
            time.as_secs()
        ),
    )
}

/// Each chunk of `stream` must come within `time` of the previous one (bodies read as
/// they come, like a streamed import); a stall ends the stream with an error.
pub fn progressing<S, B>(stream: S, time: Duration) -> impl Stream<Item = Result<B, Error>>
where
    S: Stream<Item = Result<B, warp::Error>>,
{
    futures_util::stream::unfold(
        (Box::pin(stream), false),
        move |(mut stream, ended)| async move {
            if ended {
                return None;
            }
            match tokio::time::timeout(time, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), (stream, false))),
                Ok(Some(Err(_))) => Some((
                    Err(Error::bad_json("The request body could not be read")),
                    (stream, true),
                )),
                Ok(None) => None,
                Err(_) => Some((Err(too_slow(time)), (stream, true))),
            }
        },
    )
}

/// Oversized bodies up to this size are read and dropped before the 413 goes out, so
/// the client sees the answer; larger ones get the answer and a closed connection.
pub const DRAIN_MAX: u64 = 8 << 20;

/// Reads and discards a body, at most [`DRAIN_MAX`] bytes and 10 seconds. Returns
/// whether it read to the end (the connection can then carry another request).
pub async fn drain<S, B, E>(stream: S) -> bool
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut seen = 0u64;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                None => return true,
                Some(Ok(chunk)) => {
                    seen += chunk.remaining() as u64;
                    if seen > DRAIN_MAX {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Reads a body of at most `limit.size` bytes within `limit.time` (`declared`: its
/// Content-Length, if any).
pub async fn read<S, B, E>(declared: Option<&str>, stream: S, limit: Limit) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    tokio::time::timeout(limit.time, read_whole(declared, stream, limit.size))
        .await
        .unwrap_or_else(|_| Err(too_slow(limit.time)))
}

async fn read_whole<S, B, E>(declared: Option<&str>, stream: S, limit: u64) -> Result<Bytes, Error>
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

    const TEN: Limit = Limit {
        size: 10,
        time: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_body_that_stalls_or_trickles_is_cut_off_in_time() {
        let limit = Limit {
            size: 100,
            time: Duration::from_millis(200),
        };
        // Half a body, then nothing.
        let stalled = chunks(&[b"{\"a\""]).chain(futures_util::stream::pending());
        let e = read(Some("50"), stalled, limit).await.unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code),
            (warp::http::StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN")
        );
        // A byte every 50 ms: each in time, the whole not.
        let trickle = futures_util::stream::iter(0..50).then(|_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, warp::Error>(Bytes::from_static(b" "))
        });
        let e = read(None, trickle, limit).await.unwrap_err();
        assert_eq!(e.code, crate::error::ErrCode::Timeout);
        // A streamed body needs each piece in time, not the whole.
        let steady = futures_util::stream::iter(0..6).then(|_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, warp::Error>(Bytes::from_static(b"x"))
        });
        let pieces: Vec<_> = progressing(steady, limit.time).collect().await;
        assert_eq!(pieces.len(), 6);
        assert!(pieces.iter().all(Result::is_ok));
        let stalled = chunks(&[b"x"]).chain(futures_util::stream::pending());
        let pieces: Vec<_> = progressing(stalled, limit.time).collect().await;
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[1].as_ref().unwrap_err().code,
            crate::error::ErrCode::Timeout
        );
    }

    #[tokio::test]
    async fn the_size_cap_holds_with_and_without_content_length() {
        let body = read(None, chunks(&[b"12345", b"67890"]), TEN)
            .await
            .unwrap();
        assert_eq!(&body[..], b"1234567890");
        let e = read(None, chunks(&[b"12345", b"678901"]), TEN)
            .await
            .unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code),
            (warp::http::StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE")
        );
        let e = read(Some("11"), chunks(&[]), TEN).await.unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code).0.as_u16(),
            413
        );
        // A lying Content-Length does not get past the cap either.
        let e = read(Some("3"), chunks(&[b"12345678901"]), TEN)
            .await
            .unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code).0.as_u16(),
            413
        );
        let e = read(Some("x"), chunks(&[]), TEN).await.unwrap_err();
        assert_eq!(
            crate::http::reply::status_and_errcode(e.code).0.as_u16(),
            400
        );
    }
}
