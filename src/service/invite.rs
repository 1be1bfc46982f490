//! 3PID room invites: `store-invite` (an invite for an e-mail address nobody has bound
//! yet: token, ephemeral key, invitation mail), `sign-ed25519` (the invitee's client
//! signs with the ephemeral key from the mail), the ephemeral keys' `isvalid`, and the
//! delivery on bind: when the address gets bound, its pending invites go to the Matrix
//! ID's homeserver (`POST /_matrix/federation/v1/3pid/onbind`) through a durable outbox
//! that retries with exponential backoff, survives restarts, and gives up after
//! `invite.delivery.maxAttempts` (kept for operators to see).

use super::params;
use crate::crypto::sign::Signer;
use crate::crypto::{b64_decode, b64_encode};
use crate::error::{ErrCode, Error};
use crate::metrics::Delivery;
use crate::model::now_ms;
use crate::model::{Medium, Mxid, ThreePid};
use crate::notify::{template::Vars, Flow, NotifyError};
use crate::service::Services;
use crate::store::bindings::BindingEntry;
use crate::store::invites::{InviteRecord, OutboxItem};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The federation path homeservers receive bound invites on (POST, as Synapse serves it).
pub const ONBIND_PATH: &str = "/_matrix/federation/v1/3pid/onbind";
/// Largest onbind answer read (it is ignored beyond its status).
const ONBIND_ANSWER_MAX: usize = 64 * 1024;

fn percent(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `f...@e...`: enough for the room to recognise whom they invited, never the whole
/// address (it ends up in room state, visible to every member).
pub fn redact_address(address: &str) -> String {
    let cut = |part: &str| {
        let n = part.chars().count();
        let keep = if n > 5 { 3 } else { 1.min(n) };
        format!("{}...", part.chars().take(keep).collect::<String>())
    };
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{}", cut(local), cut(domain)),
        None => cut(address),
    }
}

/// The key as we store it: standard unpadded base64 of its bytes, whatever flavour
/// the caller used (a `+` turned into a space by query decoding is put back).
fn normalise_key(text: &str) -> Option<String> {
    b64_decode(&unmangle(text)).map(|bytes| b64_encode(&bytes))
}

/// Base64 that went through a query string unencoded: `+` came back as a space (even
/// a leading one), line ends may trail.
fn unmangle(text: &str) -> String {
    text.trim_matches(['\r', '\n', '\t']).replace(' ', "+")
}

fn send_error(e: &NotifyError) -> Error {
    match e {
        NotifyError::Template(t) => Error::internal("rendering the invite", t),
        _ => Error::new(
            ErrCode::EmailSendError,
            "The invitation could not be sent; try again later",
        ),
    }
}

fn prefix(state: &Services) -> &'static str {
    if state.config.matrix.v1 {
        "/_matrix/identity/api/v1"
    } else {
        "/_matrix/identity/v2"
    }
}

/// The binding lookups would answer for `threepid` now.
fn live_binding(state: &Services, threepid: &ThreePid) -> Result<Option<BindingEntry>, Error> {
    let now = now_ms();
    Ok(state
        .store
        .binding(threepid)?
        .and_then(|r| r.effective().cloned())
        .filter(|e| e.not_before_ms <= now && now < e.not_after_ms))
}

/// `POST /v2/store-invite` by `caller` (the access token's user).
pub async fn store_invite(
    state: &Services,
    caller: &str,
    body: &Map<String, Value>,
) -> Result<Value, Error> {
    params::require_all(body, &["medium", "address", "room_id", "sender"])?;
    let medium = params::string(body, "medium")?;
    let address = params::string(body, "address")?;
    let room_id = params::string(body, "room_id")?;
    let sender = params::string(body, "sender")?;
    if medium != Medium::Email.as_str() {
        return Err(Error::new(
            ErrCode::Unsupported,
            "Only e-mail invites are supported",
        ));
    }
    let invalid = || Error::new(ErrCode::InvalidEmail, "Invalid e-mail address");
    let threepid = ThreePid::new(Medium::Email, address).map_err(|_| invalid())?;
    threepid
        .address()
        .parse::<lettre::Address>()
        .map_err(|_| invalid())?;
    if sender != caller {
        return Err(Error::new(
            ErrCode::NotYours,
            "sender must be the user of the access token",
        ));
    }
    if room_id.is_empty() || room_id.len() > 255 {
        return Err(Error::invalid_param("room_id must be 1-255 characters"));
    }
    state.limits.store_invite(sender, threepid.address())?;
    let now = now_ms();
    if let Some(entry) = live_binding(state, &threepid)? {
        return Err(Error::new(
            ErrCode::ThreepidInUse,
            "This address is already bound to a Matrix user",
        )
        .with("mxid", entry.mxid));
    }

    // Every other string field is kept for the mail and for operators.
    let mut details = BTreeMap::new();
    for (k, v) in body {
        if let (false, Value::String(v)) = (
            matches!(k.as_str(), "medium" | "address" | "room_id" | "sender"),
            v,
        ) {
            if details.len() < 32 && k.len() <= 64 && v.len() <= 2048 {
                details.insert(k.clone(), v.clone());
            }
        }
    }
    let token = crate::crypto::random_alphanumeric(64)
        .map_err(|e| Error::internal("generating an invite token", e))?;
    let seed = crate::crypto::random_bytes::<32>()
        .map_err(|e| Error::internal("generating an ephemeral key", e))?;
    let ephemeral = ed25519_dalek::SigningKey::from_bytes(&seed);
    let ephemeral_public = b64_encode(ephemeral.verifying_key().as_bytes());
    let invite = InviteRecord {
        token,
        threepid,
        room_id: room_id.to_owned(),
        sender: sender.to_owned(),
        ephemeral_public_key: ephemeral_public.clone(),
        created_ms: now,
        details,
    };

    // The mail first: when it cannot go out, nothing is stored and the answer says so.
    let vars = invite_vars(state, &invite, &b64_encode(&seed));
    state
        .notifier
        .send(&invite.threepid, Flow::Invite, vars)
        .await
        .map_err(|e| send_error(&e))?;
    state.store.put_invite(&invite).await?;
    tracing::info!(
        address = %crate::logging::redact_address(invite.threepid.address()),
        "3PID invite stored"
    );
    // Bound while the mail was on its way: deliver now rather than wait for a bind
    // that already happened.
    if let Some(entry) = live_binding(state, &invite.threepid)? {
        on_bind(state, &invite.threepid, &entry).await?;
    }

    let base = &state.config.server.public_url;
    let long_term = state
        .keys
        .public_key(state.keys.key_id())
        .unwrap_or_default();
    let display_name = if state.config.invite.full_display_name {
        invite.threepid.address().to_owned()
    } else {
        redact_address(invite.threepid.address())
    };
    Ok(json!({
        "token": invite.token,
        "public_keys": [
            {"public_key": long_term, "key_validity_url": format!("{base}/_matrix/identity/v2/pubkey/isvalid")},
            {"public_key": ephemeral_public, "key_validity_url": format!("{base}/_matrix/identity/v2/pubkey/ephemeral/isvalid")},
        ],
        "public_key": long_term,
        "display_name": display_name,
    }))
}

/// The invitation mail's placeholders (ma1sd's names, plus the sign URL and the invite
/// link Element understands).
fn invite_vars(state: &Services, invite: &InviteRecord, private_key: &str) -> Vars {
    let detail = |k: &str| {
        invite
            .details
            .get(k)
            .map(String::as_str)
            .unwrap_or_default()
    };
    let sender_name = detail("sender_display_name");
    let room_name = detail("room_name");
    let room_alias = detail("room_alias");
    let sign_url = format!(
        "{}{}/sign-ed25519?token={}&private_key={}",
        state.config.server.public_url,
        prefix(state),
        percent(&invite.token),
        percent(private_key)
    );
    // Always the configured client: a link in a mail from us must not point wherever a
    // caller asks (`org.matrix.web_client_location` is not trusted).
    let web = state.config.invite.web_client_url.as_str();
    let room_ref = if room_alias.is_empty() {
        invite.room_id.as_str()
    } else {
        room_alias
    };
    let mut link = format!(
        "{web}/#/room/{}?email={}&signurl={}",
        percent(room_ref),
        percent(invite.threepid.address()),
        percent(&sign_url)
    );
    for (param, value) in [
        ("room_name", room_name),
        ("room_avatar_url", detail("room_avatar_url")),
        ("inviter_name", sender_name),
        ("room_type", detail("room_type")),
    ] {
        if !value.is_empty() {
            link.push_str(&format!("&{param}={}", percent(value)));
        }
    }
    let register_url = state
        .config
        .threepid
        .email
        .templates
        .register_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", state.config.matrix.domain));
    let mut vars = Vars::new();
    vars.set("SENDER_ID", invite.sender.clone())
        .set_truncated("SENDER_NAME", sender_name, 20)
        .set_truncated(
            "SENDER_NAME_OR_ID",
            if sender_name.is_empty() {
                &invite.sender
            } else {
                sender_name
            },
            40,
        )
        .set("ROOM_ID", invite.room_id.clone())
        .set_truncated("ROOM_NAME", room_name, 30)
        .set_truncated(
            "ROOM_NAME_OR_ID",
            if room_name.is_empty() {
                room_ref
            } else {
                room_name
            },
            40,
        )
        .set("ROOM_ALIAS", room_alias)
        .set("ROOM_AVATAR_URL", detail("room_avatar_url"))
        .set("SENDER_AVATAR_URL", detail("sender_avatar_url"))
        .set("ROOM_TYPE", detail("room_type"))
        .set("INVITE_MEDIUM", invite.threepid.medium().as_str())
        .set("INVITE_ADDRESS", invite.threepid.address())
        .set(
            "INVITE_ADDRESS_URL_ENCODED",
            percent(invite.threepid.address()),
        )
        .set(
            "INVITE_MEDIUM_URL_ENCODED",
            invite.threepid.medium().as_str(),
        )
        .set("INVITE_TOKEN", invite.token.clone())
        .set("EPHEMERAL_PRIVATE_KEY", private_key)
        .set("SIGN_URL", sign_url)
        .set("INVITE_LINK", link)
        .set("REGISTER_URL", register_url);
    vars
}

/// `POST /sign-ed25519`: `{mxid, sender, token, signatures}` signed with the invite's
/// ephemeral key, which the caller proves to hold by sending it.
pub fn sign_ed25519(state: &Services, body: &Map<String, Value>) -> Result<Value, Error> {
    params::require_all(body, &["mxid", "token", "private_key"])?;
    let mxid = Mxid::parse(params::string(body, "mxid")?)
        .ok_or_else(|| Error::invalid_param("mxid is not a valid Matrix user ID"))?;
    let token = params::string(body, "token")?;
    let private_key = params::string(body, "private_key")?;
    let unknown = || Error::new(ErrCode::Unrecognized, "Didn't recognize token");
    let invite = state.store.invite(token)?.ok_or_else(unknown)?;
    if expired(state, invite.created_ms) {
        return Err(unknown());
    }
    let seed: [u8; 32] = b64_decode(&unmangle(private_key))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::invalid_param("private_key is not a base64 ed25519 seed"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    if b64_encode(key.verifying_key().as_bytes()) != invite.ephemeral_public_key {
        return Err(Error::invalid_param("private_key is not this invite's key"));
    }
    let mut signed =
        json!({ "mxid": mxid.as_str(), "sender": invite.sender, "token": invite.token });
    Signer::new(key, "ed25519:0")
        .sign_json(&state.config.server.name, &mut signed)
        .map_err(|e| Error::internal("signing with an ephemeral key", e))?;
    Ok(signed)
}

/// `GET /pubkey/ephemeral/isvalid?public_key=`
pub fn ephemeral_is_valid(state: &Services, public_key: &str) -> Result<Value, Error> {
    let valid = match normalise_key(public_key) {
        Some(k) => state
            .store
            .ephemeral_key(&k)?
            .is_some_and(|key| !expired(state, key.created_ms)),
        None => false,
    };
    Ok(json!({ "valid": valid }))
}

fn expired(state: &Services, created_ms: u64) -> bool {
    state.config.invite.expire_after.is_some_and(|after| {
        created_ms.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)) <= now_ms()
    })
}

/// Called once a 3PID is bound to `entry.mxid` (by `/3pid/bind`, later by sync jobs):
/// moves its pending invites into the outbox, durably, and wakes the delivery task.
/// Returns the invites as they go into the association (for the bind answer).
pub async fn on_bind(
    state: &Services,
    threepid: &ThreePid,
    entry: &BindingEntry,
) -> Result<Vec<Value>, Error> {
    let Some(mxid) = Mxid::parse(&entry.mxid) else {
        return Ok(Vec::new());
    };
    let mut built: Vec<Value> = Vec::new();
    let mut dropped = 0;
    let taken = state
        .store
        .take_invites(threepid, |invites| {
            let sign_error =
                |e| crate::store::StoreError::Corrupt(format!("cannot sign an invite: {e}"));
            let mut list = Vec::with_capacity(invites.len());
            let mut tokens = Vec::with_capacity(invites.len());
            for invite in invites {
                if expired(state, invite.created_ms) {
                    dropped += 1;
                    continue;
                }
                let mut signed =
                    json!({ "mxid": entry.mxid, "sender": invite.sender, "token": invite.token });
                state.keys.sign(&mut signed).map_err(sign_error)?;
                list.push(json!({
                    "medium": threepid.medium().as_str(),
                    "address": threepid.address(),
                    "mxid": entry.mxid,
                    "room_id": invite.room_id,
                    "sender": invite.sender,
                    "token": invite.token,
                    "signed": signed,
                }));
                tokens.push(invite.token.clone());
            }
            if list.is_empty() {
                return Ok(None);
            }
            let mut body = json!({
                "medium": threepid.medium().as_str(),
                "address": threepid.address(),
                "mxid": entry.mxid,
                "ts": entry.created_ms,
                "not_before": entry.not_before_ms,
                "not_after": entry.not_after_ms,
                "invites": list,
            });
            state.keys.sign(&mut body).map_err(sign_error)?;
            built = list;
            let now = now_ms();
            Ok(Some(OutboxItem {
                destination: mxid.server().to_owned(),
                body: body.to_string(),
                invites: tokens,
                created_ms: now,
                attempts: 0,
                next_attempt_ms: now,
                last_error: None,
                failed: false,
            }))
        })
        .await?;
    if dropped > 0 {
        tracing::info!(invites = dropped, "expired invites dropped at bind");
    }
    if !built.is_empty() {
        tracing::info!(
            invites = built.len(),
            of = taken.len(),
            destination = mxid.server(),
            "pending invites queued for delivery"
        );
        state.outbox_wake.notify_one();
    }
    Ok(built)
}

/// Queues the invites of every address that is bound by now (binds that happened while
/// an invite was being stored, before a crash, or by an operator or a sync job).
pub async fn reconcile(state: &Services) -> Result<usize, Error> {
    let mut seen = std::collections::HashSet::new();
    let mut queued = 0;
    for invite in state.store.all_invites()? {
        if !seen.insert(invite.threepid.clone()) {
            continue;
        }
        if let Some(entry) = live_binding(state, &invite.threepid)? {
            queued += on_bind(state, &invite.threepid, &entry).await?.len();
        }
    }
    Ok(queued)
}

/// How long to wait after the `attempts`-th failure: doubling from
/// `invite.delivery.minDelay`, at most `maxDelay`.
fn backoff(state: &Services, attempts: u32) -> Duration {
    let cfg = &state.config.invite;
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    cfg.min_delay.saturating_mul(factor).min(cfg.max_delay)
}

/// Destinations delivered to at once; one slow homeserver holds up only its own items.
const PARALLEL_DESTINATIONS: usize = 8;

/// Tries one outbox item once and records the outcome.
async fn deliver(state: &Services, id: &[u8], mut item: OutboxItem) -> Result<(), Error> {
    let outcome = match serde_json::from_str::<Value>(&item.body) {
        Ok(body) => match state
            .federation
            .post_json(&item.destination, ONBIND_PATH, &body, ONBIND_ANSWER_MAX)
            .await
        {
            Ok((status, _)) if (200..300).contains(&status) => None,
            Ok((status, _)) => Some(format!("{} answered HTTP {status}", item.destination)),
            Err(e) => Some(e.to_string()),
        },
        // Cannot happen short of corruption; never retried.
        Err(e) => {
            item.attempts = state.config.invite.max_attempts;
            Some(format!("unreadable body: {e}"))
        }
    };
    let Some(why) = outcome else {
        state.metrics.delivery(Delivery::Delivered);
        state.store.delete_outbox(id).await?;
        tracing::info!(
            destination = %item.destination,
            invites = item.invites.len(),
            attempts = item.attempts + 1,
            "invites delivered"
        );
        return Ok(());
    };
    item.attempts = item.attempts.saturating_add(1);
    item.last_error = Some(why.clone());
    if item.attempts >= state.config.invite.max_attempts {
        state.metrics.delivery(Delivery::Failed);
        item.failed = true;
        tracing::warn!(destination = %item.destination, attempts = item.attempts, error = %why,
            "invite delivery failed for good; see `mxisd outbox` (and `mxisd outbox --retry`)");
    } else {
        state.metrics.delivery(Delivery::Retry);
        let wait = backoff(state, item.attempts);
        item.next_attempt_ms =
            now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        tracing::info!(destination = %item.destination, attempts = item.attempts, error = %why,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "invite delivery failed; will retry");
    }
    state.store.update_outbox(id, &item).await?;
    Ok(())
}

/// Tries every due outbox item once, a few destinations at a time (each destination's
/// items in order). Returns when the next pending one is due, if any.
async fn deliver_due(state: &Services) -> Result<Option<u64>, Error> {
    use futures_util::StreamExt as _;
    let now = now_ms();
    let mut by_destination: BTreeMap<String, Vec<(Vec<u8>, OutboxItem)>> = BTreeMap::new();
    for (id, item) in state.store.outbox()? {
        if !item.failed && item.next_attempt_ms <= now {
            by_destination
                .entry(item.destination.clone())
                .or_default()
                .push((id, item));
        }
    }
    futures_util::stream::iter(by_destination.into_values())
        .for_each_concurrent(PARALLEL_DESTINATIONS, |items| async move {
            for (id, item) in items {
                if let Err(e) = deliver(state, &id, item).await {
                    tracing::warn!(error = %e.message, "recording an outbox delivery failed");
                }
            }
        })
        .await;
    Ok(state
        .store
        .outbox()?
        .iter()
        .filter(|(_, i)| !i.failed)
        .map(|(_, i)| i.next_attempt_ms)
        .min())
}

/// Delivers the outbox until shutdown: at start (what a previous run left), when woken
/// by a new item, and when a retry is due. At start and every 10 minutes it also drops
/// expired invites and queues those whose address got bound meanwhile.
pub async fn delivery_task(state: Services, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut housekeeping: Option<std::time::Instant> = None;
    loop {
        if housekeeping.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
            housekeeping = Some(std::time::Instant::now());
            expire(&state).await;
            match reconcile(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(invites = n, "invites of addresses bound meanwhile queued"),
                Err(e) => tracing::warn!(error = %e.message, "checking pending invites failed"),
            }
        }
        let next = match deliver_due(&state).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e.message, "outbox delivery round failed");
                Some(now_ms() + 10_000)
            }
        };
        let wait = next
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.outbox_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Drops invites older than `invite.expiration.after`.
pub async fn expire(state: &Services) {
    let Some(after) = state.config.invite.expire_after else {
        return;
    };
    let cutoff = now_ms().saturating_sub(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
    match state.store.expire_invites(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(invites = n, "expired 3PID invites dropped"),
        Err(e) => tracing::warn!(error = %e, "dropping expired invites failed"),
    }
}

/// Operators: every pending invite.
pub fn list(state: &Services) -> Result<Value, Error> {
    let invites: Vec<Value> = state
        .store
        .all_invites()?
        .iter()
        .map(|i| describe(state, i))
        .collect();
    Ok(json!({ "invites": invites }))
}

fn describe(state: &Services, i: &InviteRecord) -> Value {
    let expires = state.config.invite.expire_after.map(|a| {
        i.created_ms
            .saturating_add(u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
    });
    json!({
        "token": i.token, "medium": i.threepid.medium().as_str(), "address": i.threepid.address(),
        "room_id": i.room_id, "sender": i.sender, "created_ms": i.created_ms, "expires_ms": expires,
        "details": i.details,
    })
}

/// Operators: one invite.
pub fn show(state: &Services, token: &str) -> Result<Value, Error> {
    state
        .store
        .invite(token)?
        .map(|i| describe(state, &i))
        .ok_or_else(|| Error::not_found("No pending invite has that token"))
}

/// Operators: drop one invite.
pub async fn remove(state: &Services, token: &str) -> Result<Value, Error> {
    Ok(json!({ "removed": state.store.remove_invite(token).await? }))
}

/// Operators: the outbox, pending and failed deliveries.
pub fn outbox(state: &Services) -> Result<Value, Error> {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for (id, item) in state.store.outbox()? {
        let mxid = serde_json::from_str::<Value>(&item.body)
            .ok()
            .and_then(|b| b.get("mxid").cloned())
            .unwrap_or(Value::Null);
        let entry = json!({
            "id": id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "destination": item.destination, "mxid": mxid, "invites": item.invites,
            "attempts": item.attempts, "next_attempt_ms": item.next_attempt_ms,
            "last_error": item.last_error, "created_ms": item.created_ms,
        });
        if item.failed {
            failed.push(entry);
        } else {
            pending.push(entry);
        }
    }
    Ok(json!({ "pending": pending, "failed": failed }))
}

/// Operators: try failed deliveries again (from the start of their backoff).
pub async fn retry_failed(state: &Services) -> Result<Value, Error> {
    let n = state.store.retry_failed_outbox().await?;
    state.outbox_wake.notify_one();
    Ok(json!({ "retried": n }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_never_show_the_whole_address() {
        assert_eq!(redact_address("alice@example.org"), "a...@exa...");
        assert_eq!(redact_address("alexander@example.org"), "ale...@exa...");
        assert_eq!(redact_address("bo@x.io"), "b...@x...");
        assert_eq!(redact_address("nodomain"), "nod...");
    }

    #[test]
    fn keys_normalise_across_base64_flavours() {
        let std = b64_encode(&[0xfb; 32]);
        assert!(std.contains('+') || std.contains('/'));
        let url = std.replace('+', "-").replace('/', "_");
        assert_eq!(normalise_key(&url).as_deref(), Some(std.as_str()));
        assert_eq!(
            normalise_key(&std.replace('+', " ")).as_deref(),
            Some(std.as_str())
        );
        assert_eq!(normalise_key("!!"), None);
    }
}
