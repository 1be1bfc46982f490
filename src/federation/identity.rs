//! Calls to other identity servers, for recursive lookups: where an e-mail domain's
//! identity server is (SRV `_matrix-identity._tcp.<domain>`), which API a server speaks,
//! an account on its v2 API opened with an OpenID token, its hash details, v2 lookups,
//! and the v1 lookups (a single one, whose signature is checked against the key the
//! server publishes, and bulk). Every call goes through the outbound guard with the
//! caller's timeout and a size cap. It keeps only the servers' verified public keys
//! (an hour); tokens, peppers and breakers are `service::recursion`'s.

use super::client::Extra;
use super::destination::Destination;
use super::transport::lookup_guarded;
use super::{Federation, OutboundError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest answer read from another identity server (10,000 mappings fit in 1 MiB).
const MAX_ANSWER: usize = 2 << 20;

/// How long a remote identity server's verified key is kept.
const KEY_TTL: Duration = Duration::from_secs(3600);

/// SRV records of one domain looked at, at most (the rest are ignored).
const MAX_SRV_RECORDS: usize = 10;

/// The API a remote identity server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V2,
    /// Only the legacy v1 API (ma1sd and mxisd by default, old Sydent).
    V1,
}

/// Why a call to a remote identity server gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("the server refused our token")]
    Unauthorized,
    #[error("the server changed its pepper")]
    InvalidPepper,
    #[error("the server wants its terms accepted")]
    TermsNotSigned,
    #[error("the server answered HTTP {status} {errcode}")]
    Refused { status: u16, errcode: String },
    #[error("the server's answer is not what the API says: {0}")]
    Malformed(&'static str),
}

/// `/v2/hash_details`.
#[derive(Debug, Clone)]
pub struct HashDetails {
    pub pepper: String,
    /// MSC4004's `alt_lookup_peppers`: earlier peppers still accepted (at most 4 kept).
    pub alt_peppers: Vec<String>,
    pub sha256: bool,
    pub none: bool,
}

/// A v2 lookup's answer, reduced to what was asked.
#[derive(Debug, Clone, Default)]
pub struct V2Answer {
    /// Entry → Matrix ID.
    pub mappings: BTreeMap<String, String>,
    /// MSC4004's `third_party_mappings`: `host:port` → the entries that server has
    /// (at most 8 servers kept).
    pub third_party: Vec<(String, Vec<String>)>,
}

/// How a federated identity service took a push of hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    /// Twake answers 500 when a pushed hash is already there (it still stores the
    /// new ones): most likely a re-push.
    Duplicates,
}

/// A v1 single lookup's answer whose signature was checked.
#[derive(Debug, Clone)]
pub struct Verified {
    pub mxid: String,
    pub not_before: u64,
    pub not_after: u64,
    pub ts: u64,
    /// The remote's own signatures, kept next to ours.
    pub signatures: Value,
}

fn refusal(status: u16, body: &Value) -> RemoteError {
    let errcode = body
        .get("errcode")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (status, errcode) {
        (401, _) | (_, "M_UNKNOWN_TOKEN" | "M_UNAUTHORIZED" | "M_MISSING_TOKEN") => {
            RemoteError::Unauthorized
        }
        (_, "M_TERMS_NOT_SIGNED") => RemoteError::TermsNotSigned,
        (_, "M_INVALID_PEPPER") => RemoteError::InvalidPepper,
        _ => RemoteError::Refused {
            status,
            errcode: errcode.chars().take(64).collect(),
        },
    }
}

impl Federation {
    /// The identity servers `domain` publishes (`_matrix-identity._tcp.<domain>`), as
    /// `https://<target>:<port>` in priority order (heavier first within a priority);
    /// none when there is no record or the record says "no service" (`.`).
    pub async fn identity_servers_of(&self, domain: &str) -> Result<Vec<String>, OutboundError> {
        if !crate::model::is_server_name(domain) || domain.contains(':') {
            return Err(OutboundError::InvalidName(domain.to_owned()));
        }
        let Some(dns) = self.dns.as_deref() else {
            return Err(OutboundError::Unreachable(domain.to_owned()));
        };
        let lookup = match dns
            .srv_lookup(format!("_matrix-identity._tcp.{domain}."))
            .await
        {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(Vec::new()),
            Err(_) => return Err(OutboundError::Unreachable(domain.to_owned())),
        };
        let mut records: Vec<(u16, std::cmp::Reverse<u16>, String, u16)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some((
                    srv.priority,
                    std::cmp::Reverse(srv.weight),
                    srv.target
                        .to_utf8()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                    srv.port,
                )),
                _ => None,
            })
            .take(MAX_SRV_RECORDS * 10)
            .collect();
        records.sort();
        let mut bases = Vec::new();
        for (_, _, target, port) in records {
            if target.is_empty() || port == 0 {
                continue;
            }
            let base = format!("https://{target}:{port}");
            if !bases.contains(&base) {
                bases.push(base);
            }
            if bases.len() == MAX_SRV_RECORDS {
                break;
            }
        }
        Ok(bases)
    }

    /// Whether a name resolves to an address the guard allows (so a refused SRV
    /// target is known before anything is sent).
    pub async fn identity_target_allowed(&self, base: &str) -> Result<(), OutboundError> {
        let url =
            reqwest::Url::parse(base).map_err(|_| OutboundError::InvalidName(base.to_owned()))?;
        self.guard.check_url(&url)?;
        let Some(host) = url.host_str() else {
            return Err(OutboundError::InvalidName(base.to_owned()));
        };
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return Ok(());
        }
        lookup_guarded(self.dns.as_deref(), Some(&self.guard), host)
            .await
            .map(|_| ())
            .map_err(|e| match e.downcast::<super::guard::Refused>() {
                Ok(refused) => OutboundError::Refused(*refused),
                Err(_) => OutboundError::Unreachable(host.to_owned()),
            })
    }

    async fn identity_call(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
        timeout: Duration,
    ) -> Result<(u16, Value), OutboundError> {
        let destination = Destination::direct(base.to_owned());
        let extra = Extra {
            bearer,
            timeout: Some(timeout),
        };
        self.send_json_with(&destination, method, path, body, MAX_ANSWER, extra)
            .await
            .or_else(|e| match e {
                OutboundError::NotJsonStatus(status) => Ok((status, Value::Null)),
                other => Err(other),
            })
    }

    /// The API `base` speaks: v2 when `GET /_matrix/identity/v2` answers 200, else v1
    /// when `GET /_matrix/identity/api/v1` does; `None`: neither.
    pub async fn identity_api(
        &self,
        base: &str,
        timeout: Duration,
    ) -> Result<Option<Api>, OutboundError> {
        let get = reqwest::Method::GET;
        let (status, _) = self
            .identity_call(
                base,
                get.clone(),
                "/_matrix/identity/v2",
                None,
                None,
                timeout,
            )
            .await?;
        if status == 200 {
            return Ok(Some(Api::V2));
        }
        let (status, _) = self
            .identity_call(base, get, "/_matrix/identity/api/v1", None, None, timeout)
            .await?;
        Ok((status == 200).then_some(Api::V1))
    }

    /// Opens an account on `base`'s v2 API with an OpenID token of our homeserver
    /// (`request_token`'s answer, as it came); its access token.
    pub async fn identity_register(
        &self,
        base: &str,
        openid: &Value,
        timeout: Duration,
    ) -> Result<String, RemoteError> {
        let (status, body) = self
            .identity_call(
                base,
                reqwest::Method::POST,
                "/_matrix/identity/v2/account/register",
                Some(openid),
                None,
                timeout,
            )
            .await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 1024 && t.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .ok_or(RemoteError::Malformed("account/register gave no token"))
    }

    /// `GET /v2/hash_details`.
    pub async fn identity_hash_details(
        &self,
        base: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<HashDetails, RemoteError> {
        let (status, body) = self
            .identity_call(
                base,
                reqwest::Method::GET,
                "/_matrix/identity/v2/hash_details",
                None,
                token,
                timeout,
            )
            .await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        let pepper = body
            .get("lookup_pepper")
            .and_then(Value::as_str)
            .filter(|p| p.len() <= 256)
            .ok_or(RemoteError::Malformed("hash_details has no lookup_pepper"))?;
        let algorithms: Vec<&str> = body
            .get("algorithms")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let alt_peppers = body
            .get("alt_lookup_peppers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|p| p.len() <= 256 && *p != pepper)
                    .take(4)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(HashDetails {
            pepper: pepper.to_owned(),
            alt_peppers,
            sha256: algorithms.contains(&"sha256"),
            none: algorithms.contains(&"none"),
        })
    }

    /// `POST /v2/lookup`: `addresses` as the algorithm wants them; the mappings of
    /// entries that were asked for, and where the server says the others are
    /// (anything else the server adds is dropped).
    pub async fn identity_lookup_v2(
        &self,
        base: &str,
        token: Option<&str>,
        algorithm: &str,
        pepper: &str,
        addresses: &[String],
        timeout: Duration,
    ) -> Result<V2Answer, RemoteError> {
        let request = json!({"algorithm": algorithm, "pepper": pepper, "addresses": addresses});
        let (status, body) = self
            .identity_call(
                base,
                reqwest::Method::POST,
                "/_matrix/identity/v2/lookup",
                Some(&request),
                token,
                timeout,
            )
            .await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        let mappings = body
            .get("mappings")
            .and_then(Value::as_object)
            .ok_or(RemoteError::Malformed("lookup answer has no mappings"))?;
        let asked: std::collections::HashSet<&str> = addresses.iter().map(String::as_str).collect();
        let mappings: BTreeMap<String, String> = mappings
            .iter()
            .filter(|(k, _)| asked.contains(k.as_str()))
            .filter_map(|(k, v)| {
                let mxid = v
                    .as_str()
                    .filter(|m| crate::model::Mxid::parse(m).is_some())?;
                Some((k.clone(), mxid.to_owned()))
            })
            .collect();
        let third_party = body
            .get("third_party_mappings")
            .and_then(Value::as_object)
            .map(|servers| {
                servers
                    .iter()
                    .filter(|(server, _)| crate::config::recursion::is_host_port(server))
                    .filter_map(|(server, entries)| {
                        let entries: Vec<String> = entries
                            .as_array()?
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|e| asked.contains(e) && !mappings.contains_key(*e))
                            .map(str::to_owned)
                            .collect();
                        (!entries.is_empty()).then(|| (server.clone(), entries))
                    })
                    .take(8)
                    .collect()
            })
            .unwrap_or_default();
        Ok(V2Answer {
            mappings,
            third_party,
        })
    }

    /// MSC4004's `POST /v2/lookups` (Twake's form): `hashes` of our 3PIDs under one of
    /// `base`'s peppers, published as `publish_as` (`host:port`).
    pub async fn identity_push_hashes(
        &self,
        base: &str,
        token: Option<&str>,
        pepper: &str,
        publish_as: &str,
        hashes: &[String],
        timeout: Duration,
    ) -> Result<Pushed, RemoteError> {
        let request = json!({
            "algorithm": "sha256",
            "pepper": pepper,
            "mappings": {publish_as: hashes},
        });
        let (status, body) = self
            .identity_call(
                base,
                reqwest::Method::POST,
                "/_matrix/identity/v2/lookups",
                Some(&request),
                token,
                timeout,
            )
            .await?;
        match status {
            200..=299 => Ok(Pushed::Accepted),
            500 if body.get("errcode").and_then(Value::as_str) == Some("M_UNKNOWN") => {
                Ok(Pushed::Duplicates)
            }
            _ => Err(refusal(status, &body)),
        }
    }

    /// v1 `GET /lookup`: the association, if its signature by a key `base` publishes
    /// checks out and it is about what was asked. A forged or foreign answer is
    /// [`RemoteError::Malformed`].
    pub async fn identity_lookup_v1(
        &self,
        base: &str,
        medium: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<Option<Verified>, RemoteError> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("medium", medium)
            .append_pair("address", address)
            .finish();
        let (status, body) = self
            .identity_call(
                base,
                reqwest::Method::GET,
                &format!("/_matrix/identity/api/v1/lookup?{query}"),
                None,
                None,
                timeout,
            )
            .await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        let Some(object) = body.as_object() else {
            return Err(RemoteError::Malformed("lookup answer is not an object"));
        };
        if object.get("mxid").is_none() {
            return Ok(None);
        }
        let same = |key: &str, want: &str| object.get(key).and_then(Value::as_str) == Some(want);
        if !same("medium", medium) || !same("address", address) {
            return Err(RemoteError::Malformed("the answer is about another 3PID"));
        }
        let mxid = object
            .get("mxid")
            .and_then(Value::as_str)
            .filter(|m| crate::model::Mxid::parse(m).is_some())
            .ok_or(RemoteError::Malformed(
                "the answer's mxid is not a Matrix ID",
            ))?;
        self.check_signature(base, &body, timeout).await?;
        let number = |key: &str| object.get(key).and_then(Value::as_u64);
        Ok(Some(Verified {
            mxid: mxid.to_owned(),
            not_before: number("not_before").unwrap_or(0),
            not_after: number("not_after").unwrap_or(u64::MAX),
            ts: number("ts").unwrap_or(0),
            signatures: object.get("signatures").cloned().unwrap_or(Value::Null),
        }))
    }

    /// At least one signature on `signed` verifies with the key `base` publishes under
    /// its id (`/pubkey/{keyId}`).
    async fn check_signature(
        &self,
        base: &str,
        signed: &Value,
        timeout: Duration,
    ) -> Result<(), RemoteError> {
        let signatures = signed
            .get("signatures")
            .and_then(Value::as_object)
            .ok_or(RemoteError::Malformed("the answer is not signed"))?;
        for (entity, by_key) in signatures.iter().take(4) {
            let Some(by_key) = by_key.as_object() else {
                continue;
            };
            for key_id in by_key.keys().take(4) {
                if !key_id.starts_with("ed25519:")
                    || key_id.len() > 64
                    || !key_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_:.-".contains(&b))
                {
                    continue;
                }
                let cache_key = format!("{base} {key_id}");
                let cached = self.identity_keys.lock().ok().and_then(|c| {
                    c.get(&cache_key)
                        .filter(|(_, t)| t.elapsed() < KEY_TTL)
                        .map(|(k, _)| *k)
                });
                let key = match cached {
                    Some(key) => Some(key),
                    None => {
                        let (status, body) = self
                            .identity_call(
                                base,
                                reqwest::Method::GET,
                                &format!("/_matrix/identity/api/v1/pubkey/{key_id}"),
                                None,
                                None,
                                timeout,
                            )
                            .await?;
                        (status == 200)
                            .then(|| body.get("public_key").and_then(Value::as_str))
                            .flatten()
                            .and_then(crate::crypto::b64_decode)
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                    }
                };
                let Some(key) = key else { continue };
                if crate::crypto::sign::verify_json(signed, entity, key_id, &key).is_ok() {
                    if let Ok(mut cache) = self.identity_keys.lock() {
                        if cache.len() >= 1000 {
                            cache.clear();
                        }
                        cache.insert(cache_key, (key, std::time::Instant::now()));
                    }
                    return Ok(());
                }
            }
        }
        Err(RemoteError::Malformed(
            "no signature checks out with the server's keys",
        ))
    }

    /// v1 `POST /bulk_lookup`: `(medium, address, mxid)` for the pairs asked about.
    pub async fn identity_bulk_v1(
        &self,
        base: &str,
        pairs: &[(String, String)],
        timeout: Duration,
    ) -> Result<Vec<(String, String, String)>, RemoteError> {
        let request = json!({"threepids": pairs.iter().map(|(m, a)| [m, a]).collect::<Vec<_>>()});
        let (status, body) = self
            .identity_call(
                base,
                reqwest::Method::POST,
                "/_matrix/identity/api/v1/bulk_lookup",
                Some(&request),
                None,
                timeout,
            )
            .await?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        let list =
            body.get("threepids")
                .and_then(Value::as_array)
                .ok_or(RemoteError::Malformed(
                    "bulk_lookup answer has no threepids",
                ))?;
        let asked: std::collections::HashSet<(&str, &str)> = pairs
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_str()))
            .collect();
        Ok(list
            .iter()
            .filter_map(|item| match item.as_array().map(Vec::as_slice) {
                Some([Value::String(m), Value::String(a), Value::String(mxid)])
                    if asked.contains(&(m.as_str(), a.as_str()))
                        && crate::model::Mxid::parse(mxid).is_some() =>
                {
                    Some((m.clone(), a.clone(), mxid.clone()))
                }
                _ => None,
            })
            .collect())
    }
}
