//! `lookup.recursive` (who may make a lookup go to other identity servers, where it
//! goes, what may leave, how long answers are kept) and ma1sd's `forward.servers`,
//! whose labels name lists in `matrix.identity.servers`. It only reads and checks
//! keys; the recursion itself is `service::recursion`.

use super::policy::domain_matches;
use super::reader::{Secret, Section};
use crate::model::Medium;
use std::time::Duration;

/// ma1sd's default: who may trigger recursion.
const DEFAULT_ALLOWED: [&str; 5] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
];

/// Recursive lookups.
#[derive(Debug, Clone)]
pub struct RecursionConfig {
    /// `lookup.recursive.enabled` (default off: addresses would leave the server).
    pub enabled: bool,
    /// `lookup.recursive.allowedCidr`: requesters whose lookups may recurse (anyone
    /// else gets local answers only, so remote servers cannot use us as a relay).
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// `lookup.recursive.dns.enabled`: ask the identity server an e-mail domain
    /// publishes in DNS (`_matrix-identity._tcp.<domain>`).
    pub dns: bool,
    /// `forward.servers` as base URLs, in order (asked after DNS).
    pub forward: Vec<String>,
    /// `lookup.recursive.v1`: fall back to the plain-text v1 API with remotes that
    /// lack v2 (ma1sd and old servers); off, such remotes are skipped.
    pub v1: bool,
    /// `lookup.recursive.accessToken` (or `accessTokenFile`): a service account's
    /// token on our homeserver, for the OpenID token that opens an account on a
    /// remote's v2 API. Without it only v1 can be used.
    pub access_token: Option<Secret>,
    /// `lookup.recursive.timeout`: one call to one remote.
    pub timeout: Duration,
    /// `lookup.recursive.cache.found` / `.notFound`: how long remote answers are kept.
    pub found_ttl: Duration,
    pub not_found_ttl: Duration,
    /// `lookup.recursive.breaker.failures`: consecutive failures that open a remote's
    /// breaker (default 3); `.open`: how long it then stays open (default 30s).
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    /// What may be sent to another server at all.
    pub allow: LeavePolicy,
    /// `federation.unifiedView`: a federated identity service (MSC4004).
    pub unified: Option<UnifiedView>,
}

/// `federation.unifiedView`: the unified view of MSC4004 as LINAGORA's Twake federated
/// identity service implements it. We push the hashes of our bound 3PIDs there (under
/// its peppers, with our name), and ask it during recursive lookups: it answers
/// hashes it knows and names the server that has the others (`third_party_mappings`).
/// No address ever goes there or to those servers in clear.
#[derive(Debug, Clone)]
pub struct UnifiedView {
    /// `server`: its base URL (`https://fis.example.net`).
    pub server: String,
    /// `publishAs`: our `host:port` in its answers, which other servers then ask
    /// (default: `server.publicUrl`'s host and port).
    pub publish_as: Option<String>,
    /// `push.enabled` (default yes) and `push.every` (default 10m).
    pub push_every: Option<Duration>,
    /// `lookup` (default yes): ask it during recursive lookups.
    pub lookup: bool,
}

/// `lookup.recursive.allow`: session control over what leaves the server.
#[derive(Debug, Clone)]
pub struct LeavePolicy {
    /// `media`: default e-mail and phone numbers.
    pub media: Vec<Medium>,
    /// `localDomain`: addresses of `matrix.domain` (and its subdomains) may leave;
    /// default no: our own users are answered here or not at all.
    pub local_domain: bool,
    /// `domains.whitelist` / `domains.blacklist`: e-mail domain globs (`example.org`,
    /// `*example.org` with subdomains, `.example.org` subdomains only). A non-empty
    /// whitelist lets only its domains leave; the blacklist is checked first.
    pub whitelist: Vec<String>,
    pub blacklist: Vec<String>,
}

impl LeavePolicy {
    /// Whether `medium`/`address` may be sent to another server, for `domain` our own.
    pub fn allows(&self, medium: Medium, address: &str, domain: &str) -> bool {
        if !self.media.contains(&medium) {
            return false;
        }
        let Some(mail_domain) = (medium == Medium::Email)
            .then(|| address.rsplit_once('@').map(|(_, d)| d))
            .flatten()
        else {
            // Phone numbers have no domain: the medium decides.
            return medium != Medium::Email;
        };
        if !self.local_domain && domain_matches(&format!("*{domain}"), mail_domain) {
            return false;
        }
        if self
            .blacklist
            .iter()
            .any(|e| domain_matches(e, mail_domain))
        {
            return false;
        }
        self.whitelist.is_empty()
            || self
                .whitelist
                .iter()
                .any(|e| domain_matches(e, mail_domain))
    }
}

/// `lookup.recursive`; `identity_servers` is `matrix.identity.servers` (label → URLs)
/// and `forward` the top-level `forward` section.
pub(crate) fn read_recursion(
    s: &Section<'_, '_>,
    forward: &Section<'_, '_>,
    federation: &Section<'_, '_>,
    identity_servers: &[(String, Vec<String>)],
) -> Option<RecursionConfig> {
    let mut ok = true;
    let unified_section = federation.section("unifiedView");
    let unified = read_unified(&unified_section);
    ok &= unified.is_some();
    federation.finish(&[]);
    let enabled = s.bool("enabled").unwrap_or(false);
    let allowed_cidrs = match s.cidr_list("allowedCidr") {
        Some(list) => list,
        None if s.string_is_absent("allowedCidr") => DEFAULT_ALLOWED
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect(),
        None => {
            ok = false;
            Vec::new()
        }
    };
    let dns_section = s.section("dns");
    let dns = dns_section.bool("enabled").unwrap_or(true);
    dns_section.finish(&[]);
    let v1 = s.bool("v1").unwrap_or(false);
    let access_token = s.secret("accessToken");
    let timeout = s.duration("timeout").unwrap_or(Duration::from_secs(3));
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        s.problem("timeout", "must be between 1ms and 60s");
        ok = false;
    }
    let cache = s.section("cache");
    let found_ttl = cache.duration("found").unwrap_or(Duration::from_secs(900));
    let not_found_ttl = cache
        .duration("notFound")
        .unwrap_or(Duration::from_secs(300));
    cache.finish(&[]);
    let breaker = s.section("breaker");
    let breaker_failures = breaker.u64("failures").unwrap_or(3);
    let breaker_open = breaker.duration("open").unwrap_or(Duration::from_secs(30));
    if !(1..=100).contains(&breaker_failures) {
        breaker.problem("failures", "must be between 1 and 100");
        ok = false;
    }
    if breaker_open.is_zero() || breaker_open > Duration::from_secs(3600) {
        breaker.problem("open", "must be between 1ms and 1h");
        ok = false;
    }
    breaker.finish(&[]);
    let allow = read_allow(&s.section("allow"));
    ok &= allow.is_some();
    s.absent_feature(
        "bridge",
        "the bridge fallback of recursive lookups",
        &[("recursiveOnly", "*"), ("server", "*")],
    );
    s.finish(&[]);

    let mut urls = Vec::new();
    for label in forward.string_list("servers").unwrap_or_default() {
        let found = identity_servers
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, u)| u.clone())
            .or_else(|| (label == "matrix-org").then(|| vec!["https://matrix.org".to_owned()]));
        match found {
            Some(list) => urls.extend(list),
            None => {
                forward.problem(
                    "servers",
                    format!("{label:?} is not a label of matrix.identity.servers"),
                );
                ok = false;
            }
        }
    }
    forward.finish(&[]);
    let mut forward_urls = Vec::new();
    for url in urls {
        let trimmed = url.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&trimmed) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if !forward_urls.contains(&trimmed) {
                    forward_urls.push(trimmed);
                }
            }
            _ => {
                forward.problem(
                    "servers",
                    format!("{url:?} (from matrix.identity.servers) is not a base URL like https://matrix.org"),
                );
                ok = false;
            }
        }
    }
    if enabled && !dns && forward_urls.is_empty() {
        s.warning(
            "enabled",
            "recursion is on but has nowhere to go: lookup.recursive.dns.enabled is false and forward.servers is empty",
        );
    }
    ok.then(|| RecursionConfig {
        enabled,
        allowed_cidrs,
        dns,
        forward: forward_urls,
        v1,
        access_token,
        timeout,
        found_ttl,
        not_found_ttl,
        breaker_failures: u32::try_from(breaker_failures).unwrap_or(3),
        breaker_open,
        unified: unified.flatten(),
        allow: allow.unwrap_or_else(|| LeavePolicy {
            media: Vec::new(),
            local_domain: false,
            whitelist: Vec::new(),
            blacklist: Vec::new(),
        }),
    })
}

/// `Some(None)`: not configured; `None`: a problem was reported.
fn read_unified(s: &Section<'_, '_>) -> Option<Option<UnifiedView>> {
    let server = s.string("server");
    let publish_as = s.string("publishAs");
    let push = s.section("push");
    let push_enabled = push.bool("enabled").unwrap_or(true);
    let every = push.duration("every").unwrap_or(Duration::from_secs(600));
    push.finish(&[]);
    let lookup = s.bool("lookup").unwrap_or(true);
    s.finish(&[]);
    let Some(server) = server else {
        return Some(None);
    };
    let mut ok = true;
    let server = server.trim_end_matches('/').to_owned();
    if !reqwest::Url::parse(&server)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
    {
        s.problem("server", "must be a base URL like https://fis.example.net");
        ok = false;
    }
    if let Some(name) = &publish_as {
        if !is_host_port(name) {
            s.problem("publishAs", "must be host:port, like id.example.org:443");
            ok = false;
        }
    }
    if push_enabled && (every < Duration::from_secs(1) || every > Duration::from_secs(7 * 86_400)) {
        push.problem("every", "must be between 1s and 7d");
        ok = false;
    }
    ok.then_some(Some(UnifiedView {
        server,
        publish_as,
        push_every: push_enabled.then_some(every),
        lookup,
    }))
}

/// `host:port` as MSC4004 names servers in `third_party_mappings`.
pub fn is_host_port(name: &str) -> bool {
    name.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok_and(|p| p > 0)
            && crate::model::is_server_name(host)
    })
}

fn read_allow(s: &Section<'_, '_>) -> Option<LeavePolicy> {
    let mut ok = true;
    let mut media = Vec::new();
    for m in s
        .string_list("media")
        .unwrap_or_else(|| vec!["email".into(), "msisdn".into()])
    {
        match Medium::parse(&m) {
            Some(medium) => media.push(medium),
            None => {
                s.problem("media", format!("{m:?} is not email or msisdn"));
                ok = false;
            }
        }
    }
    let local_domain = s.bool("localDomain").unwrap_or(false);
    let domains = s.section("domains");
    let lower = |list: Option<Vec<String>>| {
        list.unwrap_or_default()
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let whitelist = lower(domains.string_list("whitelist"));
    let blacklist = lower(domains.string_list("blacklist"));
    domains.finish(&[]);
    s.finish(&[]);
    ok.then_some(LeavePolicy {
        media,
        local_domain,
        whitelist,
        blacklist,
    })
}

/// `matrix.identity.servers`: label → base URLs.
pub(crate) fn read_identity_servers(s: &Section<'_, '_>) -> Vec<(String, Vec<String>)> {
    let servers = s.section("servers");
    let labels = servers.keys();
    let out = labels
        .into_iter()
        .map(|label| {
            let urls = servers.string_list(&label).unwrap_or_default();
            (label, urls)
        })
        .collect();
    servers.finish(&[]);
    s.finish(&[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LeavePolicy {
        LeavePolicy {
            media: vec![Medium::Email, Medium::Msisdn],
            local_domain: false,
            whitelist: Vec::new(),
            blacklist: vec!["*secret.example".into()],
        }
    }

    #[test]
    fn local_and_blacklisted_addresses_stay_and_media_are_chosen() {
        let p = policy();
        assert!(p.allows(Medium::Email, "a@remote.example", "example.org"));
        assert!(!p.allows(Medium::Email, "a@example.org", "example.org"));
        assert!(!p.allows(Medium::Email, "a@mail.example.org", "example.org"));
        assert!(p.allows(Medium::Email, "a@badexample.org", "example.org"));
        assert!(!p.allows(Medium::Email, "a@x.secret.example", "example.org"));
        assert!(p.allows(Medium::Msisdn, "441234567890", "example.org"));
        assert!(!p.allows(Medium::Email, "no-domain", "example.org"));
        let only = LeavePolicy {
            media: vec![Medium::Email],
            whitelist: vec!["partner.example".into()],
            local_domain: true,
            ..policy()
        };
        assert!(!only.allows(Medium::Msisdn, "441234567890", "example.org"));
        assert!(only.allows(Medium::Email, "a@partner.example", "example.org"));
        assert!(!only.allows(Medium::Email, "a@other.example", "example.org"));
        assert!(only.allows(Medium::Email, "a@partner.example", "partner.example"));
    }
}
