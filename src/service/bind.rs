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

use super::params;
use super::session;
use crate::error::{ErrCode, Error};
use crate::federation::xmatrix;
use crate::model::now_ms;
use crate::model::{Medium, Mxid, ThreePid};
use crate::notify::{template::Vars, Flow};
use crate::service::Services;
use crate::store::bindings::{BindingChange, BindingEntry, Origin};
use serde_json::{json, Map, Value};

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

/// `POST /3pid/bind`: stores the binding and answers the signed association.
pub async fn bind(
    state: &Services,
    binder: Binder<'_>,
    body: &Map<String, Value>,
) -> Result<Value, Error> {
    params::require_all(body, &["sid", "client_secret", "mxid"])?;
    let sid = params::string(body, "sid")?;
    let client_secret = params::client_secret(body)?;
    let mxid_text = params::string(body, "mxid")?;
    let mxid = Mxid::parse(mxid_text)
        .ok_or_else(|| Error::invalid_param("mxid is not a valid Matrix user ID"))?;
    match binder {
        Binder::Account(user) if user != mxid.as_str() => {
            return Err(Error::new(
                ErrCode::NotYours,
                "You can only bind 3PIDs to your own Matrix ID",
            ));
        }
        Binder::Account(_) => {}
        // Without an account nothing ties the Matrix ID to the caller.
        Binder::Anonymous if !state.config.session.bind_v1 => {
            return Err(forbidden(
                "The v1 bind is disabled on this server; use /_matrix/identity/v2/3pid/bind",
            ));
        }
        Binder::Anonymous => {}
    }
    if state.config.session.bind_only_local && mxid.server() != state.config.matrix.domain {
        return Err(forbidden(format!(
            "This server only binds Matrix IDs of {}",
            state.config.matrix.domain
        )));
    }
    let session = session::validated(state, sid, client_secret)?;
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
    let mut association = super::lookup::signed_association(state, &session.threepid, &stored)?;
    if !invites.is_empty() {
        // The answer carries the invites too, signed with the rest (as Sydent's does).
        if let Some(map) = association.as_object_mut() {
            map.remove("signatures");
            map.insert("invites".into(), Value::Array(invites));
        }
        state
            .keys
            .sign(&mut association)
            .map_err(|e| Error::internal("signing an association", e))?;
    }
    Ok(association)
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
}

/// `POST /3pid/unbind`
pub async fn unbind(
    state: &Services,
    body: &Map<String, Value>,
    auth: UnbindAuth<'_>,
) -> Result<Value, Error> {
    if !state.config.session.unbind_enabled {
        return Err(forbidden("Unbinding is disabled on this server"));
    }
    params::require_all(body, &["mxid", "threepid"])?;
    let mxid_text = params::string(body, "mxid")?;
    let mxid = Mxid::parse(mxid_text)
        .ok_or_else(|| Error::invalid_param("mxid is not a valid Matrix user ID"))?;
    let threepid_obj = match body.get("threepid") {
        Some(Value::Object(o)) => o,
        _ => return Err(Error::invalid_param("threepid must be {medium, address}")),
    };
    params::require_all(threepid_obj, &["medium", "address"])?;
    let medium = Medium::parse(params::string(threepid_obj, "medium")?)
        .ok_or_else(|| Error::invalid_param("Unknown medium"))?;
    let threepid = ThreePid::new(medium, params::string(threepid_obj, "address")?)
        .map_err(|e| Error::invalid_param(format!("threepid.address: {e}")))?;

    let sid = params::optional_string(body, "sid")?;
    let secret = params::optional_string(body, "client_secret")?;
    match (sid, secret) {
        (Some(sid), Some(secret)) => {
            let session = session::validated(state, sid, secret)?;
            if session.threepid != threepid {
                return Err(forbidden("The session was not validated for this 3PID"));
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::missing_params(&["sid", "client_secret"]));
        }
        (None, None) => {
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
            let public_host = public_host(&state.config.server.public_url);
            let mut names = vec![state.config.server.name.as_str()];
            if let Some(h) = public_host.filter(|h| !h.eq_ignore_ascii_case(names[0])) {
                names.push(h);
            }
            let origin = state
                .federation
                .verify_request(
                    &header,
                    &names,
                    auth.method,
                    auth.uri,
                    &Value::Object(body.clone()),
                )
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
        if state.config.session.unbind_notifications {
            let state = state.clone();
            let mxid = mxid.as_str().to_owned();
            tokio::spawn(async move {
                let mut vars = Vars::new();
                vars.set("MATRIX_ID", mxid);
                if let Err(e) = state
                    .notifier
                    .send(&threepid, Flow::UnbindNotification, vars)
                    .await
                {
                    tracing::warn!(error = %e, "unbind notification not sent");
                }
            });
        }
    }
    Ok(json!({}))
}
