//! Identity sources synced into mxisd, as data: what `memory`, `file`, `rest`, `ldap`,
//! `sql` and `synapseSql` are configured with ([`SourceConfig`]), and the readers of
//! the `ldap`, `sql` and `synapseSql` sections, with ma1sd's key names where they mean
//! the same thing. What a source fetches is `crate::source`'s; this file only knows
//! what an operator may write and whether it is valid.

use super::reader::{Secret, Section};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    /// How often it runs after the run at start (`None`: only at start and on demand).
    pub interval: Option<Duration>,
}

/// One user as sources describe them (ma1sd's `memory.identities` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// A localpart (made a Matrix ID with `matrix.domain`) or a full Matrix ID.
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub threepids: Vec<ThreePidSpec>,
    /// Group or role membership (kept with the directory entry).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Extra attributes for the directory (department, title...).
    #[serde(default)]
    pub attributes: crate::model::Attributes,
    /// An argon2 hash (PHC string) for password logins (`check_credentials`); never
    /// stored by a sync.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreePidSpec {
    pub medium: String,
    pub address: String,
}

/// Where a source's users come from.
#[derive(Debug, Clone)]
pub enum SourceKind {
    Memory(Vec<UserSpec>),
    File(PathBuf),
    Rest(RestSource),
    Ldap(Box<LdapSource>),
    Sql(SqlSource),
}

/// An organisation's web service listing its users (see README, "Identity sources").
#[derive(Debug, Clone)]
pub struct RestSource {
    pub url: String,
    /// ma1sd's `rest.host` + `rest.endpoints.auth`: where password checks go.
    pub auth_url: Option<String>,
    pub auth: RestAuth,
    pub timeout: Duration,
    /// Largest page read (bytes); a bigger one fails the run.
    pub max_page: usize,
}

#[derive(Debug, Clone)]
pub enum RestAuth {
    None,
    Bearer(Secret),
    Basic(String, Secret),
}

/// How the uid attribute becomes a Matrix ID (`ldap.attribute.uid.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidKind {
    /// A localpart: `@<value>:<matrix.domain>`.
    Localpart,
    /// Already a Matrix ID.
    Mxid,
}

#[derive(Debug, Clone)]
pub struct LdapSource {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    pub starttls: bool,
    /// PEM certificates to trust besides the system's (`connection.caFile`).
    pub ca_file: Option<PathBuf>,
    /// Simple bind; anonymous when absent.
    pub bind: Option<(String, Secret)>,
    pub base_dns: Vec<String>,
    pub filter: String,
    /// `ldap.auth.filter`: which entries may log in (else `filter`).
    pub auth_filter: Option<String>,
    /// The attribute holding each user's uid (`attribute.uid.value`).
    pub uid_attr: String,
    /// Where an entry without `uid_attr` finds its uid instead: set only when
    /// `attribute.uid.value` is left out, so the default (`sAMAccountName`, as in ma1sd)
    /// also works on OpenLDAP and other directories, whose entries have `uid`.
    pub uid_fallback: Option<String>,
    pub uid_kind: UidKind,
    pub name_attr: String,
    /// Medium (`email`, `msisdn`) → attributes holding it.
    pub threepid_attrs: Vec<(String, Vec<String>)>,
    /// Extra attributes kept for the directory.
    pub extra_attrs: Vec<String>,
    /// The attribute listing group membership (`memberOf`), if any.
    pub groups_attr: Option<String>,
    /// Active Directory: the uid is a UPN `login@domain`; the default domain's logins
    /// are plain localparts, others become `login/domain` (as in ma1sd).
    pub active_directory: Option<String>,
    /// `matrix.domain`, for localparts.
    pub domain: String,
    /// Connection, bind and per-page timeout.
    pub timeout: Duration,
    pub page_size: i32,
}

/// An attribute description as LDAP defines it: a name (letters, digits, hyphens,
/// starting with a letter) or a numeric OID, with optional `;options`.
pub fn is_attribute_name(name: &str) -> bool {
    let mut parts = name.split(';');
    let base = parts.next().unwrap_or_default();
    let keystring = base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !base.is_empty()
        && base
            .split('.')
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    (keystring || oid)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// Whether `filter` is a filter ldap3 (and so the server) will accept.
pub fn is_valid_filter(filter: &str) -> bool {
    ldap3::parse_filter(filter).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

#[derive(Debug, Clone)]
pub struct SqlSource {
    pub dialect: Dialect,
    /// sqlx connection URL (may hold a password: never logged).
    pub url: Secret,
    pub query: String,
    /// `matrix.domain`, for localparts.
    pub domain: String,
    /// For the whole run (connect and read).
    pub timeout: Duration,
    /// Most rows read; more fails the run.
    pub max_rows: u64,
    /// `auth`: password checks against hashes in the database.
    pub auth: Option<SqlAuth>,
}

/// `sql.auth` / `synapseSql.auth`: a query with one parameter (the user) returning the
/// user's password hash in its first column: bcrypt (`$2a$`, `$2b$`, `$2y$`, Synapse's)
/// or argon2 (`$argon2id$...`).
#[derive(Debug, Clone)]
pub struct SqlAuth {
    pub query: String,
    /// The parameter is the full Matrix ID (`mxid`), else the localpart.
    pub by_mxid: bool,
    /// Appended to the password before checking, as Synapse's `password_config.pepper`.
    pub pepper: Option<Secret>,
    /// NFKC-normalise the password first, as Synapse does (`synapseSql`).
    pub normalize: bool,
}

/// The password query of the `synapseSql` preset.
pub fn synapse_auth_query(dialect: Dialect) -> String {
    let param = match dialect {
        Dialect::Postgres => "$1",
        _ => "?",
    };
    format!(
        "SELECT password_hash FROM users WHERE name = {param} AND COALESCE(deactivated, 0) = 0 AND password_hash IS NOT NULL"
    )
}

/// The users query of the `synapseSql` preset: active, non-guest, non-appservice users
/// with their display name and 3PIDs.
pub fn synapse_query(dialect: Dialect) -> String {
    // `profiles.user_id` is the localpart.
    let localpart = match dialect {
        Dialect::Postgres => "split_part(substr(u.name, 2), ':', 1)",
        _ => "substr(u.name, 2, instr(u.name, ':') - 2)",
    };
    format!(
        "SELECT u.name AS mxid, p.displayname AS display_name, t.medium AS medium, t.address AS address \
         FROM users u \
         LEFT JOIN profiles p ON p.user_id = {localpart} \
         LEFT JOIN user_threepids t ON t.user_id = u.name \
         WHERE COALESCE(u.deactivated, 0) = 0 AND COALESCE(u.is_guest, 0) = 0 AND u.appservice_id IS NULL"
    )
}

/// ma1sd's `type` + `connection` (JDBC style: `//host/db?user=..&password=..`, or a
/// SQLite file path) or a URL, as an sqlx URL.
pub fn connection_url(
    kind: &str,
    connection: &str,
    base_dir: &std::path::Path,
) -> Result<(Dialect, String), String> {
    let dialect = match kind {
        "postgresql" | "postgres" => Dialect::Postgres,
        "mysql" | "mariadb" => Dialect::MySql,
        "sqlite" => Dialect::Sqlite,
        other => {
            return Err(format!(
                "{other:?} is not a supported type: use postgresql, mysql, mariadb or sqlite"
            ))
        }
    };
    let scheme = match dialect {
        Dialect::Postgres => "postgres",
        Dialect::MySql => "mysql",
        Dialect::Sqlite => "sqlite",
    };
    let connection = connection.trim();
    if dialect == Dialect::Sqlite {
        let path = connection
            .strip_prefix("sqlite://")
            .or_else(|| connection.strip_prefix("sqlite:"))
            .unwrap_or(connection);
        let (path, _) = path.split_once('?').unwrap_or((path, ""));
        if path.is_empty() {
            return Err("give the SQLite database file".into());
        }
        let path = base_dir.join(path);
        // Read-only: a sync never writes to the source.
        return Ok((dialect, format!("sqlite://{}?mode=ro", path.display())));
    }
    let rest = if let Some(rest) = connection.strip_prefix("//") {
        rest.to_owned()
    } else if let Some((given, rest)) = connection.split_once("://") {
        let ok = match dialect {
            Dialect::Postgres => given == "postgres" || given == "postgresql",
            _ => given == "mysql" || given == "mariadb",
        };
        if !ok {
            return Err(format!("a {scheme} connection cannot use {given}://"));
        }
        rest.to_owned()
    } else {
        return Err("give //host[:port]/database[?user=..&password=..] or a URL".into());
    };
    let mut url = url::Url::parse(&format!("{scheme}://{rest}"))
        .map_err(|e| format!("not a valid connection: {e}"))?;
    // JDBC puts credentials in the query; sqlx wants them in the URL.
    let mut user = None;
    let mut password = None;
    let mut kept = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "user" => user = Some(v.into_owned()),
            "password" => password = Some(v.into_owned()),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if user.is_some() || password.is_some() {
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        if let Some(u) = user {
            url.set_username(&u)
                .map_err(|_| "the connection has no host".to_owned())?;
        }
        if let Some(p) = password {
            url.set_password(Some(&p))
                .map_err(|_| "the connection has no host".to_owned())?;
        }
    }
    Ok((dialect, url.to_string()))
}

const DEFAULT_EMAIL_ATTRS: &[&str] = &["mailPrimaryAddress", "mail", "otherMailbox"];
const DEFAULT_MSISDN_ATTRS: &[&str] = &[
    "telephoneNumber",
    "mobile",
    "homePhone",
    "otherTelephone",
    "otherMobile",
    "otherHomePhone",
];

fn interval(sync: &Section<'_, '_>, default: Duration) -> Option<Duration> {
    let every = sync.duration("interval").unwrap_or(default);
    if every < Duration::from_secs(1) {
        sync.problem("interval", "must be at least 1s");
        return None;
    }
    Some(every)
}

/// An attribute name from the config, checked against the LDAP grammar (it goes into
/// the search request and the default filter).
fn attribute(s: &Section<'_, '_>, key: &str, default: Option<&str>) -> Option<Option<String>> {
    match s.string(key).or_else(|| default.map(str::to_owned)) {
        Some(a) if is_attribute_name(&a) => Some(Some(a)),
        Some(a) => {
            s.problem(key, format!("{a:?} is not an LDAP attribute name"));
            None
        }
        None => Some(None),
    }
}

fn attribute_list(s: &Section<'_, '_>, key: &str, default: &[&str]) -> Option<Vec<String>> {
    let list = s
        .string_list(key)
        .unwrap_or_else(|| default.iter().map(|a| (*a).to_owned()).collect());
    let bad: Vec<&String> = list.iter().filter(|a| !is_attribute_name(a)).collect();
    if bad.is_empty() {
        Some(list)
    } else {
        s.problem(key, format!("{bad:?}: not LDAP attribute names"));
        None
    }
}

/// Why an explicit uid attribute is suspect without `activeDirectory`: it exists only in
/// Active Directory (elsewhere no entry has it and the source lists nobody), or its
/// values are UPNs, which only `activeDirectory` makes localparts of.
fn ad_only_uid(attr: &str) -> Option<String> {
    if attr.eq_ignore_ascii_case("sAMAccountName") {
        Some(format!(
            "{attr} exists only in Active Directory: on OpenLDAP and other directories no entry has it and the source lists nobody. \
             Set your directory's login attribute (usually uid), or leave attribute.uid.value out \
             (sAMAccountName where entries have it, else uid)"
        ))
    } else if attr.eq_ignore_ascii_case("userPrincipalName") {
        Some(format!(
            "{attr} values are login@domain, which is no Matrix localpart unless activeDirectory is true \
             (with defaultDomain); without it every entry is skipped"
        ))
    } else {
        None
    }
}

/// `ldap`: an LDAP directory or Active Directory, searched whole every
/// `ldap.sync.interval`. `Some(None)`: not enabled; `None`: a problem was reported.
pub fn read_ldap(s: &Section<'_, '_>, domain: Option<&str>) -> Option<Option<SourceConfig>> {
    let enabled = s.bool("enabled").unwrap_or(false);
    let active_directory = s.bool("activeDirectory").unwrap_or(false);
    let default_domain = s.string("defaultDomain");
    let filter = s.string("filter").unwrap_or_default();

    let c = s.section("connection");
    let host = c.string("host");
    let tls = c.bool("tls").unwrap_or(false);
    let starttls = c.bool("startTls").unwrap_or(false);
    let port = c.port("port").unwrap_or(if tls { 636 } else { 389 });
    let ca_file = c.path("caFile");
    let bind_dn = c.string("bindDn").filter(|d| !d.trim().is_empty());
    let bind_password = c.secret("bindPassword");
    let mut base_dns = c.string_list("baseDNs").unwrap_or_default();
    base_dns.extend(c.string("baseDn"));
    base_dns.retain(|b| !b.trim().is_empty());
    let timeout = c.duration("timeout").unwrap_or(Duration::from_secs(30));
    let page_size = c.u64("pageSize").unwrap_or(500);
    c.finish(&[]);

    let a = s.section("attribute");
    let uid = a.section("uid");
    let uid_kind = match uid.string("type").as_deref() {
        None | Some("uid") | Some("localpart") => Some(UidKind::Localpart),
        Some("mxid") => Some(UidKind::Mxid),
        Some(other) => {
            uid.problem("type", format!("{other:?} must be uid or mxid"));
            None
        }
    };
    // Left out: Active Directory's login name, or `uid` for entries without one (the
    // rest of the world); with activeDirectory, the UPN that mode maps.
    let uid_given = !uid.string_is_absent("value");
    let uid_default = if active_directory {
        "userPrincipalName"
    } else {
        "sAMAccountName"
    };
    let uid_attr = attribute(&uid, "value", Some(uid_default));
    let uid_fallback = (!uid_given && !active_directory).then(|| "uid".to_owned());
    if let (true, false, Some(Some(attr))) = (uid_given, active_directory, &uid_attr) {
        if let Some(why) = ad_only_uid(attr) {
            uid.warning("value", why);
        }
    }
    uid.finish(&[]);
    let name_attr = attribute(&a, "name", Some("displayName"));
    let groups_attr = attribute(&a, "groups", None);
    let tp = a.section("threepid");
    let mut threepid_attrs = Vec::new();
    let mut ok = true;
    let given = tp.keys();
    for medium in ["email", "msisdn"] {
        let default = if medium == "email" {
            DEFAULT_EMAIL_ATTRS
        } else {
            DEFAULT_MSISDN_ATTRS
        };
        // A medium left out of a configured map is not synced.
        let default: &[&str] = if given.is_empty() { default } else { &[] };
        match attribute_list(&tp, medium, default) {
            Some(list) if !list.is_empty() => threepid_attrs.push((medium.to_owned(), list)),
            Some(_) => {}
            None => ok = false,
        }
    }
    for other in given.iter().filter(|m| *m != "email" && *m != "msisdn") {
        tp.ignored(
            other,
            "ignored: only email and msisdn addresses become lookups",
        );
    }
    tp.finish(&[]);
    a.finish(&[]);

    let identity = s.section("identity");
    let identity_filter = identity.string("filter");
    identity.ignored(
        "token",
        "ignored: mxisd syncs the directory instead of querying it per lookup",
    );
    identity.ignored(
        "medium",
        "ignored: mxisd syncs the directory instead of querying it per lookup",
    );
    identity.ignored(
        "lookup",
        "ignored: every synced address is in the hash index",
    );
    identity.finish(&[]);
    let directory = s.section("directory");
    directory.ignored("filter", "ignored: search runs on the synced entries");
    let directory_attrs = directory.section("attribute");
    let extra_attrs = attribute_list(&directory_attrs, "other", &[]);
    directory_attrs.finish(&[]);
    directory.finish(&[]);
    let auth = s.section("auth");
    let auth_filter = auth.string("filter").filter(|f| !f.trim().is_empty());
    auth.finish(&[]);
    if let Some(f) = &auth_filter {
        if !is_valid_filter(f) {
            s.problem(
                "auth.filter",
                "not a valid LDAP filter (RFC 4515: parenthesised, with special characters escaped)",
            );
        }
    }
    s.ignored(
        "profile",
        "ignored: profiles are answered from the synced entries",
    );
    let sync = s.section("sync");
    let every = interval(&sync, Duration::from_secs(900));
    sync.finish(&[]);
    s.finish(&[]);
    if !enabled {
        return Some(None);
    }

    let Some(host) = host.filter(|h| !h.trim().is_empty()) else {
        c.problem("host", "required when ldap.enabled is true");
        return None;
    };
    if tls && starttls {
        c.problem("startTls", "set either tls (LDAPS) or startTls, not both");
        return None;
    }
    if base_dns.is_empty() {
        c.problem("baseDNs", "required: the subtrees holding the users");
        return None;
    }
    let bind = match (bind_dn, bind_password) {
        (Some(dn), Some(pw)) if !pw.expose().is_empty() => Some((dn, pw)),
        (None, None) => None,
        (None, Some(p)) if p.expose().is_empty() => None,
        _ => {
            c.problem(
                "bindDn",
                "give both bindDn and bindPassword (an empty password would be an unauthenticated bind), or neither for an anonymous bind",
            );
            return None;
        }
    };
    let default_domain = match (active_directory, default_domain) {
        (true, Some(d)) if !d.trim().is_empty() => Some(d.trim().to_owned()),
        (true, _) => {
            s.problem(
                "defaultDomain",
                "required with activeDirectory: the UPN domain whose users get plain localparts",
            );
            return None;
        }
        (false, _) => None,
    };
    if page_size == 0 || page_size > 10_000 {
        c.problem("pageSize", "must be between 1 and 10000");
        return None;
    }
    if timeout.is_zero() {
        c.problem("timeout", "must be more than 0s");
        return None;
    }
    let (uid_kind, Some(uid_attr), Some(name_attr), groups_attr, Some(extra_attrs), every) = (
        uid_kind?,
        uid_attr?,
        name_attr?,
        groups_attr?,
        extra_attrs,
        every?,
    ) else {
        return None;
    };
    if !ok {
        return None;
    }
    if default_domain.is_some() && uid_kind == UidKind::Mxid {
        a.section("uid")
            .problem("type", "must be uid with activeDirectory");
        return None;
    }
    let filter = identity_filter
        .filter(|f| !f.trim().is_empty())
        .or(Some(filter).filter(|f| !f.trim().is_empty()))
        .map(|f| f.trim().to_owned())
        .unwrap_or_else(|| match &uid_fallback {
            Some(other) => format!("(|({uid_attr}=*)({other}=*))"),
            None => format!("({uid_attr}=*)"),
        });
    if !is_valid_filter(&filter) {
        s.problem(
            "filter",
            "not a valid LDAP filter (RFC 4515: parenthesised, with special characters escaped as \\2a, \\28, \\29, \\5c)",
        );
        return None;
    }
    let host = host.trim();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let scheme = if tls { "ldaps" } else { "ldap" };
    Some(Some(SourceConfig {
        name: "ldap".into(),
        kind: SourceKind::Ldap(Box::new(LdapSource {
            url: format!("{scheme}://{host}:{port}"),
            starttls,
            ca_file,
            bind,
            base_dns,
            filter,
            uid_attr,
            uid_fallback,
            auth_filter,
            uid_kind,
            name_attr,
            threepid_attrs,
            extra_attrs,
            groups_attr,
            active_directory: default_domain,
            domain: domain.unwrap_or_default().to_owned(),
            timeout,
            page_size: i32::try_from(page_size).unwrap_or(500),
        })),
        interval: Some(every),
    }))
}

/// `sql` (a query over any database) and `synapseSql` (Synapse's own database).
pub fn read_sql(
    s: &Section<'_, '_>,
    name: &str,
    domain: Option<&str>,
) -> Option<Option<SourceConfig>> {
    let synapse = name == "synapseSql";
    let enabled = s.bool("enabled").unwrap_or(false);
    let kind = s.string("type");
    let connection = s.secret("connection");
    let lookup = s.section("lookup");
    let lookup_query = lookup.string("query");
    lookup.finish(&[]);
    let sync = s.section("sync");
    let query = sync.string("query");
    let every = interval(&sync, Duration::from_secs(900));
    let timeout = sync.duration("timeout").unwrap_or(Duration::from_secs(60));
    let max_rows = sync.u64("maxRows").unwrap_or(10_000_000);
    sync.finish(&[]);
    let auth = s.section("auth");
    let auth_enabled = auth.bool("enabled");
    let auth_query = auth.string("query").filter(|q| !q.trim().is_empty());
    let auth_type = auth.string("type");
    let pepper = auth.secret("pepper");
    auth.finish(&[]);
    for key in ["identity", "directory"] {
        s.ignored(
            key,
            "ignored: mxisd syncs the users with sync.query and answers from the synced entries",
        );
    }
    s.ignored(
        "profile",
        "ignored: mxisd syncs the users with sync.query (add a role column to it for roles) and answers from the synced entries",
    );
    if synapse {
        s.ignored(
            "legacyRoomNames",
            "ignored: room names are not read from Synapse",
        );
    }
    s.finish(&[]);
    if !enabled {
        return Some(None);
    }
    let every = every?;
    let Some(kind) = kind else {
        s.problem("type", "required: postgresql, mysql, mariadb or sqlite");
        return None;
    };
    let Some(connection) = connection else {
        s.problem("connection", "required: where the database is");
        return None;
    };
    let (dialect, url) = match connection_url(
        &kind.to_ascii_lowercase(),
        connection.expose(),
        &s.resolve(std::path::Path::new("")),
    ) {
        Ok(v) => v,
        Err(why) => {
            s.problem("connection", why);
            return None;
        }
    };
    if synapse && dialect == Dialect::MySql {
        s.problem("type", "Synapse's database is PostgreSQL or SQLite");
        return None;
    }
    let query = match (query, lookup_query) {
        (Some(q), _) | (None, Some(q)) if !q.trim().is_empty() => q,
        _ if synapse => synapse_query(dialect),
        _ => {
            sync.problem(
                "query",
                "required: a query returning mxid (or uid), display_name, medium and address",
            );
            return None;
        }
    };
    if timeout.is_zero() || max_rows == 0 {
        sync.problem("timeout", "timeout and maxRows must be more than 0");
        return None;
    }
    let by_mxid = match auth_type.as_deref() {
        None => synapse,
        Some("mxid") => true,
        Some("localpart" | "uid") => false,
        Some(_) => {
            auth.problem("type", "must be mxid or localpart");
            return None;
        }
    };
    let auth = match (auth_enabled, auth_query) {
        (Some(false), _) => None,
        (_, Some(query)) => Some(query),
        (Some(true), None) if synapse => Some(synapse_auth_query(dialect)),
        (Some(true), None) => {
            auth.problem(
                "query",
                "required: a query returning the user's password hash",
            );
            return None;
        }
        (None, None) => None,
    }
    .map(|query| SqlAuth {
        query,
        by_mxid,
        pepper,
        normalize: synapse,
    });
    Some(Some(SourceConfig {
        name: name.to_owned(),
        kind: SourceKind::Sql(SqlSource {
            dialect,
            url: Secret::new(url),
            query,
            domain: domain.unwrap_or_default().to_owned(),
            timeout,
            max_rows,
            auth,
        }),
        interval: Some(every),
    }))
}
