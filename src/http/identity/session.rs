//! Validation sessions and associations: `validate/{email,msisdn}/requestToken`,
//! `submitToken` (POST, and GET for links clicked in a mail), `3pid/getValidated3pid`,
//! `3pid/bind`, `3pid/unbind`. The same handlers serve v2 (access token and terms) and
//! the unauthenticated v1 prefix.

use crate::error::Error;
use crate::http::params;
use crate::http::reply::respond;
use crate::model::{Medium, Mxid, ThreePid};
use crate::service::auth::{authenticate, Gate};
use crate::service::bind::{self, BindRequest, Binder, UnbindAuth, UnbindRequest};
use crate::service::session::{self, RequestToken, SessionCredentials, SubmitToken};
use crate::service::Services;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

const SUCCESS_PAGE: &str = include_str!("../../../assets/pages/submit-success.html");
const FAILURE_PAGE: &str = include_str!("../../../assets/pages/submit-failure.html");

/// Which prefix a request came in on.
#[derive(Debug, Clone)]
pub enum Access {
    /// `/_matrix/identity/v2`, with the request's access token (if any).
    V2(Option<String>),
    /// `/_matrix/identity/api/v1`: no accounts.
    V1,
}

impl Access {
    /// The caller's user ID on v2 (authenticated, terms accepted); `None` on v1.
    fn user(&self, state: &Services) -> Result<Option<String>, Error> {
        match self {
            Self::V2(token) => authenticate(state, token.clone(), Gate::Terms)
                .map(|caller| Some(caller.user_id().to_owned())),
            Self::V1 => Ok(None),
        }
    }
}

fn medium(name: &str) -> Result<Medium, Error> {
    Medium::parse(name).ok_or_else(Error::unrecognized_route)
}

/// A `requestToken` body: the address fields of `medium`, then `client_secret`,
/// `send_attempt` and the optional `next_link`, checked in that order.
fn request_token_body(medium: Medium, body: &Map<String, Value>) -> Result<RequestToken, Error> {
    let (threepid, intl_fmt) = match medium {
        Medium::Email => {
            params::require_all(body, &["client_secret", "email", "send_attempt"])?;
            let email = params::string(body, "email")?;
            (session::email_threepid(email)?, None)
        }
        Medium::Msisdn => {
            params::require_all(
                body,
                &["client_secret", "country", "phone_number", "send_attempt"],
            )?;
            let country = params::string(body, "country")?;
            let number = params::string(body, "phone_number")?;
            let (threepid, intl_fmt) = session::msisdn_threepid(country, number)?;
            (threepid, Some(intl_fmt))
        }
    };
    Ok(RequestToken {
        threepid,
        intl_fmt,
        client_secret: params::client_secret(body)?.to_owned(),
        send_attempt: params::integer(body, "send_attempt")?,
        next_link: next_link(body)?,
    })
}

/// The optional `next_link`: an absolute http(s) URL.
fn next_link(body: &Map<String, Value>) -> Result<Option<String>, Error> {
    let Some(link) = params::optional_string(body, "next_link")? else {
        return Ok(None);
    };
    match url::Url::parse(link) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Some(u.to_string()))
        }
        _ => Err(Error::invalid_param(
            "next_link must be an http or https URL",
        )),
    }
}

/// `POST /validate/{medium}/requestToken`
pub async fn request_token(
    medium_name: String,
    access: Access,
    body: Result<Map<String, Value>, Error>,
    ip: Option<IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let medium = medium(&medium_name)?;
        access.user(&state)?;
        let body = body?;
        session::ensure_enabled(&state)?;
        let request = request_token_body(medium, &body)?;
        session::request_token(&state, request, ip).await
    };
    respond(result.await)
}

/// `POST /validate/{medium}/submitToken`: `{"success": true}`, or the error with
/// `"success": false` added (Synapse and old clients read that field).
pub async fn submit_token(
    medium_name: String,
    access: Access,
    body: Result<Map<String, Value>, Error>,
    ip: Option<IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let medium = medium(&medium_name)?;
        access.user(&state)?;
        let body = body?;
        params::require_all(&body, &["sid", "client_secret", "token"])?;
        let request = SubmitToken {
            session: SessionCredentials {
                sid: params::string(&body, "sid")?,
                client_secret: params::client_secret(&body)?,
            },
            token: params::string(&body, "token")?,
        };
        session::submit_token(&state, medium, request, ip)
            .await
            .map(drop)
    };
    Ok(match result.await {
        Ok(_) => crate::http::reply::json_response(
            StatusCode::OK,
            &serde_json::json!({ "success": true }),
        ),
        Err(e) => crate::http::reply::error_response(&e.with("success", false)),
    })
}

fn page(state: &Services, configured: Option<&std::path::Path>, default: &str) -> String {
    let text = configured
        .and_then(|p| match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot read the page; showing the built-in one");
                None
            }
        })
        .unwrap_or_else(|| default.to_owned());
    text.replace("%DOMAIN%", &state.config().matrix.domain)
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /validate/{medium}/submitToken?sid=&client_secret=&token=`: the link in the
/// message, opened in a browser, so no access token on either prefix. Redirects to the
/// session's `next_link` on success, else shows a page.
pub async fn submit_token_get(
    medium_name: String,
    query: HashMap<String, String>,
    ip: Option<IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let medium = medium(&medium_name)?;
        let get = |name: &'static str| {
            query
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| Error::missing_params(&[name]))
        };
        let (sid, client_secret, token) = (get("sid")?, get("client_secret")?, get("token")?);
        let request = SubmitToken {
            session: SessionCredentials { sid, client_secret },
            token,
        };
        session::submit_token(&state, medium, request, ip).await
    };
    let view = &state.config().view;
    Ok(match result.await {
        Ok(session) => match session.next_link {
            Some(link) => match HeaderValue::from_str(&link) {
                Ok(location) => {
                    let mut r = Response::new(Default::default());
                    *r.status_mut() = StatusCode::FOUND;
                    r.headers_mut().insert(header::LOCATION, location);
                    r
                }
                Err(_) => html(
                    StatusCode::OK,
                    page(&state, view.success_page.as_deref(), SUCCESS_PAGE),
                ),
            },
            None => html(
                StatusCode::OK,
                page(&state, view.success_page.as_deref(), SUCCESS_PAGE),
            ),
        },
        Err(e) => html(
            crate::http::reply::status_and_errcode(e.code).0,
            page(&state, view.failure_page.as_deref(), FAILURE_PAGE),
        ),
    })
}

/// `GET /3pid/getValidated3pid?sid=&client_secret=`
pub async fn get_validated(
    access: Access,
    query: HashMap<String, String>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = (|| {
        access.user(&state)?;
        let sid = query
            .get("sid")
            .ok_or_else(|| Error::missing_params(&["sid"]))?;
        let client_secret = query
            .get("client_secret")
            .ok_or_else(|| Error::missing_params(&["client_secret"]))?;
        session::get_validated(&state, SessionCredentials { sid, client_secret })
    })();
    respond(result)
}

fn mxid(body: &Map<String, Value>) -> Result<Mxid, Error> {
    Mxid::parse(params::string(body, "mxid")?)
        .ok_or_else(|| Error::invalid_param("mxid is not a valid Matrix user ID"))
}

/// A `/3pid/bind` body: `sid`, `client_secret` (its grammar checked), `mxid`.
fn bind_body(body: &Map<String, Value>) -> Result<BindRequest<'_>, Error> {
    params::require_all(body, &["sid", "client_secret", "mxid"])?;
    let sid = params::string(body, "sid")?;
    let client_secret = params::client_secret(body)?;
    Ok(BindRequest {
        session: SessionCredentials { sid, client_secret },
        mxid: mxid(body)?,
    })
}

/// A `/3pid/unbind` body: `mxid`, `threepid: {medium, address}`, and optionally both
/// of `sid` and `client_secret`.
fn unbind_body(body: &Map<String, Value>) -> Result<UnbindRequest<'_>, Error> {
    params::require_all(body, &["mxid", "threepid"])?;
    let mxid = mxid(body)?;
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
    let client_secret = params::optional_string(body, "client_secret")?;
    let session = match (sid, client_secret) {
        (Some(sid), Some(client_secret)) => Some(SessionCredentials { sid, client_secret }),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::missing_params(&["sid", "client_secret"]))
        }
        (None, None) => None,
    };
    Ok(UnbindRequest {
        mxid,
        threepid,
        session,
    })
}

/// `POST /3pid/bind`
pub async fn bind(
    access: Access,
    body: Result<Map<String, Value>, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = async {
        let user = access.user(&state)?;
        let binder = match &user {
            Some(u) => Binder::Account(u),
            None => Binder::Anonymous,
        };
        let body = body?;
        bind::bind(&state, binder, bind_body(&body)?).await
    };
    respond(result.await)
}

/// `POST /3pid/unbind`: authorised by a session or by the homeserver's signature,
/// never by an access token.
pub async fn unbind(
    path: warp::path::FullPath,
    query: Option<String>,
    authorization: Option<String>,
    body: Result<Map<String, Value>, Error>,
    ip: Option<IpAddr>,
    state: Services,
) -> Result<Response, Infallible> {
    let uri = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{}?{q}", path.as_str()),
        None => path.as_str().to_owned(),
    };
    let result = async {
        state.limits().unbind(ip)?;
        let body = body?;
        bind::ensure_unbind_enabled(&state)?;
        let request = unbind_body(&body)?;
        let content = Value::Object(body.clone());
        bind::unbind(
            &state,
            request,
            UnbindAuth {
                authorization: authorization.as_deref(),
                method: "POST",
                uri: &uri,
                content: &content,
            },
        )
        .await
    };
    respond(result.await.map(|()| serde_json::json!({})))
}
