//! Terms of service (MSC2140): the configured policies, what a user accepted, and
//! whether that covers every current policy. A policy counts as accepted when any of
//! its languages' URLs was accepted; URLs carry the version, so a new version means new
//! URLs and a new acceptance.

use crate::error::Error;
use crate::service::Services;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// The `GET /terms` answer: policy name → [`Policy`].
#[derive(Debug, Serialize)]
pub struct Policies<'a> {
    pub policies: BTreeMap<&'a str, Policy<'a>>,
}

/// One policy: its `version` and, beside it in the same object, one [`Document`] per
/// language code (MSC2140's shape).
#[derive(Debug)]
pub struct Policy<'a> {
    pub version: &'a str,
    pub documents: BTreeMap<&'a str, Document<'a>>,
}

/// A policy's text in one language.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    pub name: &'a str,
    pub url: &'a str,
}

/// A member of a policy object: the version, or a language's document.
#[derive(Serialize)]
#[serde(untagged)]
enum Member<'a> {
    Version(&'a str),
    Document(&'a Document<'a>),
}

impl Serialize for Policy<'_> {
    /// One object with every key in sorted order, `version` among the language codes,
    /// as the JSON object this replaced had them on the wire (a language named
    /// `version` would win over the version there too).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut members = BTreeMap::new();
        members.insert("version", Member::Version(self.version));
        for (lang, document) in &self.documents {
            members.insert(lang, Member::Document(document));
        }
        members.serialize(serializer)
    }
}

/// `GET /terms` body, borrowed from the config in force (`state.config()`).
pub fn policies(config: &crate::config::Config) -> Policies<'_> {
    let policies = config
        .terms
        .policies
        .iter()
        .map(|(name, policy)| {
            let documents = policy
                .terms
                .iter()
                .map(|(lang, (name, url))| (lang.as_str(), Document { name, url }))
                .collect();
            let policy = Policy {
                version: &policy.version,
                documents,
            };
            (name.as_str(), policy)
        })
        .collect();
    Policies { policies }
}

/// True when the user accepted every current policy (always, with none configured).
pub fn satisfied(state: &Services, user_id: &str) -> Result<bool, Error> {
    let policies = &state.config().terms.policies;
    if policies.is_empty() {
        return Ok(true);
    }
    let Some(user) = state.store.user(user_id)? else {
        return Ok(false);
    };
    Ok(policies.values().all(|p| {
        p.terms
            .values()
            .any(|(_, url)| user.accepted_terms.contains(url))
    }))
}

/// `POST /terms`: records accepted URLs; URLs not in the configuration are refused.
pub async fn accept(state: &Services, user_id: &str, urls: Vec<String>) -> Result<(), Error> {
    let known = |u: &String| {
        state
            .config()
            .terms
            .policies
            .values()
            .any(|p| p.terms.values().any(|(_, url)| url == u))
    };
    let unknown: Vec<&String> = urls.iter().filter(|u| !known(u)).collect();
    if !unknown.is_empty() {
        let shown: Vec<String> = unknown
            .iter()
            .take(5)
            .map(|u| u.chars().take(200).collect())
            .collect();
        return Err(Error::invalid_param(format!(
            "Unrecognised terms URLs: {}",
            shown.join(", ")
        )));
    }
    if urls.is_empty() {
        return Ok(());
    }
    state.store.accept_terms(user_id, &urls).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `version` sorts among the language codes, as it did in the `json!` object.
    #[test]
    fn policies_keep_their_wire_bytes() {
        let documents = [
            (
                "en",
                Document {
                    name: "T",
                    url: "https://t/en",
                },
            ),
            (
                "zh",
                Document {
                    name: "Z",
                    url: "https://t/zh",
                },
            ),
        ]
        .into_iter()
        .collect();
        let policies = Policies {
            policies: [(
                "privacy",
                Policy {
                    version: "1.0",
                    documents,
                },
            )]
            .into_iter()
            .collect(),
        };
        let old = json!({"policies": {"privacy": {"version": "1.0",
            "en": {"name": "T", "url": "https://t/en"},
            "zh": {"name": "Z", "url": "https://t/zh"}}}});
        assert_eq!(serde_json::to_string(&policies).unwrap(), old.to_string());
    }
}
