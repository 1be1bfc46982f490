//! Where a server name is served: operator overrides first, then the spec's server
//! discovery (IP literal or explicit port, `/.well-known/matrix/server` through the
//! guard with each redirect hop checked, SRV `_matrix-fed._tcp` then `_matrix._tcp`,
//! port 8448), remembered for the well-known answer's cache time in a bounded cache.
//! It must not call the destination itself (that is [`super::client`]); the steps that
//! need no network are in [`super::resolve`].

use super::guard::Refused;
use super::transport::{build_client, lookup_guarded, read_capped};
use super::{resolve, Federation, OutboundError};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    pub(super) client: Option<reqwest::Client>,
}

impl Destination {
    pub(super) fn direct(base_url: String) -> Self {
        Self {
            base_url,
            trusted: false,
            host_header: None,
            client: None,
        }
    }
}

/// Most resolved server names remembered.
const CACHE_MAX: usize = 10_000;

pub(super) struct Cached {
    destination: Destination,
    until: Instant,
}

impl Federation {
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
}
