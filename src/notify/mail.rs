//! E-mail over SMTP with lettre: the rendered template is sent as is (`send_raw`), after
//! the SMTP server accepted the envelope. `tls` follows ma1sd: 0 plain, 1 STARTTLS when
//! offered, 2 STARTTLS required, 3 TLS from the first byte.

use super::template::{self, Vars};
use super::NotifyError;
use crate::config::threepid::{EmailConfig, EmailConnector, SmtpTls};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use std::time::Duration;

/// The SMTP server and how to talk to it. The connection is made here rather than by
/// lettre's transport so that the host name is resolved by [`crate::dns`] (not
/// getaddrinfo); TLS is still checked against the configured host name.
struct Smtp {
    host: String,
    port: u16,
    tls: SmtpTls,
    /// For every mode but `SmtpTls::None`.
    tls_params: Option<TlsParameters>,
    credentials: Option<Credentials>,
    /// Each step: connect, TLS, authentication, delivery.
    timeout: Duration,
    resolver: hickory_resolver::TokioResolver,
}

/// Why a delivery failed: a class for the log and the server's code, if any (its text
/// may quote the address, so it is left out).
struct Failure {
    class: &'static str,
    code: String,
}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
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
        Self {
            class,
            code: e.status().map(|c| c.to_string()).unwrap_or_default(),
        }
    }
}

impl Failure {
    fn bare(class: &'static str) -> Self {
        Self {
            class,
            code: String::new(),
        }
    }
}

/// `step` within `limit`, a timeout counting as a failure.
async fn within<T>(
    limit: Duration,
    step: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, step).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure::bare("timeout")),
    }
}

impl Smtp {
    /// One SMTP session: connect (each address of the host in turn), TLS as configured,
    /// AUTH, the message, QUIT.
    async fn deliver(
        &self,
        envelope: &lettre::address::Envelope,
        message: &[u8],
    ) -> Result<(), Failure> {
        let addrs = crate::dns::lookup(&self.resolver, &self.host, self.port)
            .await
            .map_err(|e| {
                tracing::warn!(host = %self.host, error = %e, "cannot resolve the SMTP server");
                Failure::bare("DNS")
            })?;
        let hello = ClientId::default();
        let implicit = match self.tls {
            SmtpTls::Implicit => self.tls_params.clone(),
            _ => None,
        };
        // lettre's own timeout covers the TCP connect; the greeting and EHLO that
        // follow are bounded here (a server that accepts and says nothing hung a send).
        let mut conn = within(
            self.timeout,
            AsyncSmtpConnection::connect_tokio1(
                &addrs[..],
                Some(self.timeout),
                &hello,
                implicit,
                None,
            ),
        )
        .await?;
        let result = self.session(&mut conn, &hello, envelope, message).await;
        conn.abort().await;
        result
    }

    async fn session(
        &self,
        conn: &mut AsyncSmtpConnection,
        hello: &ClientId,
        envelope: &lettre::address::Envelope,
        message: &[u8],
    ) -> Result<(), Failure> {
        let starttls = match self.tls {
            SmtpTls::Opportunistic => conn.can_starttls(),
            SmtpTls::Required => true,
            SmtpTls::None | SmtpTls::Implicit => false,
        };
        if starttls {
            let params = self.tls_params.clone().ok_or(Failure::bare("TLS"))?;
            within(self.timeout, conn.starttls(params, hello)).await?;
        }
        if let Some(credentials) = &self.credentials {
            within(self.timeout, conn.auth(DEFAULT_MECHANISMS, credentials)).await?;
        }
        within(self.timeout, conn.send(envelope, message)).await?;
        Ok(())
    }
}

pub struct Mailer {
    transport: Option<Smtp>,
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
                let tls_params = match smtp.tls {
                    SmtpTls::None => None,
                    _ => Some(tls_params()?),
                };
                let credentials = smtp.login.as_ref().map(|login| {
                    let password = smtp
                        .password
                        .as_ref()
                        .map(|p| p.expose().to_owned())
                        .unwrap_or_default();
                    Credentials::new(login.clone(), password)
                });
                Some(Smtp {
                    host: smtp.host.clone(),
                    port: smtp.port,
                    tls: smtp.tls,
                    tls_params,
                    credentials,
                    timeout: smtp.timeout,
                    resolver: crate::dns::resolver()?,
                })
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
        match transport.deliver(&envelope, &bytes).await {
            Ok(()) => {
                tracing::info!(to = %shown, "e-mail accepted by the SMTP server");
                Ok(())
            }
            Err(Failure { class, code }) => {
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
