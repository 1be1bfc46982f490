//! The admin door: who may use the admin API, checked before any admin route runs.
//!
//! - On the Unix socket, the peer's credentials (`SO_PEERCRED`): root, the server's own
//!   user, or a member of the admin group ([`PeerRule`]); checked once per connection.
//! - On a TCP admin listener, the bearer token of every request, compared in constant
//!   time ([`Door::token`]).
//! - On both, what a web page could make a browser send ([`Door::check`]): any request
//!   carrying `Origin` or `Sec-Fetch-Site` is refused; a request that is not a GET must
//!   declare `Content-Type: application/json` (the import may declare
//!   `text/tab-separated-values`), which a browser cannot send across sites without a
//!   preflight we never answer; the Host (one header, or the HTTP/2 authority) must be
//!   a loopback name or address with nothing after it, and an absolute-form URI must name
//!   the same host. That defeats DNS rebinding as well as cross-site requests.

use crate::error::{ErrCode, Error};
use http::{header, HeaderMap, Method, Request};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The path of the one admin route that takes a body other than JSON.
const IMPORT_PATH: &str = "/_mxisd/admin/v1/bindings/import";
/// The type of the import's tab-separated body.
const TSV: &str = "text/tab-separated-values";

/// The checks one admin listener makes on every request.
#[derive(Clone)]
pub struct Door {
    /// SHA-256 of the bearer token (TCP listeners); compared in constant time whatever
    /// the length of what the client sends.
    token: Option<[u8; 32]>,
    /// `server.admin.allowRemote`: any well-formed Host, not only loopback ones.
    any_host: bool,
}

impl Door {
    /// The Unix socket's door: the peer was checked when it connected.
    pub fn socket() -> Self {
        Self {
            token: None,
            any_host: false,
        }
    }

    /// A TCP listener's door: every request carries `token`.
    pub fn tcp(token: &str, any_host: bool) -> Self {
        Self {
            token: Some(Sha256::digest(token.as_bytes()).into()),
            any_host,
        }
    }

    /// Whether the request may reach the admin routes.
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), Error> {
        let headers = request.headers();
        if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
            return Err(forbidden(
                "The admin API does not answer requests from web browsers",
            ));
        }
        self.check_host(request)?;
        check_body_type(request.method(), request.uri().path(), headers)?;
        if let Some(expected) = &self.token {
            check_token(expected, headers)?;
        }
        Ok(())
    }

    fn check_host<B>(&self, request: &Request<B>) -> Result<(), Error> {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let header = hosts.next();
        if hosts.next().is_some() {
            return Err(forbidden("More than one Host header"));
        }
        let header = match header.map(|h| h.to_str()) {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) => return Err(forbidden("The Host header is not text")),
            None => None,
        };
        // An absolute-form URI (or HTTP/2's :authority) names a host too.
        let authority = request.uri().authority().map(|a| a.as_str());
        let host = match (header, authority) {
            (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
                return Err(forbidden(
                    "The request names two different hosts (Host and the URI)",
                ))
            }
            (Some(h), _) => h,
            (None, Some(a)) => a,
            (None, None) => return Err(forbidden("The request has no Host header")),
        };
        let allowed = if self.any_host {
            parse_host(host).is_some()
        } else {
            is_loopback_host(host)
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(
                "The admin API only answers requests addressed to this machine (Host: localhost or a loopback address)",
            ))
        }
    }
}

fn forbidden(message: &str) -> Error {
    Error::new(ErrCode::Forbidden, message)
}

/// Every request but GET and HEAD declares a JSON body (or the import's TSV).
fn check_body_type(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Error> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match declared.as_deref() {
        Some("application/json") => Ok(()),
        Some(TSV) if path.trim_end_matches('/') == IMPORT_PATH => Ok(()),
        _ => Err(forbidden(if path.trim_end_matches('/') == IMPORT_PATH {
            "Send the import with Content-Type: text/tab-separated-values (or application/json)"
        } else {
            "Admin requests must declare Content-Type: application/json"
        })),
    }
}

fn check_token(expected: &[u8; 32], headers: &HeaderMap) -> Result<(), Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::new(
            ErrCode::MissingToken,
            "The TCP admin listener needs Authorization: Bearer <the token in server.admin.tokenFile>",
        ));
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    if bool::from(given.ct_eq(expected)) {
        Ok(())
    } else {
        Err(Error::new(
            ErrCode::UnknownToken,
            "Wrong admin token (see server.admin.tokenFile)",
        ))
    }
}

/// Splits `host[:port]` strictly: a DNS name or IPv4 address, or a bracketed IPv6
/// address, then at most `:digits`, and nothing else.
fn parse_host(text: &str) -> Option<&str> {
    let (name, rest) = if let Some(inner) = text.strip_prefix('[') {
        let end = inner.find(']')?;
        let name = &inner[..end];
        name.parse::<std::net::Ipv6Addr>().ok()?;
        (name, &inner[end + 1..])
    } else {
        match text.find(':') {
            Some(i) => (&text[..i], &text[i..]),
            None => (text, ""),
        }
    };
    let port_ok = match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(port) => {
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
        }
    };
    let name_ok = !name.is_empty()
        && (text.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    (port_ok && name_ok).then_some(name)
}

/// `localhost` or a loopback address, with an optional port and nothing more.
fn is_loopback_host(text: &str) -> bool {
    parse_host(text).is_some_and(|name| {
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Who is on the other end of a Unix socket connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerCredentials {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Who may use the admin socket: root, the server's own user, and members of one group.
#[derive(Debug, Clone, Copy)]
pub struct PeerRule {
    pub own_uid: u32,
    pub group: u32,
}

impl PeerRule {
    /// Whether `peer` may use the admin API; the reason when it may not.
    pub fn admits(&self, peer: &PeerCredentials) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.own_uid || peer.gid == self.group {
            return Ok(());
        }
        // Supplementary groups: the kernel tells them for the peer's process.
        let groups = peer.pid.and_then(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .as_deref()
                .and_then(supplementary_groups)
        });
        if groups.is_some_and(|g| g.contains(&self.group)) {
            return Ok(());
        }
        Err(format!(
            "uid {} may not use the admin socket (only root, uid {} and members of group {} may)",
            peer.uid, self.own_uid, self.group
        ))
    }
}

/// The `Groups:` line of `/proc/PID/status`.
fn supplementary_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

/// The id of the group named `name` (or given as a number), from `/etc/group`.
pub fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to find group {name:?}: {e}"))?;
    find_group(&text, name).ok_or_else(|| {
        format!("server.admin.group: there is no group {name:?} in /etc/group (give its number instead if it comes from a directory service)")
    })
}

fn find_group(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn hosts_are_parsed_strictly() {
        for ok in [
            "localhost",
            "localhost:8091",
            "LOCALHOST",
            "127.0.0.1",
            "127.0.0.1:8091",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8091",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "[::1]evil.example",
            "[::1]:8091evil",
            "localhost:",
            "localhost:80:80",
            "localhost:123456",
            "localhost.evil.example",
            "admin.localhost",
            "evil.example",
            "10.0.0.1",
            "[fe80::1]",
            "localhost evil",
            "localhost@evil",
            "",
            "::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
        assert_eq!(parse_host("mxisd:8092"), Some("mxisd"));
        assert_eq!(parse_host("mxisd/x"), None);
    }

    #[test]
    fn browser_requests_are_refused() {
        let door = Door::socket();
        let ok = request("GET", "/_mxisd/admin/v1/status", &[("host", "localhost")]);
        assert!(door.check(&ok).is_ok());
        for (name, value) in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-origin"),
        ] {
            let r = request(
                "GET",
                "/_mxisd/admin/v1/backup",
                &[("host", "localhost"), (name, value)],
            );
            assert_eq!(door.check(&r).unwrap_err().code, ErrCode::Forbidden);
        }
    }

    #[test]
    fn bodies_must_declare_json() {
        let door = Door::socket();
        let host = ("host", "localhost");
        let post = |path: &str, ct: Option<&str>| {
            let mut h = vec![host];
            if let Some(ct) = ct {
                h.push(("content-type", ct));
            }
            door.check(&request("POST", path, &h))
        };
        assert!(post("/_mxisd/admin/v1/bindings", Some("application/json")).is_ok());
        assert!(post(
            "/_mxisd/admin/v1/bindings",
            Some("Application/JSON; charset=utf-8")
        )
        .is_ok());
        assert!(post("/_mxisd/admin/v1/bindings", None).is_err());
        assert!(post("/_mxisd/admin/v1/bindings", Some("text/plain")).is_err());
        assert!(post("/_mxisd/admin/v1/hashing/rotate", None).is_err());
        assert!(post(IMPORT_PATH, Some(TSV)).is_ok());
        assert!(post(IMPORT_PATH, Some("application/json")).is_ok());
        assert!(post(IMPORT_PATH, Some("text/plain;charset=UTF-8")).is_err());
        assert!(post("/_mxisd/admin/v1/bindings", Some(TSV)).is_err());
    }

    #[test]
    fn host_headers_and_absolute_uris() {
        let door = Door::socket();
        let two = {
            let mut r = request("GET", "/_mxisd/admin/v1/status", &[("host", "localhost")]);
            r.headers_mut()
                .append(header::HOST, "evil.example".parse().unwrap());
            r
        };
        assert!(door.check(&two).is_err());
        let absolute = request(
            "GET",
            "http://evil.example/_mxisd/admin/v1/status",
            &[("host", "localhost")],
        );
        assert!(door.check(&absolute).is_err());
        let same = request(
            "GET",
            "http://localhost:8091/_mxisd/admin/v1/status",
            &[("host", "localhost:8091")],
        );
        assert!(door.check(&same).is_ok());
        let none = request("GET", "/_mxisd/admin/v1/status", &[]);
        assert!(door.check(&none).is_err());
        let remote = Door::tcp("0123456789abcdef", true);
        let r = request(
            "GET",
            "/_mxisd/admin/v1/status",
            &[
                ("host", "mxisd:8092"),
                ("authorization", "Bearer 0123456789abcdef"),
            ],
        );
        assert!(remote.check(&r).is_ok());
    }

    #[test]
    fn tokens() {
        let door = Door::tcp("0123456789abcdef", false);
        let with = |auth: Option<&str>| {
            let mut h = vec![("host", "127.0.0.1:8092")];
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            door.check(&request("GET", "/_mxisd/admin/v1/status", &h))
                .map_err(|e| e.code)
        };
        assert_eq!(with(Some("Bearer 0123456789abcdef")), Ok(()));
        assert_eq!(with(None), Err(ErrCode::MissingToken));
        assert_eq!(
            with(Some("Bearer 0123456789abcdeF")),
            Err(ErrCode::UnknownToken)
        );
        assert_eq!(
            with(Some("Bearer 0123456789abcde")),
            Err(ErrCode::UnknownToken)
        );
        assert_eq!(
            with(Some("Basic 0123456789abcdef")),
            Err(ErrCode::UnknownToken)
        );
        assert_eq!(with(Some("Bearer ")), Err(ErrCode::UnknownToken));
    }

    #[test]
    fn peers() {
        let rule = PeerRule {
            own_uid: 998,
            group: 997,
        };
        let peer = |uid, gid| PeerCredentials {
            uid,
            gid,
            pid: None,
        };
        assert!(rule.admits(&peer(0, 0)).is_ok());
        assert!(rule.admits(&peer(998, 5)).is_ok());
        assert!(rule.admits(&peer(1000, 997)).is_ok());
        let refused = rule.admits(&peer(65534, 65534)).unwrap_err();
        assert!(refused.contains("uid 65534"), "{refused}");
        assert_eq!(
            supplementary_groups("Name:\tx\nGroups:\t4 24 997 \nNSpid:\t1\n"),
            Some(vec![4, 24, 997])
        );
        assert_eq!(supplementary_groups("Groups:\n"), Some(vec![]));
        let etc = "root:x:0:\nadm:x:4:syslog\nmxisd:x:997:\n";
        assert_eq!(find_group(etc, "mxisd"), Some(997));
        assert_eq!(find_group(etc, "mxis"), None);
        assert_eq!(group_id("42"), Ok(42));
    }
}
