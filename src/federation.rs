//! Talking to other Matrix servers: resolving a server name to where it is served
//! (server-server spec discovery: IP literal or explicit port, `/.well-known/matrix/server`,
//! SRV `_matrix-fed._tcp` then `_matrix._tcp`, port 8448), with operator overrides,
//! caching, and every call through the outbound [`guard`], a timeout and a response-size
//! cap. DNS is hickory (reads /etc/resolv.conf and /etc/hosts itself), so a static
//! binary resolves names without glibc's NSS.

pub mod guard;
pub mod homeserver;
pub mod resolve;
pub mod xmatrix;

use crate::config::FederationConfig;
use guard::{Guard, Refused};
use hickory_resolver::TokioResolver;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why an outbound call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("{0:?} is not a valid server name")]
    InvalidName(String),
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{0} sent a response larger than allowed")]
    TooLarge(String),
    #[error("{0} did not answer JSON")]
    NotJson(String),
    /// Internal: an answer with this status was not JSON (callers decide what it means).
    #[error("the answer (HTTP {0}) was not JSON")]
    NotJsonStatus(u16),
}

/// Where a server name is served, as resolved.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `https://host:port`, no trailing slash.
    pub base_url: String,
    /// Named by the operator in `dns.overwrite.homeserver.federation`: reached as
    /// configured, without the outbound guard.
    pub trusted: bool,
    /// Host header to send when it differs from the URL's (SRV delegation).
    pub host_header: Option<String>,
    /// A client pinned to SRV target addresses (the URL keeps the delegated name, so
    /// TLS is checked against it, as the spec requires).
    client: Option<reqwest::Client>,
}

impl Destination {
    fn direct(base_url: String) -> Self {
        Self {
            base_url,
            trusted: false,
            host_header: None,
            client: None,
        }
    }
}

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
}

/// An answer from [`Federation::send_raw`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

/// Most resolved server names remembered.
const CACHE_MAX: usize = 10_000;

struct Cached {
    destination: Destination,
    until: Instant,
}

pub struct Federation {
    /// Guarded, no redirects: every call to a server named by a request.
    client: reqwest::Client,
    /// Guarded, follows a few redirects (each hop checked): `/.well-known/matrix/server`.
    well_known_client: reqwest::Client,
    /// Unguarded: only for the operator's override destinations.
    trusted_client: reqwest::Client,
    guard: Arc<Guard>,
    dns: Option<Arc<TokioResolver>>,
    overrides: HashMap<String, String>,
    cache: Mutex<HashMap<String, Cached>>,
    timeout: Duration,
    verify_tls: bool,
    /// Verified signing keys of homeservers (X-Matrix).
    keys: xmatrix::KeyCache,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// Resolves names for reqwest through hickory and, with a guard, drops addresses it
/// refuses.
struct GuardedDns {
    dns: Option<Arc<TokioResolver>>,
    guard: Option<Arc<Guard>>,
}

impl reqwest::dns::Resolve for GuardedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.dns.clone();
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = lookup_guarded(dns.as_deref(), guard.as_deref(), &host).await?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// All addresses of `host` the guard allows (port 0: the URL's port is used).
async fn lookup_guarded(
    dns: Option<&TokioResolver>,
    guard: Option<&Guard>,
    host: &str,
) -> Result<Vec<SocketAddr>, BoxError> {
    let dns = dns.ok_or_else(|| -> BoxError {
        "no DNS resolver is configured (/etc/resolv.conf could not be read)".into()
    })?;
    let found: Vec<std::net::IpAddr> = dns.lookup_ip(host).await?.iter().collect();
    let Some(guard) = guard else {
        return Ok(found.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect());
    };
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter_map(|ip| match guard.check_ip(ip) {
            Ok(()) => Some(SocketAddr::new(ip, 0)),
            Err(r) => {
                refusal = Some(r);
                None
            }
        })
        .collect();
    match (allowed.is_empty(), refusal) {
        (true, Some(r)) => Err(Box::new(r)),
        (true, None) => Err(format!("{host} has no address").into()),
        (false, _) => Ok(allowed),
    }
}

fn build_client(
    dns: Option<Arc<TokioResolver>>,
    guard: Option<&Arc<Guard>>,
    timeout: Duration,
    verify_tls: bool,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedDns {
            dns,
            guard: guard.cloned(),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("mxisd/", env!("CARGO_PKG_VERSION")));
    if !verify_tls {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

impl Federation {
    pub fn new(config: &FederationConfig) -> Result<Self, String> {
        let guard = Arc::new(Guard::new(config.allowed_cidrs.clone()));
        let dns = match crate::dns::resolver() {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: names of homeservers cannot be resolved (overrides still work)");
                None
            }
        };
        let built = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        let client = built(build_client(
            dns.clone(),
            Some(&guard),
            config.timeout,
            config.verify_tls,
        )?)?;
        let hop_guard = Arc::clone(&guard);
        let well_known_client = built(
            build_client(dns.clone(), Some(&guard), config.timeout, config.verify_tls)?.redirect(
                reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= 5 {
                        attempt.error("too many redirects")
                    } else if let Err(refused) = hop_guard.check_url(attempt.url()) {
                        attempt.error(refused)
                    } else {
                        attempt.follow()
                    }
                }),
            ),
        )?;
        let trusted_client = built(build_client(
            dns.clone(),
            None,
            config.timeout,
            config.verify_tls,
        )?)?;
        Ok(Self {
            client,
            well_known_client,
            trusted_client,
            guard,
            dns,
            overrides: config.overrides.iter().cloned().collect(),
            cache: Mutex::new(HashMap::new()),
            timeout: config.timeout,
            verify_tls: config.verify_tls,
            keys: xmatrix::KeyCache::default(),
        })
    }

    /// Where `server_name` is served.
    pub async fn resolve(&self, server_name: &str) -> Result<Destination, OutboundError> {
        if let Some(url) = self.overrides.get(&server_name.to_ascii_lowercase()) {
            return Ok(Destination {
                trusted: true,
                ..Destination::direct(url.clone())
            });
        }
        if let Some(hit) = self.cached(server_name) {
            return Ok(hit);
        }
        let plan = resolve::plan(server_name)
            .ok_or_else(|| OutboundError::InvalidName(server_name.to_owned()))?;
        let (destination, ttl) = match plan {
            resolve::Plan::Direct(base) => (Destination::direct(base), None),
            resolve::Plan::Discover(host) => self.discover(&host).await?,
        };
        if let Some(ttl) = ttl {
            self.remember(server_name, destination.clone(), ttl);
        }
        Ok(destination)
    }

    fn cached(&self, server_name: &str) -> Option<Destination> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(server_name)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.destination.clone())
    }

    fn remember(&self, server_name: &str, destination: Destination, ttl: Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_MAX {
                // Still full of live entries (someone probing many names): start over
                // rather than grow.
                cache.clear();
            }
        }
        cache.insert(
            server_name.to_owned(),
            Cached {
                destination,
                until: Instant::now() + ttl,
            },
        );
    }

    /// Steps 3–6 of server discovery for a bare host name.
    async fn discover(&self, host: &str) -> Result<(Destination, Option<Duration>), OutboundError> {
        let (delegated, ttl) = match self.well_known(host).await {
            Some((server, ttl)) => (Some(server), ttl),
            None => (None, resolve::WELL_KNOWN_ERROR_TTL),
        };
        let target = match delegated {
            Some(server) => match resolve::plan(&server) {
                Some(resolve::Plan::Direct(base)) => {
                    return Ok((Destination::direct(base), Some(ttl)))
                }
                Some(resolve::Plan::Discover(h)) => h,
                None => host.to_owned(),
            },
            None => host.to_owned(),
        };
        if let Some(destination) = self.srv(&target).await? {
            return Ok((destination, Some(ttl)));
        }
        Ok((
            Destination::direct(format!("https://{target}:8448")),
            Some(ttl),
        ))
    }

    /// `GET https://<host>/.well-known/matrix/server` → (`m.server`, cache time).
    async fn well_known(&self, host: &str) -> Option<(String, Duration)> {
        let url = reqwest::Url::parse(&format!("https://{host}/.well-known/matrix/server")).ok()?;
        self.guard.check_url(&url).ok()?;
        let response = match self.well_known_client.get(url.clone()).send().await {
            Ok(r) if r.status().is_success() => r,
            _ => return None,
        };
        let ttl = resolve::cache_ttl(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let body = read_capped(response, 64 * 1024, url.as_str()).await.ok()?;
        let value: Value = serde_json::from_slice(&body).ok()?;
        let server = value.get("m.server")?.as_str()?.to_owned();
        crate::model::is_server_name(&server).then_some((server, ttl))
    }

    /// SRV `_matrix-fed._tcp` then `_matrix._tcp` for `host`.
    async fn srv(&self, host: &str) -> Result<Option<Destination>, OutboundError> {
        let Some(dns) = self.dns.as_deref() else {
            return Ok(None);
        };
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(lookup) = dns.srv_lookup(format!("{service}.{host}.")).await else {
                continue;
            };
            let mut records: Vec<(u16, u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some((
                        srv.priority,
                        srv.port,
                        srv.target.to_utf8().trim_end_matches('.').to_owned(),
                    )),
                    _ => None,
                })
                .collect();
            records.sort();
            let Some((_, port, target)) = records.into_iter().next() else {
                continue;
            };
            let addrs = lookup_guarded(Some(dns), Some(&self.guard), &target)
                .await
                .map_err(|e| match e.downcast::<Refused>() {
                    Ok(refused) => OutboundError::Refused(*refused),
                    Err(_) => OutboundError::Unreachable(target.clone()),
                })?;
            let addrs: Vec<SocketAddr> = addrs
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect();
            let client = build_client(
                self.dns.clone(),
                Some(&self.guard),
                self.timeout,
                self.verify_tls,
            )
            .and_then(|b| {
                b.resolve_to_addrs(host, &addrs)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .map_err(|_| OutboundError::Unreachable(target.clone()))?;
            return Ok(Some(Destination {
                base_url: format!("https://{host}:{port}"),
                trusted: false,
                host_header: Some(host.to_owned()),
                client: Some(client),
            }));
        }
        Ok(None)
    }

    /// `GET <destination><path>` and parse the answer as JSON whatever its Content-Type.
    /// Returns the HTTP status with the body, so callers can map 401 and the like.
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

    async fn send_json(
        &self,
        destination: &Destination,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        max_bytes: usize,
    ) -> Result<(u16, Value), OutboundError> {
        let (url, shown) = self.target(&destination.base_url, destination.trusted, path)?;
        let client = match (&destination.client, destination.trusted) {
            (Some(pinned), _) => pinned,
            (None, true) => &self.trusted_client,
            (None, false) => &self.client,
        };
        let mut request = client.request(method, url);
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
        let bytes = read_capped(response, max_bytes, &shown).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| OutboundError::NotJsonStatus(status))?
        };
        Ok((status, value))
    }
}

fn classify_error(e: &reqwest::Error, shown: &str) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return OutboundError::Refused(refused.clone());
        }
        source = err.source();
    }
    if e.is_timeout() {
        OutboundError::Timeout(shown.to_owned())
    } else {
        OutboundError::Unreachable(shown.to_owned())
    }
}

async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
    shown: &str,
) -> Result<Vec<u8>, OutboundError> {
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(OutboundError::TooLarge(shown.to_owned()));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_bytes {
                    return Err(OutboundError::TooLarge(shown.to_owned()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(classify_error(&e, shown)),
        }
    }
}
