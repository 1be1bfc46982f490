//! Configuration: the YAML file (mxisd/ma1sd key names) → a validated [`Config`].
//! Loading collects every problem with its key path, so `check-config` can list them all
//! at once; unknown keys are errors, not silence. Secrets never appear in `Debug` output
//! or in the summary.

pub mod reader;
pub mod stores;
pub mod threepid;
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
    pub federation: FederationConfig,
    pub accounts: AccountsConfig,
    pub terms: TermsConfig,
    pub hashing: HashingConfig,
    pub lookup: LookupConfig,
    pub threepid: threepid::ThreePidConfig,
    pub session: threepid::SessionConfig,
    pub view: threepid::ViewConfig,
    pub rate_limit: threepid::RateLimitConfig,
    pub invite: threepid::InviteConfig,
    /// Identity sources synced into the store (`memory`, `file`, `rest`, `ldap`, `sql`,
    /// `synapseSql`).
    pub sync: Vec<crate::sync::SourceConfig>,
    pub directory: DirectoryConfig,
    /// Keys accepted for compatibility that have no effect, with why.
    pub warnings: Vec<String>,
}

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

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// `accountConfig.allowOnlyTrustDomains`: only users of `matrix.domain` may register.
    pub allow_only_trust_domains: bool,
}

/// `policy.policies`: terms every user must accept.
#[derive(Debug, Clone, Default)]
pub struct TermsConfig {
    pub policies: std::collections::BTreeMap<String, Policy>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub version: String,
    /// Language code → (name, url).
    pub terms: std::collections::BTreeMap<String, (String, String)>,
}

#[derive(Debug, Clone)]
pub struct HashingConfig {
    pub pepper_length: usize,
    /// `hashing.rotationPolicy: per_seconds` with `hashing.delay`: rotate this often.
    pub rotation: Option<Duration>,
    /// Offer `sha256` (always) and `none` (unless removed from `hashing.algorithms`).
    pub allow_none: bool,
}

#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// `lookup.maxAddresses`: most addresses in one `/lookup` or `/bulk_lookup`.
    pub max_addresses: usize,
    /// `lookup.bulk.enabled`: answer v1 `/bulk_lookup`.
    pub bulk_enabled: bool,
}

#[derive(Debug, Clone)]
pub struct MatrixConfig {
    /// The homeserver's domain (`server_name`).
    pub domain: String,
    /// Serve `/_matrix/identity/api/v1`.
    pub v1: bool,
    /// `matrix.homeserver.url`: the client-server API of our homeserver, as reached
    /// from here (e.g. `http://localhost:8008`).
    pub homeserver_url: Option<String>,
}

/// `directory`: the user directory search and profile proxy.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `directory.exclude.homeserver`: answer from the local index only.
    pub exclude_homeserver: bool,
    /// `directory.exclude.threepid`: do not match on e-mail addresses and phone numbers.
    pub exclude_threepid: bool,
    /// `directory.profile.displayName`: fill a profile's missing display name from the
    /// directory.
    pub profile_display_name: bool,
    /// `directory.profile.threepids`: add the directory's 3PIDs to profiles, for
    /// authenticated users of `matrix.domain` only.
    pub profile_threepids: bool,
    /// `directory.searchCache`: searches whose results are remembered until the index
    /// changes (0: none).
    pub search_cache: usize,
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
    /// `server.admin.allowRemote`: listen beyond loopback and accept any Host header.
    /// The admin API has no authentication of its own.
    pub allow_remote: bool,
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
    ("netiq", "identity stores (netiq) are not supported by this version of mxisd yet"),
    ("exec", "the exec identity store is not supported by mxisd; use the rest store or a file source"),
    ("firebase", "the firebase identity store is not supported by mxisd"),
    ("wordpress", "the wordpress identity store is not supported by mxisd; use the sql store on its database"),
    ("forward", "forwarding lookups is not supported by this version of mxisd yet"),
    ("auth", "authentication (check_credentials) is not supported by this version of mxisd yet"),
    ("register", "registration policy is not supported by this version of mxisd yet"),
    ("notification", "notifications are not supported by this version of mxisd yet"),
    ("appsvc", "the application service is not supported by this version of mxisd yet"),
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

const LOOKUP_HINTS: &[(&str, &str)] = &[(
    "recursive",
    "recursive and federated lookups are not supported by this version of mxisd yet",
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
    load_str_traced(text, name, base_dir, env).0
}

/// [`load_str`], also returning which keys went unused, were ignored or held paths.
pub fn load_str_traced(
    text: &str,
    name: &str,
    base_dir: PathBuf,
    env: reader::EnvLookup<'_>,
) -> (Result<Config, ConfigErrors>, reader::Trace) {
    let fail = |problems| ConfigErrors {
        source: name.to_owned(),
        problems,
    };
    let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return (
                Err(fail(vec![format!("not valid YAML: {e}")])),
                reader::Trace::default(),
            )
        }
    };
    let ctx = Ctx::new(env, base_dir);
    let root = ctx.root(&value);
    let config = build(&root);
    root.finish(TOP_LEVEL_HINTS);
    let (problems, warnings, trace) = ctx.into_traced_parts();
    let result = match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = warnings;
            Ok(config)
        }
        _ => Err(fail(if problems.is_empty() {
            vec!["invalid configuration".into()]
        } else {
            problems
        })),
    };
    (result, trace)
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
    let federation = read_federation(&root.section("dns"), &root.section("outbound"));
    let accounts = read_accounts(&root.section("accountConfig"));
    let terms = read_terms(&root.section("policy"));
    let hashing = read_hashing(&root.section("hashing"));
    let lookup = read_lookup(&root.section("lookup"));
    let threepid = threepid::read_threepid(
        &root.section("threepid"),
        matrix.as_ref().map(|m| m.domain.as_str()),
    );
    let session = threepid::read_session(&root.section("session"));
    let view = threepid::read_view(&root.section("view"));
    let rate_limit = threepid::read_rate_limit(&root.section("rateLimit"));
    let invite = threepid::read_invite(&root.section("invite"));
    let directory = read_directory(&root.section("directory"));
    let mut sync = Vec::new();
    let memory = read_memory(&root.section("memory"));
    let file = read_file_source(&root.section("file"));
    let rest = read_rest_source(&root.section("rest"));
    let domain = matrix.as_ref().map(|m| m.domain.as_str());
    let ldap = stores::read_ldap(&root.section("ldap"), domain);
    let sql = stores::read_sql(&root.section("sql"), "sql", domain);
    let synapse_sql = stores::read_sql(&root.section("synapseSql"), "synapseSql", domain);
    for source in [&memory, &file, &rest, &ldap, &sql, &synapse_sql] {
        sync.extend(source.clone().flatten());
    }
    Some(Config {
        source: None,
        matrix: matrix?,
        server: server?,
        key: key?,
        storage: storage?,
        logging: logging?,
        federation: federation?,
        accounts: accounts?,
        terms: terms?,
        hashing: hashing?,
        lookup: lookup?,
        threepid: threepid?,
        session: session?,
        view: view?,
        rate_limit: rate_limit?,
        invite: invite?,
        sync: {
            memory?;
            file?;
            rest?;
            ldap?;
            sql?;
            synapse_sql?;
            sync
        },
        directory: directory?,
        warnings: Vec::new(),
    })
}

fn read_matrix(s: &Section<'_, '_>) -> Option<MatrixConfig> {
    let domain = s.string("domain");
    let v1 = s.bool("v1").unwrap_or(true);
    let hs = s.section("homeserver");
    let homeserver_url = hs.string("url").map(|u| u.trim_end_matches('/').to_owned());
    hs.finish(&[]);
    let mut ok = true;
    if let Some(url) = &homeserver_url {
        if reqwest::Url::parse(url).is_err()
            || !(url.starts_with("http://") || url.starts_with("https://"))
        {
            hs.problem(
                "url",
                format!("{url:?} must be a base URL such as http://localhost:8008"),
            );
            ok = false;
        }
    }
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
    ok.then_some(MatrixConfig {
        domain,
        v1,
        homeserver_url,
    })
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
    let cache_size = s.size("cacheSize").unwrap_or(8 << 20);
    s.finish(STORAGE_HINTS);
    let mut ok = true;
    if cache_size < (1 << 20) {
        s.problem("cacheSize", "must be at least 1MiB");
        ok = false;
    }
    if path.is_none() && s.string_is_absent("path") {
        s.problem(
            "path",
            "required: the directory for mxisd's state, e.g. /var/lib/mxisd",
        );
    }
    let path = path?;
    ok.then_some(StorageConfig { path, cache_size })
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

fn read_federation(dns: &Section<'_, '_>, outbound: &Section<'_, '_>) -> Option<FederationConfig> {
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

fn read_directory(s: &Section<'_, '_>) -> Option<DirectoryConfig> {
    let exclude = s.section("exclude");
    let exclude_homeserver = exclude.bool("homeserver").unwrap_or(false);
    let exclude_threepid = exclude.bool("threepid").unwrap_or(false);
    exclude.finish(&[]);
    let profile = s.section("profile");
    let profile_display_name = profile.bool("displayName").unwrap_or(true);
    let profile_threepids = profile.bool("threepids").unwrap_or(false);
    profile.finish(&[]);
    let search_cache = s
        .u64("searchCache")
        .unwrap_or(crate::index::DEFAULT_CACHE as u64);
    s.finish(&[]);
    if search_cache > 1_000_000 {
        s.problem("searchCache", "must be at most 1000000 (entries)");
        return None;
    }
    Some(DirectoryConfig {
        search_cache: usize::try_from(search_cache).unwrap_or(crate::index::DEFAULT_CACHE),
        exclude_homeserver,
        exclude_threepid,
        profile_display_name,
        profile_threepids,
    })
}

fn read_accounts(s: &Section<'_, '_>) -> Option<AccountsConfig> {
    let allow_only_trust_domains = s.bool("allowOnlyTrustDomains").unwrap_or(true);
    s.finish(&[]);
    Some(AccountsConfig {
        allow_only_trust_domains,
    })
}

fn read_terms(s: &Section<'_, '_>) -> Option<TermsConfig> {
    let mut policies = std::collections::BTreeMap::new();
    let mut ok = true;
    for (name, p) in s.named_sections("policies") {
        let version = p.scalar("version");
        let mut terms = std::collections::BTreeMap::new();
        for (lang, t) in p.named_sections("terms") {
            let title = t.string("name");
            let url = t.string("url");
            t.finish(&[]);
            match (title, url) {
                (Some(title), Some(url))
                    if url.starts_with("https://") || url.starts_with("http://") =>
                {
                    terms.insert(lang, (title, url));
                }
                (_, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                    t.problem("url", format!("{url:?} must be an http(s) URL"));
                    ok = false;
                }
                _ => {
                    t.problem("name", "each language needs a name and a url");
                    ok = false;
                }
            }
        }
        p.ignored(
            "regexp",
            "ignored: mxisd requires accepted terms on every authenticated endpoint except logout and POST /terms",
        );
        p.finish(&[]);
        match version {
            Some(version) if !terms.is_empty() => {
                policies.insert(name, Policy { version, terms });
            }
            Some(_) => {
                p.problem(
                    "terms",
                    "required: at least one language with a name and a url",
                );
                ok = false;
            }
            None => {
                p.problem("version", "required");
                ok = false;
            }
        }
    }
    s.finish(&[]);
    ok.then_some(TermsConfig { policies })
}

fn read_hashing(s: &Section<'_, '_>) -> Option<HashingConfig> {
    let mut ok = true;
    if s.bool("enabled") == Some(false) {
        s.problem(
            "enabled",
            "hashed lookups cannot be turned off: the v2 API requires sha256; remove it",
        );
        ok = false;
    }
    let pepper_length = s.u64("pepperLength").unwrap_or(32);
    if !(16..=128).contains(&pepper_length) {
        s.problem(
            "pepperLength",
            "must be between 16 and 128 (a short pepper is easy to brute-force)",
        );
        ok = false;
    }
    let delay = s.duration("delay");
    let rotation = match s.string("rotationPolicy").as_deref() {
        None | Some("none") => None,
        Some("per_seconds") => match delay {
            Some(d) if d >= Duration::from_secs(60) => Some(d),
            Some(_) => {
                s.problem(
                    "delay",
                    "must be at least 60s: every rotation rehashes all bindings",
                );
                ok = false;
                None
            }
            None => {
                s.problem(
                    "delay",
                    "required with rotationPolicy: per_seconds (e.g. 7d)",
                );
                ok = false;
                None
            }
        },
        Some("per_requests") => {
            s.problem("rotationPolicy", "per_requests is not supported (every rotation rehashes all bindings); use per_seconds with a delay");
            ok = false;
            None
        }
        Some(other) => {
            s.problem(
                "rotationPolicy",
                format!("{other:?} is not per_seconds or none"),
            );
            ok = false;
            None
        }
    };
    let algorithms = s
        .string_list("algorithms")
        .unwrap_or_else(|| vec!["sha256".into(), "none".into()]);
    let mut allow_none = false;
    let mut has_sha = false;
    for a in &algorithms {
        match a.as_str() {
            "sha256" => has_sha = true,
            "none" => allow_none = true,
            other => {
                s.problem("algorithms", format!("{other:?} is not sha256 or none"));
                ok = false;
            }
        }
    }
    if !has_sha {
        s.problem(
            "algorithms",
            "must include sha256 (mandatory in the v2 API)",
        );
        ok = false;
    }
    s.ignored(
        "hashStorageType",
        "ignored: mxisd keeps the hash index in its store",
    );
    s.ignored(
        "requests",
        "ignored: only per_seconds rotation is supported",
    );
    s.finish(&[]);
    ok.then_some(HashingConfig {
        pepper_length: usize::try_from(pepper_length).unwrap_or(32),
        rotation,
        allow_none,
    })
}

fn read_lookup(s: &Section<'_, '_>) -> Option<LookupConfig> {
    let max_addresses = s.u64("maxAddresses").unwrap_or(10_000);
    let bulk = s.section("bulk");
    let bulk_enabled = bulk.bool("enabled").unwrap_or(true);
    bulk.finish(&[]);
    s.finish(LOOKUP_HINTS);
    if max_addresses == 0 || max_addresses > 1_000_000 {
        s.problem("maxAddresses", "must be between 1 and 1000000");
        return None;
    }
    Some(LookupConfig {
        max_addresses: usize::try_from(max_addresses).unwrap_or(10_000),
        bulk_enabled,
    })
}

/// ma1sd's `memory` store: users listed in the config, synced at start.
/// `Some(None)`: not enabled; `None`: a problem was reported.
fn read_memory(s: &Section<'_, '_>) -> Option<Option<crate::sync::SourceConfig>> {
    let enabled = s.bool("enabled").unwrap_or(false);
    let mut users = Vec::new();
    let mut ok = true;
    for (i, u) in s.list_of_sections("identities").iter().enumerate() {
        let username = u.string("username");
        let display_name = u.string("displayName");
        let roles = u.string_list("roles").unwrap_or_default();
        u.ignored(
            "password",
            "ignored: mxisd does not check passwords against the memory store",
        );
        let mut threepids = Vec::new();
        for t in u.list_of_sections("threepids") {
            match (t.string("medium"), t.string("address")) {
                (Some(medium), Some(address)) => {
                    // Checked here so check-config finds what a sync would skip.
                    match crate::model::Medium::parse(&medium.to_lowercase()) {
                        None => {
                            t.problem("medium", format!("{medium:?} must be email or msisdn"));
                            ok = false;
                        }
                        Some(m) => {
                            if let Err(e) = crate::model::ThreePid::new(m, &address) {
                                t.problem("address", e);
                                ok = false;
                            }
                        }
                    }
                    threepids.push(crate::sync::ThreePidSpec { medium, address })
                }
                _ => {
                    t.problem("medium", "each 3PID needs a medium and an address");
                    ok = false;
                }
            }
            t.finish(&[]);
        }
        u.finish(&[]);
        match username {
            Some(username) => users.push(crate::sync::UserSpec {
                username,
                display_name,
                threepids,
                roles,
                attributes: Default::default(),
                password: None,
            }),
            None => {
                s.problem(&format!("identities[{i}].username"), "required");
                ok = false;
            }
        }
    }
    s.ignored("hashEnabled", "ignored: every binding is in the hash index");
    s.finish(&[]);
    ok.then_some(enabled.then(|| crate::sync::SourceConfig {
        name: "memory".into(),
        kind: crate::sync::SourceKind::Memory(users),
        interval: None,
    }))
}

/// `file`: users in a YAML or JSON file (the `memory.identities` shape), re-read every
/// `file.sync.interval`.
fn read_file_source(s: &Section<'_, '_>) -> Option<Option<crate::sync::SourceConfig>> {
    let enabled = s.bool("enabled").unwrap_or(false);
    let path = s.path("path");
    let sync = s.section("sync");
    let interval = sync
        .duration("interval")
        .unwrap_or(Duration::from_secs(300));
    sync.finish(&[]);
    s.finish(&[]);
    if !enabled {
        return Some(None);
    }
    let Some(path) = path else {
        s.problem(
            "path",
            "required when file.enabled is true: the file listing the users",
        );
        return None;
    };
    if interval < Duration::from_secs(1) {
        sync.problem("interval", "must be at least 1s");
        return None;
    }
    Some(Some(crate::sync::SourceConfig {
        name: "file".into(),
        kind: crate::sync::SourceKind::File(path),
        interval: Some(interval),
    }))
}

const REST_HINTS: &[(&str, &str)] = &[
    ("host", "ma1sd's REST backend (one call per lookup) is not supported: mxisd pulls pages of users from rest.sync.url (see README, Identity sources)"),
    ("endpoints", "ma1sd's REST backend (one call per lookup) is not supported: mxisd pulls pages of users from rest.sync.url (see README, Identity sources)"),
];

/// `rest`: an organisation's web service listing its users, pulled every
/// `rest.sync.interval`.
fn read_rest_source(s: &Section<'_, '_>) -> Option<Option<crate::sync::SourceConfig>> {
    let enabled = s.bool("enabled").unwrap_or(false);
    let sync = s.section("sync");
    let url = sync.string("url");
    let interval = sync
        .duration("interval")
        .unwrap_or(Duration::from_secs(900));
    let timeout = sync.duration("timeout").unwrap_or(Duration::from_secs(60));
    let max_page = sync.size("maxPageSize").unwrap_or(64 << 20);
    let token = sync.secret("token");
    let username = sync.string("username");
    let password = sync.secret("password");
    sync.finish(&[]);
    s.finish(REST_HINTS);
    if !enabled {
        return Some(None);
    }
    let url = match url {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u,
        Some(u) => {
            sync.problem("url", format!("{u:?} must be an http(s) URL"));
            return None;
        }
        None => {
            sync.problem(
                "url",
                "required when rest.enabled is true: where to fetch the users",
            );
            return None;
        }
    };
    let auth = match (token, username, password) {
        (None, None, None) => crate::sync::RestAuth::None,
        (Some(t), None, None) => crate::sync::RestAuth::Bearer(t),
        (None, Some(u), Some(p)) => crate::sync::RestAuth::Basic(u, p),
        _ => {
            sync.problem(
                "token",
                "set either token, or username and password, not a mix",
            );
            return None;
        }
    };
    if interval < Duration::from_secs(1) || timeout.is_zero() {
        sync.problem(
            "interval",
            "interval must be at least 1s and timeout more than 0s",
        );
        return None;
    }
    Some(Some(crate::sync::SourceConfig {
        name: "rest".into(),
        kind: crate::sync::SourceKind::Rest(crate::sync::RestSource {
            url,
            auth,
            timeout,
            max_page: usize::try_from(max_page).unwrap_or(usize::MAX),
        }),
        interval: Some(interval),
    }))
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
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.parse::<u16>().is_err()
        {
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
        for (name, url) in &self.federation.overrides {
            line("federation override", format!("{name} -> {url}"));
        }
        if !self.federation.allowed_cidrs.is_empty() {
            line(
                "outbound.allowedCidr",
                self.federation
                    .allowed_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        line(
            "accounts",
            if self.accounts.allow_only_trust_domains {
                format!("users of {} only", self.matrix.domain)
            } else {
                "users of any homeserver".into()
            },
        );
        line(
            "e-mail",
            match &self.threepid.email.connector {
                threepid::EmailConnector::Smtp(smtp) => format!(
                    "smtp {}:{} ({:?} TLS), from {}",
                    smtp.host, smtp.port, smtp.tls, self.threepid.email.from
                ),
                threepid::EmailConnector::None => "none (messages are dropped)".into(),
            },
        );
        line(
            "sms",
            match &self.threepid.msisdn.connector {
                threepid::SmsConnector::Twilio(t) => format!("twilio via {}", t.base_url),
                threepid::SmsConnector::None => "none (messages are dropped)".into(),
            },
        );
        line(
            "rate limits",
            if self.rate_limit.enabled { "on" } else { "off" }.into(),
        );
        line(
            "terms",
            if self.terms.policies.is_empty() {
                "none".into()
            } else {
                self.terms
                    .policies
                    .iter()
                    .map(|(n, p)| format!("{n} {}", p.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        line(
            "hashing",
            format!(
                "sha256{}, pepper {} chars, rotation {}",
                if self.hashing.allow_none {
                    " + none"
                } else {
                    ""
                },
                self.hashing.pepper_length,
                self.hashing
                    .rotation
                    .map_or_else(|| "off".into(), |d| format!("every {}s", d.as_secs()))
            ),
        );
        line("lookup.maxAddresses", self.lookup.max_addresses.to_string());
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

#[cfg(test)]
mod tests;
