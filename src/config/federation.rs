//! `dns.overwrite.homeserver` (base URLs that bypass homeserver discovery, for
//! federation and for the client-server API) and `outbound` (which private ranges
//! outbound calls may reach, their timeout, certificate checks).

use super::reader::Section;
use std::time::Duration;

/// How we reach homeservers (OpenID userinfo, keys, onbind) and what we may reach.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// `dns.overwrite.homeserver.federation`: server name → base URL, bypassing discovery.
    pub overrides: Vec<(String, String)>,
    /// `dns.overwrite.homeserver.client`: host name → base URL of a homeserver's
    /// client-server API (directory search and profiles are proxied there).
    pub client_overrides: Vec<(String, String)>,
    /// `outbound.allowedCidr`: private ranges outbound calls may reach anyway.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// `outbound.nameservers`: the DNS servers outbound names (and SRV records) are
    /// resolved with; empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<std::net::SocketAddr>,
    /// `outbound.timeout`: for each outbound request, connect to last byte.
    pub timeout: Duration,
    /// `outbound.tls.verify`: verify homeservers' certificates (off only for tests).
    pub verify_tls: bool,
}

pub(crate) fn read_federation(
    dns: &Section<'_, '_>,
    outbound: &Section<'_, '_>,
) -> Option<FederationConfig> {
    let overwrite = dns.section("overwrite");
    let homeserver = overwrite.section("homeserver");
    let (overrides, fed_ok) =
        read_overrides(&homeserver, "federation", "https://matrix.example.org:8448");
    let (client_overrides, client_ok) =
        read_overrides(&homeserver, "client", "http://localhost:8008");
    let mut ok = fed_ok && client_ok;
    homeserver.finish(&[]);
    overwrite.finish(&[]);
    dns.finish(&[]);

    let allowed_cidrs = outbound.cidr_list("allowedCidr");
    ok &= allowed_cidrs.is_some() || outbound.string_is_absent("allowedCidr");
    let allowed_cidrs = allowed_cidrs.unwrap_or_default();
    let mut nameservers = Vec::new();
    for server in outbound.string_list("nameservers").unwrap_or_default() {
        match server
            .parse::<std::net::SocketAddr>()
            .or_else(|_| server.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        {
            Ok(addr) => nameservers.push(addr),
            Err(_) => {
                outbound.problem(
                    "nameservers",
                    format!("{server:?} is not an address like 127.0.0.53 or 192.0.2.1:53"),
                );
                ok = false;
            }
        }
    }
    let timeout = outbound
        .duration("timeout")
        .unwrap_or(Duration::from_secs(10));
    let tls = outbound.section("tls");
    let verify_tls = tls.bool("verify").unwrap_or(true);
    tls.finish(&[]);
    outbound.finish(&[]);
    if timeout.is_zero() {
        outbound.problem("timeout", "must be more than 0s");
        return None;
    }
    ok.then_some(FederationConfig {
        overrides,
        client_overrides,
        allowed_cidrs,
        nameservers,
        timeout,
        verify_tls,
    })
}

/// A `[{name, value}]` list of `dns.overwrite.homeserver`: host name → base URL.
fn read_overrides(
    homeserver: &Section<'_, '_>,
    key: &str,
    example: &str,
) -> (Vec<(String, String)>, bool) {
    let mut overrides = Vec::new();
    let mut ok = true;
    for entry in homeserver.list_of_sections(key) {
        let name = entry.string("name");
        let value = entry.string("value");
        entry.finish(&[]);
        match (name, value) {
            (Some(name), Some(value)) => {
                let value = value.trim_end_matches('/').to_owned();
                if !(value.starts_with("http://") || value.starts_with("https://"))
                    || reqwest::Url::parse(&value).is_err()
                {
                    entry.problem(
                        "value",
                        format!("{value:?} must be a base URL such as {example}"),
                    );
                    ok = false;
                } else {
                    // Names are matched case-insensitively (requests lowercase them).
                    overrides.push((name.to_ascii_lowercase(), value));
                }
            }
            (None, _) => {
                entry.problem("name", "required: the homeserver's name");
                ok = false;
            }
            (_, None) => {
                entry.problem("value", "required: the base URL to reach it at");
                ok = false;
            }
        }
    }
    (overrides, ok)
}
