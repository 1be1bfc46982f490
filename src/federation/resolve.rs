//! The pure part of server discovery: what to do with a server name before any network
//! access, and how long to trust a well-known answer.

use std::time::Duration;

/// How long a failed well-known lookup is remembered.
pub const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const MIN_TTL: Duration = Duration::from_secs(300);
const MAX_TTL: Duration = Duration::from_secs(48 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// IP literal or explicit port: connect there (`https://…`, port 8448 by default).
    Direct(String),
    /// A bare host name: well-known, then SRV, then port 8448.
    Discover(String),
}

/// Steps 1–2 of the spec's discovery, or `None` for an invalid server name.
pub fn plan(server_name: &str) -> Option<Plan> {
    if !crate::model::is_server_name(server_name) {
        return None;
    }
    if let Some(rest) = server_name.strip_prefix('[') {
        // IPv6 literal, maybe with a port.
        let (ip, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').unwrap_or("8448");
        return Some(Plan::Direct(format!("https://[{ip}]:{port}")));
    }
    let (host, port) = match server_name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (server_name, None),
    };
    let is_ip = host.parse::<std::net::Ipv4Addr>().is_ok();
    match (is_ip, port) {
        (true, p) => Some(Plan::Direct(format!(
            "https://{host}:{}",
            p.unwrap_or("8448")
        ))),
        (false, Some(p)) => Some(Plan::Direct(format!("https://{host}:{p}"))),
        (false, None) => Some(Plan::Discover(host.to_ascii_lowercase())),
    }
}

/// Cache time of a well-known answer from its Cache-Control header (24 h by default,
/// kept within 5 min–48 h).
pub fn cache_ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|v| {
        v.split(',').find_map(|d| {
            d.trim()
                .strip_prefix("max-age=")
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
    });
    match max_age {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_TTL, MAX_TTL),
        None => DEFAULT_TTL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_spec_order() {
        assert_eq!(
            plan("1.2.3.4"),
            Some(Plan::Direct("https://1.2.3.4:8448".into()))
        );
        assert_eq!(
            plan("1.2.3.4:99"),
            Some(Plan::Direct("https://1.2.3.4:99".into()))
        );
        assert_eq!(
            plan("[::1]"),
            Some(Plan::Direct("https://[::1]:8448".into()))
        );
        assert_eq!(
            plan("[::1]:8008"),
            Some(Plan::Direct("https://[::1]:8008".into()))
        );
        assert_eq!(
            plan("matrix.example.org:443"),
            Some(Plan::Direct("https://matrix.example.org:443".into()))
        );
        assert_eq!(
            plan("Example.ORG"),
            Some(Plan::Discover("example.org".into()))
        );
        for bad in [
            "",
            "exa mple.org",
            "host:port",
            "[::1",
            "a/b",
            "example.org:99999",
        ] {
            assert_eq!(plan(bad), None, "{bad}");
        }
    }

    #[test]
    fn well_known_cache_time() {
        assert_eq!(cache_ttl(None), DEFAULT_TTL);
        assert_eq!(
            cache_ttl(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(cache_ttl(Some("max-age=1")), MIN_TTL);
        assert_eq!(cache_ttl(Some("max-age=99999999")), MAX_TTL);
        assert_eq!(cache_ttl(Some("no-cache")), DEFAULT_TTL);
    }
}
