//! E-mail over SMTP with lettre: the rendered template is sent as is (`send_raw`), after
//! the SMTP server accepted the envelope. `tls` follows ma1sd: 0 plain, 1 STARTTLS when
//! offered, 2 STARTTLS required, 3 TLS from the first byte.

use super::template::{self, Vars};
use super::NotifyError;
use crate::config::threepid::{EmailConfig, EmailConnector, SmtpTls};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: lettre::Address,
    /// The `From:` header value, encoded.
    from_header: String,
}

fn from_header(address: &str, name: Option<&str>) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => address.to_owned(),
        Some(n) if n.is_ascii() => {
            let quoted = n.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\" <{address}>")
        }
        Some(n) => format!("{} <{address}>", template::encode_header_value(n)),
    }
}

impl Mailer {
    pub fn new(config: &EmailConfig) -> Result<Self, String> {
        let from: lettre::Address = config
            .from
            .parse()
            .map_err(|e| format!("threepid.medium.email.identity.from: {e}"))?;
        let transport = match &config.connector {
            EmailConnector::None => None,
            EmailConnector::Smtp(smtp) => {
                let extra_roots = match &smtp.ca_file {
                    None => Vec::new(),
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            format!("connectors.smtp.caFile {}: {e}", path.display())
                        })?;
                        vec![Certificate::from_pem(&pem).map_err(|e| {
                            format!("connectors.smtp.caFile {}: {e}", path.display())
                        })?]
                    }
                };
                let tls_params = || {
                    let mut builder = TlsParameters::builder(smtp.host.clone());
                    for cert in &extra_roots {
                        builder = builder.add_root_certificate(cert.clone());
                    }
                    builder
                        .build_rustls()
                        .map_err(|e| format!("SMTP TLS settings for {}: {e}", smtp.host))
                };
                let tls = match smtp.tls {
                    SmtpTls::None => Tls::None,
                    SmtpTls::Opportunistic => Tls::Opportunistic(tls_params()?),
                    SmtpTls::Required => Tls::Required(tls_params()?),
                    SmtpTls::Implicit => Tls::Wrapper(tls_params()?),
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
                        .port(smtp.port)
                        .tls(tls)
                        .timeout(Some(smtp.timeout));
                if let Some(login) = &smtp.login {
                    let password = smtp
                        .password
                        .as_ref()
                        .map(|p| p.expose().to_owned())
                        .unwrap_or_default();
                    builder = builder.credentials(Credentials::new(login.clone(), password));
                }
                Some(builder.build())
            }
        };
        Ok(Self {
            from_header: from_header(from.as_ref(), config.from_name.as_deref()),
            from,
            transport,
        })
    }

    pub fn delivers(&self) -> bool {
        self.transport.is_some()
    }

    /// Renders `template` for `to` and hands it to the SMTP server.
    pub async fn send(&self, to: &str, template: &str, vars: &Vars) -> Result<(), NotifyError> {
        let recipient: lettre::Address = to
            .parse()
            .map_err(|_| NotifyError::Email("not a deliverable address".into()))?;
        let id = crate::crypto::random_alphanumeric(24)
            .map_err(|e| NotifyError::Email(format!("no randomness: {e}")))?;
        let message_id = format!("<{id}@{}>", self.from.domain());
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let bytes = template::render_email(
            template,
            vars,
            &template::Envelope {
                from: &self.from_header,
                to: recipient.as_ref(),
                date: &date,
                message_id: &message_id,
            },
        )?;
        let shown = crate::logging::redact_address(to);
        let Some(transport) = &self.transport else {
            tracing::info!(to = %shown, "e-mail not sent: threepid.medium.email.connector is none");
            return Ok(());
        };
        let envelope = lettre::address::Envelope::new(Some(self.from.clone()), vec![recipient])
            .map_err(|e| NotifyError::Email(e.to_string()))?;
        match transport.send_raw(&envelope, &bytes).await {
            Ok(_) => {
                tracing::info!(to = %shown, "e-mail accepted by the SMTP server");
                Ok(())
            }
            Err(e) => {
                // The server's text may quote the address: log the class and code only.
                let class = if e.is_timeout() {
                    "timeout"
                } else if e.is_tls() {
                    "TLS"
                } else if e.is_permanent() {
                    "refused (permanent)"
                } else if e.is_transient() {
                    "refused (transient)"
                } else {
                    "connection"
                };
                let code = e.status().map(|c| c.to_string()).unwrap_or_default();
                tracing::warn!(to = %shown, error = class, code = %code, "e-mail not delivered");
                Err(NotifyError::Email(
                    format!("SMTP {class} {code}").trim().to_owned(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_names_are_quoted_or_encoded() {
        assert_eq!(from_header("a@b.c", None), "a@b.c");
        assert_eq!(from_header("a@b.c", Some("  ")), "a@b.c");
        assert_eq!(
            from_header("a@b.c", Some("Ops, \"Team\"")),
            "\"Ops, \\\"Team\\\"\" <a@b.c>"
        );
        assert!(from_header("a@b.c", Some("Équipe")).starts_with("=?UTF-8?B?"));
    }
}
