//! The registration policy (`register.policy`) and the 3PID invite policy
//! (`invite.policy`), on the client-server requests a reverse proxy routes here:
//! `register/{email,msisdn}/requestToken`, `register`, `rooms/{roomId}/invite`. A
//! request the policy allows goes to the homeserver byte for byte; one it refuses is
//! answered 403 `M_FORBIDDEN` with the reason, and counted. Also the roles a user holds
//! (`GET /_matrix-internal/profile/v1/{userId}`), from the synced directory.
//!
//! Decisions fail closed: an address that cannot be read, or a sender whose token the
//! homeserver cannot vouch for, is refused, never passed on unchecked.

use crate::config::policy::{domain_matches, RegisterPolicy};
use crate::error::{ErrCode, Error};
use crate::federation::RawResponse;
use crate::model::{Medium, ThreePid};
use crate::service::passthrough::{pass_on, ClientRequest};
use crate::service::Services;
use serde_json::{Map, Value};

/// Why a registration address is allowed or not, as decided by [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Invited,
    Whitelisted,
    Open,
    Blacklisted,
    NotListed,
}

impl Decision {
    pub fn allows(self) -> bool {
        matches!(self, Self::Invited | Self::Whitelisted | Self::Open)
    }
}

/// `register.policy` for one address, in ma1sd's order: a pending 3PID invite for it
/// allows it (`invite`); then a blacklist (pattern, or for e-mail its domain) refuses it,
/// a whitelist allows it; else `allowed` decides.
pub fn decide(policy: &RegisterPolicy, threepid: &ThreePid, invited: bool) -> Decision {
    if policy.invite && invited {
        return Decision::Invited;
    }
    let address = threepid.address();
    let patterns = match threepid.medium() {
        Medium::Email => &policy.email,
        Medium::Msisdn => &policy.msisdn,
    };
    let domain = threepid.email_domain();
    let listed = |regexes: &[regex::Regex], domains: &[String]| {
        regexes.iter().any(|r| r.is_match(address))
            || domain.is_some_and(|d| domains.iter().any(|e| domain_matches(e, d)))
    };
    let no_domains: &[String] = &[];
    let (allowed_domains, denied_domains) = match threepid.medium() {
        Medium::Email => (
            policy.email_domains_allowed.as_slice(),
            policy.email_domains_denied.as_slice(),
        ),
        Medium::Msisdn => (no_domains, no_domains),
    };
    if listed(&patterns.blacklist, denied_domains) {
        Decision::Blacklisted
    } else if listed(&patterns.whitelist, allowed_domains) {
        Decision::Whitelisted
    } else if policy.allowed {
        Decision::Open
    } else {
        Decision::NotListed
    }
}

fn refused(state: &Services, medium: Medium, decision: Decision) -> Error {
    state.metrics.policy_refusal("register");
    tracing::info!(medium = medium.as_str(), decision = ?decision, "registration refused by register.policy");
    let what = match medium {
        Medium::Email => "e-mail address",
        Medium::Msisdn => "phone number",
    };
    Error::new(
        ErrCode::Forbidden,
        format!("This {what} cannot be used to register on this server"),
    )
}

fn field<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, Error> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Error::new(
            ErrCode::MissingParam,
            format!("Missing parameter: {key}"),
        )),
        Some(_) => Err(Error::invalid_param(format!("{key} must be a string"))),
    }
}

/// The address a `register/{medium}/requestToken` body names.
pub fn requested_address(medium: Medium, body: &Map<String, Value>) -> Result<ThreePid, Error> {
    match medium {
        Medium::Email => crate::service::session::email_threepid(field(body, "email")?),
        Medium::Msisdn => crate::service::session::msisdn_threepid(
            field(body, "country")?,
            field(body, "phone_number")?,
        )
        .map(|(t, _)| t),
    }
}

fn pending_invite(state: &Services, threepid: &ThreePid) -> Result<bool, Error> {
    Ok(!state.store.invites_for(threepid)?.is_empty())
}

/// `POST /_matrix/client/{version}/register/{medium}/requestToken`: the address is
/// checked against `register.policy`, then the request goes to the homeserver.
pub async fn register_request_token(
    state: &Services,
    medium: Medium,
    request: ClientRequest,
) -> Result<RawResponse, Error> {
    let policy = state.config().register.clone();
    if let Some(policy) = policy {
        let body = request
            .json_object()
            .ok_or_else(|| Error::new(ErrCode::NotJson, "The body must be a JSON object"))?;
        let threepid = requested_address(medium, &body)?;
        let decision = decide(&policy, &threepid, pending_invite(state, &threepid)?);
        if !decision.allows() {
            return Err(refused(state, medium, decision));
        }
    }
    pass_on(state, &request, None).await
}

/// `POST /_matrix/client/{version}/register`: a stage that proves a 3PID with one of
/// our own validation sessions (a homeserver that delegates phone numbers to us) is
/// checked against `register.policy`; the homeserver's own sessions were checked when
/// their token was requested through us. Everything else passes unchanged.
pub async fn register(state: &Services, request: ClientRequest) -> Result<RawResponse, Error> {
    let policy = state.config().register.clone();
    if let (Some(policy), Some(body)) = (policy, request.json_object()) {
        if let Some(threepid) = registered_threepid(state, &body)? {
            let decision = decide(&policy, &threepid, pending_invite(state, &threepid)?);
            if !decision.allows() {
                return Err(refused(state, threepid.medium(), decision));
            }
        }
    }
    pass_on(state, &request, None).await
}

/// The 3PID a `/register` auth stage proves with one of our validation sessions.
fn registered_threepid(
    state: &Services,
    body: &Map<String, Value>,
) -> Result<Option<ThreePid>, Error> {
    let Some(Value::Object(auth)) = body.get("auth") else {
        return Ok(None);
    };
    let creds = match auth
        .get("threepid_creds")
        .or_else(|| auth.get("threepidCreds"))
    {
        Some(Value::Object(c)) => c,
        _ => return Ok(None),
    };
    let (Some(sid), Some(secret)) = (
        creds.get("sid").and_then(Value::as_str),
        creds.get("client_secret").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    // Not one of ours (the homeserver's own session), or not validated: nothing to
    // check here (the homeserver refuses a session that is not validated).
    Ok(crate::service::session::validated(state, sid, secret)
        .ok()
        .map(|session| session.threepid))
}

/// The roles `user_id` holds, from every source that lists them.
pub fn roles(state: &Services, user_id: &str) -> Result<Vec<String>, Error> {
    Ok(state
        .store
        .directory_entry(user_id)?
        .map(|e| e.roles)
        .unwrap_or_default())
}

/// Whether a role a source gives is `wanted`: the same text, or for a group's DN
/// (`cn=staff,ou=groups,dc=example,dc=org`) the value of its first part; letter case
/// does not count.
pub fn role_matches(role: &str, wanted: &str) -> bool {
    if role.trim().eq_ignore_ascii_case(wanted) {
        return true;
    }
    let first = role.split(',').next().unwrap_or_default();
    match first.split_once('=') {
        Some((_, value)) => value.trim().eq_ignore_ascii_case(wanted),
        None => false,
    }
}

/// `POST /_matrix/client/{version}/rooms/{roomId}/invite`: an invite by 3PID (a body
/// with `medium`) needs a sender holding one of `invite.policy.ifSender.hasRole`, as
/// the homeserver names the sender; an invite of a Matrix user passes unchanged.
pub async fn room_invite(state: &Services, request: ClientRequest) -> Result<RawResponse, Error> {
    let wanted = state.config().invite_policy.sender_roles.clone();
    let by_threepid = request
        .json_object()
        .is_some_and(|body| body.contains_key("medium"));
    if by_threepid && !wanted.is_empty() {
        let token = request
            .token
            .as_deref()
            .ok_or_else(|| Error::new(ErrCode::MissingToken, "Missing access token"))?;
        let base = state
            .homeserver
            .base(&state.federation, request.host.as_deref())
            .await;
        let sender = state
            .homeserver
            .whoami(&state.federation, &base, token)
            .await?;
        let held = roles(state, &sender.user_id)?;
        if !held
            .iter()
            .any(|r| wanted.iter().any(|w| role_matches(r, w)))
        {
            state.metrics.policy_refusal("invite");
            tracing::info!(
                "3PID invite refused by invite.policy: the sender holds none of the roles"
            );
            return Err(Error::new(
                ErrCode::Forbidden,
                "You are not allowed to invite people by e-mail address or phone number",
            ));
        }
    }
    pass_on(state, &request, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::Patterns;

    fn whole(r: &str) -> regex::Regex {
        regex::Regex::new(&format!("^(?:{r})$")).unwrap()
    }

    fn policy() -> RegisterPolicy {
        RegisterPolicy {
            allowed: false,
            invite: true,
            email: Patterns {
                whitelist: vec![whole(r"[^@]+@partner\.example")],
                blacklist: vec![whole(r"root@.*")],
            },
            email_domains_allowed: vec!["*example.org".into()],
            email_domains_denied: vec![".guests.example.org".into()],
            msisdn: Patterns {
                whitelist: vec![whole(r"33[0-9]+")],
                blacklist: vec![],
            },
        }
    }

    fn email(a: &str) -> ThreePid {
        ThreePid::new(Medium::Email, a).unwrap()
    }

    #[test]
    fn registration_addresses_are_decided_in_ma1sd_order() {
        let p = policy();
        assert_eq!(
            decide(&p, &email("a@example.org"), false),
            Decision::Whitelisted
        );
        assert_eq!(
            decide(&p, &email("a@it.example.org"), false),
            Decision::Whitelisted
        );
        assert_eq!(
            decide(&p, &email("a@x.guests.example.org"), false),
            Decision::Blacklisted
        );
        assert_eq!(
            decide(&p, &email("root@example.org"), false),
            Decision::Blacklisted
        );
        assert_eq!(
            decide(&p, &email("bob@partner.example"), false),
            Decision::Whitelisted
        );
        assert_eq!(
            decide(&p, &email("a@elsewhere.example"), false),
            Decision::NotListed
        );
        assert_eq!(
            decide(&p, &email("a@elsewhere.example"), true),
            Decision::Invited
        );
        // An invite outranks the blacklist, as in ma1sd.
        assert_eq!(
            decide(&p, &email("root@example.org"), true),
            Decision::Invited
        );
        let msisdn = ThreePid::new(Medium::Msisdn, "33612345678").unwrap();
        assert_eq!(decide(&p, &msisdn, false), Decision::Whitelisted);
        let other = ThreePid::new(Medium::Msisdn, "447700900123").unwrap();
        assert_eq!(decide(&p, &other, false), Decision::NotListed);
        let open = RegisterPolicy {
            allowed: true,
            invite: false,
            ..policy()
        };
        assert_eq!(
            decide(&open, &email("a@elsewhere.example"), true),
            Decision::Open
        );
        assert_eq!(
            decide(&open, &email("root@example.org"), true),
            Decision::Blacklisted
        );
    }

    #[test]
    fn roles_match_by_name_or_by_a_groups_first_dn_part() {
        assert!(role_matches("staff", "staff"));
        assert!(role_matches("Staff", "staff"));
        assert!(role_matches(
            "cn=Staff,ou=groups,dc=example,dc=org",
            "staff"
        ));
        assert!(role_matches(
            "cn=staff,ou=groups,dc=example,dc=org",
            "cn=staff,ou=groups,dc=example,dc=org"
        ));
        assert!(!role_matches(
            "cn=staffing,ou=groups,dc=example,dc=org",
            "staff"
        ));
        assert!(!role_matches("ou=staff", "ou"));
        assert!(!role_matches("", "staff"));
    }

    #[test]
    fn request_token_bodies_name_their_address() {
        let body = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let t = requested_address(Medium::Email, &body(serde_json::json!({"email": "A@Example.org", "client_secret": "s", "send_attempt": 1}))).unwrap();
        assert_eq!(t.address(), "a@example.org");
        let t = requested_address(
            Medium::Msisdn,
            &body(serde_json::json!({"country": "FR", "phone_number": "06 12 34 56 78"})),
        )
        .unwrap();
        assert_eq!(t.address(), "33612345678");
        assert_eq!(
            requested_address(Medium::Email, &body(serde_json::json!({})))
                .unwrap_err()
                .code,
            ErrCode::MissingParam
        );
        assert_eq!(
            requested_address(Medium::Email, &body(serde_json::json!({"email": 5})))
                .unwrap_err()
                .code,
            ErrCode::InvalidParam
        );
        assert_eq!(
            requested_address(Medium::Email, &body(serde_json::json!({"email": "nope"})))
                .unwrap_err()
                .code,
            ErrCode::InvalidEmail
        );
        assert!(
            requested_address(Medium::Msisdn, &body(serde_json::json!({"country": "FR"}))).is_err()
        );
    }
}
