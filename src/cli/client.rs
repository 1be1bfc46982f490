//! The CLI's way into a running server's admin API: the Unix socket of
//! `server.admin.socket`, or, when that socket is not on this machine but a TCP admin
//! listener is configured (containers), that listener with the bearer token from
//! `server.admin.tokenFile`. One HTTP/1.1 request per connection, over hyper.

use crate::config::{host_port, Config};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;

/// Where the admin API of the configured server is.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Socket(PathBuf),
    Tcp {
        /// `host:port` to connect to.
        addr: String,
        token: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Tcp { addr, .. } => f.write_str(addr),
        }
    }
}

/// Why a request did not get an answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// Nothing listens there: the server is not running (with this config).
    NotRunning(String),
    /// Anything else (permission, timeout, a broken answer), said in full.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotRunning(m) | Failure::Other(m) => f.write_str(m),
        }
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> Self {
        f.to_string()
    }
}

pub(super) const ADMIN_DISABLED: &str =
    "the admin API is disabled (server.admin.enabled: false); enable it to use this command";

impl Target {
    /// The admin API of the server `config` describes: its socket, unless only the TCP
    /// listener can be reached (the socket file is absent, say in another container).
    pub(super) fn of(config: &Config) -> Result<Self, String> {
        let admin = &config.server.admin;
        if !admin.enabled {
            return Err(ADMIN_DISABLED.into());
        }
        match &admin.tcp {
            Some(tcp) if !admin.socket.exists() => {
                let host = match tcp.hostname.as_str() {
                    "0.0.0.0" => "127.0.0.1",
                    "::" | "[::]" => "::1",
                    h => h,
                };
                Ok(Target::Tcp {
                    addr: host_port(host, tcp.port),
                    token: tcp.token.expose().to_owned(),
                })
            }
            _ => Ok(Target::Socket(admin.socket.clone())),
        }
    }

    /// Sends one request: `route` is the path and query under `/_mxisd/admin/v1/`;
    /// `body` its Content-Type and bytes. Gives up after `timeout`.
    pub(super) async fn send(
        &self,
        method: http::Method,
        route: &str,
        body: Option<(&str, Bytes)>,
        timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        tokio::time::timeout(timeout, self.send_now(method, route, body))
            .await
            .map_err(|_| {
                Failure::Other(format!(
                    "the admin API at {self} did not answer within {} s",
                    timeout.as_secs()
                ))
            })?
    }

    async fn send_now(
        &self,
        method: http::Method,
        route: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let (host, token) = match self {
            Target::Socket(_) => ("localhost".to_owned(), None),
            Target::Tcp { addr, token } => (addr.clone(), Some(token.as_str())),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("/_mxisd/admin/v1/{route}"))
            .header(http::header::HOST, host);
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (content_type, bytes) = match body {
            Some((t, b)) => (Some(t), b),
            None => (None, Bytes::new()),
        };
        if let Some(t) = content_type {
            request = request.header(http::header::CONTENT_TYPE, t);
        }
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| Failure::Other(format!("cannot build the request: {e}")))?;
        let mut sender = match self {
            Target::Socket(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.connect_failure(&e))?;
                handshake(stream).await?
            }
            Target::Tcp { addr, .. } => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| self.connect_failure(&e))?;
                handshake(stream).await?
            }
        };
        sender.send_request(request).await.map_err(|e| {
            Failure::Other(format!("the admin API at {self} broke off the answer: {e}"))
        })
    }

    /// What a failed connect means, and what to do about it.
    fn connect_failure(&self, e: &std::io::Error) -> Failure {
        use std::io::ErrorKind as K;
        let reason = lowercase_reason(e);
        match (self, e.kind()) {
            (_, K::NotFound | K::ConnectionRefused) => Failure::NotRunning(format!(
                "cannot connect to {self}: {reason} (is mxisd running with this config?)"
            )),
            (Target::Socket(_), K::PermissionDenied) => Failure::Other(format!(
                "cannot connect to {self}: {reason} (only root, the server's user and members of server.admin.group may use the admin socket)"
            )),
            _ => Failure::Other(format!("cannot connect to {self}: {reason}")),
        }
    }
}

/// An I/O error's message without the `(os error N)` tail, starting in lower case.
fn lowercase_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Other(format!("the admin API did not speak HTTP: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Reads a whole answer as JSON.
pub(super) async fn json_answer(
    response: hyper::Response<Incoming>,
) -> Result<(u16, serde_json::Value), Failure> {
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Other(format!("the admin API broke off its answer: {e}")))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Other(format!(
            "the admin API answered {status} with something that is not JSON: {e}"
        ))
    })?;
    Ok((status, body))
}
