//! How outbound connections are made and answers read: reqwest clients whose names
//! resolve through hickory with every address the guard refuses dropped (so a public
//! name pointing at 127.0.0.1 is refused too), no proxy, no redirects unless the caller
//! adds a policy, a timeout; answers read up to a size cap; failures classified into
//! [`OutboundError`]. It must not know what is called or why: no URLs, no Matrix.

use super::guard::{Guard, Refused};
use super::OutboundError;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
pub(super) async fn lookup_guarded(
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

pub(super) fn build_client(
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

pub(super) fn classify_error(e: &reqwest::Error, shown: &str) -> OutboundError {
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

pub(super) async fn read_capped(
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
