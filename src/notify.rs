//! Messages to 3PIDs: validation tokens, invites, unbind notices. E-mail goes out over
//! SMTP (lettre), SMS through Twilio's HTTP API; either can be `none` (accepted and
//! dropped, logged without its content). Templates are the built-in ones in `assets/`
//! unless the config names a file. A send returns once the SMTP server or the gateway
//! has accepted the message, so callers can answer 200 truthfully.

pub mod mail;
pub mod sms;
pub mod template;

use crate::config::Config;
use crate::model::{Medium, ThreePid};
use template::Vars;

const EMAIL_VALIDATION: &str = include_str!("../assets/templates/email/validation.eml");
const EMAIL_INVITE: &str = include_str!("../assets/templates/email/invite.eml");
const EMAIL_UNBIND: &str = include_str!("../assets/templates/email/unbind-notification.eml");
const SMS_VALIDATION: &str = include_str!("../assets/templates/sms/validation.txt");
const SMS_INVITE: &str = include_str!("../assets/templates/sms/invite.txt");
const SMS_UNBIND: &str = include_str!("../assets/templates/sms/unbind-notification.txt");

/// What a message is for; each has its own template per medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Validation,
    Invite,
    UnbindNotification,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("e-mail not delivered: {0}")]
    Email(String),
    #[error("SMS not delivered: {0}")]
    Sms(String),
    #[error("template: {0}")]
    Template(#[from] template::TemplateError),
}

#[derive(Debug, Clone)]
struct TemplateSet {
    validation: String,
    invite: String,
    unbind: String,
}

impl TemplateSet {
    fn load(
        configured: &crate::config::threepid::Templates,
        defaults: [&str; 3],
    ) -> Result<Self, String> {
        let read = |path: &Option<std::path::PathBuf>, default: &str| match path {
            None => Ok(default.to_owned()),
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the template {}: {e}", p.display())),
        };
        Ok(Self {
            validation: read(&configured.validation, defaults[0])?,
            invite: read(&configured.invite, defaults[1])?,
            unbind: read(&configured.unbind_notification, defaults[2])?,
        })
    }

    fn get(&self, flow: Flow) -> &str {
        match flow {
            Flow::Validation => &self.validation,
            Flow::Invite => &self.invite,
            Flow::UnbindNotification => &self.unbind,
        }
    }
}

pub struct Notifier {
    domain: String,
    mailer: mail::Mailer,
    sms: sms::SmsSender,
    email_templates: TemplateSet,
    sms_templates: TemplateSet,
    /// Messages handed over / refused: [email sent, email failed, sms sent, sms failed];
    /// shared with the notifier a reload replaces this one with.
    counts: std::sync::Arc<[std::sync::atomic::AtomicU64; 4]>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(config: &Config) -> Result<Self, String> {
        let email_templates = TemplateSet::load(
            &config.threepid.email.templates,
            [EMAIL_VALIDATION, EMAIL_INVITE, EMAIL_UNBIND],
        )?;
        // A broken template is found at start-up, not when the first user needs it.
        let probe = template::Envelope {
            from: "a@b",
            to: "a@b",
            date: "x",
            message_id: "<x@b>",
        };
        for (name, t) in [
            ("validation", &email_templates.validation),
            ("invite", &email_templates.invite),
            ("unbind notification", &email_templates.unbind),
        ] {
            template::render_email(t, &Vars::new(), &probe)
                .map_err(|e| format!("the e-mail {name} template is unusable: {e}"))?;
        }
        Ok(Self {
            domain: config.matrix.domain.clone(),
            mailer: mail::Mailer::new(&config.threepid.email)?,
            sms: sms::SmsSender::new(&config.threepid.msisdn)?,
            email_templates,
            sms_templates: TemplateSet::load(
                &config.threepid.msisdn.templates,
                [SMS_VALIDATION, SMS_INVITE, SMS_UNBIND],
            )?,
            counts: Default::default(),
        })
    }

    /// A notifier built from `config` (templates re-read) that goes on counting where
    /// this one is.
    pub fn reloaded(&self, config: &Config) -> Result<Self, String> {
        let mut next = Self::new(config)?;
        next.counts = std::sync::Arc::clone(&self.counts);
        Ok(next)
    }

    /// Whether `other` would render any message differently (a template's text).
    pub fn templates_differ(&self, other: &Self) -> bool {
        [Flow::Validation, Flow::Invite, Flow::UnbindNotification]
            .iter()
            .any(|&f| {
                self.email_templates.get(f) != other.email_templates.get(f)
                    || self.sms_templates.get(f) != other.sms_templates.get(f)
            })
    }

    /// Whether messages of `medium` really leave this server.
    pub fn delivers(&self, medium: Medium) -> bool {
        match medium {
            Medium::Email => self.mailer.delivers(),
            Medium::Msisdn => self.sms.delivers(),
        }
    }

    /// Sends the `flow` message to `to`. `vars` are the flow's placeholders; the common
    /// ones (domain, recipient) are added here.
    pub async fn send(&self, to: &ThreePid, flow: Flow, mut vars: Vars) -> Result<(), NotifyError> {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut pretty = self.domain.clone();
        if let Some(first) = pretty.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        vars.set("DOMAIN", self.domain.clone())
            .set("DOMAIN_PRETTY", pretty)
            .set("RECIPIENT_MEDIUM", to.medium().as_str())
            .set("RECIPIENT_MEDIUM_URL_ENCODED", to.medium().as_str())
            .set("RECIPIENT_ADDRESS", to.address())
            .set("RECIPIENT_ADDRESS_URL_ENCODED", enc(to.address()));
        let (result, slot) = match to.medium() {
            Medium::Email => (
                self.mailer
                    .send(to.address(), self.email_templates.get(flow), &vars)
                    .await,
                0,
            ),
            Medium::Msisdn => {
                let text = template::render_text(self.sms_templates.get(flow), &vars);
                (self.sms.send(to.address(), &text).await, 2)
            }
        };
        // Dropped messages (connector `none`) count as neither.
        if self.delivers(to.medium()) {
            let i = slot + usize::from(result.is_err());
            self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Messages sent and failed since start: `[(medium, sent, failed)]`.
    pub fn counts(&self) -> [(Medium, u64, u64); 2] {
        let n = |i: usize| self.counts[i].load(std::sync::atomic::Ordering::Relaxed);
        [(Medium::Email, n(0), n(1)), (Medium::Msisdn, n(2), n(3))]
    }
}
