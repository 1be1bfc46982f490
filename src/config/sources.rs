//! The identity sources read from the config itself or from simple places: `memory`
//! (users listed in the config), `file` (a YAML or JSON file of users) and `rest` (an
//! organisation's web service, paged). LDAP and SQL sources live in `stores.rs`.

use super::reader::Section;
use std::time::Duration;

/// ma1sd's `memory` store: users listed in the config, synced at start.
/// `Some(None)`: not enabled; `None`: a problem was reported.
pub(crate) fn read_memory(s: &Section<'_, '_>) -> Option<Option<super::stores::SourceConfig>> {
    let enabled = s.bool("enabled").unwrap_or(false);
    let mut users = Vec::new();
    let mut ok = true;
    for (i, u) in s.list_of_sections("identities").iter().enumerate() {
        let username = u.string("username");
        let display_name = u.string("displayName");
        let roles = u.string_list("roles").unwrap_or_default();
        let password = u.string("password").filter(|p| !p.is_empty());
        if let Some(p) = &password {
            if !p.starts_with("$argon2") {
                u.warning(
                    "password",
                    "is not an argon2 hash ($argon2id$...): this user's password logins are refused (plain-text passwords are never compared)",
                );
            }
        }
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
                    threepids.push(super::stores::ThreePidSpec { medium, address })
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
            Some(username) => users.push(super::stores::UserSpec {
                username,
                display_name,
                threepids,
                roles,
                attributes: Default::default(),
                password,
            }),
            None => {
                s.problem(&format!("identities[{i}].username"), "required");
                ok = false;
            }
        }
    }
    s.ignored("hashEnabled", "ignored: every binding is in the hash index");
    s.finish(&[]);
    ok.then_some(enabled.then(|| super::stores::SourceConfig {
        name: "memory".into(),
        kind: super::stores::SourceKind::Memory(users),
        interval: None,
    }))
}

/// `file`: users in a YAML or JSON file (the `memory.identities` shape), re-read every
/// `file.sync.interval`.
pub(crate) fn read_file_source(s: &Section<'_, '_>) -> Option<Option<super::stores::SourceConfig>> {
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
    Some(Some(super::stores::SourceConfig {
        name: "file".into(),
        kind: super::stores::SourceKind::File(path),
        interval: Some(interval),
    }))
}

const REST_LOOKUP_HINT: &str = "ignored: ma1sd's REST lookups (one call per lookup) are not used; mxisd pulls pages of users from rest.sync.url (see README, Identity sources)";

/// `rest`: an organisation's web service listing its users, pulled every
/// `rest.sync.interval`.
pub(crate) fn read_rest_source(s: &Section<'_, '_>) -> Option<Option<super::stores::SourceConfig>> {
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
    let host = s.string("host");
    let endpoints = s.section("endpoints");
    let auth_path = endpoints.string("auth").filter(|p| !p.is_empty());
    for key in ["directory", "identity", "profile"] {
        endpoints.ignored(key, REST_LOOKUP_HINT);
    }
    endpoints.finish(&[]);
    s.finish(&[]);
    let auth_url = match (auth_path, host) {
        (None, _) => None,
        (Some(p), _) if p.starts_with("https://") || p.starts_with("http://") => Some(p),
        (Some(p), Some(h)) if h.starts_with("https://") || h.starts_with("http://") => Some(
            format!("{}/{}", h.trim_end_matches('/'), p.trim_start_matches('/')),
        ),
        (Some(_), _) => {
            s.problem(
                "host",
                "rest.endpoints.auth is a path: rest.host must be the backend's http(s) base URL",
            );
            return None;
        }
    };
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
        (None, None, None) => super::stores::RestAuth::None,
        (Some(t), None, None) => super::stores::RestAuth::Bearer(t),
        (None, Some(u), Some(p)) => super::stores::RestAuth::Basic(u, p),
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
    Some(Some(super::stores::SourceConfig {
        name: "rest".into(),
        kind: super::stores::SourceKind::Rest(super::stores::RestSource {
            url,
            auth_url,
            auth,
            timeout,
            max_page: usize::try_from(max_page).unwrap_or(usize::MAX),
        }),
        interval: Some(interval),
    }))
}
