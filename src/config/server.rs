//! `server`: the public listener (name we sign with, address, public URL, body limit,
//! optional TLS), the admin door under `server.admin` and the metrics listener under
//! `server.metrics`, plus the URL a CLI verb uses to reach the public listener.
//!
//! The admin API is served on a Unix socket whose peers are checked (root, the server's
//! own user, a configured group); a TCP admin listener exists only with a bearer token
//! read from a private file. `/metrics` (no secrets in it) gets a loopback TCP listener
//! of its own so Prometheus can scrape it.

use super::reader::{Secret, Section};
use super::Config;
use crate::model::is_server_name;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name this server signs with.
    pub name: String,
    pub hostname: String,
    pub port: u16,
    /// Base URL, without a trailing slash.
    pub public_url: String,
    pub max_body_size: u64,
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsConfig>,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    /// `server.internal`: the homeserver-facing listener (`check_credentials`).
    pub internal: MetricsConfig,
    /// `server.connections`: timeouts and caps of every listener's connections.
    pub connections: ConnectionsConfig,
}

/// `server.connections`: how long a connection may stay quiet and how many may be open.
#[derive(Debug, Clone)]
pub struct ConnectionsConfig {
    /// `idleTimeout`: a connection with no request in flight is closed after this long
    /// without a byte either way.
    pub idle_timeout: Duration,
    /// `headerTimeout`: the time to send a request's headers (and the TLS handshake).
    pub header_timeout: Duration,
    /// `bodyTimeout`: the time to send a whole request body.
    pub body_timeout: Duration,
    /// `max`: the public listener's connections (none: from the open-file limit).
    pub max: Option<usize>,
    /// `perAddress`: connections from one client address.
    pub per_address: usize,
    /// `perAddressExempt`: addresses only `max` applies to (a reverse proxy's).
    pub per_address_exempt: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// `server.admin`: the operator's door.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    /// `server.admin.socket`: the Unix socket (default `<storage.path>/admin.sock`).
    pub socket: PathBuf,
    /// `server.admin.group`: a group whose members may use the socket besides root and
    /// the server's own user (default: the server's own group).
    pub group: Option<String>,
    /// The TCP admin listener, only when `server.admin.port` is set.
    pub tcp: Option<AdminTcp>,
}

/// A TCP admin listener (for containers): every request carries the bearer token.
#[derive(Debug, Clone)]
pub struct AdminTcp {
    pub hostname: String,
    pub port: u16,
    /// `server.admin.tokenFile`: where the token came from (for messages).
    pub token_file: PathBuf,
    pub token: Secret,
    /// `server.admin.allowRemote`: listen beyond loopback and accept any Host header.
    pub allow_remote: bool,
}

/// `server.metrics`: a loopback TCP listener serving only `GET /metrics`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub hostname: String,
    pub port: u16,
}

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The shortest bearer token the TCP admin listener accepts.
const MIN_TOKEN_LENGTH: usize = 16;

pub(crate) fn read_server(
    s: &Section<'_, '_>,
    domain: Option<&str>,
    storage: Option<&Path>,
) -> Option<ServerConfig> {
    let name = s.string("name");
    let hostname = s.string("hostname").unwrap_or_else(|| "127.0.0.1".into());
    let port = s.port("port").unwrap_or(8090);
    let public_url = s.string("publicUrl");
    let max_body_size = s.size("maxBodySize").unwrap_or(512 * 1024);
    let shutdown_timeout = s
        .duration("shutdownTimeout")
        .unwrap_or(Duration::from_secs(10));
    let tls = read_tls(&s.section("tls"));
    let admin = read_admin(&s.section("admin"), storage);
    let metrics = read_side_listener(&s.section("metrics"), port, 1, true);
    let internal = read_side_listener(&s.section("internal"), port, 2, false);
    let connections = read_connections(&s.section("connections"));
    s.finish(&[]);

    let mut ok = true;
    let name = match name {
        Some(n) if is_server_name(&n) => n,
        Some(n) => {
            s.problem(
                "name",
                format!("{n:?} is not a valid server name (host or host:port)"),
            );
            ok = false;
            n
        }
        None => domain.map(str::to_owned).unwrap_or_default(),
    };
    let public_url = public_url
        .map(|u| u.replace("%SERVER_NAME%", &name))
        .unwrap_or_else(|| format!("https://{name}"));
    let public_url = public_url.trim_end_matches('/').to_owned();
    let after_scheme = public_url
        .strip_prefix("https://")
        .or_else(|| public_url.strip_prefix("http://"));
    if after_scheme.is_none_or(|rest| rest.is_empty()) {
        s.problem(
            "publicUrl",
            format!("{public_url:?} must be an http:// or https:// URL"),
        );
        ok = false;
    }
    if max_body_size < 1024 {
        s.problem("maxBodySize", "must be at least 1KiB");
        ok = false;
    }
    let tcp_ports = [
        admin
            .as_ref()
            .and_then(|a| a.tcp.as_ref().filter(|_| a.enabled))
            .map(|t| ("admin.port", t.hostname.as_str(), t.port)),
        metrics
            .as_ref()
            .filter(|m| m.enabled)
            .map(|m| ("metrics.port", m.hostname.as_str(), m.port)),
        internal
            .as_ref()
            .filter(|m| m.enabled)
            .map(|m| ("internal.port", m.hostname.as_str(), m.port)),
    ];
    let public = ("port", hostname.as_str(), port);
    for (i, (key, host, p)) in tcp_ports.iter().flatten().enumerate() {
        let earlier = std::iter::once(&public).chain(tcp_ports[..i].iter().flatten());
        for (other, other_host, other_port) in earlier {
            if p == other_port && host == other_host && *p != 0 {
                s.problem(key, format!("server.{key} is taken by server.{other}: each listener needs a port of its own"));
                ok = false;
            }
        }
    }
    if !ok || name.is_empty() {
        return None;
    }
    let admin = admin?;
    let metrics = metrics?;
    let internal = internal?;
    let connections = connections?;
    Some(ServerConfig {
        name,
        hostname,
        port,
        public_url,
        max_body_size,
        shutdown_timeout,
        tls: tls?,
        admin,
        metrics,
        internal,
        connections,
    })
}

fn read_connections(s: &Section<'_, '_>) -> Option<ConnectionsConfig> {
    let second = Duration::from_secs(1);
    let idle_timeout = s.duration("idleTimeout").unwrap_or(Duration::from_secs(60));
    let header_timeout = s
        .duration("headerTimeout")
        .unwrap_or(Duration::from_secs(30));
    let body_timeout = s.duration("bodyTimeout").unwrap_or(Duration::from_secs(30));
    let max = s.u64("max");
    let per_address = s.u64("perAddress").unwrap_or(256);
    let exempt = s.cidr_list("perAddressExempt");
    let mut ok = exempt.is_some() || s.string_is_absent("perAddressExempt");
    s.finish(&[]);
    for (key, value) in [
        ("idleTimeout", idle_timeout),
        ("headerTimeout", header_timeout),
        ("bodyTimeout", body_timeout),
    ] {
        if value < second {
            s.problem(key, "must be at least 1s");
            ok = false;
        }
    }
    if max.is_some_and(|m| m < 16) {
        s.problem("max", "must be at least 16");
        ok = false;
    }
    if per_address < 1 {
        s.problem("perAddress", "must be at least 1");
        ok = false;
    }
    ok.then(|| ConnectionsConfig {
        idle_timeout,
        header_timeout,
        body_timeout,
        max: max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        per_address: usize::try_from(per_address).unwrap_or(usize::MAX),
        per_address_exempt: exempt.unwrap_or_else(|| {
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect()
        }),
    })
}

/// `Some(None)`: no TLS; `None`: a problem was reported.
fn read_tls(s: &Section<'_, '_>) -> Option<Option<TlsConfig>> {
    let certificate = s.path("certificate");
    let key = s.path("key");
    s.finish(&[]);
    match (certificate, key) {
        (None, None) => Some(None),
        (Some(certificate), Some(key)) => Some(Some(TlsConfig { certificate, key })),
        (Some(_), None) => {
            s.problem("key", "required when server.tls.certificate is set");
            None
        }
        (None, Some(_)) => {
            s.problem("certificate", "required when server.tls.key is set");
            None
        }
    }
}

fn read_admin(s: &Section<'_, '_>, storage: Option<&Path>) -> Option<AdminConfig> {
    let enabled = s.bool("enabled").unwrap_or(true);
    let socket = s.path("socket");
    let group = s.string("group");
    let hostname = s.string("hostname");
    let port = s.port("port");
    let token_file = s.path("tokenFile");
    let allow_remote = s.bool("allowRemote").unwrap_or(false);
    s.finish(&[]);
    let socket = match (socket, storage) {
        (Some(p), _) => p,
        (None, Some(storage)) => storage.join("admin.sock"),
        // storage.path has its own problem.
        (None, None) => return None,
    };
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        s.problem(
            "socket",
            format!(
                "{} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket path may have; set a shorter server.admin.socket",
                socket.display()
            ),
        );
        return None;
    }
    if group.as_deref().is_some_and(|g| g.trim().is_empty()) {
        s.problem("group", "must not be empty");
        return None;
    }
    let tcp = match (port, token_file) {
        (None, None) => {
            if hostname.is_some() || allow_remote {
                s.problem(
                    "port",
                    "server.admin.hostname and allowRemote are for a TCP admin listener, which needs server.admin.port and server.admin.tokenFile; without them the admin API is on the Unix socket server.admin.socket",
                );
                return None;
            }
            None
        }
        (Some(_), None) => {
            s.problem(
                "tokenFile",
                "a TCP admin listener (server.admin.port) needs a bearer token: put a random token of at least 16 characters in a file only the server's user can read (chmod 600) and name it in server.admin.tokenFile; or remove server.admin.port and use the Unix socket server.admin.socket",
            );
            return None;
        }
        (None, Some(_)) => {
            s.problem(
                "port",
                "server.admin.tokenFile is set but server.admin.port is not: set the TCP port too, or remove tokenFile",
            );
            return None;
        }
        (Some(port), Some(token_file)) => {
            let hostname = hostname.unwrap_or_else(|| "127.0.0.1".into());
            if enabled && !allow_remote && !is_loopback_name(&hostname) {
                s.problem(
                    "hostname",
                    format!("{hostname:?} is not a loopback address; keep the admin API on 127.0.0.1, or set server.admin.allowRemote: true (the token still guards it; use TLS in front of it)"),
                );
                return None;
            }
            let token = match read_token(&token_file) {
                Ok(t) => t,
                Err(why) => {
                    s.problem("tokenFile", why);
                    return None;
                }
            };
            Some(AdminTcp {
                hostname,
                port,
                token_file,
                token,
                allow_remote,
            })
        }
    };
    Some(AdminConfig {
        enabled,
        socket,
        group,
        tcp,
    })
}

/// Reads the admin bearer token: a file only its owner can read, holding at least
/// [`MIN_TOKEN_LENGTH`] characters (surrounding whitespace ignored).
fn read_token(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is readable by others (mode {mode:03o}); chmod 600 it"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let token = text.trim();
    if token.chars().count() < MIN_TOKEN_LENGTH || token.chars().any(char::is_whitespace) {
        return Err(format!(
            "{shown} must hold one token of at least {MIN_TOKEN_LENGTH} characters without spaces (e.g. from `openssl rand -hex 32`)"
        ));
    }
    Ok(Secret::new(token.to_owned()))
}

/// A loopback side listener (`server.metrics`, `server.internal`): on by default or
/// not, its port `offset` above the public one unless set (0 when the public port is).
fn read_side_listener(
    s: &Section<'_, '_>,
    public_port: u16,
    offset: u16,
    enabled_by_default: bool,
) -> Option<MetricsConfig> {
    let enabled = s.bool("enabled").unwrap_or(enabled_by_default);
    let hostname = s.string("hostname").unwrap_or_else(|| "127.0.0.1".into());
    let port = match s.port("port") {
        Some(p) => p,
        None if public_port == 0 => 0,
        None => match public_port.checked_add(offset) {
            Some(p) => p,
            None => {
                s.problem("port", "required when server.port is this high");
                return None;
            }
        },
    };
    s.finish(&[]);
    Some(MetricsConfig {
        enabled,
        hostname,
        port,
    })
}

/// `localhost` or a loopback address (IPv6 with or without brackets).
fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Config {
    /// URL of the metrics listener as seen from this machine.
    pub fn metrics_url(&self) -> Option<String> {
        let m = &self.server.metrics;
        m.enabled.then(|| {
            format!(
                "http://{}/metrics",
                host_port(local_host(&m.hostname), m.port)
            )
        })
    }

    /// URL of the public listener as seen from this machine.
    pub fn local_url(&self) -> String {
        let s = &self.server;
        let host = local_host(&s.hostname);
        let scheme = if s.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", host_port(host, s.port))
    }
}

/// The address to reach a listener bound to `host` from this machine.
fn local_host(host: &str) -> &str {
    match host {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        h => h,
    }
}

/// `host:port`, bracketing IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
