//! The route table: which handler answers which path and method, on the public and the
//! admin listener. Handlers live in one file per API area; what wraps every route
//! (body limit, CORS, log line, rejection → Matrix error) is in `middleware`.

use super::identity::{account, discovery, invite, keys as pubkey, lookup, session, terms};
use super::middleware::{body_guard, logged, recover, with_cors};
use super::{admin, client::directory, extract as api};
use crate::error::Error;
use crate::service::Services;
use warp::filters::BoxedFilter;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

/// GET, and HEAD for probes.
fn get() -> BoxedFilter<()> {
    warp::get().or(warp::head()).unify().boxed()
}

/// Joins routes that all produce a `Response`.
macro_rules! routes {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $first$(.or($rest).unify())*
    };
}

/// Routes served under both `/_matrix/identity/v2` and `/_matrix/identity/api/v1`
/// (given without their prefix): the ping and the long-term keys.
fn shared_routes(state: &Services) -> BoxedFilter<(Response,)> {
    let st = api::with_state(state.clone());
    let ping = warp::path::end().and(get()).and_then(discovery::ping);
    let pubkey_isvalid = warp::path!("pubkey" / "isvalid")
        .and(get())
        .and(api::query())
        .and(st.clone())
        .and_then(pubkey::is_valid);
    let ephemeral_isvalid = warp::path!("pubkey" / "ephemeral" / "isvalid")
        .and(get())
        .and(api::query())
        .and(st.clone())
        .and_then(invite::ephemeral_is_valid);
    let pubkey_get = warp::path!("pubkey" / String)
        .and(get())
        .and(st)
        .and_then(pubkey::get_pubkey);
    routes!(ping, pubkey_isvalid, ephemeral_isvalid, pubkey_get).boxed()
}

/// Sessions, bind and unbind, under v2 (`v2: true`, access token and terms) or v1 (no
/// accounts). GET submitToken and unbind never take an access token.
fn session_routes(state: &Services, v2: bool) -> BoxedFilter<(Response,)> {
    let limit = super::body::Limit::of(&state.config().server);
    let st = api::with_state(state.clone());
    let st_sign = st.clone();
    let ip = api::client_ip(std::sync::Arc::new(
        state.config().rate_limit.trusted_proxies.clone(),
    ));
    let access = api::token()
        .map(move |token: Option<String>| {
            if v2 {
                session::Access::V2(token)
            } else {
                session::Access::V1
            }
        })
        .boxed();
    let request_token = warp::path!("validate" / String / "requestToken")
        .and(warp::post())
        .and(access.clone())
        .and(api::params_body(limit))
        .and(ip.clone())
        .and(st.clone())
        .and_then(session::request_token);
    let submit_post = warp::path!("validate" / String / "submitToken")
        .and(warp::post())
        .and(access.clone())
        .and(api::params_body(limit))
        .and(ip.clone())
        .and(st.clone())
        .and_then(session::submit_token);
    let submit_get = warp::path!("validate" / String / "submitToken")
        .and(get())
        .and(api::query())
        .and(ip.clone())
        .and(st.clone())
        .and_then(session::submit_token_get);
    let validated = warp::path!("3pid" / "getValidated3pid")
        .and(get())
        .and(access.clone())
        .and(api::query())
        .and(st.clone())
        .and_then(session::get_validated);
    let bind = warp::path!("3pid" / "bind")
        .and(warp::post())
        .and(access)
        .and(api::params_body(limit))
        .and(st.clone())
        .and_then(session::bind);
    let unbind = warp::path!("3pid" / "unbind")
        .and(warp::post())
        .and(warp::path::full())
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(
            warp::header::optional::<String>("authorization")
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(api::json_body(limit))
        .and(ip)
        .and(st)
        .and_then(session::unbind);
    let sign = warp::path!("sign-ed25519")
        .and(warp::post())
        .and(api::token())
        .and(warp::any().map(move || v2))
        .and(api::query())
        .and(super::body::limited(limit))
        .and(
            warp::header::optional::<String>("content-type")
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(st_sign)
        .and_then(invite::sign_ed25519);
    routes!(
        request_token,
        submit_post,
        submit_get,
        validated,
        bind,
        unbind,
        sign
    )
    .boxed()
}

/// Every route of the public listener, with CORS, logging and error rendering. Each
/// prefix is matched once, and the hot routes (lookups) come first.
pub fn public_routes(state: Services) -> BoxedFilter<(Response,)> {
    let limit = super::body::Limit::of(&state.config().server);
    let st = api::with_state(state.clone());

    // An exact `POST .../v2/lookup` is answered by the fast lane before warp sees it;
    // this route (same function) takes the spellings it does not match.
    let lookup_v2 = warp::path!("lookup")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::body::stream())
        .and(warp::ext::optional::<api::PeerAddr>())
        .and(st.clone())
        .then(
            |headers: warp::http::HeaderMap,
             query: Option<String>,
             body,
             peer: Option<api::PeerAddr>,
             state: Services| async move {
                super::fast::answer(&headers, query.as_deref(), body, &state, peer.map(|p| p.0))
                    .await
            },
        );
    let hash_details = warp::path!("hash_details")
        .and(get())
        .and(api::token())
        .and(st.clone())
        .and_then(lookup::hash_details);
    let ip = api::client_ip(std::sync::Arc::new(
        state.config().rate_limit.trusted_proxies.clone(),
    ));
    let register = warp::path!("account" / "register")
        .and(warp::post())
        .and(api::json_body(limit))
        .and(ip.clone())
        .and(st.clone())
        .and_then(account::register);
    let whoami = warp::path!("account")
        .and(get())
        .and(api::token())
        .and(st.clone())
        .and_then(account::whoami);
    let logout = warp::path!("account" / "logout")
        .and(warp::post())
        .and(api::token())
        .and(st.clone())
        .and_then(account::logout);
    let terms_get = warp::path!("terms")
        .and(get())
        .and(st.clone())
        .and_then(terms::get_terms);
    let terms_post = warp::path!("terms")
        .and(warp::post())
        .and(api::token())
        .and(api::json_body(limit))
        .and(st.clone())
        .and_then(terms::post_terms);
    let store_invite = warp::path!("store-invite")
        .and(warp::post())
        .and(api::token())
        .and(api::params_body(limit))
        .and(st.clone())
        .and_then(invite::store_invite);
    // v1 (Sydent's, which Synapse used before v2): no account, the same body.
    let store_invite_v1 = warp::path!("store-invite")
        .and(warp::post())
        .and(api::params_body(limit))
        .and(ip)
        .and(st.clone())
        .and_then(invite::store_invite_v1);
    let v2 = warp::path!("_matrix" / "identity" / "v2" / ..)
        .and(routes!(
            lookup_v2,
            hash_details,
            shared_routes(&state),
            register,
            whoami,
            logout,
            terms_get,
            terms_post,
            session_routes(&state, true),
            store_invite,
        ))
        .boxed();

    let versions = warp::path!("_matrix" / "identity" / "versions")
        .and(get())
        .and_then(discovery::versions);
    let version = warp::path!("version")
        .and(get())
        .and_then(discovery::version);
    let status = warp::path!("status")
        .and(get())
        .and(st.clone())
        .and_then(discovery::status);

    let client = client_routes(&state);
    let all = if state.config().matrix.v1 {
        // v1: the shared routes plus the legacy single (signed) and bulk lookups,
        // unauthenticated.
        let ip = api::client_ip(std::sync::Arc::new(
            state.config().rate_limit.trusted_proxies.clone(),
        ));
        let lookup_v1 = warp::path!("lookup")
            .and(get())
            .and(api::query())
            .and(ip.clone())
            .and(st.clone())
            .and_then(lookup::lookup_v1);
        let bulk_lookup = warp::path!("bulk_lookup")
            .and(warp::post())
            .and(api::json_body(limit))
            .and(ip)
            .and(st)
            .and_then(lookup::bulk_lookup_v1);
        let v1 = warp::path!("_matrix" / "identity" / "api" / "v1" / ..)
            .and(routes!(
                shared_routes(&state),
                lookup_v1,
                bulk_lookup,
                store_invite_v1,
                session_routes(&state, false)
            ))
            .boxed();
        routes!(v2, v1, client, versions, version, status).boxed()
    } else {
        routes!(v2, client, versions, version, status).boxed()
    };
    let preflight = warp::method().and_then(|method: Method| async move {
        if method == Method::OPTIONS {
            Ok(super::reply::json_response(
                StatusCode::OK,
                &serde_json::json!({}),
            ))
        } else {
            // Not `warp::options()`: its "method not allowed" rejection would turn
            // every unknown path into a 405.
            Err(warp::reject::not_found())
        }
    });
    let routes = routes!(body_guard(limit.size), preflight, all)
        .recover(recover)
        .unify()
        .map(with_cors);
    logged(routes.boxed(), crate::metrics::Listener::Public, &state)
}

/// The client-server endpoints a reverse proxy may route here: directory search and
/// profiles (`r0` and `v3`).
fn client_routes(state: &Services) -> BoxedFilter<(Response,)> {
    let limit = super::body::Limit::of(&state.config().server);
    let st = api::with_state(state.clone());
    let version = warp::path!("_matrix" / "client" / String / ..)
        .and_then(|v: String| async move {
            if v == "r0" || v == "v3" {
                Ok(v)
            } else {
                Err(warp::reject::not_found())
            }
        })
        .boxed();
    let host = || {
        warp::header::optional::<String>("host")
            .or(warp::any().map(|| None))
            .unify()
    };
    let search = version
        .clone()
        .and(warp::path!("user_directory" / "search"))
        .and(warp::post())
        .and(api::token())
        .and(host())
        .and(api::json_body::<serde_json::Map<String, serde_json::Value>>(limit))
        .and(st.clone())
        .and_then(directory::search);
    let profile = version
        .and(warp::path("profile"))
        .and(warp::path::tail())
        .and(super::client::client_request(
            limit,
            state.config().rate_limit.trusted_proxies.clone(),
        ))
        .map(
            |version: String,
             tail: warp::path::Tail,
             request: Result<crate::service::passthrough::ClientRequest, Error>| {
                let tail = crate::service::directory::profile_tail(tail.as_str())
                    .ok_or_else(Error::unrecognized_route)?;
                // The path passed on is rebuilt from the checked segments, never the
                // client's: no `..`, backslash or encoded slash can lead elsewhere on
                // the homeserver.
                let mut request = request?;
                let path = crate::service::directory::profile_path(&version, &tail);
                request.path_and_query.insert_str(0, &path);
                Ok(crate::service::directory::ProfileRequest { request, tail })
            },
        )
        .and(st)
        .and_then(directory::profile);
    let policy_routes = policy_routes(state);
    routes!(search, profile, policy_routes).boxed()
}

/// Logins, registrations and room invites, looked at and passed to the homeserver
/// (`r0`, `v3`, and `unstable` where the homeserver serves it: every spelling the
/// proxy sends here is checked, none is passed on unchecked).
fn policy_routes(state: &Services) -> BoxedFilter<(Response,)> {
    use super::client::{client_request, policy};
    use crate::service::passthrough::ClientRequest;
    let config = state.config();
    let request = client_request(
        super::body::Limit::of(&config.server),
        config.rate_limit.trusted_proxies.clone(),
    );
    let st = api::with_state(state.clone());
    let version = warp::path!("_matrix" / "client" / String / ..)
        .and_then(|v: String| async move {
            if matches!(v.as_str(), "r0" | "v3" | "unstable") {
                Ok(v)
            } else {
                Err(warp::reject::not_found())
            }
        })
        .boxed();
    // The path passed on is rebuilt here from what was matched.
    let at = |path: String, request: Result<ClientRequest, Error>| {
        request.map(|mut r| {
            r.path_and_query.insert_str(0, &path);
            r
        })
    };
    let login = version
        .clone()
        .and(warp::path!("login"))
        .and(warp::post().or(get()).unify())
        .and(request.clone())
        .map(move |v: String, r| at(format!("/_matrix/client/{v}/login"), r))
        .and(st.clone())
        .and_then(policy::login);
    let request_token = version
        .clone()
        .and(warp::path!("register" / String / "requestToken"))
        .and(warp::post())
        .and_then(|v: String, medium: String| async move {
            match crate::model::Medium::parse(&medium) {
                Some(m) => Ok((v, m)),
                None => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
        .and(request.clone())
        .map(move |v: String, medium: crate::model::Medium, r| {
            (
                medium,
                at(
                    format!(
                        "/_matrix/client/{v}/register/{}/requestToken",
                        medium.as_str()
                    ),
                    r,
                ),
            )
        })
        .untuple_one()
        .and(st.clone())
        .and_then(policy::register_request_token);
    let register = version
        .clone()
        .and(warp::path!("register"))
        .and(warp::post())
        .and(request.clone())
        .map(move |v: String, r| at(format!("/_matrix/client/{v}/register"), r))
        .and(st.clone())
        .and_then(policy::register);
    let invite = version
        .and(warp::path!("rooms" / String / "invite"))
        .and(warp::post())
        .and(request)
        .map(move |v: String, room: String, r| {
            let room = crate::service::directory::profile_tail(&room)
                .filter(|t| t.len() == 1)
                .ok_or_else(Error::unrecognized_route)?;
            let room = crate::service::directory::encode_segment(&room[0]);
            at(format!("/_matrix/client/{v}/rooms/{room}/invite"), r)
        })
        .and(st)
        .and_then(policy::room_invite);
    routes!(login, request_token, register, invite).boxed()
}

/// The admin listeners' routes. No CORS: browsers must not reach them; the admin door
/// (`door`, run by the listener before these) refuses what a web page could send.
pub fn admin_routes(state: Services) -> BoxedFilter<(Response,)> {
    let limit = super::body::Limit::of(&state.config().server);
    let st = api::with_state(state.clone());
    let base = warp::path!("_mxisd" / "admin" / "v1" / ..).boxed();
    let status = base
        .clone()
        .and(warp::path!("status"))
        .or(warp::path!("status"))
        .unify()
        .and(get())
        .and(st.clone())
        .and_then(admin::status);
    let backup = base
        .clone()
        .and(warp::path!("backup"))
        .and(get())
        .and(st.clone())
        .and_then(admin::backup);
    let metrics = warp::path!("metrics")
        .and(get())
        .and(st.clone())
        .and_then(admin::metrics);
    let add = base
        .clone()
        .and(warp::path!("bindings"))
        .and(warp::post())
        .and(api::json_body(limit))
        .and(st.clone())
        .and_then(admin::bindings_add);
    let show = base
        .clone()
        .and(warp::path!("bindings"))
        .and(get())
        .and(api::query())
        .and(st.clone())
        .and_then(admin::bindings_show);
    let remove = base
        .clone()
        .and(warp::path!("bindings" / "remove"))
        .and(warp::post())
        .and(api::json_body(limit))
        .and(st.clone())
        .and_then(admin::bindings_remove);
    // The import streams its body: no size limit beyond what the operator sends.
    let import = base
        .clone()
        .and(warp::path!("bindings" / "import"))
        .and(warp::post())
        .and(
            warp::header::optional::<String>("content-type")
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::body::stream())
        .and(st.clone())
        .and_then(admin::bindings_import);
    let invites = base
        .clone()
        .and(warp::path!("invites"))
        .and(get())
        .and(api::query())
        .and(st.clone())
        .and_then(admin::invites);
    let invites_remove = base
        .clone()
        .and(warp::path!("invites" / "remove"))
        .and(warp::post())
        .and(api::json_body(limit))
        .and(st.clone())
        .and_then(admin::invites_remove);
    let outbox = base
        .clone()
        .and(warp::path!("outbox"))
        .and(get())
        .and(st.clone())
        .and_then(admin::outbox);
    let outbox_retry = base
        .clone()
        .and(warp::path!("outbox" / "retry"))
        .and(warp::post())
        .and(st.clone())
        .and_then(admin::outbox_retry);
    let search = base
        .clone()
        .and(warp::path!("search"))
        .and(get())
        .and(warp::query::<admin::SearchQuery>())
        .and(st.clone())
        .and_then(admin::search);
    let reindex = base
        .clone()
        .and(warp::path!("reindex"))
        .and(warp::post())
        .and(st.clone())
        .and_then(admin::reindex);
    let reload = base
        .clone()
        .and(warp::path!("reload"))
        .and(warp::post())
        .and(st.clone())
        .and_then(admin::reload);
    let sync_status = base
        .clone()
        .and(warp::path!("sync"))
        .and(get())
        .and(st.clone())
        .and_then(admin::sync_status);
    let sync_run = base
        .clone()
        .and(warp::path!("sync"))
        .and(warp::post())
        .and(api::json_body(limit))
        .and(st.clone())
        .and_then(admin::sync_run);
    let progress = base
        .clone()
        .and(warp::path!("progress"))
        .and(get())
        .and(st.clone())
        .and_then(admin::progress);
    let rotate = base
        .and(warp::path!("hashing" / "rotate"))
        .and(warp::post())
        .and(st)
        .and_then(admin::rotate_pepper);
    // Boxed in groups: one long chain of `or`s makes type checking very slow.
    let operations = routes!(status, metrics, backup, progress).boxed();
    let routes = routes!(
        import,
        operations,
        add,
        show,
        remove,
        invites,
        invites_remove,
        outbox,
        outbox_retry,
        sync_status,
        search,
        reindex,
        reload,
        sync_run,
        rotate
    )
    .recover(recover)
    .unify();
    logged(routes.boxed(), crate::metrics::Listener::Admin, &state)
}

/// The metrics listener: `GET /metrics` and nothing else.
pub fn metrics_routes(state: Services) -> BoxedFilter<(Response,)> {
    let metrics = warp::path!("metrics")
        .and(get())
        .and(api::with_state(state.clone()))
        .and_then(admin::metrics);
    let routes = metrics.recover(recover).unify();
    logged(routes.boxed(), crate::metrics::Listener::Admin, &state)
}

/// The homeserver-facing listener (`server.internal`): `POST
/// /_matrix-internal/identity/v1/check_credentials`.
pub fn internal_routes(state: Services) -> BoxedFilter<(Response,)> {
    // A password check is small: 64 KiB is plenty and bounds what a caller can send.
    let limit = super::body::Limit {
        size: 64 * 1024,
        ..super::body::Limit::of(&state.config().server)
    };
    let ip = api::client_ip(std::sync::Arc::new(Vec::new()));
    let check = warp::path!("_matrix-internal" / "identity" / "v1" / "check_credentials")
        .and(warp::post())
        .and(api::json_body(limit))
        .and(ip)
        .and(api::with_state(state.clone()))
        .and_then(super::internal::credentials::check);
    let roles = warp::path!("_matrix-internal" / "profile" / "v1" / String)
        .and(get())
        .and(api::with_state(state.clone()))
        .and_then(super::internal::profile::roles);
    let routes = routes!(body_guard(limit.size), check, roles)
        .recover(recover)
        .unify();
    logged(routes.boxed(), crate::metrics::Listener::Internal, &state)
}
