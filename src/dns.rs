//! Name resolution for the outbound connections that do not go through
//! [`crate::federation`] (which has its own guarded resolver): e-mail, the SMS gateway,
//! the REST, LDAP and SQL sources and the command line's calls to a running server.
//!
//! Names are resolved by hickory, which reads `/etc/resolv.conf` and `/etc/hosts`
//! itself, never by glibc's `getaddrinfo`: the released binary is statically linked,
//! and a static glibc's `getaddrinfo` loads the NSS modules named in
//! `/etc/nsswitch.conf` at run time, which fails or misbehaves when they come from
//! another glibc. Callers connect to the addresses found and keep the host name for TLS
//! (SNI and certificate verification).
//!
//! A resolver is made per owner (a mailer, a client, a sync run), not per process: its
//! connections belong to the Tokio runtime that used them.

use hickory_resolver::config::{LookupIpStrategy, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The system's resolver (`/etc/resolv.conf`, `/etc/hosts`). Without a readable
/// `/etc/resolv.conf`, one that knows `/etc/hosts` and `localhost` only.
/// Addresses are looked up IPv4 first, IPv6 when a name has no IPv4 address; a name in
/// `/etc/hosts` with an IPv4 address is answered from there without asking the name
/// servers.
pub fn resolver() -> Result<TokioResolver, String> {
    let system = TokioResolver::builder_tokio().and_then(|mut b| {
        b.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        b.build()
    });
    match system {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the DNS configuration (/etc/resolv.conf): only /etc/hosts and localhost resolve");
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                TokioRuntimeProvider::default(),
            );
            b.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
            b.build()
                .map_err(|e| format!("cannot make a DNS resolver: {e}"))
        }
    }
}

/// [`resolver`], or one that asks only `nameservers` (UDP then TCP) when they are given
/// (`outbound.nameservers`; `/etc/hosts` is still read).
pub fn resolver_with(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    if nameservers.is_empty() {
        return resolver();
    }
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig};
    let servers = nameservers
        .iter()
        .map(|addr| {
            let connection = |mut c: ConnectionConfig| {
                c.port = addr.port();
                c
            };
            NameServerConfig::new(
                addr.ip(),
                true,
                vec![
                    connection(ConnectionConfig::udp()),
                    connection(ConnectionConfig::tcp()),
                ],
            )
        })
        .collect();
    let mut b = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, Vec::new(), servers),
        TokioRuntimeProvider::default(),
    );
    b.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
    b.build()
        .map_err(|e| format!("cannot make a DNS resolver: {e}"))
}

/// The addresses of `host` (a name, an IP address, or an IPv6 address in brackets), with
/// `port`.
pub async fn lookup(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
) -> io::Result<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = resolver
        .lookup_ip(bare)
        .await
        .map_err(|e| io::Error::other(format!("cannot resolve {bare}: {e}")))?;
    let mut addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    // IPv4 first (hickory answers `localhost` with ::1 first).
    addrs.sort_by_key(SocketAddr::is_ipv6);
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{bare} has no address"),
        ));
    }
    Ok(addrs)
}

/// A TCP connection to the first address of `host` that answers, each tried for at most
/// `timeout`.
pub async fn connect(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in lookup(resolver, host, port).await? {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{addr} did not answer in time"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{host} has no address"))))
}

/// A resolver for reqwest clients whose destinations the operator configured (no
/// outbound guard: that is [`crate::federation`]'s).
pub struct ForReqwest(Arc<TokioResolver>);

impl ForReqwest {
    pub fn new() -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self(Arc::new(resolver()?))))
    }
}

impl reqwest::dns::Resolve for ForReqwest {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest uses the URL's.
            let addrs = lookup(&resolver, &host, 0).await?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_are_not_looked_up_and_localhost_resolves() {
        let r = resolver().unwrap();
        assert_eq!(
            lookup(&r, "[::1]", 5).await.unwrap(),
            vec!["[::1]:5".parse().unwrap()]
        );
        assert_eq!(
            lookup(&r, "127.0.0.2", 5).await.unwrap(),
            vec!["127.0.0.2:5".parse().unwrap()]
        );
        let local = lookup(&r, "localhost", 7).await.unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
        assert!(!local.is_empty());
    }
}
