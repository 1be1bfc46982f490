//! Our homeserver's client-server API, for the requests a reverse proxy sends to us
//! instead of to it (directory search, profiles): where it is, whom an access token
//! belongs to (`/account/whoami`, cached briefly), and passing requests on.
//!
//! Where it is: `matrix.homeserver.url`, else the `dns.overwrite.homeserver.client`
//! entry named like the request's `Host` or like `matrix.domain` (or the only entry),
//! else client discovery (`https://<matrix.domain>/.well-known/matrix/client`) through
//! the outbound guard. Access tokens are never logged and are kept only as digests.

use crate::config::Config;
use crate::error::{ErrCode, Error, Refusal};
use crate::federation::{Federation, OutboundError, RawRequest, RawResponse};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token the homeserver accepted is trusted without asking again.
const TOKEN_FRESH: Duration = Duration::from_secs(60);
/// How long an accepted token is still trusted while the homeserver cannot be reached.
const TOKEN_STALE: Duration = Duration::from_secs(15 * 60);
/// Most tokens remembered.
const TOKEN_CACHE_MAX: usize = 10_000;
/// How long a discovered base URL is used (a failed discovery: 5 minutes).
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
const DISCOVERY_ERROR_TTL: Duration = Duration::from_secs(300);
/// Most bytes read from a whoami or well-known answer.
const SMALL_ANSWER: usize = 64 * 1024;
/// A user waits on these calls: do not wait for the full outbound timeout.
pub const USER_WAIT: Duration = Duration::from_secs(5);

/// Where our homeserver's client-server API is, and whether the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub url: String,
    /// Configured by the operator: reached without the outbound guard.
    pub trusted: bool,
}

struct CachedUser {
    user_id: String,
    checked: Instant,
}

pub struct Homeserver {
    domain: String,
    fixed: Option<String>,
    by_host: Vec<(String, String)>,
    discovered: Mutex<Option<(Base, Instant)>>,
    tokens: Mutex<HashMap<[u8; 32], CachedUser>>,
}

impl std::fmt::Debug for Homeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Homeserver")
            .field("fixed", &self.fixed)
            .field("by_host", &self.by_host)
            .finish_non_exhaustive()
    }
}

/// Whom a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: String,
}

impl Homeserver {
    pub fn new(config: &Config) -> Self {
        Self {
            domain: config.matrix.domain.to_ascii_lowercase(),
            fixed: config.matrix.homeserver_url.clone(),
            by_host: config.federation.client_overrides.clone(),
            discovered: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The base URL for a request that came with `host` as its `Host` header.
    pub async fn base(&self, federation: &Federation, host: Option<&str>) -> Base {
        if let Some(url) = self.configured(host) {
            return Base { url, trusted: true };
        }
        let now = Instant::now();
        if let Some((base, until)) = self.lock_discovered().clone() {
            if until > now {
                return base;
            }
        }
        let (base, ttl) = self.discover(federation).await;
        *self.lock_discovered() = Some((base.clone(), now + ttl));
        base
    }

    /// The operator's choice for `host`, if any.
    fn configured(&self, host: Option<&str>) -> Option<String> {
        if let Some(url) = &self.fixed {
            return Some(url.clone());
        }
        let find = |name: &str| {
            self.by_host
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, u)| u.clone())
        };
        let host = host.map(|h| h.trim().to_ascii_lowercase());
        let bare = host
            .as_deref()
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_owned());
        host.as_deref()
            .and_then(find)
            .or_else(|| bare.as_deref().and_then(find))
            .or_else(|| find(&self.domain))
            .or_else(|| match self.by_host.as_slice() {
                [(_, only)] => Some(only.clone()),
                _ => None,
            })
    }

    fn lock_discovered(&self) -> std::sync::MutexGuard<'_, Option<(Base, Instant)>> {
        self.discovered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Client discovery: `m.homeserver.base_url` from the domain's well-known document,
    /// or `https://<domain>` when there is none.
    async fn discover(&self, federation: &Federation) -> (Base, Duration) {
        let fallback = format!("https://{}", self.domain);
        let url = format!("{fallback}/.well-known/matrix/client");
        match federation.get_well_known(&url, SMALL_ANSWER).await {
            Ok(doc) => {
                let found = doc
                    .get("m.homeserver")
                    .and_then(|h| h.get("base_url"))
                    .and_then(|u| u.as_str())
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
                match found {
                    Some(url) => (
                        Base {
                            url,
                            trusted: false,
                        },
                        DISCOVERY_TTL,
                    ),
                    None => {
                        tracing::warn!(domain = %self.domain, "the client well-known document has no usable m.homeserver.base_url; using https://<domain>");
                        (
                            Base {
                                url: fallback,
                                trusted: false,
                            },
                            DISCOVERY_ERROR_TTL,
                        )
                    }
                }
            }
            Err(e) => {
                tracing::warn!(domain = %self.domain, error = %e, "client discovery failed; using https://<domain> (set matrix.homeserver.url to skip discovery)");
                (
                    Base {
                        url: fallback,
                        trusted: false,
                    },
                    DISCOVERY_ERROR_TTL,
                )
            }
        }
    }

    /// Sends one request to the homeserver.
    pub async fn send(
        &self,
        federation: &Federation,
        base: &Base,
        request: RawRequest<'_>,
        max_bytes: usize,
    ) -> Result<RawResponse, OutboundError> {
        federation
            .send_raw(&base.url, base.trusted, request, max_bytes)
            .await
    }

    /// Whom `token` belongs to, as the homeserver says (`/account/whoami`). A token it
    /// accepted within the last minute is not checked again; while the homeserver
    /// cannot be reached, one it accepted within the last 15 minutes still is.
    pub async fn whoami(
        &self,
        federation: &Federation,
        base: &Base,
        token: &str,
    ) -> Result<TokenOwner, Error> {
        // A token that cannot even be sent in a header is nobody's.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(unknown_token());
        }
        // Keyed by where it was checked too: with several homeservers configured, a
        // token one accepted says nothing about the others.
        let key = token_key(base, token);
        let cached = self.cached(&key);
        if let Some((user_id, age)) = &cached {
            if *age < TOKEN_FRESH {
                return Ok(TokenOwner {
                    user_id: user_id.clone(),
                });
            }
        }
        let authorization = format!("Bearer {token}");
        let ask = |version: &'static str| {
            let path = format!("/_matrix/client/{version}/account/whoami");
            let authorization = &authorization;
            async move {
                let request = RawRequest {
                    method: reqwest::Method::GET,
                    path_and_query: &path,
                    authorization: Some(authorization),
                    body: None,
                    timeout: Some(USER_WAIT),
                    client: None,
                };
                self.send(federation, base, request, SMALL_ANSWER).await
            }
        };
        let mut answer = ask("v3").await;
        // A homeserver without the v3 path (before Synapse 1.48) says so with a 404.
        if matches!(&answer, Ok(r) if r.status == 404) {
            answer = ask("r0").await;
        }
        match answer {
            Ok(r) if r.status == 200 => {
                let answer = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
                let user_id = answer
                    .as_ref()
                    .and_then(|v| v.get("user_id")?.as_str().map(str::to_owned))
                    .filter(|u| crate::model::Mxid::parse(u).is_some());
                // Guests may not search the directory (Synapse refuses them too).
                let guest = answer
                    .as_ref()
                    .and_then(|v| v.get("is_guest")?.as_bool())
                    .unwrap_or(false);
                if guest {
                    self.forget(&key);
                    return Err(Error::new(
                        ErrCode::GuestAccessForbidden,
                        "Guest access is not allowed",
                    ));
                }
                match user_id {
                    Some(user_id) => {
                        self.remember(key, &user_id);
                        Ok(TokenOwner { user_id })
                    }
                    None => {
                        tracing::warn!(homeserver = %base.url, "the homeserver's whoami answer has no valid user_id");
                        self.stale_or(cached, unreachable_error())
                    }
                }
            }
            Ok(r) if r.status == 401 || r.status == 403 => {
                self.forget(&key);
                Err(refusal(r.status, &r.body))
            }
            Ok(r) => {
                tracing::warn!(homeserver = %base.url, status = r.status, "the homeserver's whoami failed");
                self.stale_or(cached, unreachable_error())
            }
            Err(e) => {
                tracing::warn!(homeserver = %base.url, error = %e, "cannot reach the homeserver to check an access token");
                self.stale_or(cached, unreachable_error())
            }
        }
    }

    fn stale_or(
        &self,
        cached: Option<(String, Duration)>,
        error: Error,
    ) -> Result<TokenOwner, Error> {
        match cached {
            Some((user_id, age)) if age < TOKEN_STALE => {
                tracing::info!("using an access token the homeserver accepted earlier");
                Ok(TokenOwner { user_id })
            }
            _ => Err(error),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CachedUser>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, key: &[u8; 32]) -> Option<(String, Duration)> {
        self.tokens()
            .get(key)
            .map(|c| (c.user_id.clone(), c.checked.elapsed()))
    }

    fn remember(&self, key: [u8; 32], user_id: &str) {
        let mut tokens = self.tokens();
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.retain(|_, c| c.checked.elapsed() < TOKEN_STALE);
            if tokens.len() >= TOKEN_CACHE_MAX {
                tokens.clear();
            }
        }
        tokens.insert(
            key,
            CachedUser {
                user_id: user_id.to_owned(),
                checked: Instant::now(),
            },
        );
    }

    fn forget(&self, key: &[u8; 32]) {
        self.tokens().remove(key);
    }

    /// Whether `user_id` is a user of our homeserver.
    pub fn is_local(&self, user_id: &str) -> bool {
        user_id
            .split_once(':')
            .is_some_and(|(_, server)| server.eq_ignore_ascii_case(&self.domain))
    }
}

/// What a token is cached under: a digest of the homeserver that checked it and the
/// token (never the token itself).
fn token_key(base: &Base, token: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(base.url.as_bytes())
        .chain_update([0])
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}

fn unknown_token() -> Error {
    Error::new(
        ErrCode::UnknownToken,
        "The homeserver does not recognise this access token",
    )
}

/// The homeserver's refusal of a token, passed on: its status, its errcode when it is
/// one clients act on, and `soft_logout` (a client that sees it keeps its keys).
fn refusal(status: u16, body: &[u8]) -> Error {
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let reason = match answer.get("errcode").and_then(|e| e.as_str()) {
        Some("M_UNKNOWN_TOKEN") => Refusal::UnknownToken,
        Some("M_MISSING_TOKEN") => Refusal::MissingToken,
        Some("M_USER_LOCKED") => Refusal::UserLocked,
        Some("M_USER_SUSPENDED") => Refusal::UserSuspended,
        Some("M_USER_DEACTIVATED") => Refusal::UserDeactivated,
        Some("M_GUEST_ACCESS_FORBIDDEN") => Refusal::GuestAccessForbidden,
        _ if status == 401 => Refusal::UnknownToken,
        _ => Refusal::Forbidden,
    };
    let message = answer
        .get("error")
        .and_then(|e| e.as_str())
        .map(|m| m.chars().take(200).collect::<String>())
        .unwrap_or_else(|| "The homeserver refused this access token".into());
    let code = ErrCode::Refused {
        reason,
        unauthenticated: status == 401,
    };
    let mut error = Error::new(code, message);
    if let Some(soft) = answer.get("soft_logout").and_then(|s| s.as_bool()) {
        error = error.with("soft_logout", soft);
    }
    error
}

fn unreachable_error() -> Error {
    Error::new(
        ErrCode::Upstream,
        "The homeserver could not be reached to check the access token; try again later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(fixed: Option<&str>, hosts: &[(&str, &str)]) -> Homeserver {
        Homeserver {
            domain: "example.org".into(),
            fixed: fixed.map(str::to_owned),
            by_host: hosts
                .iter()
                .map(|(n, u)| ((*n).to_owned(), (*u).to_owned()))
                .collect(),
            discovered: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn the_configured_base_url_is_chosen_by_host_then_domain_then_the_only_entry() {
        let h = hs(
            None,
            &[
                ("matrix.example.org", "http://a"),
                ("example.org", "http://b"),
            ],
        );
        assert_eq!(
            h.configured(Some("Matrix.Example.org")).as_deref(),
            Some("http://a")
        );
        assert_eq!(
            h.configured(Some("matrix.example.org:443")).as_deref(),
            Some("http://a")
        );
        assert_eq!(
            h.configured(Some("localhost:8090")).as_deref(),
            Some("http://b")
        );
        assert_eq!(h.configured(None).as_deref(), Some("http://b"));
        let h = hs(None, &[("matrix.example.org", "http://a")]);
        assert_eq!(h.configured(Some("other")).as_deref(), Some("http://a"));
        let h = hs(None, &[("x", "http://a"), ("y", "http://b")]);
        assert_eq!(h.configured(Some("z")), None);
        let h = hs(Some("http://fixed"), &[("x", "http://a")]);
        assert_eq!(h.configured(Some("x")).as_deref(), Some("http://fixed"));
        assert!(h.is_local("@a:Example.org"));
        assert!(!h.is_local("@a:example.org.evil"));
    }

    /// A closed port on loopback: nobody there.
    fn nobody() -> Base {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        Base {
            url: format!("http://127.0.0.1:{port}"),
            trusted: true,
        }
    }

    #[tokio::test]
    async fn a_homeserver_that_is_down_is_forgiven_only_recent_tokens() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let federation = Federation::new(&crate::config::FederationConfig {
            overrides: vec![],
            client_overrides: vec![],
            allowed_cidrs: vec![],
            nameservers: vec![],
            timeout: Duration::from_secs(2),
            verify_tls: true,
        })
        .unwrap();
        let h = hs(None, &[]);
        let base = nobody();
        let at = |age: Duration, user: &str, token: &str| {
            h.tokens().insert(
                token_key(&base, token),
                CachedUser {
                    user_id: user.into(),
                    checked: Instant::now() - age,
                },
            );
        };
        // Fresh: not asked at all. Older than a minute: asked, unreachable, forgiven.
        at(Duration::from_secs(5), "@fresh:example.org", "t1");
        at(Duration::from_secs(120), "@recent:example.org", "t2");
        at(Duration::from_secs(20 * 60), "@old:example.org", "t3");
        let who = |t: &'static str| h.whoami(&federation, &base, t);
        assert_eq!(who("t1").await.unwrap().user_id, "@fresh:example.org");
        assert_eq!(who("t2").await.unwrap().user_id, "@recent:example.org");
        let e = who("t3").await.unwrap_err();
        assert_eq!(e.code, ErrCode::Upstream);
        let e = who("never-seen").await.unwrap_err();
        assert_eq!(e.code, ErrCode::Upstream);
        // The same token checked at another homeserver is not known there.
        let other = nobody();
        let e = h.whoami(&federation, &other, "t1").await.unwrap_err();
        assert_eq!(e.code, ErrCode::Upstream);
        // A token that cannot be a header value is refused without asking.
        let e = who("bad\ntoken").await.unwrap_err();
        assert_eq!(e.code, ErrCode::UnknownToken);
    }

    #[test]
    fn refusals_keep_the_homeservers_errcode_and_soft_logout() {
        let e = refusal(
            401,
            br#"{"errcode":"M_UNKNOWN_TOKEN","error":"expired","soft_logout":true}"#,
        );
        let refused = |reason, unauthenticated| ErrCode::Refused {
            reason,
            unauthenticated,
        };
        assert_eq!(e.code, refused(Refusal::UnknownToken, true));
        assert_eq!(e.extra["soft_logout"], true);
        assert_eq!(e.message, "expired");
        let e = refusal(403, br#"{"errcode":"M_USER_LOCKED","error":"locked"}"#);
        assert_eq!(e.code, refused(Refusal::UserLocked, false));
        let e = refusal(401, b"<html>");
        assert_eq!(e.code, refused(Refusal::UnknownToken, true));
        let e = refusal(403, br#"{"errcode":"M_WHATEVER"}"#);
        assert_eq!(e.code, refused(Refusal::Forbidden, false));
    }

    #[test]
    fn tokens_are_cached_by_digest_and_bounded() {
        let h = hs(None, &[]);
        for i in 0..TOKEN_CACHE_MAX + 5 {
            let key: [u8; 32] = Sha256::digest(i.to_string().as_bytes()).into();
            h.remember(key, "@a:example.org");
        }
        assert!(h.tokens().len() <= TOKEN_CACHE_MAX);
        let key: [u8; 32] = Sha256::digest(b"t").into();
        h.remember(key, "@a:example.org");
        assert_eq!(
            h.cached(&key).map(|c| c.0).as_deref(),
            Some("@a:example.org")
        );
        h.forget(&key);
        assert!(h.cached(&key).is_none());
    }
}
