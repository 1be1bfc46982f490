//! Talking to other Matrix servers: resolving a server name to where it is served
//! (server-server spec discovery: IP literal or explicit port, `/.well-known/matrix/server`,
//! SRV `_matrix-fed._tcp` then `_matrix._tcp`, port 8448), with operator overrides,
//! caching, and every call through the outbound [`guard`], a timeout and a response-size
//! cap. DNS is hickory (reads /etc/resolv.conf and /etc/hosts itself), so a static
//! binary resolves names without glibc's NSS.
//!
//! This file owns the [`Federation`] handle (its clients, guard, resolver, caches) and
//! how it is built from the config, and [`OutboundError`]; it must not send a request
//! itself. Where a server name is served is [`destination`] (its pure steps are
//! [`resolve`]), how connections are made and answers read is [`transport`], and the
//! calls callers make are in [`client`].

mod client;
mod destination;
pub mod guard;
pub mod homeserver;
pub mod identity;
pub mod resolve;
mod transport;
pub mod xmatrix;

pub use client::{ClientHeaders, RawRequest, RawResponse};
pub use destination::Destination;

use crate::config::FederationConfig;
use destination::Cached;
use guard::{Guard, Refused};
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transport::build_client;

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
    /// Verified public keys of remote identity servers: `"<base> <key id>"` → key.
    identity_keys: Mutex<HashMap<String, (ed25519_dalek::VerifyingKey, std::time::Instant)>>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl Federation {
    pub fn new(config: &FederationConfig) -> Result<Self, String> {
        let guard = Arc::new(Guard::new(config.allowed_cidrs.clone()));
        let dns = match crate::dns::resolver_with(&config.nameservers) {
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
            identity_keys: Mutex::new(HashMap::new()),
        })
    }
}
