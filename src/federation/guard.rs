//! The outbound guard: every call to a host named by a request (homeservers, later
//! remote identity servers and gateways) goes through here. Private, loopback,
//! link-local and other non-public addresses are refused unless the operator allowed
//! the range (`outbound.allowedCidr`) or named the host in an override
//! (`dns.overwrite.homeserver.federation`). The check runs on resolved addresses, so a
//! public name pointing at 127.0.0.1 is refused too.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address an IP is, for the guard's decision and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    Multicast,
    /// Documentation, benchmarking, shared (CGNAT), reserved and other special ranges.
    Special,
}

impl AddrClass {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Special => "special-purpose",
        }
    }
}

/// Classifies an address by the IANA special-purpose registries.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        AddrClass::Unspecified
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_private() {
        AddrClass::Private
    } else if ip.is_link_local() {
        AddrClass::LinkLocal
    } else if ip.is_multicast() {
        AddrClass::Multicast
    } else if ip.is_broadcast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
    {
        AddrClass::Special
    } else {
        AddrClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    // Addresses that embed an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64 well-known prefix 64:ff9b::/96.
        let o = ip.octets();
        return classify_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if ip.is_unspecified() {
        AddrClass::Unspecified
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddrClass::LinkLocal
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        // Unique local fc00::/7 and the deprecated site-local fec0::/10.
        AddrClass::Private
    } else if ip.is_multicast() {
        AddrClass::Multicast
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || s[0] == 0x2002 // 6to4: may reach any IPv4 address
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo etc.)
        || s[0] == 0
    // ::/8 other than the cases above (IPv4-compatible and the like)
    {
        AddrClass::Special
    } else {
        AddrClass::Public
    }
}

/// The guard's decision for one address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{addr} is a {} address; outbound calls to it are not allowed (allow its range in outbound.allowedCidr, or name the host in dns.overwrite.homeserver.federation)", class.describe())]
pub struct Refused {
    pub addr: IpAddr,
    pub class: AddrClass,
}

/// Refuses non-public addresses unless their range is allowed. Operator overrides do
/// not pass through here at all: their destinations are trusted as configured, and
/// nothing else is trusted by name.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

impl Guard {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let class = classify(ip);
        if class == AddrClass::Public || self.allowed.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(Refused { addr: ip, class })
        }
    }

    /// Checks a URL's host when it is an IP literal (names are checked when resolved:
    /// the HTTP client does not call the resolver for IP hosts).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifier_knows_the_special_ranges() {
        for (ip, expected) in [
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.1.2", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("192.168.1.1", AddrClass::Private),
            ("169.254.169.254", AddrClass::LinkLocal),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Unspecified),
            ("224.0.0.1", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Special),
            ("100.64.0.1", AddrClass::Special),
            ("198.18.0.1", AddrClass::Special),
            ("192.0.2.1", AddrClass::Special),
            ("240.0.0.1", AddrClass::Special),
            ("8.8.8.8", AddrClass::Public),
            ("172.32.0.1", AddrClass::Public),
            ("100.128.0.1", AddrClass::Public),
            ("::1", AddrClass::Loopback),
            ("::", AddrClass::Unspecified),
            ("fe80::1", AddrClass::LinkLocal),
            ("fd00::1", AddrClass::Private),
            ("fc12::1", AddrClass::Private),
            ("fec0::1", AddrClass::Private),
            ("ff02::1", AddrClass::Multicast),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("64:ff9b::a00:1", AddrClass::Private),
            ("2001:db8::1", AddrClass::Special),
            ("2002:7f00:1::", AddrClass::Special),
            ("2001:4860:4860::8888", AddrClass::Public),
            ("2a00:1450::1", AddrClass::Public),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn allowed_ranges_open_the_guard() {
        let guard = Guard::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(guard.check_ip("10.9.9.9".parse().unwrap()).is_ok());
        assert!(guard.check_ip("192.168.0.1".parse().unwrap()).is_err());
        assert!(guard.check_ip("1.1.1.1".parse().unwrap()).is_ok());
        let refused = guard.check_ip("127.0.0.2".parse().unwrap()).unwrap_err();
        assert_eq!(refused.class, AddrClass::Loopback);
        assert!(refused.to_string().contains("outbound.allowedCidr"));
        for url in [
            "http://127.0.0.1:8008/x",
            "https://[::1]:8448/x",
            "https://[::ffff:7f00:1]/x",
            "https://169.254.169.254/x",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(guard.check_url(&url).is_err(), "{url}");
        }
        // Odd IPv4 spellings are IPv4 addresses to the URL parser, and so to the guard.
        for url in [
            "https://127.1/x",
            "https://2130706433/x",
            "https://0x7f000001/x",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(guard.check_url(&url).is_err(), "{url}");
        }
        let url = reqwest::Url::parse("https://10.1.2.3/x").unwrap();
        assert!(guard.check_url(&url).is_ok());
        let url = reqwest::Url::parse("https://matrix.example.org/x").unwrap();
        assert!(
            guard.check_url(&url).is_ok(),
            "names are checked at resolution"
        );
    }
}
