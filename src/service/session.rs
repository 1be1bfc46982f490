//! 3PID validation sessions: `requestToken` (create or find the session, send the token
//! when `send_attempt` is new), `submitToken` (check it, constant time, with a cap on
//! wrong guesses), `getValidated3pid`. Sessions expire a lifetime (24 h) after their
//! last change; [`purge_task`] deletes them a lifetime after that.
//!
//! A message goes out before the session is written, and the session is written before
//! we answer: a 200 means both the SMTP server (or gateway) and the store have it.

use crate::error::{ErrCode, Error};
use crate::model::now_ms;
use crate::model::{Medium, ThreePid};
use crate::notify::{template::Vars, Flow, NotifyError};
use crate::service::Services;
use crate::store::sessions::SessionRecord;
use std::net::IpAddr;
use subtle::ConstantTimeEq as _;

fn no_valid_session() -> Error {
    Error::new(
        ErrCode::NoValidSession,
        "No valid session was found matching that sid and client secret",
    )
}

fn session_expired() -> Error {
    Error::new(
        ErrCode::SessionExpired,
        "This validation session has expired: request a new token",
    )
}

fn not_validated() -> Error {
    Error::new(
        ErrCode::SessionNotValidated,
        "This validation session has not been validated yet",
    )
}

fn token_incorrect() -> Error {
    Error::new(ErrCode::TokenIncorrect, "The token is incorrect")
}

fn disabled() -> Error {
    Error::new(
        ErrCode::Forbidden,
        "3PID validation is disabled on this server",
    )
}

fn send_error(medium: Medium, e: &NotifyError) -> Error {
    match (medium, e) {
        (_, NotifyError::Template(t)) => Error::internal("rendering a message", t),
        (Medium::Email, _) => Error::new(
            ErrCode::EmailSendError,
            "The e-mail could not be sent; try again later",
        ),
        (Medium::Msisdn, _) => Error::new(
            ErrCode::SendError,
            "The SMS could not be sent; try again later",
        ),
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn lifetime_ms(state: &Services) -> u64 {
    u64::try_from(state.config().session.lifetime.as_millis()).unwrap_or(u64::MAX)
}

fn expired(state: &Services, session: &SessionRecord, now: u64) -> bool {
    session.updated_ms.saturating_add(lifetime_ms(state)) <= now
}

fn dead(state: &Services, session: &SessionRecord) -> bool {
    session.failed_attempts >= state.config().session.max_attempts
}

/// A new secret for the 3PID: 32 letters and digits by e-mail (clicked or pasted), six
/// digits by SMS (typed).
fn new_token(medium: Medium) -> Result<String, Error> {
    let random = |e| Error::internal("generating a token", e);
    match medium {
        Medium::Email => crate::crypto::random_alphanumeric(32).map_err(random),
        Medium::Msisdn => loop {
            // Rejection sampling keeps the six digits uniform.
            let n = u32::from_le_bytes(crate::crypto::random_bytes::<4>().map_err(random)?);
            if n < 4_294_000_000 {
                break Ok(format!("{:06}", n % 1_000_000));
            }
        },
    }
}

/// The spec's grammar of session ids (and client secrets): `[0-9a-zA-Z.=_-]{1,255}`.
pub fn is_session_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'=' | b'_' | b'-'))
}

/// Refuses when 3PID validation is disabled; `http` asks before it parses a
/// `requestToken` body, so a disabled server answers that whatever the body.
pub fn ensure_enabled(state: &Services) -> Result<(), Error> {
    if state.config().session.validation_enabled {
        Ok(())
    } else {
        Err(disabled())
    }
}

/// Refuses a 3PID whose class the session policy closes
/// (`session.policy.validation.forLocal` / `.forRemote`). Local means an e-mail
/// address of `matrix.domain` (mxisd's rule; phone numbers are always remote).
pub fn ensure_class_allowed(state: &Services, threepid: &ThreePid) -> Result<(), Error> {
    let config = state.config();
    let local = threepid
        .email_domain()
        .is_some_and(|d| d.eq_ignore_ascii_case(&config.matrix.domain));
    let (allowed, class) = if local {
        (
            config.session.for_local,
            "addresses of this server's domain",
        )
    } else {
        (
            config.session.for_remote,
            "3PIDs outside this server's domain",
        )
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::new(
            ErrCode::Forbidden,
            format!("This server does not validate {class}"),
        ))
    }
}

/// The e-mail address a `requestToken` names, normalised.
pub fn email_threepid(email: &str) -> Result<ThreePid, Error> {
    let invalid = || Error::new(ErrCode::InvalidEmail, "Invalid e-mail address");
    let threepid = ThreePid::new(Medium::Email, email).map_err(|_| invalid())?;
    // What the SMTP layer will accept, too (no quoted local parts, no spaces).
    threepid
        .address()
        .parse::<lettre::Address>()
        .map_err(|_| invalid())?;
    Ok(threepid)
}

/// The phone number a `requestToken` names (`country` code and number as typed),
/// normalised to E.164, with its international format for the answer (Sydent's
/// `intl_fmt`).
pub fn msisdn_threepid(country: &str, number: &str) -> Result<(ThreePid, String), Error> {
    let invalid = || Error::new(ErrCode::InvalidAddress, "Invalid phone number");
    let country: phonenumber::country::Id = country
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| invalid())?;
    if number.len() > 64 {
        return Err(invalid());
    }
    let parsed = phonenumber::parse(Some(country), number).map_err(|_| invalid())?;
    if !parsed.is_valid() {
        return Err(invalid());
    }
    let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
    let threepid = ThreePid::new(Medium::Msisdn, &e164).map_err(|_| invalid())?;
    let intl_fmt = parsed
        .format()
        .mode(phonenumber::Mode::International)
        .to_string();
    Ok((threepid, intl_fmt))
}

/// A `requestToken` request: the 3PID (its medium is the path's), already normalised.
#[derive(Debug, Clone)]
pub struct RequestToken {
    pub threepid: ThreePid,
    /// The international format of a phone number ([`msisdn_threepid`]).
    pub intl_fmt: Option<String>,
    /// Already checked against [`is_session_id`]'s grammar.
    pub client_secret: String,
    pub send_attempt: u64,
    /// An absolute http(s) URL.
    pub next_link: Option<String>,
}

/// The `requestToken` answer: `{sid}` by e-mail; by SMS Sydent's `{intl_fmt, msisdn,
/// sid, success: true}`. Fields in alphabetical order, as on the wire before.
#[derive(Debug, serde::Serialize)]
pub struct TokenRequested {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intl_fmt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msisdn: Option<String>,
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
}

/// The link in the message: `GET submitToken` on the v2 prefix, which needs no access
/// token (it is clicked from a mail).
fn validation_link(state: &Services, session: &SessionRecord) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("sid", &session.sid)
        .append_pair("client_secret", &session.client_secret)
        .append_pair("token", &session.token)
        .finish();
    format!(
        "{}/_matrix/identity/v2/validate/{}/submitToken?{query}",
        state.config().server.public_url,
        session.threepid.medium().as_str()
    )
}

async fn send_token(state: &Services, session: &SessionRecord) -> Result<(), Error> {
    let mut vars = Vars::new();
    vars.set("VALIDATION_LINK", validation_link(state, session))
        .set("VALIDATION_TOKEN", session.token.clone())
        .set("NEXT_URL", session.next_link.clone().unwrap_or_default());
    state
        .notifier()
        .send(&session.threepid, Flow::Validation, vars)
        .await
        .map_err(|e| send_error(session.threepid.medium(), &e))
}

/// `POST /validate/{email,msisdn}/requestToken`
pub async fn request_token(
    state: &Services,
    request: RequestToken,
    client_ip: Option<IpAddr>,
) -> Result<TokenRequested, Error> {
    ensure_enabled(state)?;
    let RequestToken {
        threepid,
        intl_fmt,
        client_secret,
        send_attempt,
        next_link,
    } = request;
    let medium = threepid.medium();
    ensure_class_allowed(state, &threepid)?;
    state
        .limits()
        .request_token(client_ip, threepid.address())?;

    let now = now_ms();
    let existing = state
        .store
        .session_for(&threepid, &client_secret)?
        .filter(|s| !expired(state, s, now) && !dead(state, s));
    let (session, send) = match existing {
        Some(mut s) => {
            let send = send_attempt > s.send_attempt;
            if send {
                s.send_attempt = send_attempt;
                if next_link.is_some() {
                    s.next_link = next_link;
                }
            }
            s.updated_ms = now;
            (s, send)
        }
        None => {
            let sid = crate::crypto::random_alphanumeric(24)
                .map_err(|e| Error::internal("generating a session id", e))?;
            let session = SessionRecord {
                sid,
                threepid,
                client_secret,
                token: new_token(medium)?,
                send_attempt,
                next_link,
                created_ms: now,
                updated_ms: now,
                validated_ms: None,
                failed_attempts: 0,
            };
            (session, true)
        }
    };
    if send {
        send_token(state, &session).await?;
    }
    {
        let _guard = state.store.sessions_guard().await;
        // Keep what a concurrent submitToken recorded meanwhile.
        let mut record = session.clone();
        if let Some(current) = state.store.session(&session.sid)? {
            record.validated_ms = current.validated_ms;
            record.failed_attempts = current.failed_attempts;
            record.send_attempt = record.send_attempt.max(current.send_attempt);
        }
        state.store.put_session(&record).await?;
    }
    let msisdn = medium == Medium::Msisdn;
    Ok(TokenRequested {
        intl_fmt: intl_fmt.filter(|_| msisdn),
        msisdn: msisdn.then(|| session.threepid.address().to_owned()),
        sid: session.sid,
        success: msisdn.then_some(true),
    })
}

/// The session `sid` if `client_secret` is its secret; unknown sid and wrong secret are
/// the same answer.
fn find(state: &Services, sid: &str, client_secret: &str) -> Result<SessionRecord, Error> {
    if !is_session_id(sid) {
        return Err(no_valid_session());
    }
    match state.store.session(sid)? {
        Some(s) if ct_eq(&s.client_secret, client_secret) && !dead(state, &s) => Ok(s),
        _ => Err(no_valid_session()),
    }
}

/// A validated, unexpired session: what bind, unbind and getValidated3pid require.
pub fn validated(state: &Services, sid: &str, client_secret: &str) -> Result<SessionRecord, Error> {
    let session = find(state, sid, client_secret)?;
    if expired(state, &session, now_ms()) {
        return Err(session_expired());
    }
    if session.validated_ms.is_none() {
        return Err(not_validated());
    }
    Ok(session)
}

/// A session's credentials as a client names them (`sid`, `client_secret`).
#[derive(Debug, Clone, Copy)]
pub struct SessionCredentials<'a> {
    pub sid: &'a str,
    pub client_secret: &'a str,
}

/// A `submitToken` request, POST or GET.
#[derive(Debug, Clone, Copy)]
pub struct SubmitToken<'a> {
    pub session: SessionCredentials<'a>,
    pub token: &'a str,
}

/// A validated session, as `submitToken` reports it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Where the client asked the browser to go after validation.
    pub next_link: Option<String>,
}

/// `submitToken`, POST or GET.
pub async fn submit_token(
    state: &Services,
    medium: Medium,
    request: SubmitToken<'_>,
    client_ip: Option<IpAddr>,
) -> Result<Submitted, Error> {
    let SubmitToken {
        session: SessionCredentials { sid, client_secret },
        token,
    } = request;
    ensure_enabled(state)?;
    if token.is_empty() || token.chars().count() > 255 {
        return Err(Error::invalid_param("token must be 1-255 characters"));
    }
    state.limits().submit_token_ip(client_ip)?;
    let _guard = state.store.sessions_guard().await;
    let mut session = find(state, sid, client_secret)?;
    state.limits().submit_token_session(sid)?;
    if session.threepid.medium() != medium {
        return Err(no_valid_session());
    }
    // The policy may have closed since the session began (a reload).
    ensure_class_allowed(state, &session.threepid)?;
    let now = now_ms();
    if expired(state, &session, now) {
        return Err(session_expired());
    }
    // Codes are typed by hand: spaces around them do not count.
    if !ct_eq(token.trim(), &session.token) {
        session.failed_attempts = session.failed_attempts.saturating_add(1);
        state.store.put_session(&session).await?;
        if dead(state, &session) {
            tracing::info!(
                to = %crate::logging::redact_address(session.threepid.address()),
                "validation session closed after too many wrong tokens"
            );
        }
        return Err(token_incorrect());
    }
    if session.validated_ms.is_none() {
        session.validated_ms = Some(now);
        session.updated_ms = now;
        state.store.put_session(&session).await?;
    }
    Ok(Submitted {
        next_link: session.next_link,
    })
}

/// The `getValidated3pid` answer. Fields in alphabetical order, as on the wire before.
#[derive(Debug, serde::Serialize)]
pub struct Validated3pid {
    pub address: String,
    pub medium: &'static str,
    pub validated_at: Option<u64>,
}

/// `GET /3pid/getValidated3pid`
pub fn get_validated(
    state: &Services,
    credentials: SessionCredentials<'_>,
) -> Result<Validated3pid, Error> {
    let session = validated(state, credentials.sid, credentials.client_secret)?;
    Ok(Validated3pid {
        address: session.threepid.address().to_owned(),
        medium: session.threepid.medium().as_str(),
        validated_at: session.validated_ms,
    })
}

/// Deletes sessions a lifetime past their expiry, every ten minutes, until shutdown.
pub async fn purge_task(state: Services, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(600);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        state.limits().forget_idle();
        let cutoff = now_ms().saturating_sub(lifetime_ms(&state).saturating_mul(2));
        match state.store.purge_sessions(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged old validation sessions"),
            Err(e) => tracing::warn!(error = %e, "purging old validation sessions failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The typed answers serialise to the bytes the `json!` objects they replaced did.
    #[test]
    fn answers_keep_their_wire_bytes() {
        let email = TokenRequested {
            intl_fmt: None,
            msisdn: None,
            sid: "s".into(),
            success: None,
        };
        assert_eq!(
            serde_json::to_string(&email).unwrap(),
            json!({"sid": "s"}).to_string()
        );
        let (threepid, intl_fmt) = msisdn_threepid("fr", "06 12 34 56 78").unwrap();
        let sms = TokenRequested {
            intl_fmt: Some(intl_fmt.clone()),
            msisdn: Some(threepid.address().to_owned()),
            sid: "s".into(),
            success: Some(true),
        };
        let old = json!({"msisdn": threepid.address(), "intl_fmt": intl_fmt,
            "sid": "s", "success": true});
        assert_eq!(serde_json::to_string(&sms).unwrap(), old.to_string());
        let validated = Validated3pid {
            address: "a@b.c".into(),
            medium: "email",
            validated_at: Some(5),
        };
        assert_eq!(
            serde_json::to_string(&validated).unwrap(),
            json!({"medium": "email", "address": "a@b.c", "validated_at": 5}).to_string()
        );
    }

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(email_threepid("A@B.c").unwrap().address(), "a@b.c");
        assert_eq!(
            email_threepid("a b@c.d").unwrap_err().code,
            ErrCode::InvalidEmail
        );
        assert_eq!(
            msisdn_threepid("XX", "123").unwrap_err().code,
            ErrCode::InvalidAddress
        );
        assert!(is_session_id("aB3.=_-") && !is_session_id("") && !is_session_id("a b"));
    }
}
