//! 3PID room invites: `store-invite` (an invite for an e-mail address nobody has bound
//! yet: token, ephemeral key, invitation mail), `sign-ed25519` (the invitee's client
//! signs with the ephemeral key from the mail), the ephemeral keys' `isvalid`, and the
//! delivery on bind: when the address gets bound, its pending invites go to the Matrix
//! ID's homeserver (`POST /_matrix/federation/v1/3pid/onbind`) through a durable outbox
//! that retries with exponential backoff, survives restarts, and gives up after
//! `invite.delivery.maxAttempts` (kept for operators to see). Here: storing, signing
//! and queueing on bind; the delivery task is in `invite/delivery.rs`, operators' views
//! in `invite/admin.rs`.

mod admin;
mod delivery;

pub use admin::{
    list, outbox, remove, retry_failed, show, InviteList, InviteView, OutboxEntry, OutboxView,
    Removed, Retried,
};
pub use delivery::delivery_task;

use crate::crypto::sign::Signer;
use crate::crypto::{b64_decode, b64_encode};
use crate::error::{ErrCode, Error};
use crate::model::now_ms;
use crate::model::{Medium, Mxid, ThreePid};
use crate::notify::{template::Vars, Flow, NotifyError};
use crate::service::Services;
use crate::store::bindings::BindingEntry;
use crate::store::invites::{InviteRecord, OutboxItem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

// Answers' fields are declared in alphabetical order: serialised, they are byte for byte
// the sorted objects these endpoints always gave.

/// A `store-invite` request, read by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInviteRequest {
    pub medium: String,
    pub address: String,
    pub room_id: String,
    pub sender: String,
    /// Every other string field of the body (room name, sender's display name...), kept
    /// for the mail and for operators; at most 32, names up to 64 bytes, values 2048.
    pub details: BTreeMap<String, String>,
}

/// Who asks for a `store-invite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inviter<'a> {
    /// v2: the access token's user, who must be the `sender`.
    Account(&'a str),
    /// v1 (Sydent's, no account): any `sender`, counted per client address too.
    V1 { ip: Option<std::net::IpAddr> },
}

/// The answer to `store-invite`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredInvite {
    pub display_name: String,
    pub public_key: String,
    pub public_keys: Vec<PublicKey>,
    pub token: String,
}

/// A key the invite can be checked against, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicKey {
    pub key_validity_url: String,
    pub public_key: String,
}

/// A `sign-ed25519` request, read by the HTTP layer (body or sign link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    pub mxid: Mxid,
    pub token: String,
    pub private_key: String,
}

/// `{mxid, sender, token}` signed with an invite's ephemeral key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedInvite {
    pub mxid: String,
    pub sender: String,
    /// entity → key id → signature.
    pub signatures: BTreeMap<String, BTreeMap<String, String>>,
    pub token: String,
}

/// Whether a public key is (still) valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Validity {
    pub valid: bool,
}

fn percent(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `f...@e...`: enough for the room to recognise whom they invited, never the whole
/// address (it ends up in room state, visible to every member).
pub fn invite_display_name(address: &str) -> String {
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
    if state.config().matrix.v1 {
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

/// `POST /v2/store-invite` by the access token's user, or `POST /api/v1/store-invite`.
pub async fn store_invite(
    state: &Services,
    inviter: Inviter<'_>,
    request: StoreInviteRequest,
) -> Result<StoredInvite, Error> {
    if let Inviter::V1 { ip } = inviter {
        state.limits().store_invite_ip(ip)?;
    }
    let StoreInviteRequest {
        medium,
        address,
        room_id,
        sender,
        details,
    } = request;
    if medium != Medium::Email.as_str() {
        return Err(Error::new(
            ErrCode::Unsupported,
            "Only e-mail invites are supported",
        ));
    }
    let invalid = || Error::new(ErrCode::InvalidEmail, "Invalid e-mail address");
    let threepid = ThreePid::new(Medium::Email, &address).map_err(|_| invalid())?;
    threepid
        .address()
        .parse::<lettre::Address>()
        .map_err(|_| invalid())?;
    match inviter {
        Inviter::Account(caller) if sender != caller => {
            return Err(Error::new(
                ErrCode::NotYours,
                "sender must be the user of the access token",
            ));
        }
        Inviter::V1 { .. } if Mxid::parse(&sender).is_none() => {
            return Err(Error::invalid_param("sender is not a valid Matrix user ID"));
        }
        _ => {}
    }
    if room_id.is_empty() || room_id.len() > 255 {
        return Err(Error::invalid_param("room_id must be 1-255 characters"));
    }
    state.limits().store_invite(&sender, threepid.address())?;
    let now = now_ms();
    if let Some(entry) = live_binding(state, &threepid)? {
        return Err(Error::new(
            ErrCode::ThreepidInUse,
            "This address is already bound to a Matrix user",
        )
        .with("mxid", entry.mxid));
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
        room_id,
        sender,
        ephemeral_public_key: ephemeral_public.clone(),
        created_ms: now,
        details,
    };

    // The mail first: when it cannot go out, nothing is stored and the answer says so.
    let vars = invite_vars(state, &invite, &b64_encode(&seed));
    state
        .notifier()
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

    // Keys are checked where the invite was made (Sydent's v1 answer points at v1).
    let keys_base = match inviter {
        Inviter::Account(_) => format!("{}/_matrix/identity/v2", state.config().server.public_url),
        Inviter::V1 { .. } => format!(
            "{}/_matrix/identity/api/v1",
            state.config().server.public_url
        ),
    };
    let long_term = state
        .keys
        .public_key(state.keys.key_id())
        .unwrap_or_default();
    let display_name = if state.config().invite.full_display_name {
        invite.threepid.address().to_owned()
    } else {
        invite_display_name(invite.threepid.address())
    };
    Ok(StoredInvite {
        display_name,
        public_key: long_term.clone(),
        public_keys: vec![
            PublicKey {
                key_validity_url: format!("{keys_base}/pubkey/isvalid"),
                public_key: long_term,
            },
            PublicKey {
                key_validity_url: format!("{keys_base}/pubkey/ephemeral/isvalid"),
                public_key: ephemeral_public,
            },
        ],
        token: invite.token,
    })
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
        state.config().server.public_url,
        prefix(state),
        percent(&invite.token),
        percent(private_key)
    );
    // Always the configured client: a link in a mail from us must not point wherever a
    // caller asks (`org.matrix.web_client_location` is not trusted).
    let config = state.config();
    let web = config.invite.web_client_url.as_str();
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
        .config()
        .threepid
        .email
        .templates
        .register_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", state.config().matrix.domain));
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
pub fn sign_ed25519(state: &Services, request: &SignRequest) -> Result<SignedInvite, Error> {
    let unknown = || Error::new(ErrCode::Unrecognized, "Didn't recognize token");
    let invite = state.store.invite(&request.token)?.ok_or_else(unknown)?;
    if expired(state, invite.created_ms) {
        return Err(unknown());
    }
    let seed: [u8; 32] = b64_decode(&unmangle(&request.private_key))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::invalid_param("private_key is not a base64 ed25519 seed"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    if b64_encode(key.verifying_key().as_bytes()) != invite.ephemeral_public_key {
        return Err(Error::invalid_param("private_key is not this invite's key"));
    }
    let mut signed =
        json!({ "mxid": request.mxid.as_str(), "sender": invite.sender, "token": invite.token });
    Signer::new(key, "ed25519:0")
        .sign_json(&state.config().server.name, &mut signed)
        .map_err(|e| Error::internal("signing with an ephemeral key", e))?;
    serde_json::from_value(signed).map_err(|e| Error::internal("reading a signed invite", e))
}

/// `GET /pubkey/ephemeral/isvalid?public_key=`
pub fn ephemeral_is_valid(state: &Services, public_key: &str) -> Result<Validity, Error> {
    let valid = match normalise_key(public_key) {
        Some(k) => state
            .store
            .ephemeral_key(&k)?
            .is_some_and(|key| !expired(state, key.created_ms)),
        None => false,
    };
    Ok(Validity { valid })
}

fn expired(state: &Services, created_ms: u64) -> bool {
    state.config().invite.expire_after.is_some_and(|after| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_never_show_the_whole_address() {
        assert_eq!(invite_display_name("alice@example.org"), "a...@exa...");
        assert_eq!(
            invite_display_name("alexander@example.org"),
            "ale...@exa..."
        );
        assert_eq!(invite_display_name("bo@x.io"), "b...@x...");
        assert_eq!(invite_display_name("nodomain"), "nod...");
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

    #[test]
    fn typed_answers_serialise_as_the_sorted_objects_they_replace() {
        let mut signed = json!({ "mxid": "@a:x.org", "sender": "@b:x.org", "token": "t" });
        Signer::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]), "ed25519:0")
            .sign_json("id.x.org", &mut signed)
            .unwrap();
        let typed: SignedInvite = serde_json::from_value(signed.clone()).unwrap();
        assert_eq!(
            serde_json::to_string(&typed).unwrap(),
            serde_json::to_string(&signed).unwrap()
        );
        let entry = OutboxEntry {
            attempts: 1,
            created_ms: 2,
            destination: "x.org".into(),
            id: "00ff".into(),
            invites: vec!["t".into()],
            last_error: None,
            mxid: Some("@a:x.org".into()),
            next_attempt_ms: 3,
        };
        let before = json!({
            "id": "00ff", "destination": "x.org", "mxid": "@a:x.org", "invites": ["t"],
            "attempts": 1, "next_attempt_ms": 3, "last_error": null, "created_ms": 2,
        });
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
    }
}
