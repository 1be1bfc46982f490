//! The human-readable summary of a loaded [`Config`] for `check-config` and the
//! start-up log: the effective settings, one per line, with secrets left out.

use super::{host_port, threepid, units, Config, LogFormat};

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
        line(
            "server.metrics",
            if s.metrics.enabled {
                host_port(&s.metrics.hostname, s.metrics.port)
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
}
