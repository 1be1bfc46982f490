//! The human-readable summary of a loaded [`Config`] for `check-config` and the
//! start-up log: the effective settings, one per line, with secrets left out; every
//! identity source with what it will really use ([`Config::source_lines`]); and the
//! files the config names that cannot be read now ([`Config::file_problems`]).
//! Each part is a list of lines, so a new check is one more push.

use super::stores::{Dialect, RestAuth, SourceKind, UidKind};
use super::{host_port, threepid, units, Config, LogFormat};
use std::path::Path;
use std::time::Duration;

/// `tls` of `threepid.medium.email.connectors.smtp` in words.
pub fn smtp_tls_words(tls: threepid::SmtpTls) -> &'static str {
    match tls {
        threepid::SmtpTls::None => "no TLS",
        threepid::SmtpTls::Opportunistic => "STARTTLS if offered",
        threepid::SmtpTls::Required => "STARTTLS",
        threepid::SmtpTls::Implicit => "TLS",
    }
}

fn every(interval: Option<Duration>) -> String {
    match interval {
        Some(d) => {
            let s = d.as_secs();
            let text = if s % 86_400 == 0 && s > 0 {
                format!("{}d", s / 86_400)
            } else if s % 3600 == 0 && s > 0 {
                format!("{}h", s / 3600)
            } else if s % 60 == 0 && s > 0 {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            };
            format!("at start, then every {text}")
        }
        None => "at start and on demand (no sync.interval)".into(),
    }
}

/// Why `path` cannot be read as a file now, if it cannot.
fn unreadable_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(format!("{}: {e}", path.display())),
        Ok(m) if m.is_dir() => Some(format!("{}: is a directory, not a file", path.display())),
        Ok(_) => std::fs::File::open(path)
            .err()
            .map(|e| format!("{}: cannot be read: {e}", path.display())),
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
        let c = &s.connections;
        line(
            "server.connections",
            format!(
                "max {}, {} per address (not for {}), idle {}s, headers {}s, body {}s",
                c.max
                    .map_or_else(|| "from the open-file limit".into(), |m| m.to_string()),
                c.per_address,
                if c.per_address_exempt.is_empty() {
                    "none".into()
                } else {
                    c.per_address_exempt
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                c.idle_timeout.as_secs(),
                c.header_timeout.as_secs(),
                c.body_timeout.as_secs()
            ),
        );
        if let Some(tls) = &s.tls {
            line(
                "server.tls.certificate",
                tls.certificate.display().to_string(),
            );
            line("server.tls.key", tls.key.display().to_string());
        }
        if s.admin.enabled {
            line("server.admin.socket", s.admin.socket.display().to_string());
            line(
                "server.admin.group",
                s.admin
                    .group
                    .clone()
                    .unwrap_or_else(|| "(the server's own group)".into()),
            );
            if let Some(tcp) = &s.admin.tcp {
                line(
                    "server.admin (TCP)",
                    format!(
                        "{} (bearer token from {})",
                        host_port(&tcp.hostname, tcp.port),
                        tcp.token_file.display()
                    ),
                );
            }
        } else {
            line("server.admin", "disabled".into());
        }
        for (key, side) in [
            ("server.metrics", &s.metrics),
            ("server.internal", &s.internal),
        ] {
            line(
                key,
                if side.enabled {
                    host_port(&side.hostname, side.port)
                } else {
                    "disabled".into()
                },
            );
        }
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
                    "smtp {}:{} ({}), from {}",
                    smtp.host,
                    smtp.port,
                    smtp_tls_words(smtp.tls),
                    self.threepid.email.from
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
            "login rewrite",
            match self.auth.rewrite.len() {
                0 => "3PID identifiers only".into(),
                n => format!("3PID identifiers and {n} auth.rewrite rule(s)"),
            },
        );
        line(
            "registration policy",
            match &self.register {
                None => "none (registrations are passed on unchecked)".into(),
                Some(p) => format!(
                    "{}{}, {} e-mail pattern(s) and {} domain(s), {} phone pattern(s)",
                    if p.allowed {
                        "open"
                    } else {
                        "listed addresses only"
                    },
                    if p.invite { " or invited" } else { "" },
                    p.email.whitelist.len() + p.email.blacklist.len(),
                    p.email_domains_allowed.len() + p.email_domains_denied.len(),
                    p.msisdn.whitelist.len() + p.msisdn.blacklist.len(),
                ),
            },
        );
        line(
            "3PID invite policy",
            if self.invite_policy.sender_roles.is_empty() {
                "anyone may invite by 3PID".into()
            } else {
                format!(
                    "senders with a role of: {}",
                    self.invite_policy.sender_roles.join(", ")
                )
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
        if self.sync.is_empty() {
            line("identity sources", "none".into());
        }
        for (key, value) in self.source_lines() {
            line(&key, value);
        }
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
}

impl Config {
    /// Every identity source with its effective settings (defaults filled in, secrets
    /// left out), as (label, value) lines.
    pub fn source_lines(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for source in &self.sync {
            let name = &source.name;
            let mut line = |k: &str, v: String| out.push((format!("{name}.{k}"), v));
            match &source.kind {
                SourceKind::Memory(users) => {
                    line("users", format!("{} listed in the config", users.len()))
                }
                SourceKind::File(path) => line("path", path.display().to_string()),
                SourceKind::Rest(rest) => {
                    line("url", rest.url.clone());
                    line(
                        "auth",
                        match &rest.auth {
                            RestAuth::None => "none".into(),
                            RestAuth::Bearer(_) => "bearer token".into(),
                            RestAuth::Basic(user, _) => format!("basic, user {user}"),
                        },
                    );
                    line("timeout", format!("{} s", rest.timeout.as_secs()));
                }
                SourceKind::Ldap(ldap) => {
                    line(
                        "connection",
                        format!(
                            "{}{}",
                            ldap.url,
                            if ldap.starttls { " with STARTTLS" } else { "" }
                        ),
                    );
                    line(
                        "bind",
                        ldap.bind
                            .as_ref()
                            .map_or_else(|| "anonymous".into(), |(dn, _)| dn.clone()),
                    );
                    line("baseDNs", ldap.base_dns.join("; "));
                    line("filter", ldap.filter.clone());
                    line(
                        "attribute.uid",
                        format!(
                            "{}{} (as {})",
                            ldap.uid_attr,
                            ldap.uid_fallback
                                .as_ref()
                                .map_or_else(String::new, |f| format!(", else {f}")),
                            match ldap.uid_kind {
                                UidKind::Localpart => "a localpart",
                                UidKind::Mxid => "a Matrix ID",
                            }
                        ),
                    );
                    line("attribute.name", ldap.name_attr.clone());
                    for (medium, attrs) in &ldap.threepid_attrs {
                        line(&format!("attribute.threepid.{medium}"), attrs.join(", "));
                    }
                    if let Some(domain) = &ldap.active_directory {
                        line("activeDirectory", format!("yes, default domain {domain}"));
                    }
                }
                SourceKind::Sql(sql) => {
                    line(
                        "driver",
                        match sql.dialect {
                            Dialect::Postgres => "PostgreSQL",
                            Dialect::MySql => "MySQL",
                            Dialect::Sqlite => "SQLite",
                        }
                        .into(),
                    );
                    if name == "synapseSql" {
                        line("query", "the Synapse users preset".into());
                    } else {
                        line("query", sql.query.clone());
                    }
                }
            }
            line("sync", every(source.interval));
        }
        out
    }

    /// The files this config names that cannot be read now (a source's file, template
    /// files, pages, TLS certificate and key, CA files, the signing key), one line each.
    /// Files the server creates itself (the signing key on first start) are fine absent.
    pub fn file_problems(&self) -> Vec<String> {
        let mut files: Vec<(String, &Path)> = Vec::new();
        for source in &self.sync {
            match &source.kind {
                SourceKind::File(path) => files.push((format!("{}.path", source.name), path)),
                SourceKind::Ldap(ldap) => {
                    if let Some(ca) = &ldap.ca_file {
                        files.push(("ldap.connection.caFile".into(), ca));
                    }
                }
                _ => {}
            }
        }
        for (medium, templates) in [
            ("email", &self.threepid.email.templates),
            ("msisdn", &self.threepid.msisdn.templates),
        ] {
            for (what, path) in [
                ("session.validation", &templates.validation),
                ("invite", &templates.invite),
                (
                    "session.unbind.notification",
                    &templates.unbind_notification,
                ),
            ] {
                if let Some(p) = path {
                    files.push((
                        format!("threepid.medium.{medium}.generators.template.{what}"),
                        p,
                    ));
                }
            }
        }
        if let threepid::EmailConnector::Smtp(smtp) = &self.threepid.email.connector {
            if let Some(ca) = &smtp.ca_file {
                files.push(("threepid.medium.email.connectors.smtp.caFile".into(), ca));
            }
        }
        for (what, path) in [
            ("success", &self.view.success_page),
            ("failure", &self.view.failure_page),
        ] {
            if let Some(p) = path {
                files.push((format!("view.session.onTokenSubmit.{what}"), p));
            }
        }
        if let Some(tls) = &self.server.tls {
            files.push(("server.tls.certificate".into(), &tls.certificate));
            files.push(("server.tls.key".into(), &tls.key));
        }
        if let Some(tcp) = &self.server.admin.tcp {
            files.push(("server.admin.tokenFile".into(), &tcp.token_file));
        }
        let mut problems: Vec<String> = files
            .into_iter()
            .filter_map(|(key, path)| unreadable_file(path).map(|why| format!("{key}: {why}")))
            .collect();
        // The key store is created on first start; once there, it must be readable.
        if let Ok(entries) = std::fs::read_dir(&self.key.path) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_file() {
                    if let Some(why) = unreadable_file(&path) {
                        problems.push(format!("key.path: {why}"));
                    }
                }
            }
        } else if self.key.path.exists() {
            problems.push(format!(
                "key.path: {}: cannot be listed",
                self.key.path.display()
            ));
        }
        problems
    }
}
