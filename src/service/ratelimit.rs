//! Request rate limits (GCRA through `governor`): `requestToken` per client IP and per
//! destination address, `submitToken` per session and per IP, `store-invite` per sender
//! and per address (and per IP on v1), `account/register` per IP, lookups per access
//! token.
//! Over a limit: 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`. Keys seen long ago are
//! dropped by [`Limiters::forget_idle`], run every ten minutes, so memory stays bounded.

use crate::config::threepid::{Limit, RateLimitConfig};
use crate::error::{ErrCode, Error};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

fn keyed<K: Clone + Hash + Eq>(limit: Limit) -> Keyed<K> {
    let quota = Quota::with_period(limit.interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::keyed(quota)
}

pub struct Limiters {
    enabled: bool,
    clock: DefaultClock,
    request_token_ip: Keyed<IpAddr>,
    request_token_address: Keyed<String>,
    submit_token_session: Keyed<String>,
    submit_token_ip: Keyed<IpAddr>,
    unbind_ip: Keyed<IpAddr>,
    store_invite_sender: Keyed<String>,
    store_invite_address: Keyed<String>,
    store_invite_ip: Keyed<IpAddr>,
    register_ip: Keyed<IpAddr>,
    /// Keyed by a hash of the token: no copy of it per request, none kept in memory.
    lookup_token: Keyed<u64>,
    login_user: Keyed<String>,
    login_ip: Keyed<IpAddr>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn limited(wait: std::time::Duration) -> Error {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Error::new(ErrCode::LimitExceeded, "Too many requests; try again later")
        .with("retry_after_ms", ms)
}

/// The key of a client address: IPv6 clients usually hold a whole /64, so they count as
/// one.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiters {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            enabled: config.enabled,
            clock: DefaultClock::default(),
            request_token_ip: keyed(config.request_token_per_ip),
            request_token_address: keyed(config.request_token_per_address),
            submit_token_session: keyed(config.submit_token_per_session),
            submit_token_ip: keyed(config.submit_token_per_ip),
            unbind_ip: keyed(config.unbind_per_ip),
            store_invite_sender: keyed(config.store_invite_per_sender),
            store_invite_address: keyed(config.store_invite_per_address),
            store_invite_ip: keyed(config.store_invite_per_ip),
            register_ip: keyed(config.register_per_ip),
            lookup_token: keyed(config.lookup_per_token),
            login_user: keyed(config.login_per_user),
            login_ip: keyed(config.login_per_ip),
        }
    }

    fn check<K: Clone + Hash + Eq>(&self, limiter: &Keyed<K>, key: &K) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        limiter
            .check_key(key)
            .map_err(|not_until| limited(not_until.wait_time_from(self.clock.now())))
    }

    /// `requestToken` from `ip` to `destination` (a normalised address).
    pub fn request_token(&self, ip: Option<IpAddr>, destination: &str) -> Result<(), Error> {
        if let Some(ip) = ip {
            self.check(&self.request_token_ip, &client_key(ip))?;
        }
        self.check(&self.request_token_address, &destination.to_owned())
    }

    /// `submitToken` (and the GET link) from `ip`.
    pub fn submit_token_ip(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        match ip {
            Some(ip) => self.check(&self.submit_token_ip, &client_key(ip)),
            None => Ok(()),
        }
    }

    /// `submitToken` for an existing session `sid` (only real sessions get a bucket).
    pub fn submit_token_session(&self, sid: &str) -> Result<(), Error> {
        self.check(&self.submit_token_session, &sid.to_owned())
    }

    /// `/3pid/unbind` from `ip` (each may make us fetch a homeserver's keys).
    pub fn unbind(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        match ip {
            Some(ip) => self.check(&self.unbind_ip, &client_key(ip)),
            None => Ok(()),
        }
    }

    /// `store-invite` by `sender` to `address` (each sends a mail): per sender, and per
    /// address (senders are cheap to make on a homeserver of one's own).
    pub fn store_invite(&self, sender: &str, address: &str) -> Result<(), Error> {
        self.check(&self.store_invite_sender, &sender.to_owned())?;
        self.check(&self.store_invite_address, &address.to_owned())
    }

    /// The v1 `store-invite` from `ip` (no account: anyone may name any sender).
    pub fn store_invite_ip(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        match ip {
            Some(ip) => self.check(&self.store_invite_ip, &client_key(ip)),
            None => Ok(()),
        }
    }

    /// `account/register` from `ip` (each asks a homeserver about the token).
    pub fn register(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        match ip {
            Some(ip) => self.check(&self.register_ip, &client_key(ip)),
            None => Ok(()),
        }
    }

    /// A password check (`check_credentials`) for `user` from `ip`.
    pub fn login(&self, ip: Option<IpAddr>, user: &str) -> Result<(), Error> {
        if let Some(ip) = ip {
            self.check(&self.login_ip, &client_key(ip))?;
        }
        self.check(&self.login_user, &user.to_lowercase())
    }

    /// A lookup by the holder of `token`.
    pub fn lookup(&self, token: &str) -> Result<(), Error> {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(token, &mut h);
        self.check(&self.lookup_token, &std::hash::Hasher::finish(&h))
    }

    /// Drops state of keys that are back to a full bucket.
    pub fn forget_idle(&self) {
        self.request_token_ip.retain_recent();
        self.request_token_address.retain_recent();
        self.submit_token_session.retain_recent();
        self.submit_token_ip.retain_recent();
        self.unbind_ip.retain_recent();
        self.store_invite_sender.retain_recent();
        self.store_invite_address.retain_recent();
        self.store_invite_ip.retain_recent();
        self.register_ip.retain_recent();
        self.login_user.retain_recent();
        self.login_ip.retain_recent();
        self.lookup_token.retain_recent();
        self.request_token_address.shrink_to_fit();
        self.lookup_token.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(enabled: bool) -> RateLimitConfig {
        let l = Limit {
            burst: 2,
            interval: Duration::from_secs(3600),
        };
        RateLimitConfig {
            enabled,
            trusted_proxies: vec![],
            request_token_per_ip: l,
            request_token_per_address: Limit { burst: 3, ..l },
            submit_token_per_session: l,
            submit_token_per_ip: l,
            unbind_per_ip: l,
            store_invite_per_sender: l,
            store_invite_per_address: l,
            store_invite_per_ip: l,
            register_per_ip: l,
            lookup_per_token: l,
            login_per_user: l,
            login_per_ip: Limit { burst: 3, ..l },
        }
    }

    #[test]
    fn logins_are_counted_per_user_whatever_the_case_and_per_client() {
        let limits = Limiters::new(&config(true));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limits.login(Some(a), "@Alice:example.org").is_ok());
        assert!(limits.login(Some(b), "@alice:example.org").is_ok());
        // A third try at alice, from anywhere: refused.
        assert!(limits.login(Some(a), "@ALICE:example.org").is_err());
        // a's third attempt counts for a; its fourth is refused whoever it names.
        assert!(limits.login(Some(a), "@bob:example.org").is_ok());
        assert!(limits.login(Some(a), "@carol:example.org").is_err());
        assert!(limits.login(Some(b), "@carol:example.org").is_ok());
    }

    #[test]
    fn bursts_then_429_with_a_retry_hint_per_key() {
        let limits = Limiters::new(&config(true));
        let ip = Some("127.0.0.1".parse().unwrap());
        assert!(limits.request_token(ip, "a@x").is_ok());
        assert!(limits.request_token(ip, "b@x").is_ok());
        let e = limits.request_token(ip, "c@x").unwrap_err();
        assert_eq!(e.code, ErrCode::LimitExceeded);
        let retry = e.extra["retry_after_ms"].as_u64().unwrap();
        assert!(retry > 1_000 && retry <= 3_600_000, "{retry}");
        // Another IP is not limited by the first one's use.
        let other = Some("127.0.0.2".parse().unwrap());
        assert!(limits.request_token(other, "d@x").is_ok());
        assert!(limits.lookup("t").is_ok());
        assert!(limits.lookup("t").is_ok());
        assert!(limits.lookup("t").is_err());
        assert!(limits.lookup("u").is_ok());
        assert!(limits.register(ip).is_ok());
        assert!(limits.register(ip).is_ok());
        assert!(limits.register(ip).is_err());
        assert!(limits.register(other).is_ok());
        assert!(limits.store_invite_ip(ip).is_ok());
        // One IPv6 /64 is one client.
        let a = Some("2001:db8::1".parse().unwrap());
        let b = Some("2001:db8::ffff:2".parse().unwrap());
        assert!(limits.unbind(a).is_ok());
        assert!(limits.unbind(b).is_ok());
        assert!(limits.unbind(a).is_err());
        assert!(limits
            .unbind(Some("2001:db8:0:1::1".parse().unwrap()))
            .is_ok());
        limits.forget_idle();
    }

    #[test]
    fn disabled_limits_never_refuse() {
        let limits = Limiters::new(&config(false));
        for _ in 0..10 {
            assert!(limits.submit_token_session("s").is_ok());
            assert!(limits.unbind(Some("::1".parse().unwrap())).is_ok());
            assert!(limits.lookup("t").is_ok());
        }
    }
}
