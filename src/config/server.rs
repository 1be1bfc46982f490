//! `server`: the public listener (name we sign with, address, public URL, body limit,
//! optional TLS) and the admin listener under `server.admin`, plus the URLs a CLI verb
//! uses to reach a running server. The admin listener stays on loopback unless the
//! operator says otherwise: it has no authentication of its own.

use super::reader::Section;
use super::Config;
use crate::model::is_server_name;
use std::path::PathBuf;
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
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    pub hostname: String,
    pub port: u16,
    /// `server.admin.allowRemote`: listen beyond loopback and accept any Host header.
    /// The admin API has no authentication of its own.
    pub allow_remote: bool,
}

pub(crate) fn read_server(s: &Section<'_, '_>, domain: Option<&str>) -> Option<ServerConfig> {
    let name = s.string("name");
    let hostname = s.string("hostname").unwrap_or_else(|| "127.0.0.1".into());
    let port = s.port("port").unwrap_or(8090);
    let public_url = s.string("publicUrl");
    let max_body_size = s.size("maxBodySize").unwrap_or(512 * 1024);
    let shutdown_timeout = s
        .duration("shutdownTimeout")
        .unwrap_or(Duration::from_secs(10));
    let tls = read_tls(&s.section("tls"));
    let admin = read_admin(&s.section("admin"), port);
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
    if let Some(a) = &admin {
        if a.enabled && a.port == port && a.hostname == hostname && port != 0 {
            s.problem("admin.port", "the admin listener needs a port of its own");
            ok = false;
        }
    }
    if !ok || name.is_empty() {
        return None;
    }
    let admin = admin?;
    Some(ServerConfig {
        name,
        hostname,
        port,
        public_url,
        max_body_size,
        shutdown_timeout,
        tls: tls?,
        admin,
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

fn read_admin(s: &Section<'_, '_>, public_port: u16) -> Option<AdminConfig> {
    let enabled = s.bool("enabled").unwrap_or(true);
    let hostname = s.string("hostname").unwrap_or_else(|| "127.0.0.1".into());
    let allow_remote = s.bool("allowRemote").unwrap_or(false);
    let port = match s.port("port") {
        Some(p) => p,
        None if public_port == 0 => 0,
        None => match public_port.checked_add(1) {
            Some(p) => p,
            None => {
                s.problem("port", "required when server.port is 65535");
                return None;
            }
        },
    };
    s.finish(&[]);
    let loopback = hostname == "localhost"
        || hostname
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if enabled && !loopback && !allow_remote {
        s.problem(
            "hostname",
            format!("{hostname:?} is not a loopback address; the admin API has no authentication, so keep it on 127.0.0.1 (or set server.admin.allowRemote: true and protect it yourself)"),
        );
        return None;
    }
    Some(AdminConfig {
        enabled,
        hostname,
        port,
        allow_remote,
    })
}

impl Config {
    /// Base URL of the admin listener, for CLI verbs that talk to a running server.
    pub fn admin_url(&self) -> Option<String> {
        let a = &self.server.admin;
        a.enabled
            .then(|| format!("http://{}/", host_port(&a.hostname, a.port)))
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
