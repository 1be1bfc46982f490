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

    let mut allowed_cidrs = Vec::new();
    for cidr in outbound.string_list("allowedCidr").unwrap_or_default() {
        match cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => allowed_cidrs.push(net),
            Err(_) => {
                outbound.problem(
                    "allowedCidr",
                    format!("{cidr:?} is not an address range like 10.0.0.0/8"),
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
