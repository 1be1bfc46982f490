//! Talking to one remote identity server: which API it has, our account there (opened
//! with an OpenID token of our homeserver), its pepper, v2 lookups (hashed, or `none`),
//! v1 single lookups (signature checked) and bulk lookups.

use super::{lock, Found, Remote, Reply, Via, API_TTL};
use crate::config::recursion::RecursionConfig;
use crate::federation::identity::{Api, HashDetails, RemoteError, V2Answer};
use crate::federation::{ClientHeaders, RawRequest};
use crate::model::{Medium, ThreePid};
use crate::service::Services;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Entries in one lookup to a federated identity service (Twake takes 100 at most);
/// chunks go out at once, up to this many.
const UNIFIED_CHUNK: usize = 100;
const CHUNKS_AT_ONCE: usize = 4;
/// Servers of `third_party_mappings` followed from one answer.
const MAX_ELSEWHERE: usize = 8;

/// Asks `remote` about `wanted` the way `via` allows.
pub(super) async fn ask_remote(
    state: &Services,
    config: &RecursionConfig,
    remote: &Remote,
    wanted: &[ThreePid],
    via: Via,
) -> Result<Reply, RemoteError> {
    if via != Via::Any {
        // Named by the unified view (or the view itself): hashes only, never v1.
        return ask_v2(state, config, remote, wanted, via).await;
    }
    let fed = &state.federation;
    let timeout = config.timeout;
    let known = lock(&remote.state)
        .api
        .filter(|(_, at)| at.elapsed() < API_TTL)
        .map(|(api, _)| api);
    let api = match known {
        Some(api) => Some(api),
        None => {
            let api = fed.identity_api(&remote.base, timeout).await?;
            if let Some(api) = api {
                lock(&remote.state).api = Some((api, Instant::now()));
            }
            api
        }
    };
    if api == Some(Api::V2) && config.access_token.is_some() {
        match ask_v2(state, config, remote, wanted, via).await {
            Err(RemoteError::TermsNotSigned) if config.v1 => {}
            other => return other,
        }
    }
    if !config.v1 || api.is_none() {
        return Err(RemoteError::Malformed(
            "the server has no API we may use (v2 needs lookup.recursive.accessToken; v1 needs lookup.recursive.v1)",
        ));
    }
    if let [one] = wanted {
        let answer = fed
            .identity_lookup_v1(&remote.base, one.medium().as_str(), one.address(), timeout)
            .await?;
        let found = answer
            .map(|v| {
                (
                    one.clone(),
                    Found {
                        mxid: v.mxid.clone(),
                        verified: Some(v),
                    },
                )
            })
            .into_iter()
            .collect();
        return Ok(Reply {
            found,
            elsewhere: Vec::new(),
        });
    }
    let pairs: Vec<(String, String)> = wanted
        .iter()
        .map(|t| (t.medium().as_str().to_owned(), t.address().to_owned()))
        .collect();
    let found = fed.identity_bulk_v1(&remote.base, &pairs, timeout).await?;
    let found = found
        .into_iter()
        .filter_map(|(m, a, mxid)| {
            let t = ThreePid::new(Medium::parse(&m)?, &a).ok()?;
            Some((
                t,
                Found {
                    mxid,
                    verified: None,
                },
            ))
        })
        .collect();
    Ok(Reply {
        found,
        elsewhere: Vec::new(),
    })
}

/// Our token at `remote` and its hash details, cached. No token when
/// `lookup.recursive.accessToken` is not set: a federated identity service may trust
/// our address instead.
pub(super) async fn v2_session(
    state: &Services,
    config: &RecursionConfig,
    remote: &Remote,
) -> Result<(Option<String>, HashDetails), RemoteError> {
    let fed = &state.federation;
    let (token, details) = {
        let s = lock(&remote.state);
        (s.token.clone(), s.details.clone())
    };
    let token = match token {
        Some(t) => Some(t),
        None if config.access_token.is_none() => None,
        None => {
            let openid = openid_token(state, config).await?;
            let t = fed
                .identity_register(&remote.base, &openid, config.timeout)
                .await?;
            lock(&remote.state).token = Some(t.clone());
            Some(t)
        }
    };
    let details = match details.filter(|(_, at)| at.elapsed() < API_TTL) {
        Some((d, _)) => d,
        None => {
            let d = fed
                .identity_hash_details(&remote.base, token.as_deref(), config.timeout)
                .await?;
            lock(&remote.state).details = Some((d.clone(), Instant::now()));
            d
        }
    };
    Ok((token, details))
}

/// Forgets `remote`'s hash details (its pepper changed, or is about to be read anew).
pub(super) fn forget_details(remote: &Remote) {
    lock(&remote.state).details = None;
}

/// Forgets our account at `remote` (refused) and what it said with it.
pub(super) fn forget_account(remote: &Remote) {
    let mut s = lock(&remote.state);
    s.token = None;
    s.details = None;
}

/// A v2 lookup: our account there (opened once, again when refused), its pepper
/// (fetched again once when it changed), the entries hashed with it.
async fn ask_v2(
    state: &Services,
    config: &RecursionConfig,
    remote: &Remote,
    wanted: &[ThreePid],
    via: Via,
) -> Result<Reply, RemoteError> {
    let fed = &state.federation;
    let mut renewed = false;
    let mut repeppered = false;
    loop {
        let (token, details) = match v2_session(state, config, remote).await {
            Err(RemoteError::Unauthorized) if !renewed => {
                renewed = true;
                forget_account(remote);
                continue;
            }
            other => other?,
        };
        let (algorithm, entries): (&str, Vec<String>) = if details.sha256 {
            (
                "sha256",
                wanted
                    .iter()
                    .map(|t| remote_hash(t, &details.pepper))
                    .collect(),
            )
        } else if details.none && via == Via::Any {
            (
                "none",
                wanted
                    .iter()
                    .map(|t| format!("{} {}", t.address(), t.medium().as_str()))
                    .collect(),
            )
        } else {
            return Err(RemoteError::Malformed(
                "hash_details offers no algorithm we may use",
            ));
        };
        let chunk = if via == Via::Unified {
            UNIFIED_CHUNK
        } else {
            entries.len().max(1)
        };
        let parts: Vec<Vec<String>> = entries.chunks(chunk).map(<[String]>::to_vec).collect();
        let (base, token_ref, pepper) = (
            remote.base.as_str(),
            token.as_deref(),
            details.pepper.as_str(),
        );
        let answers: Vec<Result<V2Answer, RemoteError>> = futures_util::stream::iter(parts)
            .map(|part| async move {
                fed.identity_lookup_v2(base, token_ref, algorithm, pepper, &part, config.timeout)
                    .await
            })
            .buffer_unordered(CHUNKS_AT_ONCE)
            .collect()
            .await;
        let mut merged = V2Answer::default();
        let mut failure = None;
        for answer in answers {
            match answer {
                Ok(a) => {
                    merged.mappings.extend(a.mappings);
                    merged.third_party.extend(a.third_party);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            None => return Ok(reply_of(wanted, &entries, merged, via)),
            Some(RemoteError::Unauthorized) if !renewed => {
                renewed = true;
                forget_account(remote);
            }
            Some(RemoteError::InvalidPepper) if !repeppered => {
                repeppered = true;
                forget_details(remote);
            }
            Some(e) => return Err(e),
        }
    }
}

/// The 3PIDs behind a v2 answer's entries; where others are, from a unified view.
fn reply_of(wanted: &[ThreePid], entries: &[String], answer: V2Answer, via: Via) -> Reply {
    let by_entry: HashMap<&str, &ThreePid> =
        entries.iter().map(String::as_str).zip(wanted).collect();
    let found = answer
        .mappings
        .into_iter()
        .filter_map(|(entry, mxid)| {
            let threepid = (*by_entry.get(entry.as_str())?).clone();
            Some((
                threepid,
                Found {
                    mxid,
                    verified: None,
                },
            ))
        })
        .collect();
    let mut elsewhere: Vec<(String, Vec<ThreePid>)> = Vec::new();
    if via == Via::Unified {
        for (server, list) in answer.third_party {
            let threepids = list
                .iter()
                .filter_map(|e| by_entry.get(e.as_str()).map(|t| (*t).clone()));
            match elsewhere.iter().position(|(s, _)| *s == server) {
                Some(i) => elsewhere[i].1.extend(threepids),
                None if elsewhere.len() < MAX_ELSEWHERE => {
                    elsewhere.push((server, threepids.collect()));
                }
                None => {}
            }
        }
    }
    Reply { found, elsewhere }
}

/// The spec's lookup hash with a remote's pepper (URL-safe base64, unpadded).
pub(super) fn remote_hash(threepid: &ThreePid, pepper: &str) -> String {
    use base64::Engine as _;
    let digest = crate::store::bindings::lookup_hash(threepid, pepper);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// An OpenID token of our homeserver for the service account
/// (`lookup.recursive.accessToken`), kept until shortly before it expires.
async fn openid_token(state: &Services, config: &RecursionConfig) -> Result<Value, RemoteError> {
    let failed = |why: &'static str| RemoteError::Malformed(why);
    let Some(access_token) = config.access_token.as_ref() else {
        return Err(failed("no lookup.recursive.accessToken"));
    };
    let mut cached = state.recursion.openid.lock().await;
    if let Some((token, until)) = cached.as_ref() {
        if *until > Instant::now() {
            return Ok(token.clone());
        }
    }
    let base = state.homeserver.base(&state.federation, None).await;
    let owner = state
        .homeserver
        .whoami(&state.federation, &base, access_token.expose())
        .await
        .map_err(|_| failed("our homeserver refused lookup.recursive.accessToken"))?;
    let path = format!(
        "/_matrix/client/v3/user/{}/openid/request_token",
        form_urlencoded::byte_serialize(owner.user_id.as_bytes()).collect::<String>()
    );
    let authorization = format!("Bearer {}", access_token.expose());
    let request = RawRequest {
        method: reqwest::Method::POST,
        path_and_query: &path,
        authorization: Some(&authorization),
        body: Some((bytes::Bytes::from_static(b"{}"), Some("application/json"))),
        timeout: Some(config.timeout),
        client: None::<ClientHeaders<'_>>,
    };
    let answer = state
        .homeserver
        .send(&state.federation, &base, request, 64 * 1024)
        .await?;
    if answer.status != 200 {
        return Err(failed("our homeserver gave no OpenID token"));
    }
    let token: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| failed("our homeserver's OpenID token is not JSON"))?;
    if token.get("access_token").and_then(Value::as_str).is_none() {
        return Err(failed("our homeserver's OpenID answer has no access_token"));
    }
    let lifetime = token
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(300)
        .saturating_sub(60)
        .min(3600);
    *cached = Some((
        token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    ));
    Ok(token)
}
