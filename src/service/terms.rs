//! Terms of service (MSC2140): the configured policies, what a user accepted, and
//! whether that covers every current policy. A policy counts as accepted when any of
//! its languages' URLs was accepted; URLs carry the version, so a new version means new
//! URLs and a new acceptance.

use crate::error::Error;
use crate::service::Services;
use serde_json::{json, Map, Value};

/// `GET /terms` body.
pub fn policies(state: &Services) -> Value {
    let mut out = Map::new();
    for (name, policy) in &state.config.terms.policies {
        let mut entry = Map::new();
        entry.insert("version".into(), Value::from(policy.version.clone()));
        for (lang, (title, url)) in &policy.terms {
            entry.insert(lang.clone(), json!({"name": title, "url": url}));
        }
        out.insert(name.clone(), Value::Object(entry));
    }
    json!({ "policies": out })
}

/// True when the user accepted every current policy (always, with none configured).
pub fn satisfied(state: &Services, user_id: &str) -> Result<bool, Error> {
    let policies = &state.config.terms.policies;
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
            .config
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
