//! ma1sd's YAML → ours. Keys our loader reads are carried over as they are; the keys it
//! does not use (unknown here, or ma1sd's without a use here) and the keys it accepts
//! without effect are dropped, each with the loader's own reason; ma1sd settings whose
//! meaning changed (storage, key store, hashing switches, the default bind address) are
//! rewritten with a note. Relative file paths are made absolute against ma1sd's config
//! directory, because the output lives elsewhere. Which keys are unused, ignored or
//! paths comes from the loader's trace, so this module never keeps its own list.

use crate::config::reader::Secret;
use crate::config::{self, Config};
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

mod key_path;

use key_path::{get_at_mut, get_path, locate, parse, remove_path, scalar_at, set_path};

/// Where ma1sd kept its key store (`key.path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `:memory:`: keys that died with the process; nothing to carry over.
    Memory,
    Path(PathBuf),
}

/// ma1sd's own database (`storage.backend` + `storage.provider.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSource {
    /// `:memory:`: nothing survived ma1sd's last stop.
    Memory,
    Sqlite(PathBuf),
    Postgres {
        /// JDBC form without the `jdbc:postgresql:` prefix: `//host[:port]/db`.
        database: String,
        username: Option<String>,
        password: Option<Secret>,
    },
}

/// The result of translating one file.
#[derive(Debug, Default)]
pub struct Translation {
    /// Our YAML (with a header comment); empty when `problems` is not.
    pub yaml: String,
    /// The produced config as our loader reads it.
    pub config: Option<Config>,
    /// Keys left out, with why.
    pub dropped: Vec<(String, String)>,
    /// Keys rewritten or added, with what was done.
    pub changed: Vec<(String, String)>,
    /// Everything that stops the import, one line each.
    pub problems: Vec<String>,
    pub keys: Option<KeySource>,
    pub db: Option<DbSource>,
}

/// Translates ma1sd's config text. `their_dir` resolves their relative paths; `storage`
/// is our `storage.path`; `output` is where our file will be (its directory resolves
/// nothing, since every path written is absolute, but the loader wants one).
pub fn translate(
    text: &str,
    their_name: &str,
    their_dir: &Path,
    storage: &Path,
    output: &Path,
) -> Translation {
    let mut t = Translation::default();
    let mut tree: Value = match serde_yaml_ng::from_str(text) {
        Ok(Value::Mapping(m)) => Value::Mapping(m),
        Ok(Value::Null) => Value::Mapping(Mapping::new()),
        Ok(_) => {
            t.problems.push(format!(
                "{their_name}: the configuration must be a YAML mapping"
            ));
            return t;
        }
        Err(e) => {
            t.problems
                .push(format!("{their_name}: not valid YAML: {e}"));
            return t;
        }
    };
    let problem = |t: &mut Translation, key: &str, why: String| {
        t.problems.push(format!("{their_name}: {key}: {why}"));
    };

    // What the import needs from ma1sd's settings, before they are rewritten.
    match scalar_at(&tree, "key.path") {
        Ok(Some(p)) if p == ":memory:" => t.keys = Some(KeySource::Memory),
        Ok(Some(p)) if !p.trim().is_empty() => {
            t.keys = Some(KeySource::Path(absolute(their_dir, &p)));
        }
        Ok(_) => problem(
            &mut t,
            "key.path",
            "required: ma1sd's key store (a directory, or the single key file of mxisd before 1.4)"
                .into(),
        ),
        Err(why) => problem(&mut t, "key.path", why),
    }
    match read_db(&tree, their_dir) {
        Ok(db) => t.db = Some(db),
        Err((key, why)) => problem(&mut t, &key, why),
    }

    rewrite_ma1sd_only(&mut tree, storage, &mut t);

    // Drop what the loader does not use, until it has nothing more to say about keys.
    let output_dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let no_env = |_: &str| None;
    let mut last = None;
    for _ in 0..32 {
        let text = match serde_yaml_ng::to_string(&tree) {
            Ok(s) => s,
            Err(e) => {
                t.problems.push(format!(
                    "{their_name}: cannot re-serialise the configuration: {e}"
                ));
                return t;
            }
        };
        let (result, trace) =
            config::load_str_traced(&text, their_name, their_dir.to_owned(), &no_env);
        let mut removed = false;
        for (key, why) in trace.unused.iter().chain(&trace.ignored) {
            if remove_path(&mut tree, key) {
                removed = true;
                if !t.dropped.iter().any(|(k, _)| k == key) {
                    t.dropped.push((key.clone(), why.clone()));
                }
            }
        }
        if !removed {
            last = Some((result, trace));
            break;
        }
    }
    let Some((result, trace)) = last else {
        t.problems.push(format!(
            "{their_name}: the configuration did not settle; report this"
        ));
        return t;
    };
    if let Err(errors) = result {
        for p in errors.problems {
            t.problems.push(format!("{their_name}: {p}"));
        }
    }

    // Relative paths meant ma1sd's directory; ours is elsewhere.
    for key in &trace.paths {
        absolutise(&mut tree, key, their_dir, &mut t.changed);
    }
    for store in ["sql", "synapseSql"] {
        let is_sqlite = scalar_at(&tree, &format!("{store}.type"))
            .ok()
            .flatten()
            .is_some_and(|k| k.eq_ignore_ascii_case("sqlite"));
        if is_sqlite {
            absolutise(
                &mut tree,
                &format!("{store}.connection"),
                their_dir,
                &mut t.changed,
            );
        }
    }
    if !t.problems.is_empty() {
        return t;
    }

    let body = match serde_yaml_ng::to_string(&tree) {
        Ok(s) => s,
        Err(e) => {
            t.problems.push(format!(
                "{their_name}: cannot serialise the configuration: {e}"
            ));
            return t;
        }
    };
    let yaml = format!(
        "# mxisd configuration, made by `mxisd import-ma1sd` from {their_name}.\n\
         # Check it with `mxisd check-config -c <this file>`; the README's\n\
         # \"Configuration\" section describes every key.\n{body}"
    );
    match config::load_str(&yaml, &output.display().to_string(), output_dir, &no_env) {
        Ok(c) => {
            t.config = Some(c);
            t.yaml = yaml;
        }
        Err(errors) => {
            for p in errors.problems {
                t.problems
                    .push(format!("the produced configuration would not load: {p}"));
            }
        }
    }
    t
}

/// ma1sd settings whose meaning changed: rewritten, each with a note.
fn rewrite_ma1sd_only(tree: &mut Value, storage: &Path, t: &mut Translation) {
    let note = |t: &mut Translation, key: &str, what: String| t.changed.push((key.into(), what));
    let storage_note = match &t.db {
        Some(DbSource::Sqlite(p)) => format!("ma1sd's SQLite database {}", p.display()),
        Some(DbSource::Postgres { database, .. }) => {
            format!("ma1sd's PostgreSQL database {database}")
        }
        Some(DbSource::Memory) => "ma1sd's in-memory database (nothing to import)".into(),
        None => "ma1sd's database".into(),
    };
    let storage_str = storage.display().to_string();
    let keys_str = storage.join("keys").display().to_string();
    if let Value::Mapping(root) = tree {
        root.insert(
            "storage".into(),
            Value::Mapping(Mapping::from_iter([(
                Value::from("path"),
                Value::from(storage_str.clone()),
            )])),
        );
    }
    note(
        t,
        "storage",
        format!("set to path: {storage_str}; {storage_note} is imported into its store (storage.backend and storage.provider are ma1sd's and go)"),
    );
    let their_key = match &t.keys {
        Some(KeySource::Path(p)) => p.display().to_string(),
        Some(KeySource::Memory) => ":memory:".into(),
        None => "(none)".into(),
    };
    set_path(tree, &["key", "path"], Value::from(keys_str.clone()));
    note(
        t,
        "key.path",
        format!("{their_key} -> {keys_str} (the signing key is copied there)"),
    );

    // Defaults that differ: say what clients will see change.
    if get_path(tree, "matrix.v2").is_none() {
        note(
            t,
            "matrix.v2",
            "not set, so ma1sd served the v1 API only; mxisd serves v1 and v2".into(),
        );
    }
    if get_path(tree, "hashing.enabled").is_none() {
        note(
            t,
            "hashing",
            "not enabled in ma1sd (hash_details offered only none); mxisd offers sha256 too".into(),
        );
    }
    if let Some(v) = get_path(tree, "hashing.enabled") {
        let was = v.as_bool().map_or_else(|| "set".into(), |b| b.to_string());
        remove_path(tree, "hashing.enabled");
        t.dropped.push((
            "hashing.enabled".into(),
            format!(
                "was {was}; mxisd always offers hashed lookups (sha256), as the v2 API requires"
            ),
        ));
    }
    if scalar_at(tree, "hashing.rotationPolicy")
        .ok()
        .flatten()
        .as_deref()
        == Some("per_requests")
    {
        remove_path(tree, "hashing.rotationPolicy");
        remove_path(tree, "hashing.requests");
        t.dropped.push((
            "hashing.rotationPolicy".into(),
            "per_requests is not supported (every rotation rehashes all bindings); the pepper stays until `mxisd hashing rotate` or a per_seconds policy".into(),
        ));
    }
    if let Some(n) = scalar_at(tree, "hashing.pepperLength")
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        if n < 16 {
            remove_path(tree, "hashing.pepperLength");
            t.dropped.push((
                "hashing.pepperLength".into(),
                format!("{n} is below mxisd's minimum of 16; the default (32) is used"),
            ));
        }
    }
    if get_path(tree, "matrix.v2").and_then(Value::as_bool) == Some(false) {
        remove_path(tree, "matrix.v2");
        t.dropped.push((
            "matrix.v2".into(),
            "was false; mxisd always serves the v2 API (clients and homeservers need it)".into(),
        ));
    }
    // ma1sd recursed by default (DNS SRV, v1 only); mxisd does not. Keep what ran.
    let recursed = get_path(tree, "lookup.recursive.enabled")
        .map_or(Some(true), Value::as_bool)
        .unwrap_or(false);
    if recursed {
        if get_path(tree, "lookup.recursive.enabled").is_none() {
            set_path(tree, &["lookup", "recursive", "enabled"], Value::from(true));
            note(
                t,
                "lookup.recursive.enabled",
                "set to true: ma1sd recursed by default (mxisd's default is off); lookups from allowedCidr may still go to other identity servers".into(),
            );
        }
        if get_path(tree, "lookup.recursive.v1").is_none() {
            set_path(tree, &["lookup", "recursive", "v1"], Value::from(true));
            note(
                t,
                "lookup.recursive.v1",
                "set to true: ma1sd spoke only v1 to other servers; with lookup.recursive.accessToken mxisd uses v2 where a remote has it".into(),
            );
        }
    }
    if get_path(tree, "server.hostname").is_none() {
        set_path(tree, &["server", "hostname"], Value::from("0.0.0.0"));
        note(
            t,
            "server.hostname",
            "set to 0.0.0.0, where ma1sd listened by default (mxisd's own default is 127.0.0.1; use that if your reverse proxy runs on this host)".into(),
        );
    }
}

/// ma1sd's database settings.
fn read_db(tree: &Value, their_dir: &Path) -> Result<DbSource, (String, String)> {
    let at = |key: &str| scalar_at(tree, key).map_err(|why| (key.to_owned(), why));
    let backend = at("storage.backend")?.unwrap_or_else(|| "sqlite".into());
    match backend.as_str() {
        "sqlite" => match at("storage.provider.sqlite.database")? {
            Some(p) if p == ":memory:" => Ok(DbSource::Memory),
            Some(p) if !p.trim().is_empty() => Ok(DbSource::Sqlite(absolute(their_dir, &p))),
            _ => Err((
                "storage.provider.sqlite.database".into(),
                "required with the sqlite backend: ma1sd's database file".into(),
            )),
        },
        "postgresql" => {
            let database = at("storage.provider.postgresql.database")?
                .filter(|d| !d.trim().is_empty())
                .ok_or_else(|| {
                    (
                        "storage.provider.postgresql.database".to_owned(),
                        "required with the postgresql backend (//host[:port]/database)".to_owned(),
                    )
                })?;
            Ok(DbSource::Postgres {
                database,
                username: at("storage.provider.postgresql.username")?,
                password: at("storage.provider.postgresql.password")?.map(Secret::new),
            })
        }
        other => Err((
            "storage.backend".into(),
            format!("{other:?} is not sqlite or postgresql"),
        )),
    }
}

fn absolute(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path.trim());
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

/// Makes the string at `key` absolute against `dir`, noting it when it changed.
fn absolutise(tree: &mut Value, key: &str, dir: &Path, changed: &mut Vec<(String, String)>) {
    let Some(segments) = locate(tree, &parse(key)) else {
        return;
    };
    let Some(Value::String(s)) = get_at_mut(tree, &segments) else {
        return;
    };
    if Path::new(s.as_str()).is_absolute() || s.contains("://") || s.starts_with("classpath:") {
        return;
    }
    let abs = dir.join(s.as_str()).display().to_string();
    changed.push((
        key.to_owned(),
        format!("{s} -> {abs} (relative to ma1sd's config)"),
    ));
    *s = abs;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Translation {
        translate(
            yaml,
            "ma1sd.yaml",
            Path::new("/etc/ma1sd"),
            Path::new("/var/lib/mxisd"),
            Path::new("/etc/mxisd/mxisd.yaml"),
        )
    }

    const MINIMAL: &str = "matrix:\n  domain: example.org\nkey:\n  path: /var/lib/ma1sd/keys\nstorage:\n  provider:\n    sqlite:\n      database: /var/lib/ma1sd/store.db\n";

    #[test]
    fn a_minimal_ma1sd_config_translates_and_loads() {
        let t = run(MINIMAL);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let c = t.config.unwrap();
        assert_eq!(c.matrix.domain, "example.org");
        assert_eq!(c.storage.path, Path::new("/var/lib/mxisd"));
        assert_eq!(c.key.path, Path::new("/var/lib/mxisd/keys"));
        assert_eq!(c.server.hostname, "0.0.0.0");
        assert_eq!(t.keys, Some(KeySource::Path("/var/lib/ma1sd/keys".into())));
        assert_eq!(
            t.db,
            Some(DbSource::Sqlite("/var/lib/ma1sd/store.db".into()))
        );
        assert!(t.yaml.starts_with("# mxisd configuration"));
        assert!(!t.yaml.contains("provider"));
        let changed: Vec<&str> = t.changed.iter().map(|(k, _)| k.as_str()).collect();
        assert!(changed.contains(&"matrix.v2") && changed.contains(&"hashing"));
    }

    #[test]
    fn password_check_settings_of_ldap_and_rest_are_carried_over() {
        let yaml = format!(
            "{MINIMAL}ldap:\n  enabled: true\n  connection:\n    host: ldap.example.org\n    baseDNs: ['dc=example,dc=org']\n  auth:\n    filter: '(memberOf=cn=matrix,dc=example,dc=org)'\nrest:\n  enabled: true\n  host: https://backend.example.org\n  endpoints:\n    auth: /_ma1sd/backend/api/v1/auth/login\n    identity:\n      single: /_ma1sd/backend/api/v1/identity/single\n  sync:\n    url: https://backend.example.org/users\n"
        );
        let t = run(&yaml);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let dropped: Vec<&str> = t.dropped.iter().map(|(k, _)| k.as_str()).collect();
        assert!(dropped.contains(&"rest.endpoints.identity"), "{dropped:?}");
        assert!(!dropped.iter().any(|k| k.contains("auth")), "{dropped:?}");
        let c = t.config.unwrap();
        for source in &c.sync {
            match &source.kind {
                config::stores::SourceKind::Ldap(l) => assert_eq!(
                    l.auth_filter.as_deref(),
                    Some("(memberOf=cn=matrix,dc=example,dc=org)")
                ),
                config::stores::SourceKind::Rest(r) => assert_eq!(
                    r.auth_url.as_deref(),
                    Some("https://backend.example.org/_ma1sd/backend/api/v1/auth/login")
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(c.sync.len(), 2);
    }

    #[test]
    fn recursion_forward_servers_and_the_session_policy_are_carried_over() {
        // Recursion left at ma1sd's default (on, v1 only), forwarding to a label.
        let yaml = format!(
            "{MINIMAL}matrix:\n  domain: example.org\n  identity:\n    servers:\n      corp: ['https://id.corp.example']\nforward:\n  servers: [corp]\nsession:\n  policy:\n    validation:\n      forRemote:\n        enabled: false\n"
        );
        let yaml = yaml.replacen("matrix:\n  domain: example.org\nkey", "key", 1);
        let t = run(&yaml);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let dropped: Vec<&str> = t.dropped.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            !dropped.iter().any(|k| k.starts_with("forward")
                || k.starts_with("session")
                || k.starts_with("matrix.identity")),
            "{dropped:?}"
        );
        let changed: Vec<&str> = t.changed.iter().map(|(k, _)| k.as_str()).collect();
        assert!(changed.contains(&"lookup.recursive.enabled"), "{changed:?}");
        let c = t.config.unwrap();
        let r = &c.lookup.recursive;
        assert!(r.enabled && r.v1 && r.dns);
        assert_eq!(r.forward, vec!["https://id.corp.example".to_owned()]);
        assert!(c.session.for_local && !c.session.for_remote);

        // Switched off in ma1sd: stays off, nothing added.
        let t = run(&format!(
            "{MINIMAL}lookup:\n  recursive:\n    enabled: false\n"
        ));
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert!(!t.config.unwrap().lookup.recursive.enabled);
        assert!(!t.changed.iter().any(|(k, _)| k.starts_with("lookup")));
    }

    #[test]
    fn login_rewrite_registration_and_invite_policies_are_carried_over() {
        let yaml = format!(
            "{MINIMAL}auth:\n  rewrite:\n    user:\n      rules:\n        - regex: '[0-9]{{10}}'\n          medium: msisdn\nregister:\n  policy:\n    allowed: false\n    invite: true\n    threepid:\n      email:\n        domain:\n          whitelist: ['*example.org']\n        pattern:\n          blacklist: ['root@.*']\n      msisdn:\n        pattern:\n          whitelist: ['33.*']\ninvite:\n  policy:\n    ifSender:\n      hasRole: [staff]\n"
        );
        let t = run(&yaml);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert!(t.dropped.is_empty(), "{:?}", t.dropped);
        let c = t.config.unwrap();
        assert_eq!(c.auth.rewrite.len(), 1);
        assert!(c.auth.rewrite[0].regex.is_match("0612345678"));
        assert!(!c.auth.rewrite[0].regex.is_match("06123456789"));
        let register = c.register.unwrap();
        assert!(!register.allowed && register.invite);
        assert_eq!(
            register.email_domains_allowed,
            vec!["*example.org".to_owned()]
        );
        assert_eq!(register.email.blacklist.len(), 1);
        assert_eq!(register.msisdn.whitelist.len(), 1);
        assert_eq!(c.invite_policy.sender_roles, vec!["staff".to_owned()]);
        // A custom medium cannot be looked up here: the import says so.
        let t = run(&format!(
            "{MINIMAL}auth:\n  rewrite:\n    user:\n      rules:\n        - regex: '[0-9]+'\n          medium: kmx.employee.id\n"
        ));
        assert!(
            t.problems
                .iter()
                .any(|p| p.contains("auth.rewrite.user.rules[0].medium")),
            "{:?}",
            t.problems
        );
    }

    #[test]
    fn ma1sd_only_keys_are_dropped_with_the_loaders_reasons() {
        let yaml = format!(
            "{MINIMAL}  backend: sqlite\nlogging:\n  root: info\n  requests: true\nhashing:\n  enabled: true\n  pepperLength: 20\n  rotationPolicy: per_requests\n  requests: 10\n  hashStorageType: sql\nmatrix_typo: 1\nappsvc:\n  enabled: false\ninternal:\n  enabled: true\nserver:\n  hostname: 127.0.0.1\n  port: 8090\n  name: id.example.org\n"
        );
        let t = run(&yaml);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let dropped: Vec<&str> = t.dropped.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "logging.requests",
            "hashing.enabled",
            "hashing.rotationPolicy",
            "hashing.hashStorageType",
            "matrix_typo",
            "appsvc",
            "internal",
        ] {
            assert!(dropped.contains(&key), "{key} not in {dropped:?}");
        }
        let why = |k: &str| &t.dropped.iter().find(|(d, _)| d == k).unwrap().1;
        assert!(why("logging.requests").contains("never logs request"));
        assert!(why("matrix_typo").contains("unknown key"));
        assert!(why("appsvc").contains("application service"));
        let c = t.config.unwrap();
        assert_eq!(c.server.hostname, "127.0.0.1");
        assert_eq!(c.server.name, "id.example.org");
        assert_eq!(c.hashing.pepper_length, 20);
        assert_eq!(c.logging.root, "info");
        assert!(!t.yaml.contains("requests"));
        assert!(!t.yaml.contains("internal"));
    }

    #[test]
    fn relative_paths_are_resolved_against_ma1sds_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let their = tmp.path();
        std::fs::create_dir_all(their.join("pages")).unwrap();
        std::fs::write(their.join("pages/ok.html"), "<p>ok</p>").unwrap();
        let yaml = "matrix:\n  domain: example.org\nkey:\n  path: keys\nstorage:\n  provider:\n    sqlite:\n      database: data/store.db\nview:\n  session:\n    onTokenSubmit:\n      success: pages/ok.html\n";
        let t = translate(
            yaml,
            "ma1sd.yaml",
            their,
            Path::new("/var/lib/mxisd"),
            Path::new("/etc/mxisd/mxisd.yaml"),
        );
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.keys, Some(KeySource::Path(their.join("keys"))));
        assert_eq!(t.db, Some(DbSource::Sqlite(their.join("data/store.db"))));
        let page = their.join("pages/ok.html");
        assert!(t.yaml.contains(&page.display().to_string()), "{}", t.yaml);
        assert_eq!(t.config.unwrap().view.success_page, Some(page));
        assert!(t
            .changed
            .iter()
            .any(|(k, _)| k == "view.session.onTokenSubmit.success"));
        // A missing file is a problem of the loader's, named with its key.
        let t = run(yaml);
        assert!(
            t.problems
                .iter()
                .any(|p| p.contains("view.session.onTokenSubmit.success")),
            "{:?}",
            t.problems
        );
    }

    #[test]
    fn postgres_settings_are_read_and_never_copied() {
        let yaml = "matrix:\n  domain: example.org\nkey:\n  path: /k\nstorage:\n  backend: postgresql\n  provider:\n    postgresql:\n      database: //db.local:5433/ma1sd\n      username: ma1sd\n      password: s3cret\n      pool: true\n";
        let t = run(yaml);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        match t.db {
            Some(DbSource::Postgres {
                database,
                username,
                password,
            }) => {
                assert_eq!(database, "//db.local:5433/ma1sd");
                assert_eq!(username.as_deref(), Some("ma1sd"));
                assert_eq!(password.unwrap().expose(), "s3cret");
            }
            other => panic!("{other:?}"),
        }
        assert!(!t.yaml.contains("s3cret"));
        assert!(!format!("{:?}", t.changed).contains("s3cret"));
    }

    #[test]
    fn every_problem_is_listed() {
        let yaml = "server:\n  port: lots\nkey: {}\nstorage:\n  backend: oracle\nlookup:\n  bulk:\n    enabled: maybe\n";
        let t = run(yaml);
        let all = t.problems.join("\n");
        assert!(all.contains("key.path: required"), "{all}");
        assert!(all.contains("storage.backend"), "{all}");
        assert!(all.contains("matrix.domain: required"), "{all}");
        assert!(all.contains("server.port"), "{all}");
        assert!(all.contains("lookup.bulk.enabled"), "{all}");
        assert!(t.yaml.is_empty());
        assert!(t.config.is_none());
    }

    #[test]
    fn memory_settings_and_switches() {
        let yaml = "matrix:\n  domain: example.org\n  v2: false\nkey:\n  path: ':memory:'\nstorage:\n  provider:\n    sqlite:\n      database: ':memory:'\nhashing:\n  pepperLength: 8\n";
        let t = run(yaml);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.keys, Some(KeySource::Memory));
        assert_eq!(t.db, Some(DbSource::Memory));
        let dropped: Vec<&str> = t.dropped.iter().map(|(k, _)| k.as_str()).collect();
        assert!(dropped.contains(&"matrix.v2"));
        assert!(dropped.contains(&"hashing.pepperLength"));
        assert_eq!(t.config.unwrap().hashing.pepper_length, 32);
    }

    #[test]
    fn not_yaml_or_not_a_mapping() {
        assert!(run("a: [").problems[0].contains("not valid YAML"));
        assert!(run("- 1\n- 2\n").problems[0].contains("must be a YAML mapping"));
    }
}
