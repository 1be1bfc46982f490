//! The `rest` source: pages of users from an organisation's web service,
//! `{"users": [...], "next": <URL or null>}`, followed until `next` is empty (see
//! README, "Identity sources"). Redirects are not followed and a page over the size
//! limit fails the run.

use super::error_chain;
use crate::config::stores::{RestAuth, RestSource, ThreePidSpec, UserSpec};
use serde::Deserialize;

/// One page of the REST contract: `{"users": [...], "next": <URL or null>}`.
#[derive(Debug, Deserialize)]
struct RestPage {
    users: Vec<RestUser>,
    #[serde(default)]
    next: Option<String>,
}

/// A user as a web service sends it: the file shape, other fields ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestUser {
    username: String,
    #[serde(default, alias = "display_name")]
    display_name: Option<String>,
    #[serde(default)]
    threepids: Vec<RestThreePid>,
    /// Groups or roles (for `invite.policy`).
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RestThreePid {
    medium: String,
    address: String,
}

/// Most pages followed in one run.
const REST_MAX_PAGES: usize = 10_000;

/// The client every call of the source makes: mxisd's resolver (and so the outbound
/// guard), no redirects.
fn client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .dns_resolver(crate::dns::ForReqwest::new()?)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mxisd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends `request` and reads its 2xx answer of at most `limit` bytes. Errors name
/// `shown` (host and path, never a query that might hold a secret) and the reason
/// (refused, TLS, DNS...), and say `too_big` for an answer over the limit.
async fn exchange(
    request: reqwest::RequestBuilder,
    shown: &str,
    limit: usize,
    too_big: &str,
) -> Result<Vec<u8>, String> {
    let mut response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{shown} did not answer in time")
        } else {
            format!("cannot reach {shown}: {}", error_chain(&e.without_url()))
        }
    })?;
    if !response.status().is_success() {
        return Err(format!(
            "{shown} answered HTTP {}",
            response.status().as_u16()
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| format!("{shown}: the answer broke off"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("{shown}: {too_big}"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// ma1sd's REST backend answer to a login: `{"auth": {"success", "id": {"type",
/// "value"}, "profile": {"display_name", "three_pids"}}}`.
#[derive(Debug, Deserialize)]
struct LoginAnswer {
    auth: LoginResult,
}

#[derive(Debug, Deserialize)]
struct LoginResult {
    success: bool,
    #[serde(default)]
    id: Option<LoginId>,
    #[serde(default)]
    profile: Option<LoginProfile>,
}

#[derive(Debug, Deserialize)]
struct LoginId {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
struct LoginProfile {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    three_pids: Vec<RestThreePid>,
}

/// The largest login answer read.
const MAX_LOGIN_ANSWER: usize = 1 << 20;

/// Asks the backend's `rest.endpoints.auth` whether `password` is `mxid`'s, with ma1sd's
/// contract: `{"auth": {"mxid", "localpart", "domain", "password"}}`. `Ok(None)` for a
/// refusal, or an answer naming another user; `Err` when the backend could not be asked
/// or answered something else.
pub(crate) async fn authenticate(
    source: &RestSource,
    auth_url: &str,
    mxid: &str,
    localpart: &str,
    domain: &str,
    password: &str,
) -> Result<Option<UserSpec>, String> {
    let url = reqwest::Url::parse(auth_url).map_err(|e| format!("bad rest.endpoints.auth: {e}"))?;
    let shown = format!("{}{}", url.host_str().unwrap_or_default(), url.path());
    let body = serde_json::json!({"auth": {
        "mxid": mxid, "localpart": localpart, "domain": domain, "password": password,
    }});
    let request = client(source.timeout)?.post(url).json(&body);
    let raw = exchange(
        request,
        &shown,
        MAX_LOGIN_ANSWER,
        "the answer is larger than 1 MiB",
    )
    .await?;
    let answer: LoginAnswer = serde_json::from_slice(&raw)
        .map_err(|_| format!("{shown} did not answer {{\"auth\": {{\"success\": ...}}}}"))?;
    if !answer.auth.success {
        return Ok(None);
    }
    // The backend may name the user; it must be the one asked about.
    if let Some(id) = &answer.auth.id {
        let named = match id.kind.as_str() {
            "localpart" => format!("@{}:{domain}", id.value),
            "mxid" => id.value.clone(),
            other => return Err(format!("{shown} answered an id of unknown type {other:?}")),
        };
        if !named.eq_ignore_ascii_case(mxid) {
            return Ok(None);
        }
    }
    let profile = answer.auth.profile.unwrap_or_default();
    Ok(Some(user(
        mxid.to_owned(),
        profile.display_name,
        profile.three_pids,
    )))
}

/// A user as the web service describes it.
fn user(username: String, display_name: Option<String>, threepids: Vec<RestThreePid>) -> UserSpec {
    UserSpec {
        username,
        display_name,
        threepids: threepids
            .into_iter()
            .map(|t| ThreePidSpec {
                medium: t.medium,
                address: t.address,
            })
            .collect(),
        roles: Vec::new(),
        attributes: Default::default(),
        password: None,
    }
}

pub(crate) async fn fetch(source: &RestSource) -> Result<Vec<UserSpec>, String> {
    let client = client(source.timeout)?;
    let mut users = Vec::new();
    let mut next = Some(source.url.clone());
    let mut pages = 0;
    let mut visited = std::collections::HashSet::new();
    while let Some(url) = next.take() {
        pages += 1;
        if pages > REST_MAX_PAGES {
            return Err(format!(
                "more than {REST_MAX_PAGES} pages; is `next` looping?"
            ));
        }
        let base =
            reqwest::Url::parse(&source.url).map_err(|e| format!("bad rest.sync.url: {e}"))?;
        let url = base
            .join(&url)
            .map_err(|_| "a `next` link is not a URL".to_owned())?;
        // Credentials go only where the operator pointed them.
        if url.origin() != base.origin() {
            return Err(format!(
                "a `next` link leaves {} (scheme, host and port must stay those of rest.sync.url)",
                base.host_str().unwrap_or_default()
            ));
        }
        if !visited.insert(url.to_string()) {
            return Err("a `next` link points at a page already read".into());
        }
        // Name the host and path in errors, never a query that might hold a secret.
        let shown = format!("{}{}", url.host_str().unwrap_or_default(), url.path());
        let mut request = client.get(url);
        request = match &source.auth {
            RestAuth::None => request,
            RestAuth::Bearer(token) => request.bearer_auth(token.expose()),
            RestAuth::Basic(user, password) => request.basic_auth(user, Some(password.expose())),
        };
        let too_big = format!(
            "a page is larger than rest.sync.maxPageSize ({} bytes)",
            source.max_page
        );
        let body = exchange(request, &shown, source.max_page, &too_big).await?;
        // Positions only: serde's messages can quote values (addresses).
        let page: RestPage = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{shown} did not answer a page of users (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        users.extend(page.users.into_iter().map(|u| UserSpec {
            roles: u.roles,
            ..user(u.username, u.display_name, u.threepids)
        }));
        next = page.next.filter(|n| !n.is_empty());
    }
    Ok(users)
}
