//! The user directory as a client sees it, when the reverse proxy routes
//! `/_matrix/client/*/user_directory/search` and `/_matrix/client/*/profile/*` to us:
//! search answered from the local index (merged with the homeserver's own results),
//! and profiles passed to the homeserver with the directory's display name filled in.
//!
//! Every caller is authenticated by the homeserver (whoami) before anything from the
//! directory is shown. 3PIDs never appear in answers, except in profiles when the
//! operator turned `directory.profile.threepids` on, and then only for local users.

use crate::error::{ErrCode, Error};
use crate::federation::homeserver::{Base, TokenOwner, USER_WAIT};
use crate::federation::{RawRequest, RawResponse};
use crate::index::Search;
use crate::service::Services;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// Most results one search returns (Synapse's cap too).
pub const MAX_LIMIT: usize = 50;
/// Most bytes read from a homeserver's answer.
const MAX_ANSWER: usize = 1 << 20;

/// A `user_directory/search` request, read by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub term: String,
    /// At most [`MAX_LIMIT`].
    pub limit: usize,
    /// The client's body as it is passed on to the homeserver (JSON).
    pub forward: Bytes,
}

/// One result, as the client-server API has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchResults {
    pub limited: bool,
    pub results: Vec<Found>,
}

/// What the local index is asked: a full Matrix ID becomes its localpart, a leading
/// `@` goes (clients send what the user typed).
fn local_term(term: &str) -> &str {
    let t = term.trim();
    let t = t.strip_prefix('@').unwrap_or(t);
    t.split_once(':').map_or(t, |(local, _)| local)
}

/// `POST /_matrix/client/{version}/user_directory/search`.
pub async fn search(
    state: &Services,
    token: String,
    host: Option<String>,
    version: &str,
    request: SearchRequest,
) -> Result<SearchResults, Error> {
    let base = state
        .homeserver
        .base(&state.federation, host.as_deref())
        .await;
    let remote = async {
        if state.config().directory.exclude_homeserver {
            return None;
        }
        Some(remote_search(state, &base, &token, version, request.forward.clone()).await)
    };
    let (owner, remote) = tokio::join!(
        state.homeserver.whoami(&state.federation, &base, &token),
        remote
    );
    let owner = owner?;
    let local = local_search(state, &request).await?;
    let remote = match remote {
        Some(Ok(found)) => Some(found),
        Some(Err(why)) => {
            tracing::warn!(user = %owner.user_id, homeserver = %base.url, reason = %why, "directory search: the homeserver's results are missing; answering from the directory alone");
            None
        }
        None => None,
    };
    let mut merged = merge(local, remote, request.limit);
    fill_display_names(state, &mut merged.results)?;
    Ok(merged)
}

/// The local index's answer.
async fn local_search(
    state: &Services,
    request: &SearchRequest,
) -> Result<(Vec<Found>, bool), Error> {
    let threepids = !state.config().directory.exclude_threepid;
    let search = Search::new(local_term(&request.term), request.limit, threepids);
    let (hits, limited) = match state.directory.cached(&search) {
        Some(found) => found,
        // Tens of microseconds: less than handing it to another thread costs.
        None if search.is_quick() => state
            .directory
            .search_uncached(search)
            .map_err(|e| Error::internal("directory search", e))?,
        None => {
            // A short prefix can take milliseconds: off the request threads.
            let searcher = state.clone();
            tokio::task::spawn_blocking(move || searcher.directory.search_uncached(search))
                .await
                .map_err(|e| Error::internal("directory search task", e))?
                .map_err(|e| Error::internal("directory search", e))?
        }
    };
    Ok((
        hits.into_iter()
            .map(|h| Found {
                user_id: h.user_id,
                display_name: h.display_name,
                avatar_url: None,
            })
            .collect(),
        limited,
    ))
}

/// The homeserver's answer to the same search, or why there is none.
async fn remote_search(
    state: &Services,
    base: &Base,
    token: &str,
    version: &str,
    body: Bytes,
) -> Result<(Vec<Found>, bool), String> {
    let path = format!("/_matrix/client/{version}/user_directory/search");
    let authorization = format!("Bearer {token}");
    let answer = state
        .homeserver
        .send(
            &state.federation,
            base,
            RawRequest {
                method: reqwest::Method::POST,
                path_and_query: &path,
                authorization: Some(&authorization),
                body: Some((body, Some("application/json"))),
                timeout: Some(USER_WAIT),
                client: None,
            },
            MAX_ANSWER,
        )
        .await
        .map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!("it answered HTTP {}", answer.status));
    }
    let value: Value =
        serde_json::from_slice(&answer.body).map_err(|_| "its answer is not JSON".to_owned())?;
    let limited = value
        .get("limited")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let results = value
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| "its answer has no results list".to_owned())?;
    let text = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    // At most what a client may ask for: the merge is quadratic in its inputs.
    let found = results
        .iter()
        .take(MAX_LIMIT)
        .filter_map(|r| {
            let user_id = text(r, "user_id")?;
            crate::model::Mxid::parse(&user_id)?;
            Some(Found {
                user_id,
                display_name: text(r, "display_name"),
                avatar_url: text(r, "avatar_url"),
            })
        })
        .collect();
    Ok((found, limited))
}

/// Both lists interleaved (directory first), each user once, at most `limit`. A user
/// both know keeps the homeserver's display name and avatar (what they chose in
/// Matrix) at the better of their two places.
pub fn merge(
    local: (Vec<Found>, bool),
    remote: Option<(Vec<Found>, bool)>,
    limit: usize,
) -> SearchResults {
    let (local, local_limited) = local;
    let (remote, remote_limited) = remote.unwrap_or_default();
    let mut results: Vec<Found> = Vec::with_capacity(local.len() + remote.len());
    let mut local = local.into_iter();
    let mut remote = remote.into_iter();
    loop {
        let next_local = local.next();
        let next_remote = remote.next();
        if next_local.is_none() && next_remote.is_none() {
            break;
        }
        let pair = [(next_local, false), (next_remote, true)];
        for (found, from_homeserver) in pair {
            let Some(found) = found else { continue };
            match results.iter_mut().find(|r| r.user_id == found.user_id) {
                Some(known) if from_homeserver => {
                    if found.display_name.is_some() {
                        known.display_name = found.display_name;
                    }
                    if found.avatar_url.is_some() {
                        known.avatar_url = found.avatar_url;
                    }
                }
                Some(known) => {
                    if known.display_name.is_none() {
                        known.display_name = found.display_name;
                    }
                }
                None => results.push(found),
            }
        }
    }
    let limited = local_limited || remote_limited || results.len() > limit;
    results.truncate(limit);
    SearchResults { limited, results }
}

/// Homeserver results without a display name get the directory's.
fn fill_display_names(state: &Services, results: &mut [Found]) -> Result<(), Error> {
    for r in results.iter_mut().filter(|r| r.display_name.is_none()) {
        if let Some(entry) = state.store.directory_entry(&r.user_id)? {
            r.display_name = entry.display_name;
        }
    }
    Ok(())
}

/// Whether a homeserver's answer is a Matrix `M_NOT_FOUND` error.
fn not_found(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errcode").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|code| code == "M_NOT_FOUND")
}

/// 401 for a request without an access token.
pub fn missing_token() -> Error {
    Error::new(ErrCode::MissingToken, "Missing access token")
}

/// What may follow `profile/`: `{userId}` or `{userId}/{field}`, percent-decoded. A
/// segment that is empty, `.` or `..`, or holds a control character, is refused.
pub fn profile_tail(raw: &str) -> Option<Vec<String>> {
    let segments: Vec<String> = raw
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|d| d.into_owned())
        })
        .collect::<Option<_>>()?;
    let fine =
        |s: &String| !s.is_empty() && s != "." && s != ".." && !s.chars().any(char::is_control);
    ((1..=2).contains(&segments.len()) && segments.iter().all(fine)).then_some(segments)
}

/// Characters left as they are in a path segment passed on; everything else (`/`,
/// `\`, `%`, `?`, `#`...) is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A checked path segment (see [`profile_tail`]), encoded to be passed on.
pub fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// The homeserver path for a checked profile tail.
pub fn profile_path(version: &str, tail: &[String]) -> String {
    let mut path = format!("/_matrix/client/{version}/profile");
    for segment in tail {
        path.push('/');
        path.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
    }
    path
}

/// A request under `/_matrix/client/{version}/profile/`, to pass on.
pub struct ProfileRequest {
    pub request: crate::service::passthrough::ClientRequest,
    /// The part after `profile/`, percent-decoded: `{userId}` or `{userId}/{field}`.
    pub tail: Vec<String>,
}

/// Passes a profile request to the homeserver. A `GET` of a whole profile or of
/// `displayname` that comes back without a display name, or as the 404 Synapse gives a
/// local user with neither name nor avatar, gets the directory's; with
/// `directory.profile.threepids`, a whole profile asked for by an authenticated local
/// user gets the directory's 3PIDs too.
pub async fn profile(state: &Services, profile: ProfileRequest) -> Result<RawResponse, Error> {
    let ProfileRequest { request, tail } = profile;
    let answer = crate::service::passthrough::pass_on(state, &request, None).await?;
    let config = &state.config().directory;
    let whole = tail.len() == 1;
    let display = tail.len() == 2 && tail[1] == "displayname";
    let user_id = &tail[0];
    if request.method != http::Method::GET || !(whole || display) {
        return Ok(answer);
    }
    let mut profile = match answer.status {
        200 => match serde_json::from_slice::<Value>(&answer.body) {
            Ok(Value::Object(profile)) => profile,
            _ => return Ok(answer),
        },
        // Synapse answers 404 for a user with neither display name nor avatar: for a
        // local user the directory knows, that is an empty profile to fill in. A
        // user it does not know stays unknown (nothing changes below).
        404 if state.homeserver.is_local(user_id) && not_found(&answer.body) => {
            serde_json::Map::new()
        }
        _ => return Ok(answer),
    };
    let wants_threepids = whole && config.profile_threepids;
    if !(config.profile_display_name || wants_threepids) {
        return Ok(answer);
    }
    let Some(entry) = state.store.directory_entry(user_id)? else {
        return Ok(answer);
    };
    let mut changed = false;
    let has_name = profile
        .get("displayname")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.trim().is_empty());
    if config.profile_display_name && !has_name {
        if let Some(name) = &entry.display_name {
            profile.insert("displayname".into(), Value::from(name.clone()));
            changed = true;
        }
    }
    if wants_threepids && !entry.threepids.is_empty() {
        let caller = match &request.token {
            Some(token) => {
                let base = state
                    .homeserver
                    .base(&state.federation, request.host.as_deref())
                    .await;
                state
                    .homeserver
                    .whoami(&state.federation, &base, token)
                    .await
                    .ok()
            }
            None => None,
        };
        if caller.is_some_and(|TokenOwner { user_id }| state.homeserver.is_local(&user_id)) {
            let threepids: Vec<Value> = entry
                .threepids
                .iter()
                .map(|t| serde_json::json!({ "medium": t.medium().as_str(), "address": t.address() }))
                .collect();
            profile.insert("threepids".into(), Value::from(threepids));
            changed = true;
        }
    }
    if !changed {
        return Ok(answer);
    }
    let body = serde_json::to_vec(&profile).map_err(|e| Error::internal("profile", e))?;
    Ok(RawResponse {
        status: 200,
        content_type: Some("application/json".into()),
        body: body.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str, name: Option<&str>, avatar: Option<&str>) -> Found {
        Found {
            user_id: id.into(),
            display_name: name.map(str::to_owned),
            avatar_url: avatar.map(str::to_owned),
        }
    }

    #[test]
    fn local_terms_drop_the_at_and_the_server() {
        assert_eq!(local_term(" @alice:example.org "), "alice");
        assert_eq!(local_term("@ali"), "ali");
        assert_eq!(local_term("alice liddell"), "alice liddell");
    }

    #[test]
    fn profile_paths_are_rebuilt_from_checked_segments() {
        let tail = profile_tail("%40alice%3Aexample.org/displayname").unwrap();
        assert_eq!(tail, ["@alice:example.org", "displayname"]);
        assert_eq!(
            profile_path("v3", &tail),
            "/_matrix/client/v3/profile/%40alice%3Aexample.org/displayname"
        );
        // An old-style localpart with a slash stays one segment.
        let tail = profile_tail("%40a%2Fb%3Ax").unwrap();
        assert_eq!(
            profile_path("r0", &tail),
            "/_matrix/client/r0/profile/%40a%2Fb%3Ax"
        );
        let tail = profile_tail("..%5C..%5C_synapse").unwrap();
        assert_eq!(
            profile_path("v3", &tail),
            "/_matrix/client/v3/profile/..%5C..%5C_synapse"
        );
        let tail = profile_tail("..\\..\\_synapse").unwrap();
        assert!(profile_path("v3", &tail).ends_with("/profile/..%5C..%5C_synapse"));
        for bad in [
            "", "..", ".", "%2E%2E", "a/../b", "a/b/c", "a//b", "a/", "%ff", "a%0Ab",
        ] {
            assert_eq!(profile_tail(bad), None, "{bad}");
        }
    }

    #[test]
    fn results_are_interleaved_without_duplicates() {
        let local = vec![
            found("@a:x", Some("A dir"), None),
            found("@b:x", Some("B"), None),
            found("@c:x", Some("C"), None),
        ];
        let remote = vec![
            found("@b:x", Some("B hs"), Some("mxc://x/b")),
            found("@z:x", None, None),
        ];
        let merged = merge((local.clone(), false), Some((remote.clone(), false)), 10);
        let ids: Vec<&str> = merged.results.iter().map(|r| r.user_id.as_str()).collect();
        assert_eq!(ids, ["@a:x", "@b:x", "@z:x", "@c:x"]);
        assert_eq!(merged.results[1].display_name.as_deref(), Some("B hs"));
        assert_eq!(merged.results[1].avatar_url.as_deref(), Some("mxc://x/b"));
        assert!(!merged.limited);
        let merged = merge((local.clone(), false), Some((remote, false)), 2);
        assert_eq!(merged.results.len(), 2);
        assert!(merged.limited);
        let merged = merge((local, true), None, 10);
        assert_eq!(merged.results.len(), 3);
        assert!(merged.limited);
        let merged = merge((vec![], false), Some((vec![], true)), 10);
        assert!(merged.limited && merged.results.is_empty());
    }
}
