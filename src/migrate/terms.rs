//! ma1sd's `accepted` rows → the terms each user has accepted, spelled as our config
//! spells the URLs, with a count of users whom mxisd will ask for the rest. Nothing here
//! writes.

use crate::config::TermsConfig;
use crate::model::Mxid;
use std::collections::{BTreeMap, BTreeSet};

/// Accepted terms ready to store.
#[derive(Debug, Default)]
pub struct Terms {
    /// User ID → accepted URLs (configured spelling when they match one ignoring case,
    /// as ma1sd compared them).
    pub accepted: BTreeMap<String, BTreeSet<String>>,
    pub rows: usize,
    pub skipped: usize,
    /// Users who accepted some URL but not one of every current policy: ma1sd let them
    /// through, mxisd asks them for the rest.
    pub incomplete: usize,
}

pub fn convert_terms(rows: Vec<(Option<String>, Option<String>)>, terms: &TermsConfig) -> Terms {
    let configured: Vec<&String> = terms
        .policies
        .values()
        .flat_map(|p| p.terms.values().map(|(_, url)| url))
        .collect();
    let mut out = Terms::default();
    for (user, url) in rows {
        out.rows += 1;
        let (Some(user), Some(url)) = (
            user.filter(|u| Mxid::parse(u).is_some()),
            url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()),
        ) else {
            out.skipped += 1;
            continue;
        };
        let url = configured
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&url))
            .map_or(url, |c| (*c).clone());
        out.accepted.entry(user).or_default().insert(url);
    }
    out.incomplete = out
        .accepted
        .values()
        .filter(|urls| {
            !terms
                .policies
                .values()
                .all(|p| p.terms.values().any(|(_, u)| urls.contains(u)))
        })
        .count();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    #[test]
    fn terms_take_the_configured_spelling_and_count_incomplete_users() {
        let mut policies = BTreeMap::new();
        for (name, url) in [
            ("tos", "https://x/ToS-1.html"),
            ("privacy", "https://x/p-1.html"),
        ] {
            policies.insert(
                name.to_owned(),
                Policy {
                    version: "1".into(),
                    terms: BTreeMap::from([("en".to_owned(), ("T".to_owned(), url.to_owned()))]),
                },
            );
        }
        let terms = TermsConfig { policies };
        let rows = vec![
            (Some("@a:x.org".into()), Some("https://x/tos-1.html".into())),
            (Some("@a:x.org".into()), Some("https://x/p-1.html".into())),
            (Some("@b:x.org".into()), Some("https://x/p-1.html".into())),
            (Some("nobody".into()), Some("https://x/p-1.html".into())),
            (Some("@c:x.org".into()), None),
        ];
        let t = convert_terms(rows, &terms);
        assert_eq!(t.rows, 5);
        assert_eq!(t.skipped, 2);
        assert_eq!(t.accepted.len(), 2);
        assert!(t.accepted["@a:x.org"].contains("https://x/ToS-1.html"));
        assert_eq!(t.incomplete, 1);
    }
}
