//! Configuration of 3PID sessions and delivery: `threepid.medium.{email,msisdn}` (ma1sd's
//! keys: connectors and templates), `session.policy`, `view.session` (the pages after a
//! clicked link) and `rateLimit`.

use super::reader::{Secret, Section};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ThreePidConfig {
    pub email: EmailConfig,
    pub msisdn: MsisdnConfig,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `identity.from`: the envelope and `From:` address.
    pub from: String,
    /// `identity.name`: the display name in `From:`.
    pub from_name: Option<String>,
    pub connector: EmailConnector,
    pub templates: Templates,
}

#[derive(Debug, Clone)]
pub enum EmailConnector {
    Smtp(SmtpConfig),
    /// Accepts and drops every message (installs that do not validate e-mail).
    None,
}

/// `connectors.smtp.tls` as in ma1sd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// 0: plain text only.
    None,
    /// 1: STARTTLS when the server offers it.
    Opportunistic,
    /// 2: STARTTLS required.
    Required,
    /// 3: TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub login: Option<String>,
    pub password: Option<Secret>,
    /// Connect, dialogue and delivery, each step.
    pub timeout: Duration,
    /// `caFile`: PEM certificates to trust for the SMTP server besides the system's
    /// (a private CA, or a self-signed server).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct MsisdnConfig {
    pub connector: SmsConnector,
    pub templates: Templates,
}

#[derive(Debug, Clone)]
pub enum SmsConnector {
    Twilio(TwilioConfig),
    /// Logs that a message was not sent (never its text) and reports success.
    None,
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: Secret,
    /// The sender number, E.164 with `+`.
    pub number: String,
    /// `baseUrl`: Twilio's API root (a stand-in for tests and proxies).
    pub base_url: String,
    pub timeout: Duration,
}

/// Template files that replace the built-in ones (`generators.template.*`).
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub validation: Option<PathBuf>,
    pub invite: Option<PathBuf>,
    pub unbind_notification: Option<PathBuf>,
    /// `generators.template.placeholder.REGISTER_URL` (ma1sd): what `%REGISTER_URL%` is.
    pub register_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `session.policy.validation.enabled`: offer 3PID sessions at all.
    pub validation_enabled: bool,
    /// `session.policy.validation.forLocal`: accept sessions for e-mail addresses of
    /// `matrix.domain` (the organisation's own users).
    pub for_local: bool,
    /// `session.policy.validation.forRemote`: accept sessions for every other 3PID
    /// (e-mail of other domains, phone numbers).
    pub for_remote: bool,
    /// `session.policy.validation.lifetime`: a session expires this long after its last change.
    pub lifetime: Duration,
    /// `session.policy.validation.maxAttempts`: wrong tokens before a session is dead.
    pub max_attempts: u32,
    /// `session.policy.unbind.enabled`: accept `/3pid/unbind`.
    pub unbind_enabled: bool,
    /// `session.policy.unbind.notifications`: tell the 3PID it was unbound.
    pub unbind_notifications: bool,
    /// `session.policy.bind.onlyLocalDomain`: bind only Matrix IDs of `matrix.domain`.
    pub bind_only_local: bool,
    /// `session.policy.bind.v1`: accept the unauthenticated v1 `/3pid/bind`, which
    /// cannot check that the Matrix ID is the caller's (Sydent's
    /// `enable_v1_associations`).
    pub bind_v1: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ViewConfig {
    /// `view.session.onTokenSubmit.success` / `.failure`: HTML pages replacing the built-in ones.
    pub success_page: Option<PathBuf>,
    pub failure_page: Option<PathBuf>,
}

/// One limit: `burst` requests at once, then one more every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub request_token_per_ip: Limit,
    pub request_token_per_address: Limit,
    pub submit_token_per_session: Limit,
    pub submit_token_per_ip: Limit,
    pub unbind_per_ip: Limit,
    pub store_invite_per_sender: Limit,
    pub store_invite_per_address: Limit,
    /// The v1 `store-invite`, which has no account to count by.
    pub store_invite_per_ip: Limit,
    /// `account/register` (each makes an outbound userinfo call).
    pub register_per_ip: Limit,
    pub lookup_per_token: Limit,
    /// `check_credentials` attempts for one user, and from one client address.
    pub login_per_user: Limit,
    pub login_per_ip: Limit,
}

const DELIVERY_HINTS: &[(&str, &str)] = &[(
    "generators",
    "expected generators.template.<flow>: a path to a template file",
)];

fn read_templates(medium: &Section<'_, '_>) -> Templates {
    match medium.string("generator").as_deref() {
        None | Some("template") => {}
        Some(other) => medium.problem(
            "generator",
            format!(
                "{other:?}: only the template generator exists here; remove it or write template"
            ),
        ),
    }
    let generators = medium.section("generators");
    let template = generators.section("template");
    let session = template.section("session");
    let validation = session.path("validation");
    let unbind = session.section("unbind");
    let unbind_notification = unbind.path("notification");
    unbind.ignored(
        "validation",
        "ignored: unbind needs no validation message in mxisd",
    );
    unbind.ignored(
        "fraudulent",
        "ignored: mxisd refuses unauthorised unbinds without mailing anyone",
    );
    unbind.finish(&[]);
    session.finish(&[]);
    let invite = template.path("invite");
    template.ignored(
        "generic",
        "ignored: Matrix-ID invites belong to the application service, not supported",
    );
    let placeholder = template.section("placeholder");
    let register_url = placeholder.string("REGISTER_URL");
    placeholder.finish(&[]);
    template.finish(&[]);
    generators.finish(&[]);
    Templates {
        validation,
        invite,
        unbind_notification,
        register_url,
    }
}

fn check_template(s: &Section<'_, '_>, t: &Templates) -> bool {
    let mut ok = true;
    for (key, path) in [
        ("generators.template.session.validation", &t.validation),
        ("generators.template.invite", &t.invite),
        (
            "generators.template.session.unbind.notification",
            &t.unbind_notification,
        ),
    ] {
        if let Some(p) = path {
            if let Err(e) = std::fs::metadata(p) {
                s.problem(key, format!("cannot read {}: {e}", p.display()));
                ok = false;
            }
        }
    }
    ok
}

pub fn read_threepid(s: &Section<'_, '_>, domain: Option<&str>) -> Option<ThreePidConfig> {
    let medium = s.section("medium");
    let email = read_email(&medium.section("email"), domain);
    let msisdn = read_msisdn(&medium.section("msisdn"));
    medium.finish(&[]);
    s.finish(&[]);
    Some(ThreePidConfig {
        email: email?,
        msisdn: msisdn?,
    })
}

fn read_email(s: &Section<'_, '_>, domain: Option<&str>) -> Option<EmailConfig> {
    let identity = s.section("identity");
    let from = identity.string("from");
    let from_name = identity.string("name");
    identity.finish(&[]);
    let connector_name = s.string("connector");
    let connectors = s.section("connectors");
    let smtp = connectors.section("smtp");
    let host = smtp.string("host");
    let port = smtp.port("port").unwrap_or(587);
    let tls = match smtp.u64("tls") {
        None | Some(1) => Some(SmtpTls::Opportunistic),
        Some(0) => Some(SmtpTls::None),
        Some(2) => Some(SmtpTls::Required),
        Some(3) => Some(SmtpTls::Implicit),
        Some(n) => {
            smtp.problem(
                "tls",
                format!("{n} is not 0 (none), 1 (STARTTLS if offered), 2 (STARTTLS required) or 3 (implicit TLS)"),
            );
            None
        }
    };
    let login = smtp.string("login").filter(|l| !l.is_empty());
    let password = smtp.secret("password").filter(|p| !p.expose().is_empty());
    let timeout = smtp.duration("timeout").unwrap_or(Duration::from_secs(30));
    let ca_file = smtp.path("caFile");
    smtp.finish(&[]);
    connectors.finish(&[]);
    let templates = read_templates(s);
    s.finish(DELIVERY_HINTS);

    let mut ok = check_template(s, &templates);
    let connector = match (connector_name.as_deref(), host) {
        (Some("none"), _) => EmailConnector::None,
        (None | Some("smtp"), Some(host)) if !host.trim().is_empty() => {
            EmailConnector::Smtp(SmtpConfig {
                host: host.trim().to_owned(),
                port,
                tls: tls?,
                login,
                password,
                timeout,
                ca_file,
            })
        }
        (Some("smtp"), _) => {
            s.problem(
                "connectors.smtp.host",
                "required with connector: smtp (your mail server)",
            );
            return None;
        }
        // No mail server configured: e-mail sessions are accepted and nothing is sent;
        // `mxisd run` warns about it.
        (None, _) => EmailConnector::None,
        (Some(other), _) => {
            s.problem("connector", format!("{other:?} is not smtp or none"));
            return None;
        }
    };
    let from = match from {
        Some(f) => f,
        None => format!("mxisd@{}", domain.unwrap_or("localhost")),
    };
    if from.parse::<lettre::Address>().is_err() {
        s.problem(
            "identity.from",
            format!("{from:?} is not an e-mail address"),
        );
        ok = false;
    }
    if from_name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        s.problem("identity.name", "must be a single line");
        ok = false;
    }
    ok.then_some(EmailConfig {
        from,
        from_name,
        connector,
        templates,
    })
}

fn read_msisdn(s: &Section<'_, '_>) -> Option<MsisdnConfig> {
    let connector_name = s.string("connector");
    let connectors = s.section("connectors");
    let twilio = connectors.section("twilio");
    let account_sid = twilio.string("account_sid");
    let auth_token = twilio.secret("auth_token");
    let number = twilio.string("number");
    let base_url = twilio
        .string("baseUrl")
        .unwrap_or_else(|| "https://api.twilio.com".into());
    let timeout = twilio
        .duration("timeout")
        .unwrap_or(Duration::from_secs(15));
    twilio.finish(&[]);
    connectors.finish(&[]);
    let templates = read_templates(s);
    s.finish(DELIVERY_HINTS);
    let ok = check_template(s, &templates);
    let twilio_set = account_sid.is_some() || number.is_some();
    let connector = match connector_name.as_deref() {
        Some("none") => SmsConnector::None,
        None if !twilio_set => SmsConnector::None,
        None | Some("twilio") => match (account_sid, auth_token, number) {
            (Some(account_sid), Some(auth_token), Some(number)) => {
                let base_url = base_url.trim_end_matches('/').to_owned();
                if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                    s.problem(
                        "connectors.twilio.baseUrl",
                        format!("{base_url:?} must be an http(s) URL"),
                    );
                    return None;
                }
                if base_url.starts_with("http://") {
                    s.warning(
                        "connectors.twilio.baseUrl",
                        "is plain http: the auth token travels in clear (use https outside tests)",
                    );
                }
                let digits = number.trim_start_matches('+');
                if !number.starts_with('+')
                    || digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    s.problem(
                        "connectors.twilio.number",
                        format!("{number:?} must be an international number like +15551234567"),
                    );
                    return None;
                }
                SmsConnector::Twilio(TwilioConfig {
                    account_sid,
                    auth_token,
                    number,
                    base_url,
                    timeout,
                })
            }
            _ => {
                s.problem(
                    "connectors.twilio",
                    "account_sid, auth_token and number are all required for the twilio connector",
                );
                return None;
            }
        },
        Some(other) => {
            s.problem("connector", format!("{other:?} is not twilio or none"));
            return None;
        }
    };
    ok.then_some(MsisdnConfig {
        connector,
        templates,
    })
}

pub fn read_session(s: &Section<'_, '_>) -> Option<SessionConfig> {
    let policy = s.section("policy");
    let validation = policy.section("validation");
    let validation_enabled = validation.bool("enabled").unwrap_or(true);
    let lifetime = validation
        .duration("lifetime")
        .unwrap_or(Duration::from_secs(24 * 3600));
    let max_attempts = validation.u64("maxAttempts").unwrap_or(5);
    let for_local = read_class(&validation.section("forLocal"));
    let for_remote = read_class(&validation.section("forRemote"));
    validation.finish(&[]);
    let unbind = policy.section("unbind");
    let unbind_enabled = unbind.bool("enabled").unwrap_or(true);
    let unbind_notifications = unbind.bool("notifications").unwrap_or(true);
    unbind.ignored(
        "fraudulent",
        "ignored: mxisd refuses unauthorised unbinds without mailing anyone",
    );
    unbind.finish(&[]);
    let bind = policy.section("bind");
    let bind_only_local = bind.bool("onlyLocalDomain").unwrap_or(false);
    let bind_v1 = bind.bool("v1").unwrap_or(false);
    bind.finish(&[]);
    policy.finish(&[]);
    s.finish(&[]);
    let mut ok = true;
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(30 * 86_400) {
        policy.problem("validation.lifetime", "must be between 1s and 30d");
        ok = false;
    }
    if !(1..=100).contains(&max_attempts) {
        policy.problem("validation.maxAttempts", "must be between 1 and 100");
        ok = false;
    }
    ok.then_some(SessionConfig {
        validation_enabled,
        for_local,
        for_remote,
        lifetime,
        max_attempts: u32::try_from(max_attempts).unwrap_or(5),
        unbind_enabled,
        unbind_notifications,
        bind_only_local,
        bind_v1,
    })
}

/// `session.policy.validation.forLocal` / `.forRemote` (mxisd 1.x): whether sessions
/// for that class of 3PID are accepted. mxisd could also hand a session to another
/// identity server (`toRemote`, on by default); that was removed in mxisd 1.3 and
/// ma1sd, and here a session is always validated by this server, so `toRemote` still
/// means "accept".
fn read_class(s: &Section<'_, '_>) -> bool {
    let enabled = s.bool("enabled").unwrap_or(true);
    let to_local = s.bool("toLocal").unwrap_or(true);
    let to_remote = s.section("toRemote");
    let delegate = to_remote.bool("enabled");
    if delegate == Some(true) {
        to_remote.warning(
            "enabled",
            "validation is never handed to another identity server: these 3PIDs are validated here (as ma1sd does)",
        );
    } else if enabled && !to_local && delegate.is_none() {
        s.warning(
            "toLocal",
            "false: mxisd 1.x then handed these sessions to another identity server (toRemote is on by default); mxisd validates them here. To refuse them, set enabled: false",
        );
    }
    to_remote.ignored(
        "server",
        "ignored: validation is never handed to another identity server",
    );
    to_remote.finish(&[]);
    s.finish(&[]);
    // mxisd refused a class when neither toLocal nor toRemote was left on.
    enabled && (to_local || delegate.unwrap_or(true))
}

pub fn read_view(s: &Section<'_, '_>) -> Option<ViewConfig> {
    let session = s.section("session");
    let submit = session.section("onTokenSubmit");
    // ma1sd wrote '' for "the built-in page".
    let page = |key: &str| match submit.string(key) {
        Some(text) if text.trim().is_empty() => None,
        Some(_) => submit.path(key),
        None => None,
    };
    let success_page = page("success");
    let failure_page = page("failure");
    submit.finish(&[]);
    session.ignored(
        "local",
        "ignored: use view.session.onTokenSubmit.{success,failure}",
    );
    session.ignored(
        "remote",
        "ignored: mxisd does not delegate sessions to other identity servers",
    );
    session.finish(&[]);
    s.finish(&[]);
    let mut ok = true;
    for (key, path) in [("success", &success_page), ("failure", &failure_page)] {
        if let Some(p) = path {
            if let Err(e) = std::fs::read_to_string(p) {
                submit.problem(key, format!("cannot read {}: {e}", p.display()));
                ok = false;
            }
        }
    }
    ok.then_some(ViewConfig {
        success_page,
        failure_page,
    })
}

fn read_limit(s: &Section<'_, '_>, key: &str, default: Limit) -> Option<Limit> {
    let l = s.section(key);
    let burst = l.u64("burst");
    let interval = l.duration("interval");
    l.finish(&[]);
    let limit = Limit {
        burst: burst.map_or(Some(default.burst), |b| u32::try_from(b).ok())?,
        interval: interval.unwrap_or(default.interval),
    };
    if limit.burst == 0 || limit.interval.is_zero() {
        s.problem(
            key,
            "burst and interval must be more than 0 (turn limits off with rateLimit.enabled: false)",
        );
        return None;
    }
    Some(limit)
}

pub fn read_rate_limit(s: &Section<'_, '_>) -> Option<RateLimitConfig> {
    let enabled = s.bool("enabled").unwrap_or(true);
    let mut ok = true;
    let trusted_proxies = s.cidr_list("trustedProxies");
    if trusted_proxies.is_none() && !s.string_is_absent("trustedProxies") {
        ok = false;
    }
    let trusted_proxies = trusted_proxies.unwrap_or_default();
    // Key, then the default: `burst` at once, then one more every `interval` seconds
    // (lookups: milliseconds).
    let limit =
        |key: &str, burst: u32, interval: Duration| read_limit(s, key, Limit { burst, interval });
    let secs = Duration::from_secs;
    let request_token_per_ip = limit("requestTokenPerIp", 10, secs(30));
    let request_token_per_address = limit("requestTokenPerAddress", 5, secs(600));
    let submit_token_per_session = limit("submitTokenPerSession", 10, secs(10));
    let submit_token_per_ip = limit("submitTokenPerIp", 50, secs(1));
    let unbind_per_ip = limit("unbindPerIp", 20, secs(6));
    let store_invite_per_sender = limit("storeInvitePerSender", 50, secs(10));
    let store_invite_per_address = limit("storeInvitePerAddress", 10, secs(600));
    let store_invite_per_ip = limit("storeInvitePerIp", 10, secs(30));
    let register_per_ip = limit("registerPerIp", 30, secs(2));
    let lookup_per_token = limit("lookupPerToken", 600, Duration::from_millis(20));
    let login_per_user = limit("loginPerUser", 5, secs(60));
    let login_per_ip = limit("loginPerIp", 30, secs(2));
    s.finish(&[]);
    if !ok {
        return None;
    }
    Some(RateLimitConfig {
        enabled,
        trusted_proxies,
        request_token_per_ip: request_token_per_ip?,
        request_token_per_address: request_token_per_address?,
        submit_token_per_session: submit_token_per_session?,
        submit_token_per_ip: submit_token_per_ip?,
        unbind_per_ip: unbind_per_ip?,
        store_invite_per_sender: store_invite_per_sender?,
        store_invite_per_address: store_invite_per_address?,
        store_invite_per_ip: store_invite_per_ip?,
        register_per_ip: register_per_ip?,
        lookup_per_token: lookup_per_token?,
        login_per_user: login_per_user?,
        login_per_ip: login_per_ip?,
    })
}

/// `invite.*`: 3PID room invites.
#[derive(Debug, Clone)]
pub struct InviteConfig {
    /// `invite.expiration.enabled` / `.after`: drop pending invites this old.
    pub expire_after: Option<Duration>,
    /// `invite.fullDisplayName`: show the whole address in the room (else redacted).
    pub full_display_name: bool,
    /// `invite.webClientUrl`: the web client invite e-mails link to (Element's URL
    /// scheme), unless the homeserver sends `org.matrix.web_client_location`.
    pub web_client_url: String,
    /// `invite.delivery.maxAttempts`: onbind deliveries tried this often, then failed.
    pub max_attempts: u32,
    /// `invite.delivery.minDelay` / `.maxDelay`: the wait after the first failure,
    /// doubling after each further one up to the longest.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

pub fn read_invite(s: &Section<'_, '_>) -> Option<InviteConfig> {
    let expiration = s.section("expiration");
    let enabled = expiration.bool("enabled").unwrap_or(true);
    // ma1sd writes a number of minutes; a duration string works too.
    let after = match expiration.scalar("after") {
        None => Some(Duration::from_secs(10_080 * 60)),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(minutes) => Some(Duration::from_secs(minutes.saturating_mul(60))),
            Err(_) => expiration.duration("after"),
        },
    };
    expiration.ignored(
        "resolveTo",
        "ignored: expired invites are dropped, not published to a placeholder user",
    );
    expiration.finish(&[]);
    let full_display_name = s.bool("fullDisplayName").unwrap_or(false);
    let web_client_url = s
        .string("webClientUrl")
        .unwrap_or_else(|| "https://app.element.io".into())
        .trim_end_matches('/')
        .to_owned();
    let delivery = s.section("delivery");
    let max_attempts = delivery.u64("maxAttempts").unwrap_or(15);
    let min_delay = delivery
        .duration("minDelay")
        .unwrap_or(Duration::from_secs(2));
    let max_delay = delivery
        .duration("maxDelay")
        .unwrap_or(Duration::from_secs(3600));
    delivery.finish(&[]);
    s.ignored(
        "resolution",
        "ignored: invites are delivered when their address is bound (and retried from a durable outbox)",
    );
    // `policy` is read by `policy::read_invite_policy`.
    let _ = s.section("policy");
    s.finish(&[]);
    let mut ok = true;
    if !(web_client_url.starts_with("https://") || web_client_url.starts_with("http://")) {
        s.problem("webClientUrl", "must be an http(s) URL");
        ok = false;
    }
    if !(1..=100).contains(&max_attempts) {
        delivery.problem("maxAttempts", "must be between 1 and 100");
        ok = false;
    }
    if min_delay < Duration::from_millis(10) || max_delay < min_delay {
        delivery.problem(
            "maxDelay",
            "minDelay must be at least 10ms and maxDelay at least minDelay",
        );
        ok = false;
    }
    let after = after?;
    if after < Duration::from_secs(1) {
        expiration.problem("after", "must be at least 1s");
        ok = false;
    }
    ok.then_some(InviteConfig {
        expire_after: enabled.then_some(after),
        full_display_name,
        web_client_url,
        max_attempts: u32::try_from(max_attempts).unwrap_or(15),
        min_delay,
        max_delay,
    })
}
