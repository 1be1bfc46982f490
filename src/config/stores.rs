//! Identity stores synced into mxisd: `ldap`, `sql` and `synapseSql`, with ma1sd's key
//! names where they mean the same thing. Each becomes a [`SourceConfig`].

use super::reader::{Secret, Section};
use crate::sync::ldap::{is_attribute_name, is_valid_filter, LdapSource, UidKind};
use crate::sync::sql::{connection_url, synapse_query, SqlSource};
use crate::sync::{SourceConfig, SourceKind};
use std::time::Duration;

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
    let uid_attr = attribute(&uid, "value", Some("saMAccountName"));
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
    for flow in ["auth", "profile"] {
        s.ignored(
            flow,
            "ignored: mxisd answers from the synced entries and does not check passwords against LDAP",
        );
    }
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
        .unwrap_or_else(|| format!("({uid_attr}=*)"));
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
    for key in ["identity", "auth", "directory", "profile"] {
        s.ignored(
            key,
            "ignored: mxisd syncs the users with sync.query and answers from the synced entries",
        );
    }
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
    if synapse && dialect == crate::sync::sql::Dialect::MySql {
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
    Some(Some(SourceConfig {
        name: name.to_owned(),
        kind: SourceKind::Sql(SqlSource {
            dialect,
            url: Secret::new(url),
            query,
            domain: domain.unwrap_or_default().to_owned(),
            timeout,
            max_rows,
        }),
        interval: Some(every),
    }))
}
