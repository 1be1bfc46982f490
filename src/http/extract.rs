//! warp filters that pull what handlers need out of a request: the services, the query
//! string, the access token, the client's address, and bodies (JSON, or legacy form
//! parameters) under the size limit. None of them rejects: a bad request becomes the
//! handler's Matrix error, so every outcome is rendered by `reply`.

use super::body;
use crate::error::Error;
use crate::service::Services;
use std::collections::HashMap;
use std::convert::Infallible;
use warp::Filter;

/// The TCP peer of a request (a request extension the listener sets), for rate limits
/// by client IP.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Hands the shared state to a handler.
pub fn with_state(
    state: Services,
) -> impl Filter<Extract = (Services,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The query string as a map (last value wins); never rejects, so a malformed query
/// string becomes the handler's "missing parameter" error rather than a routing error.
pub fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| {
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect::<HashMap<String, String>>()
        })
}

/// The access token of a request, from `Authorization: Bearer` or `?access_token=`.
pub fn token() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>("authorization")
        .or(warp::any().map(|| None))
        .unify()
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .map(|header: Option<String>, raw_query: Option<String>| {
            access_token(header.as_deref(), raw_query.as_deref())
        })
}

/// The access token of a request (every route that takes one, and the fast lookup lane,
/// read it here): `Authorization: Bearer` first, else the `access_token` query
/// parameter (Synapse still sends it on `hash_details`).
pub fn access_token(authorization: Option<&str>, raw_query: Option<&str>) -> Option<String> {
    if let Some(header) = authorization {
        let mut parts = header.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default().trim();
        if scheme.eq_ignore_ascii_case("bearer") && !value.is_empty() {
            return Some(value.to_owned());
        }
    }
    let from_query = raw_query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })?;
    let token = from_query.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The client's IP: the TCP peer, or, when the peer is a trusted reverse proxy
/// (`rateLimit.trustedProxies`), the last address it added to `X-Forwarded-For`.
pub fn client_ip(
    trusted: std::sync::Arc<Vec<ipnet::IpNet>>,
) -> impl Filter<Extract = (Option<std::net::IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(
            warp::header::optional::<String>("x-forwarded-for")
                .or(warp::any().map(|| None))
                .unify(),
        )
        .map(move |peer: Option<PeerAddr>, forwarded: Option<String>| {
            requester(peer.map(|p| p.0.ip()), forwarded.as_deref(), &trusted)
        })
}

/// The client's IP from the TCP peer and its `X-Forwarded-For` header: the last
/// address added there when the peer is a trusted proxy, else the peer itself.
pub fn requester(
    peer: Option<std::net::IpAddr>,
    forwarded: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    forwarded
        .and_then(|f| f.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .or(Some(peer))
}

/// The raw body of a request that must carry JSON (Content-Type checked, size capped).
fn json_bytes(
    limit: body::Limit,
) -> impl Filter<Extract = (Result<bytes::Bytes, Error>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .or(warp::any().map(|| None))
        .unify()
        .and(body::limited(limit))
        .map(
            |content_type: Option<String>, raw: Result<bytes::Bytes, Error>| {
                body::check_content_type(content_type.as_deref())?;
                raw
            },
        )
}

/// A JSON object body parsed into `T`, at most `limit` bytes; never rejects, every
/// failure is the handler's Matrix error.
pub fn json_body<T: serde::de::DeserializeOwned + Send>(
    limit: body::Limit,
) -> impl Filter<Extract = (Result<T, Error>,), Error = warp::Rejection> + Clone {
    json_bytes(limit).map(|raw: Result<bytes::Bytes, Error>| {
        raw.and_then(|bytes| body::parse_object::<T>(None, &bytes))
    })
}

/// The parameters of a body that may be JSON or (legacy) form-encoded.
pub fn params_body(
    limit: body::Limit,
) -> impl Filter<
    Extract = (Result<serde_json::Map<String, serde_json::Value>, Error>,),
    Error = warp::Rejection,
> + Clone {
    warp::header::optional::<String>("content-type")
        .or(warp::any().map(|| None))
        .unify()
        .and(body::limited(limit))
        .map(
            |content_type: Option<String>, raw: Result<bytes::Bytes, Error>| {
                raw.and_then(|bytes| body::parse_params(content_type.as_deref(), &bytes))
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        assert_eq!(
            access_token(Some("Bearer abc"), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            access_token(Some("bearer  abc "), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            access_token(Some("Bearer abc"), Some("access_token=q")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            access_token(None, Some("access_token=q")).as_deref(),
            Some("q")
        );
        assert_eq!(
            access_token(Some("X-Matrix origin=x"), Some("a=1&access_token=q")).as_deref(),
            Some("q")
        );
        assert_eq!(access_token(Some("Bearer"), None), None);
        assert_eq!(access_token(None, Some("access_token=%20")), None);
        assert_eq!(access_token(None, None), None);
    }
}
