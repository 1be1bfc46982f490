//! Logins by 3PID (ma1sd's "advanced auth"): a `POST /_matrix/client/{r0,v3}/login`
//! whose identifier is a 3PID (`m.id.thirdparty`, `m.id.phone`, the deprecated top-level
//! `medium` + `address`) or a user name an `auth.rewrite.user.rules` regex takes for one
//! is passed to the homeserver as a login of the user that 3PID is bound to here. Every
//! other request, and every login whose 3PID is not bound to one of our homeserver's
//! users, goes to the homeserver byte for byte. The homeserver checks the password; we
//! never see whether it was right.

use crate::error::Error;
use crate::federation::RawResponse;
use crate::model::{Medium, ThreePid};
use crate::service::passthrough::{pass_on, ClientRequest};
use crate::service::Services;
use serde_json::{Map, Value};

/// The 3PID a login body names, and how it named it (the metric's kind).
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    pub threepid: ThreePid,
    pub kind: &'static str,
}

/// Passes a login to the homeserver, rewritten when it names a 3PID bound here.
pub async fn login(state: &Services, request: ClientRequest) -> Result<RawResponse, Error> {
    if request.method != http::Method::POST {
        return pass_on(state, &request, None).await;
    }
    let Some(mut body) = request.json_object() else {
        return pass_on(state, &request, None).await;
    };
    let rules = &state.config().auth.rewrite;
    let Some(named) = named_threepid(&body, rules) else {
        return pass_on(state, &request, None).await;
    };
    let user = crate::service::lookup::bound_user(state, &named.threepid)?
        .filter(|mxid| state.homeserver.is_local(mxid));
    let Some(user) = user else {
        // The homeserver may still know the 3PID itself (Synapse's own user_threepids);
        // a rewritten user name that names nobody fails there as it would have.
        return pass_on(state, &request, None).await;
    };
    rewrite(&mut body, &user);
    let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal("login body", e))?;
    state.metrics.login_rewrite(named.kind);
    tracing::debug!(
        kind = named.kind,
        "login identifier rewritten to the user its 3PID is bound to"
    );
    pass_on(state, &request, Some(bytes.into())).await
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// What the login names as a 3PID, if anything. Addresses that are not valid 3PIDs name
/// nothing (the homeserver answers them as it would).
pub fn named_threepid(
    body: &Map<String, Value>,
    rules: &[crate::config::policy::RewriteRule],
) -> Option<Named> {
    let by_rule = |user: &str| {
        let rule = rules.iter().find(|r| r.regex.is_match(user))?;
        Some(Named {
            threepid: ThreePid::new(rule.medium, user).ok()?,
            kind: "rule",
        })
    };
    let thirdparty = |medium: &str, address: &str| {
        Some(Named {
            threepid: ThreePid::new(Medium::parse(medium)?, address).ok()?,
            kind: "thirdparty",
        })
    };
    match body.get("identifier") {
        Some(Value::Object(id)) => match text(id, "type")? {
            "m.id.user" => by_rule(text(id, "user")?),
            "m.id.thirdparty" => thirdparty(text(id, "medium")?, text(id, "address")?),
            "m.id.phone" => {
                let (threepid, _) = crate::service::session::msisdn_threepid(
                    text(id, "country")?,
                    text(id, "phone")?,
                )
                .ok()?;
                Some(Named {
                    threepid,
                    kind: "phone",
                })
            }
            _ => None,
        },
        Some(_) => None,
        // The deprecated form, from before identifiers (r0.3).
        None => match (
            text(body, "medium"),
            text(body, "address"),
            text(body, "user"),
        ) {
            (Some(medium), Some(address), _) => thirdparty(medium, address),
            (None, None, Some(user)) => by_rule(user),
            _ => None,
        },
    }
}

/// Makes the login one of `user`: an `m.id.user` identifier, and none of the
/// deprecated top-level fields that could contradict it.
pub fn rewrite(body: &mut Map<String, Value>, user: &str) {
    for key in ["medium", "address", "user"] {
        body.remove(key);
    }
    body.insert(
        "identifier".into(),
        serde_json::json!({"type": "m.id.user", "user": user}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::RewriteRule;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn logins_name_3pids_by_identifier_legacy_fields_or_rules() {
        let rules = vec![RewriteRule {
            regex: regex::Regex::new(r"^\+?[0-9]{6,}$").unwrap(),
            medium: Medium::Msisdn,
        }];
        let named = |v| named_threepid(&obj(v), &rules);
        let email = ThreePid::new(Medium::Email, "alice@example.org").unwrap();
        let n = named(json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "Alice@Example.org"}})).unwrap();
        assert_eq!((n.threepid, n.kind), (email.clone(), "thirdparty"));
        let n = named(
            json!({"type": "m.login.password", "medium": "email", "address": "alice@example.org"}),
        )
        .unwrap();
        assert_eq!(n.threepid, email);
        let n = named(json!({"identifier": {"type": "m.id.phone", "country": "FR", "phone": "06 12 34 56 78"}})).unwrap();
        assert_eq!((n.threepid.address(), n.kind), ("33612345678", "phone"));
        let n =
            named(json!({"identifier": {"type": "m.id.user", "user": "447700900123"}})).unwrap();
        assert_eq!((n.threepid.address(), n.kind), ("447700900123", "rule"));
        assert!(named(json!({"user": "+447700900123"})).is_some());
        // Names nothing: plain users, unknown types, wrong types, bad addresses.
        for body in [
            json!({"identifier": {"type": "m.id.user", "user": "alice"}}),
            json!({"user": "alice"}),
            json!({"identifier": {"type": "org.example.badge", "badge": "42"}}),
            json!({"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": 5}}),
            json!({"identifier": {"type": "m.id.thirdparty", "medium": "fax", "address": "1"}}),
            json!({"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "not an address"}}),
            json!({"identifier": {"type": "m.id.phone", "country": "ZZ", "phone": "1"}}),
            json!({"identifier": "m.id.user"}),
            json!({"type": "m.login.token", "token": "abc"}),
        ] {
            assert_eq!(named(body.clone()), None, "{body}");
        }
    }

    #[test]
    fn a_rewritten_login_is_the_users_and_keeps_the_rest() {
        let mut body = obj(
            json!({"type": "m.login.password", "medium": "email", "address": "a@b.c", "password": "pw", "device_id": "D", "initial_device_display_name": "Phone"}),
        );
        rewrite(&mut body, "@alice:example.org");
        assert_eq!(
            Value::Object(body),
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:example.org"}, "password": "pw", "device_id": "D", "initial_device_display_name": "Phone"})
        );
    }
}
