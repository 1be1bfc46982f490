//! Configuration: the YAML file (mxisd/ma1sd key names) → a validated [`Config`].
//! Loading collects every problem with its key path, so `check-config` can list them all
//! at once; unknown keys are errors, not silence. Secrets never appear in `Debug` output
//! or in the summary.
//!
//! Each section's types, reader and hints live in a submodule (`server`, `matrix`,
//! `storage`, ...); this file holds the [`Config`] root, the loader entry points and
//! `build`, which reads every section and assembles the result. Section types are
//! re-exported here, so `config::ServerConfig` is their one path.

mod accounts;
mod directory;
mod federation;
mod hashing;
mod logging;
mod matrix;
pub mod policy;
pub mod reader;
pub mod recursion;
mod server;
mod sources;
mod storage;
pub mod stores;
mod summary;
pub mod threepid;
pub mod units;

pub use accounts::{AccountsConfig, Policy, TermsConfig};
pub use directory::DirectoryConfig;
pub use directory::DEFAULT_SEARCH_CACHE;
pub use federation::FederationConfig;
pub use hashing::{HashingConfig, LookupConfig};
pub use logging::{LogFormat, LoggingConfig};
pub use matrix::MatrixConfig;
pub use server::{
    host_port, AdminConfig, AdminTcp, ConnectionsConfig, MetricsConfig, ServerConfig, TlsConfig,
};
pub use storage::{KeyConfig, StorageConfig};

use reader::{Ctx, Section};
use std::path::{Path, PathBuf};

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
    pub sync: Vec<stores::SourceConfig>,
    pub directory: DirectoryConfig,
    /// `auth.rewrite`: login names taken as 3PIDs.
    pub auth: policy::AuthConfig,
    /// `register.policy`; None: registration is not restricted.
    pub register: Option<policy::RegisterPolicy>,
    /// `invite.policy`: who may send 3PID invites.
    pub invite_policy: policy::InvitePolicy,
    /// Keys accepted for compatibility that have no effect, with why.
    pub warnings: Vec<String>,
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
    ("notification", "notifications are not supported by this version of mxisd yet"),
    ("appsvc", "the application service is not supported by this version of mxisd yet"),
    ("internal", "ma1sd's internal endpoints do not exist in mxisd; operator commands use the admin listener (server.admin)"),
];

/// ma1sd's sections for features mxisd does not have: accepted with a note when they
/// are off, refused by name when they ask for the feature.
fn absent_features(root: &Section<'_, '_>) {
    root.absent_feature("netiq", "the NetIQ identity store", &[]);
    root.absent_feature(
        "exec",
        "the exec identity store (use the rest source or a file source)",
        &[],
    );
    root.absent_feature("firebase", "the Firebase identity store", &[]);
    root.absent_feature(
        "wordpress",
        "the WordPress identity store (use the sql source on its database)",
        &[],
    );
    root.absent_feature(
        "notification",
        "a notification handler other than raw (SendGrid)",
        &[("handler.email", "raw"), ("handler.msisdn", "raw")],
    );
    root.absent_feature("appsvc", "the application service", &[]);
    root.absent_feature(
        "internal",
        "ma1sd's internal endpoints (operator commands use the admin socket, server.admin)",
        &[],
    );
}

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
    absent_features(&root);
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
    let matrix = matrix::read_matrix(&root.section("matrix"));
    let storage = storage::read_storage(&root.section("storage"));
    let server = server::read_server(
        &root.section("server"),
        matrix.as_ref().map(|m| m.domain.as_str()),
        storage.as_ref().map(|s| s.path.as_path()),
    );
    let key = storage::read_key(&root.section("key"), storage.as_ref());
    let logging = logging::read_logging(&root.section("logging"));
    let federation = federation::read_federation(&root.section("dns"), &root.section("outbound"));
    let accounts = accounts::read_accounts(&root.section("accountConfig"));
    let terms = accounts::read_terms(&root.section("policy"));
    let hashing = hashing::read_hashing(&root.section("hashing"));
    let no_servers = Vec::new();
    let lookup = hashing::read_lookup(
        &root.section("lookup"),
        &root.section("forward"),
        &root.section("federation"),
        matrix.as_ref().map_or(&no_servers, |m| &m.identity_servers),
    );
    let threepid = threepid::read_threepid(
        &root.section("threepid"),
        matrix.as_ref().map(|m| m.domain.as_str()),
    );
    let session = threepid::read_session(&root.section("session"));
    let view = threepid::read_view(&root.section("view"));
    let rate_limit = threepid::read_rate_limit(&root.section("rateLimit"));
    let invite_section = root.section("invite");
    let invite = threepid::read_invite(&invite_section);
    let invite_policy = policy::read_invite_policy(&invite_section.section("policy"));
    let auth = policy::read_auth(&root.section("auth"));
    let register = policy::read_register(&root.section("register"));
    let directory = directory::read_directory(&root.section("directory"));
    let mut sync = Vec::new();
    let memory = sources::read_memory(&root.section("memory"));
    let file = sources::read_file_source(&root.section("file"));
    let rest = sources::read_rest_source(&root.section("rest"));
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
        auth,
        register,
        invite_policy,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
