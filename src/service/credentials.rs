//! Password checks for the homeserver (`POST /_matrix-internal/identity/v1/check_credentials`,
//! ma1sd's contract for Synapse's password provider): the identity sources are asked in
//! their configured order, live (a sync keeps no passwords): LDAP binds as the user's
//! entry, a `rest` source with `rest.endpoints.auth` asks the backend (ma1sd's REST
//! contract), an `sql`/`synapseSql` source with an `auth` query compares the bcrypt or
//! argon2 hash it returns, `memory` and `file` sources compare an argon2 hash. The first that accepts
//! wins and its answer carries the user's display name and 3PIDs.
//!
//! Fails closed: an empty password, a user of another domain, a source that cannot be
//! asked (logged, with the reason) all answer "no". Attempts are limited per user and
//! per client address (429 with `retry_after_ms`), before any source is asked.

use crate::config::stores::{SourceKind, UserSpec};
use crate::error::Error;
use crate::model::Mxid;
use crate::service::Services;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// How long one source may take over one check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A refused check is answered no sooner than this after it began: guessing
/// passwords gets slow, and a storm of wrong ones cannot keep the directory (and the
/// machine's CPU) busy: 16 callers get at most 64 refusals a second. Nothing is held
/// while waiting.
const REFUSAL_DELAY: Duration = Duration::from_millis(250);

/// The answer, as ma1sd gives it: `{"auth": {...}}`.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub auth: AuthResult,
}

#[derive(Debug, Serialize)]
pub struct AuthResult {
    pub success: bool,
    /// The user, when accepted (ma1sd's REST backends' shape; its own answers left it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<UserId>,
    /// A copy of `profile.display_name`, as ma1sd sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub profile: Profile,
}

#[derive(Debug, Serialize)]
pub struct UserId {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub three_pids: Vec<ThreePid>,
}

#[derive(Debug, Serialize)]
pub struct ThreePid {
    pub medium: String,
    pub address: String,
}

impl Answer {
    fn refused() -> Self {
        Self {
            auth: AuthResult {
                success: false,
                id: None,
                display_name: None,
                profile: Profile::default(),
            },
        }
    }

    fn accepted(mxid: &str, user: UserSpec) -> Self {
        let three_pids = user
            .threepids
            .into_iter()
            .map(|t| ThreePid {
                medium: t.medium,
                address: t.address,
            })
            .collect();
        let display_name = user.display_name.filter(|n| !n.trim().is_empty());
        Self {
            auth: AuthResult {
                success: true,
                id: Some(UserId {
                    kind: "mxid",
                    value: mxid.to_owned(),
                }),
                display_name: display_name.clone(),
                profile: Profile {
                    display_name,
                    three_pids,
                },
            },
        }
    }
}

/// What one source said.
enum Verdict {
    Accepted(UserSpec),
    /// The password is right, and the source has no profile to give: the synced
    /// entry is the answer's.
    Known,
    /// No such user, or not this password.
    Refused,
    /// This kind of source checks no passwords.
    NotHere,
}

/// Checks `password` for `user` (a full Matrix ID of our domain).
pub async fn check(
    state: &Services,
    ip: Option<IpAddr>,
    user: &str,
    password: &str,
) -> Result<Answer, Error> {
    if let Err(e) = state.limits().login(ip, user) {
        state.metrics.auth_attempt("none", "limited");
        return Err(e);
    }
    let started = tokio::time::Instant::now();
    let answer = check_sources(state, user, password).await;
    if !matches!(&answer, Ok(a) if a.auth.success) {
        tokio::time::sleep_until(started + REFUSAL_DELAY).await;
    }
    answer
}

/// The sources' verdict (see [`check`]).
async fn check_sources(state: &Services, user: &str, password: &str) -> Result<Answer, Error> {
    let domain = state.config().matrix.domain.clone();
    let mxid = match Mxid::parse(user) {
        Some(m) if m.as_str().ends_with(&format!(":{domain}")) => m,
        _ => {
            state.metrics.auth_attempt("none", "failure");
            return Ok(Answer::refused());
        }
    };
    if password.is_empty() {
        state.metrics.auth_attempt("none", "failure");
        return Ok(Answer::refused());
    }
    let mut asked = false;
    for source in state.sync.sources().iter() {
        let name = &source.config.name;
        let verdict = match &source.config.kind {
            SourceKind::Ldap(ldap) => {
                crate::source::ldap::authenticate(ldap, mxid.as_str(), password, CHECK_TIMEOUT)
                    .await
                    .map(|found| found.map_or(Verdict::Refused, Verdict::Accepted))
            }
            kind @ (SourceKind::Memory(_) | SourceKind::File(_)) => {
                listed(kind, mxid.as_str(), &domain, password).await
            }
            SourceKind::Rest(rest) => match &rest.auth_url {
                Some(url) => crate::source::rest::authenticate(
                    rest,
                    url,
                    mxid.as_str(),
                    mxid.localpart(),
                    &domain,
                    password,
                )
                .await
                .map(|found| found.map_or(Verdict::Refused, Verdict::Accepted)),
                None => Ok(Verdict::NotHere),
            },
            SourceKind::Sql(sql) => match &sql.auth {
                Some(auth) => crate::source::sql::authenticate(
                    sql,
                    auth,
                    mxid.as_str(),
                    mxid.localpart(),
                    password,
                    CHECK_TIMEOUT,
                )
                .await
                .map(|ok| if ok { Verdict::Known } else { Verdict::Refused }),
                None => Ok(Verdict::NotHere),
            },
        };
        match verdict {
            Ok(Verdict::Accepted(found)) => {
                state.metrics.auth_attempt(name, "success");
                tracing::info!(source = %name, "password check: accepted");
                crate::service::sync::refresh_from_login(state, name, found.clone()).await;
                return Ok(Answer::accepted(mxid.as_str(), found));
            }
            Ok(Verdict::Known) => {
                state.metrics.auth_attempt(name, "success");
                tracing::info!(source = %name, "password check: accepted");
                let entry = state
                    .store
                    .directory_entry(mxid.as_str())?
                    .unwrap_or_default();
                let user = UserSpec {
                    username: mxid.as_str().to_owned(),
                    display_name: entry.display_name,
                    threepids: entry
                        .threepids
                        .iter()
                        .map(|t| crate::config::stores::ThreePidSpec {
                            medium: t.medium().as_str().to_owned(),
                            address: t.address().to_owned(),
                        })
                        .collect(),
                    roles: entry.roles,
                    attributes: entry.attributes,
                    password: None,
                };
                return Ok(Answer::accepted(mxid.as_str(), user));
            }
            Ok(Verdict::Refused) => asked = true,
            Ok(Verdict::NotHere) => {}
            Err(why) => {
                asked = true;
                state.metrics.auth_attempt(name, "error");
                tracing::warn!(source = %name, reason = %why, "password check: the source could not be asked; the login is refused unless another source accepts it");
            }
        }
    }
    state
        .metrics
        .auth_attempt(if asked { "any" } else { "none" }, "failure");
    Ok(Answer::refused())
}

/// A `memory` or `file` source: the user's `password` must be an argon2 hash (PHC
/// string) that `password` matches.
async fn listed(
    kind: &SourceKind,
    mxid: &str,
    domain: &str,
    password: &str,
) -> Result<Verdict, String> {
    let Some(user) = crate::source::listed_user(kind, mxid, domain).await? else {
        return Ok(Verdict::Refused);
    };
    let Some(hash) = user.password.clone().filter(|h| !h.is_empty()) else {
        return Ok(Verdict::Refused);
    };
    let password = password.to_owned();
    let matches =
        tokio::task::spawn_blocking(move || crate::source::verify_argon2(&hash, &password))
            .await
            .map_err(|e| format!("checking a hash: {e}"))??;
    Ok(if matches {
        Verdict::Accepted(user)
    } else {
        Verdict::Refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::verify_argon2;

    fn hash(password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn argon2_hashes_match_their_password_only_and_plain_text_is_refused() {
        let h = hash("correct horse");
        assert!(verify_argon2(&h, "correct horse").unwrap());
        assert!(!verify_argon2(&h, "correct horse ").unwrap());
        assert!(!verify_argon2(&h, "").unwrap());
        assert!(verify_argon2("correct horse", "correct horse").is_err());
        assert!(verify_argon2("", "").is_err());
    }

    #[test]
    fn answers_have_ma1sd_shape() {
        let refused = serde_json::to_value(Answer::refused()).unwrap();
        assert_eq!(
            refused,
            serde_json::json!({"auth": {"success": false, "profile": {"three_pids": []}}})
        );
        let user: UserSpec = serde_yaml_ng::from_str(
            "username: alice\ndisplayName: Alice\nthreepids: [{medium: email, address: a@example.org}]\n",
        )
        .unwrap();
        let ok = serde_json::to_value(Answer::accepted("@alice:example.org", user)).unwrap();
        assert_eq!(
            ok,
            serde_json::json!({"auth": {
                "success": true,
                "id": {"type": "mxid", "value": "@alice:example.org"},
                "display_name": "Alice",
                "profile": {"display_name": "Alice", "three_pids": [{"medium": "email", "address": "a@example.org"}]}
            }})
        );
    }
}
