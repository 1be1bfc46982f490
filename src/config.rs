//! Configuration: the YAML file (mxisd/ma1sd key names) → a validated [`Config`].
//! Loading collects every problem with its key path, so `check-config` can list them all
//! at once; unknown keys are errors, not silence. Secrets never appear in `Debug` output
//! or in the summary.

pub mod reader;
pub mod units;

use reader::{Ctx, Section};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default configuration (`mxisd run` without `-c`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../assets/default.yaml");

/// The commented example shipped to operators.
pub const EXAMPLE: &str = include_str!("../assets/mxisd.example.yaml");

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; None for the embedded default.
    pub source: Option<PathBuf>,
    pub matrix: MatrixConfig,
    pub server: ServerConfig,
    pub key: KeyConfig,
    pub storage: StorageConfig,
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone)]
pub struct MatrixConfig {
    /// The homeserver's domain (`server_name`).
    pub domain: String,
    /// Serve `/_matrix/identity/api/v1`.
    pub v1: bool,
}

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
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Directory of the key store.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub cache_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// Level for all crates.
    pub root: String,
    /// Level for mxisd's own messages.
    pub app: String,
}

/// Loading failed: every problem found, one line each.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub source: String,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} problem(s)", self.source, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// ma1sd top-level keys and what to do about them here.
const TOP_LEVEL_HINTS: &[(&str, &str)] = &[
    ("ldap", "identity stores (ldap) are not supported by this version of mxisd yet"),
    ("netiq", "identity stores (netiq) are not supported by this version of mxisd yet"),
    ("sql", "identity stores (sql) are not supported by this version of mxisd yet"),
    ("synapseSql", "identity stores (synapseSql) are not supported by this version of mxisd yet"),
    ("rest", "identity stores (rest) are not supported by this version of mxisd yet"),
    ("memory", "the memory identity store is not supported by this version of mxisd yet"),
    ("exec", "the exec identity store is not supported by mxisd; use the rest store or a file source"),
    ("firebase", "the firebase identity store is not supported by mxisd"),
    ("wordpress", "the wordpress identity store is not supported by mxisd; use the sql store on its database"),
    ("lookup", "lookup settings are not supported by this version of mxisd yet"),
    ("forward", "forwarding lookups is not supported by this version of mxisd yet"),
    ("dns", "dns overrides are not supported by this version of mxisd yet"),
    ("auth", "authentication (check_credentials) is not supported by this version of mxisd yet"),
    ("directory", "directory search is not supported by this version of mxisd yet"),
    ("register", "registration policy is not supported by this version of mxisd yet"),
    ("invite", "3PID invites are not supported by this version of mxisd yet"),
    ("session", "3PID sessions are not supported by this version of mxisd yet"),
    ("view", "3PID sessions (and their pages) are not supported by this version of mxisd yet"),
    ("threepid", "e-mail and SMS delivery are not supported by this version of mxisd yet"),
    ("notification", "notifications are not supported by this version of mxisd yet"),
    ("appsvc", "the application service is not supported by this version of mxisd yet"),
    ("hashing", "hashed lookups are not supported by this version of mxisd yet"),
    ("policy", "terms policies are not supported by this version of mxisd yet"),
    ("accountConfig", "accounts are not supported by this version of mxisd yet"),
    ("internal", "ma1sd's internal endpoints do not exist in mxisd; operator commands use the admin listener (server.admin)"),
];

const STORAGE_HINTS: &[(&str, &str)] = &[
    ("backend", "mxisd keeps its state in an embedded store under storage.path; remove storage.backend"),
    ("provider", "mxisd keeps its state in an embedded store under storage.path; remove storage.provider (ma1sd's SQLite/PostgreSQL settings)"),
];

const LOGGING_HINTS: &[(&str, &str)] = &[(
    "requests",
    "not supported: mxisd never logs request or response bodies (they carry tokens and 3PIDs); remove it",
)];

const MATRIX_HINTS: &[(&str, &str)] = &[(
    "identity",
    "matrix.identity.servers (forwarding lookups) is not supported by this version of mxisd yet",
)];

/// Loads and validates the config file at `path`.
pub fn load_file(path: &Path, env: reader::EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source: path.display().to_string(),
        problems: vec![format!("cannot read the file: {e}")],
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    let mut config = load_str(&text, &path.display().to_string(), base, env)?;
    config.source = Some(path.to_owned());
    Ok(config)
}

/// Loads the embedded default, with paths relative to the current directory.
pub fn load_embedded(env: reader::EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    load_str(EMBEDDED_DEFAULT, "embedded default", cwd, env)
}

/// Parses and validates config text. `name` names the source in messages.
pub fn load_str(
    text: &str,
    name: &str,
    base_dir: PathBuf,
    env: reader::EnvLookup<'_>,
) -> Result<Config, ConfigErrors> {
    let fail = |problems| ConfigErrors {
        source: name.to_owned(),
        problems,
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| fail(vec![format!("not valid YAML: {e}")]))?;
    let ctx = Ctx::new(env, base_dir);
    let root = ctx.root(&value);
    let config = build(&root);
    root.finish(TOP_LEVEL_HINTS);
    let problems = ctx.into_problems();
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(fail(if problems.is_empty() {
            vec!["invalid configuration".into()]
        } else {
            problems
        })),
    }
}

/// Reads every section (so all problems are found), then assembles the config if the
/// required parts are there.
fn build(root: &Section<'_, '_>) -> Option<Config> {
    let matrix = read_matrix(&root.section("matrix"));
    let storage = read_storage(&root.section("storage"));
    let server = read_server(
        &root.section("server"),
        matrix.as_ref().map(|m| m.domain.as_str()),
    );
    let key = read_key(&root.section("key"), storage.as_ref());
    let logging = read_logging(&root.section("logging"));
    Some(Config {
        source: None,
        matrix: matrix?,
        server: server?,
        key: key?,
        storage: storage?,
        logging: logging?,
    })
}

fn read_matrix(s: &Section<'_, '_>) -> Option<MatrixConfig> {
    let domain = s.string("domain");
    let v1 = s.bool("v1").unwrap_or(true);
    if let Some(false) = s.bool("v2") {
        s.problem(
            "v2",
            "the v2 API cannot be turned off: clients and homeservers need it",
        );
    }
    s.finish(MATRIX_HINTS);
    let domain = match domain {
        Some(d) if is_server_name(&d) => d,
        Some(d) => {
            s.problem(
                "domain",
                format!("{d:?} is not a valid Matrix server name (host or host:port)"),
            );
            return None;
        }
        None => {
            s.problem(
                "domain",
                "required: the Matrix domain of your homeserver (Synapse's server_name)",
            );
            return None;
        }
    };
    Some(MatrixConfig { domain, v1 })
}

fn read_server(s: &Section<'_, '_>, domain: Option<&str>) -> Option<ServerConfig> {
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

    let name = match name {
        Some(n) if is_server_name(&n) => Some(n),
        Some(n) => {
            s.problem(
                "name",
                format!("{n:?} is not a valid server name (host or host:port)"),
            );
            None
        }
        None => domain.map(str::to_owned),
    }?;
    let public_url = public_url
        .map(|u| u.replace("%SERVER_NAME%", &name))
        .unwrap_or_else(|| format!("https://{name}"));
    let public_url = public_url.trim_end_matches('/').to_owned();
    if !(public_url.starts_with("https://") || public_url.starts_with("http://"))
        || public_url.len() <= "https://".len()
    {
        s.problem(
            "publicUrl",
            format!("{public_url:?} must be an http:// or https:// URL"),
        );
        return None;
    }
    if max_body_size < 1024 {
        s.problem("maxBodySize", "must be at least 1KiB");
        return None;
    }
    let admin = admin?;
    if admin.enabled && admin.port == port && admin.hostname == hostname && port != 0 {
        s.problem("admin.port", "the admin listener needs a port of its own");
        return None;
    }
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
    let default_port = if public_port == 0 {
        0
    } else {
        public_port.wrapping_add(1)
    };
    let port = s.port("port").unwrap_or(default_port);
    s.finish(&[]);
    Some(AdminConfig {
        enabled,
        hostname,
        port,
    })
}

fn read_key(s: &Section<'_, '_>, storage: Option<&StorageConfig>) -> Option<KeyConfig> {
    let path = match s.string("path").as_deref() {
        Some(":memory:") => {
            s.problem("path", "an in-memory key is not supported: signatures must survive restarts; give a directory");
            return None;
        }
        Some(_) => s.path("path"),
        None => storage.map(|st| st.path.join("keys")),
    };
    s.finish(&[]);
    path.map(|path| KeyConfig { path })
}

fn read_storage(s: &Section<'_, '_>) -> Option<StorageConfig> {
    let path = s.path("path");
    let cache_size = s.size("cacheSize").unwrap_or(64 << 20);
    s.finish(STORAGE_HINTS);
    if cache_size < (1 << 20) {
        s.problem("cacheSize", "must be at least 1MiB");
        return None;
    }
    match path {
        Some(path) => Some(StorageConfig { path, cache_size }),
        None => {
            if !s.has("path") {
                s.problem(
                    "path",
                    "required: the directory for mxisd's state, e.g. /var/lib/mxisd",
                );
            }
            None
        }
    }
}

fn read_logging(s: &Section<'_, '_>) -> Option<LoggingConfig> {
    let format = match s.string("format").as_deref() {
        None | Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            s.problem("format", format!("{other:?} is not text or json"));
            None
        }
    };
    let level = |key: &str| match s.string(key) {
        None => Some("info".to_owned()),
        Some(l) => {
            let lower = l.to_ascii_lowercase();
            if ["error", "warn", "info", "debug", "trace", "off"].contains(&lower.as_str()) {
                Some(lower)
            } else {
                s.problem(
                    key,
                    format!("{l:?} is not one of error, warn, info, debug, trace, off"),
                );
                None
            }
        }
    };
    let root = level("root");
    let app = level("app");
    s.finish(LOGGING_HINTS);
    Some(LoggingConfig {
        format: format?,
        root: root?,
        app: app?,
    })
}

/// Server-name grammar of the spec appendix: hostname, IPv4 or `[IPv6]`, optional port.
pub fn is_server_name(name: &str) -> bool {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let (ip, after) = rest.split_at(end);
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        (None, after.strip_prefix(']').unwrap_or_default())
    } else {
        match name.rfind(':') {
            Some(i) => (Some(&name[..i]), &name[i..]),
            None => (Some(name), ""),
        }
    };
    if !port.is_empty() {
        let Some(digits) = port.strip_prefix(':') else {
            return false;
        };
        if digits.is_empty() || digits.len() > 5 || digits.parse::<u16>().is_err() {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
    }
}

impl Config {
    /// A readable summary with secrets left out, for `check-config` and start-up logs.
    pub fn summary(&self) -> String {
        let s = &self.server;
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            out.push_str(&format!("  {k:<22} {v}\n"));
        };
        line(
            "source",
            self.source
                .as_ref()
                .map_or_else(|| "embedded default".into(), |p| p.display().to_string()),
        );
        line("matrix.domain", self.matrix.domain.clone());
        line("matrix.v1", self.matrix.v1.to_string());
        line("server.name", s.name.clone());
        line(
            "server.listen",
            format!(
                "{}:{} ({})",
                s.hostname,
                s.port,
                if s.tls.is_some() { "https" } else { "http" }
            ),
        );
        line("server.publicUrl", s.public_url.clone());
        line("server.maxBodySize", units::format_size(s.max_body_size));
        if let Some(tls) = &s.tls {
            line(
                "server.tls.certificate",
                tls.certificate.display().to_string(),
            );
            line("server.tls.key", tls.key.display().to_string());
        }
        line(
            "server.admin",
            if s.admin.enabled {
                format!("{}:{}", s.admin.hostname, s.admin.port)
            } else {
                "disabled".into()
            },
        );
        line("key.path", self.key.path.display().to_string());
        line("storage.path", self.storage.path.display().to_string());
        line(
            "storage.cacheSize",
            units::format_size(self.storage.cache_size),
        );
        line(
            "logging",
            format!(
                "{} (root {}, app {})",
                match self.logging.format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                },
                self.logging.root,
                self.logging.app
            ),
        );
        out
    }

    /// Base URL of the admin listener, for CLI verbs that talk to a running server.
    pub fn admin_url(&self) -> Option<String> {
        let a = &self.server.admin;
        a.enabled
            .then(|| format!("http://{}/", host_port(&a.hostname, a.port)))
    }

    /// URL of the public listener as seen from this machine.
    pub fn local_url(&self) -> String {
        let s = &self.server;
        let host = match s.hostname.as_str() {
            "0.0.0.0" => "127.0.0.1",
            "::" | "[::]" => "::1",
            h => h,
        };
        let scheme = if s.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", host_port(host, s.port))
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

#[cfg(test)]
mod tests;
