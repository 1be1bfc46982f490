//! 3PID validation sessions: `requestToken` (create or find the session, send the token
//! when `send_attempt` is new), `submitToken` (check it, constant time, with a cap on
//! wrong guesses), `getValidated3pid`. Sessions expire a lifetime (24 h) after their
//! last change; [`purge_task`] deletes them a lifetime after that.
//!
//! A message goes out before the session is written, and the session is written before
//! we answer: a 200 means both the SMTP server (or gateway) and the store have it.

use super::params;
use crate::error::{ErrCode, Error};
use crate::model::now_ms;
use crate::model::{Medium, ThreePid};
use crate::notify::{template::Vars, Flow, NotifyError};
use crate::service::Services;
use crate::store::sessions::SessionRecord;
use serde_json::{json, Map, Value};
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
    u64::try_from(state.config.session.lifetime.as_millis()).unwrap_or(u64::MAX)
}

fn expired(state: &Services, session: &SessionRecord, now: u64) -> bool {
    session.updated_ms.saturating_add(lifetime_ms(state)) <= now
}

fn dead(state: &Services, session: &SessionRecord) -> bool {
    session.failed_attempts >= state.config.session.max_attempts
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

/// The address a `requestToken` body names, normalised, with Sydent's extra fields
/// for the msisdn answer.
fn requested_threepid(
    medium: Medium,
    body: &Map<String, Value>,
) -> Result<(ThreePid, Map<String, Value>), Error> {
    match medium {
        Medium::Email => {
            params::require_all(body, &["client_secret", "email", "send_attempt"])?;
            let email = params::string(body, "email")?;
            let invalid = || Error::new(ErrCode::InvalidEmail, "Invalid e-mail address");
            let threepid = ThreePid::new(Medium::Email, email).map_err(|_| invalid())?;
            // What the SMTP layer will accept, too (no quoted local parts, no spaces).
            threepid
                .address()
                .parse::<lettre::Address>()
                .map_err(|_| invalid())?;
            Ok((threepid, Map::new()))
        }
        Medium::Msisdn => {
            params::require_all(
                body,
                &["client_secret", "country", "phone_number", "send_attempt"],
            )?;
            let country = params::string(body, "country")?;
            let number = params::string(body, "phone_number")?;
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
            let mut extra = Map::new();
            extra.insert("msisdn".into(), json!(threepid.address()));
            extra.insert(
                "intl_fmt".into(),
                json!(parsed
                    .format()
                    .mode(phonenumber::Mode::International)
                    .to_string()),
            );
            Ok((threepid, extra))
        }
    }
}

fn next_link(body: &Map<String, Value>) -> Result<Option<String>, Error> {
    let Some(link) = params::optional_string(body, "next_link")? else {
        return Ok(None);
    };
    match url::Url::parse(link) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Some(u.to_string()))
        }
        _ => Err(Error::invalid_param(
            "next_link must be an http or https URL",
        )),
    }
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
        state.config.server.public_url,
        session.threepid.medium().as_str()
    )
}

async fn send_token(state: &Services, session: &SessionRecord) -> Result<(), Error> {
    let mut vars = Vars::new();
    vars.set("VALIDATION_LINK", validation_link(state, session))
        .set("VALIDATION_TOKEN", session.token.clone())
        .set("NEXT_URL", session.next_link.clone().unwrap_or_default());
    state
        .notifier
        .send(&session.threepid, Flow::Validation, vars)
        .await
        .map_err(|e| send_error(session.threepid.medium(), &e))
}

/// `POST /validate/{email,msisdn}/requestToken`
pub async fn request_token(
    state: &Services,
    medium: Medium,
    body: &Map<String, Value>,
    client_ip: Option<IpAddr>,
) -> Result<Value, Error> {
    if !state.config.session.validation_enabled {
        return Err(disabled());
    }
    let (threepid, extra) = requested_threepid(medium, body)?;
    let client_secret = params::client_secret(body)?;
    let send_attempt = params::integer(body, "send_attempt")?;
    let next_link = next_link(body)?;
    state.limits.request_token(client_ip, threepid.address())?;

    let now = now_ms();
    let existing = state
        .store
        .session_for(&threepid, client_secret)?
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
                client_secret: client_secret.to_owned(),
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
    let mut answer = extra;
    answer.insert("sid".into(), json!(session.sid));
    if medium == Medium::Msisdn {
        answer.insert("success".into(), json!(true));
    }
    Ok(Value::Object(answer))
}

/// The session `sid` if `client_secret` is its secret; unknown sid and wrong secret are
/// the same answer.
fn find(state: &Services, sid: &str, client_secret: &str) -> Result<SessionRecord, Error> {
    if !params::is_session_id(sid) {
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

/// `submitToken`, POST or GET. Returns the session on success.
pub async fn submit_token(
    state: &Services,
    medium: Medium,
    sid: &str,
    client_secret: &str,
    token: &str,
    client_ip: Option<IpAddr>,
) -> Result<SessionRecord, Error> {
    if !state.config.session.validation_enabled {
        return Err(disabled());
    }
    if token.is_empty() || token.chars().count() > 255 {
        return Err(Error::invalid_param("token must be 1-255 characters"));
    }
    state.limits.submit_token_ip(client_ip)?;
    let _guard = state.store.sessions_guard().await;
    let mut session = find(state, sid, client_secret)?;
    state.limits.submit_token_session(sid)?;
    if session.threepid.medium() != medium {
        return Err(no_valid_session());
    }
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
    Ok(session)
}

/// `GET /3pid/getValidated3pid`
pub fn get_validated(state: &Services, sid: &str, client_secret: &str) -> Result<Value, Error> {
    let session = validated(state, sid, client_secret)?;
    Ok(json!({
        "medium": session.threepid.medium().as_str(),
        "address": session.threepid.address(),
        "validated_at": session.validated_ms,
    }))
}

/// Deletes sessions a lifetime past their expiry, every ten minutes, until shutdown.
pub async fn purge_task(state: Services, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(600);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        state.limits.forget_idle();
        let cutoff = now_ms().saturating_sub(lifetime_ms(&state).saturating_mul(2));
        match state.store.purge_sessions(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged old validation sessions"),
            Err(e) => tracing::warn!(error = %e, "purging old validation sessions failed"),
        }
    }
}
