//! `/3pid/bind` and `/3pid/unbind`: publishing a validated 3PID → Matrix ID association
//! (origin `bind` in the binding record) and removing it again.
//!
//! Unbind is authorised by one of two parties only: whoever holds a validated session
//! for that 3PID (`sid` + `client_secret`), or the homeserver of the Matrix ID, proven
//! by an `X-Matrix` signature. It removes the user's own bind, never an operator's or a
//! directory's entry, and succeeds when there is nothing to remove.
//!
//! Once a bind is stored, the address's pending room invites are queued for delivery to
//! the Matrix ID's homeserver ([`super::invite::on_bind`]); the answer never waits for
//! that delivery.

use super::lookup::Association;
use super::session::{self, SessionCredentials};
use crate::error::{ErrCode, Error};
use crate::federation::xmatrix;
use crate::model::now_ms;
use crate::model::{Mxid, ThreePid};
use crate::notify::{template::Vars, Flow};
use crate::service::Services;
use crate::store::bindings::{BindingChange, BindingEntry, Origin};
use serde_json::Value;

/// How long a user's bind is valid (Sydent: 100 years).
const BIND_VALIDITY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

fn forbidden(message: impl Into<String>) -> Error {
    Error::new(ErrCode::Forbidden, message)
}

/// Who is calling `/3pid/bind`: a v2 account, or nobody (v1).
#[derive(Debug, Clone, Copy)]
pub enum Binder<'a> {
    Account(&'a str),
    Anonymous,
}

/// A `/3pid/bind` request.
#[derive(Debug, Clone)]
pub struct BindRequest<'a> {
    /// The validated session (`client_secret` already checked against the grammar).
    pub session: SessionCredentials<'a>,
    pub mxid: Mxid,
}

/// `POST /3pid/bind`: stores the binding and answers the signed association.
pub async fn bind(
    state: &Services,
    binder: Binder<'_>,
    request: BindRequest<'_>,
) -> Result<Association, Error> {
    let BindRequest {
        session: SessionCredentials { sid, client_secret },
        mxid,
    } = request;
    match binder {
        Binder::Account(user) if user != mxid.as_str() => {
            return Err(Error::new(
                ErrCode::NotYours,
                "You can only bind 3PIDs to your own Matrix ID",
            ));
        }
        Binder::Account(_) => {}
        // Without an account nothing ties the Matrix ID to the caller.
        Binder::Anonymous if !state.config().session.bind_v1 => {
            return Err(forbidden(
                "The v1 bind is disabled on this server; use /_matrix/identity/v2/3pid/bind",
            ));
        }
        Binder::Anonymous => {}
    }
    if state.config().session.bind_only_local && mxid.server() != state.config().matrix.domain {
        return Err(forbidden(format!(
            "This server only binds Matrix IDs of {}",
            state.config().matrix.domain
        )));
    }
    let session = session::validated(state, sid, client_secret)?;
    // The policy may have closed since the session was validated (a reload).
    session::ensure_class_allowed(state, &session.threepid)?;
    let now = now_ms();
    let entry = BindingEntry {
        origin: Origin::Bind,
        mxid: mxid.as_str().to_owned(),
        created_ms: now,
        updated_ms: now,
        not_before_ms: now,
        not_after_ms: now.saturating_add(BIND_VALIDITY_MS),
    };
    state
        .store
        .change_bindings(vec![BindingChange::Set {
            threepid: session.threepid.clone(),
            origin: Origin::Bind,
            mxid: entry.mxid.clone(),
            not_before_ms: entry.not_before_ms,
            not_after_ms: entry.not_after_ms,
        }])
        .await?;
    tracing::info!(
        medium = session.threepid.medium().as_str(),
        address = %crate::logging::redact_address(session.threepid.address()),
        "3PID bound"
    );
    // Sign what is stored (a re-bind keeps its first `ts`), so v1 /lookup agrees.
    let stored = state
        .store
        .binding(&session.threepid)?
        .and_then(|r| r.entries.into_iter().find(|e| e.origin == Origin::Bind))
        .unwrap_or(entry);
    let invites = super::invite::on_bind(state, &session.threepid, &stored).await?;
    let association = super::lookup::signed_association(state, &session.threepid, &stored)?;
    if invites.is_empty() {
        return Ok(association);
    }
    // The answer carries the invites too, signed with the rest (as Sydent's does).
    Association {
        invites: Some(invites),
        ..association
    }
    .sign(state)
}

/// `host[:port]` of a base URL (homeservers may name us by the public URL's host).
fn public_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    rest.split('/').next().filter(|h| !h.is_empty())
}

/// How an unbind request proves its right.
#[derive(Debug, Clone)]
pub struct UnbindAuth<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    pub method: &'a str,
    /// Path and query as received (what the homeserver signed).
    pub uri: &'a str,
    /// The request body as received: the content the homeserver signed.
    pub content: &'a Value,
}

/// A `/3pid/unbind` request.
#[derive(Debug, Clone)]
pub struct UnbindRequest<'a> {
    pub mxid: Mxid,
    pub threepid: ThreePid,
    /// The session that validated `threepid`, when the user (not the homeserver) asks.
    pub session: Option<SessionCredentials<'a>>,
}

/// Refuses when unbinding is disabled; `http` asks before it parses an unbind body, so
/// a disabled server answers that whatever the body.
pub fn ensure_unbind_enabled(state: &Services) -> Result<(), Error> {
    if state.config().session.unbind_enabled {
        Ok(())
    } else {
        Err(forbidden("Unbinding is disabled on this server"))
    }
}

/// `POST /3pid/unbind`
pub async fn unbind(
    state: &Services,
    request: UnbindRequest<'_>,
    auth: UnbindAuth<'_>,
) -> Result<(), Error> {
    ensure_unbind_enabled(state)?;
    let UnbindRequest {
        mxid,
        threepid,
        session,
    } = request;
    match session {
        Some(credentials) => {
            let session = session::validated(state, credentials.sid, credentials.client_secret)?;
            if session.threepid != threepid {
                return Err(forbidden("The session was not validated for this 3PID"));
            }
        }
        None => {
            let header = auth.authorization.ok_or_else(|| {
                forbidden("Unbinding needs a validated session or a homeserver signature")
            })?;
            let header = xmatrix::parse_header(header).map_err(|e| forbidden(e.to_string()))?;
            // Only the mxid's own homeserver may: refuse others before fetching any key.
            if !header.origin.eq_ignore_ascii_case(mxid.server()) {
                return Err(forbidden(format!(
                    "{} cannot unbind a user of {}",
                    header.origin,
                    mxid.server()
                )));
            }
            let config = state.config();
            let public_host = public_host(&config.server.public_url);
            let mut names = vec![config.server.name.as_str()];
            if let Some(h) = public_host.filter(|h| !h.eq_ignore_ascii_case(names[0])) {
                names.push(h);
            }
            let origin = state
                .federation
                .verify_request(&header, &names, auth.method, auth.uri, auth.content)
                .await
                .map_err(|e| {
                    tracing::info!(error = %e, "homeserver unbind refused");
                    match e {
                        xmatrix::XMatrixError::WrongDestination(_) => {
                            Error::new(ErrCode::Unauthorized, e.to_string())
                        }
                        _ => forbidden(e.to_string()),
                    }
                })?;
            if origin != mxid.server().to_ascii_lowercase() {
                return Err(forbidden(format!(
                    "{origin} cannot unbind a user of {}",
                    mxid.server()
                )));
            }
        }
    }

    // Only the user's own bind to this very Matrix ID goes.
    let bound_here = state.store.binding(&threepid)?.is_some_and(|record| {
        record
            .entries
            .iter()
            .any(|e| e.origin == Origin::Bind && e.mxid == mxid.as_str())
    });
    if bound_here {
        state
            .store
            .change_bindings(vec![BindingChange::RemoveIfMxid {
                threepid: threepid.clone(),
                origin: Origin::Bind,
                mxid: mxid.as_str().to_owned(),
            }])
            .await?;
        tracing::info!(
            medium = threepid.medium().as_str(),
            address = %crate::logging::redact_address(threepid.address()),
            "3PID unbound"
        );
        if state.config().session.unbind_notifications {
            let state = state.clone();
            let mxid = mxid.as_str().to_owned();
            tokio::spawn(async move {
                let mut vars = Vars::new();
                vars.set("MATRIX_ID", mxid);
                if let Err(e) = state
                    .notifier()
                    .send(&threepid, Flow::UnbindNotification, vars)
                    .await
                {
                    tracing::warn!(error = %e, "unbind notification not sent");
                }
            });
        }
    }
    Ok(())
}
