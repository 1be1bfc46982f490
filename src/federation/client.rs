//! The calls made to other servers: JSON to a server name (resolved first), a raw
//! request passed on to our homeserver's client-server API, and a guarded GET of a
//! well-known document. Every URL is checked against the guard unless the operator
//! configured it, and errors name scheme, host and port, never the path or query
//! (tokens). It must not resolve names itself (that is [`super::destination`]).

use super::destination::Destination;
use super::transport::{classify_error, read_capped};
use super::{Federation, OutboundError};
use serde_json::Value;
use std::time::Duration;

/// A request for [`Federation::send_raw`].
pub struct RawRequest<'a> {
    pub method: reqwest::Method,
    pub path_and_query: &'a str,
    /// The caller's `Authorization` header, passed on as it is.
    pub authorization: Option<&'a str>,
    /// Body and its content type.
    pub body: Option<(bytes::Bytes, Option<&'a str>)>,
    /// Shorter than the configured outbound timeout, for calls a user waits on.
    pub timeout: Option<Duration>,
    /// For requests passed on for a client: its address (`X-Forwarded-For`, so the
    /// homeserver's per-address limits see the client, not us) and `User-Agent` (shown
    /// in the user's device list).
    pub client: Option<ClientHeaders<'a>>,
}

/// Options of one JSON call beyond method, path and body.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Extra<'a> {
    pub bearer: Option<&'a str>,
    pub timeout: Option<Duration>,
}

/// What is passed on of a client's own request (see [`RawRequest::client`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientHeaders<'a> {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<&'a str>,
}

/// An answer from [`Federation::send_raw`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

impl Federation {
    /// Returns the HTTP status with the body, so callers can map 401 and the like (the
    /// body of an answer other than 2xx is `null` when it is not JSON or cut short).
    pub async fn get_json(
        &self,
        server_name: &str,
        path_and_query: &str,
        max_bytes: usize,
    ) -> Result<(u16, Value), OutboundError> {
        let destination = self.resolve(server_name).await?;
        self.send_json(
            &destination,
            reqwest::Method::GET,
            path_and_query,
            None,
            max_bytes,
        )
        .await
        .map_err(|e| match e {
            OutboundError::NotJsonStatus(_) => OutboundError::NotJson(server_name.to_owned()),
            other => other,
        })
    }

    /// `POST <destination><path>` with a JSON body. An answer that is not JSON reads as
    /// `null` (callers of a POST care about its status).
    pub async fn post_json(
        &self,
        server_name: &str,
        path: &str,
        body: &Value,
        max_bytes: usize,
    ) -> Result<(u16, Value), OutboundError> {
        let destination = self.resolve(server_name).await?;
        self.send_json(
            &destination,
            reqwest::Method::POST,
            path,
            Some(body),
            max_bytes,
        )
        .await
        .or_else(|e| match e {
            OutboundError::NotJsonStatus(status) => Ok((status, Value::Null)),
            other => Err(other),
        })
    }

    /// One request to a homeserver's client-server API (the proxy features): `base_url`
    /// plus `path_and_query`, with the caller's `Authorization` and body passed on, and
    /// the answer returned as it came (status, content type, body up to `max_bytes`).
    /// `trusted`: the operator configured this URL, so the guard does not apply.
    pub async fn send_raw(
        &self,
        base_url: &str,
        trusted: bool,
        request: RawRequest<'_>,
        max_bytes: usize,
    ) -> Result<RawResponse, OutboundError> {
        let (url, shown) = self.target(base_url, trusted, request.path_and_query)?;
        let client = if trusted {
            &self.trusted_client
        } else {
            &self.client
        };
        let mut builder = client.request(request.method, url);
        if let Some(auth) = request.authorization {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(timeout) = request.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(client) = request.client {
            if let Some(ip) = client.ip {
                builder = builder.header("x-forwarded-for", ip.to_string());
            }
            if let Some(agent) = client.user_agent {
                builder = builder.header(reqwest::header::USER_AGENT, agent);
            }
        }
        if let Some((body, content_type)) = request.body {
            if let Some(ct) = content_type {
                builder = builder.header(reqwest::header::CONTENT_TYPE, ct);
            }
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| classify_error(&e, &shown))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(response, max_bytes, &shown).await?;
        Ok(RawResponse {
            status,
            content_type,
            body: body.into(),
        })
    }

    /// GETs `url` through the guard, following a few redirects (each hop checked), and
    /// parses the answer as JSON: `/.well-known/matrix/client`.
    pub async fn get_well_known(
        &self,
        url: &str,
        max_bytes: usize,
    ) -> Result<Value, OutboundError> {
        let (url, shown) = self.target(url, false, "")?;
        let response = self
            .well_known_client
            .get(url)
            .send()
            .await
            .map_err(|e| classify_error(&e, &shown))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(OutboundError::Status { url: shown, status });
        }
        let bytes = read_capped(response, max_bytes, &shown).await?;
        serde_json::from_slice(&bytes).map_err(|_| OutboundError::NotJson(shown))
    }

    /// The URL of `base` + `path`, checked against the guard unless trusted, and how to
    /// name it in errors: scheme, host and port, never the path or query (tokens).
    fn target(
        &self,
        base: &str,
        trusted: bool,
        path: &str,
    ) -> Result<(reqwest::Url, String), OutboundError> {
        let url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|_| OutboundError::InvalidName(base.to_owned()))?;
        if !trusted {
            self.guard.check_url(&url)?;
        }
        let shown = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        Ok((url, shown))
    }

    pub(super) async fn send_json(
        &self,
        destination: &Destination,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        max_bytes: usize,
    ) -> Result<(u16, Value), OutboundError> {
        self.send_json_with(destination, method, path, body, max_bytes, Extra::default())
            .await
    }

    /// [`Self::send_json`] with a bearer token and a shorter timeout.
    pub(super) async fn send_json_with(
        &self,
        destination: &Destination,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        max_bytes: usize,
        extra: Extra<'_>,
    ) -> Result<(u16, Value), OutboundError> {
        let (url, shown) = self.target(&destination.base_url, destination.trusted, path)?;
        let client = match (&destination.client, destination.trusted) {
            (Some(pinned), _) => pinned,
            (None, true) => &self.trusted_client,
            (None, false) => &self.client,
        };
        let mut request = client.request(method, url);
        if let Some(token) = extra.bearer {
            request = request.bearer_auth(token);
        }
        if let Some(timeout) = extra.timeout {
            request = request.timeout(timeout);
        }
        if let Some(host) = &destination.host_header {
            request = request.header(reqwest::header::HOST, host);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| classify_error(&e, &shown))?;
        let status = response.status().as_u16();
        // A refusal's status says all there is to say: its body may be cut short or
        // not JSON at all, and callers look at the status first.
        let failed = !(200..300).contains(&status);
        let bytes = match read_capped(response, max_bytes, &shown).await {
            Ok(bytes) => bytes,
            Err(_) if failed => return Ok((status, Value::Null)),
            Err(e) => return Err(e),
        };
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => value,
                Err(_) if failed => Value::Null,
                Err(_) => return Err(OutboundError::NotJsonStatus(status)),
            }
        };
        Ok((status, value))
    }
}
