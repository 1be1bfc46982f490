//! Normalising what a sync source gave: usernames become lowercase Matrix IDs, 3PIDs
//! are parsed and normalised, a user listed twice becomes one directory entry, and a
//! 3PID two users claim goes to the first Matrix ID in order. Problems are counted and
//! the first few kept for the status. Pure functions: no store, no index.

use crate::model::{DirectoryUser, Medium, Mxid, ThreePid, MAX_PROBLEMS};
use crate::source::Fetched;
use std::collections::BTreeMap;

/// The Matrix ID of a source's `username`.
fn mxid_of(username: &str, domain: &str) -> Option<String> {
    let username = username.trim();
    // Matrix IDs of synced users are lowercase (as Synapse makes them), whichever
    // case the directory uses.
    let candidate = if username.starts_with('@') {
        username.to_lowercase()
    } else {
        format!("@{}:{domain}", username.to_lowercase())
    };
    Mxid::parse(&candidate).map(|m| m.as_str().to_owned())
}

/// What a source gave, normalised: 3PID → Matrix ID, the directory entries, and the
/// problems found (the first few, and how many entries were skipped).
pub(super) struct Resolved {
    pub(super) wanted: BTreeMap<ThreePid, String>,
    pub(super) users: BTreeMap<String, DirectoryUser>,
    pub(super) problems: Vec<String>,
    pub(super) skipped: u64,
}

/// Normalises what a source gave.
pub(super) fn resolve(fetched: Fetched, domain: &str, pacer: &crate::pace::Pacer) -> Resolved {
    let Fetched {
        users,
        mut problems,
        mut skipped,
    } = fetched;
    problems.truncate(MAX_PROBLEMS);
    let mut wanted: BTreeMap<ThreePid, String> = BTreeMap::new();
    let mut directory: BTreeMap<String, DirectoryUser> = BTreeMap::new();
    let mut note = |problems: &mut Vec<String>, p: String| {
        skipped += 1;
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    };
    // Taken by value: each user's strings are freed as it is resolved.
    for (i, user) in users.into_iter().enumerate() {
        if (i + 1) % crate::source::PACE_STEP == 0 {
            pacer.pause_blocking();
        }
        let Some(mxid) = mxid_of(&user.username, domain) else {
            note(
                &mut problems,
                format!(
                    "user {:?}: not a valid localpart or Matrix ID",
                    user.username
                ),
            );
            continue;
        };
        let entry = directory.entry(mxid.clone()).or_default();
        // A user listed twice (two base DNs, two rows) is one entry.
        if entry.display_name.is_none() {
            entry.display_name = user
                .display_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned);
        }
        for (k, v) in user.attributes {
            entry.attributes.values_of(k).extend(v);
        }
        entry.roles.extend(user.roles);
        for tp in &user.threepids {
            let parsed = Medium::parse(&tp.medium.to_lowercase())
                .ok_or_else(|| format!("unknown medium {:?}", tp.medium))
                .and_then(|m| ThreePid::new(m, &tp.address).map_err(|e| e.to_string()));
            let threepid = match parsed {
                Ok(t) => t,
                Err(why) => {
                    note(&mut problems, format!("user {mxid}: {why}"));
                    continue;
                }
            };
            if let Some(entry) = directory.get_mut(&mxid) {
                if !entry.threepids.contains(&threepid) {
                    entry.threepids.push(threepid.clone());
                }
            }
            match wanted.get(&threepid) {
                // Two users claim one 3PID: the first Matrix ID in order keeps it,
                // whatever order the source listed them in.
                Some(other) if *other != mxid => {
                    let (keep, drop) = if *other < mxid {
                        (other.clone(), mxid.clone())
                    } else {
                        (mxid.clone(), other.clone())
                    };
                    note(
                        &mut problems,
                        format!(
                            "{} {} is claimed by {keep} and {drop}: {keep} keeps it",
                            threepid.medium(),
                            crate::logging::redact_address(threepid.address())
                        ),
                    );
                    wanted.insert(threepid, keep);
                }
                _ => {
                    wanted.insert(threepid, mxid.clone());
                }
            }
        }
    }
    for entry in directory.values_mut() {
        // Held until the run is applied: no room for 3PIDs that will not come.
        entry.threepids.shrink_to_fit();
        entry.roles.sort();
        entry.roles.dedup();
        for values in entry.attributes.values_mut() {
            values.dedup();
        }
    }
    Resolved {
        wanted,
        users: directory,
        problems,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stores::{ThreePidSpec, UserSpec};

    fn user(name: &str, addrs: &[(&str, &str)]) -> UserSpec {
        UserSpec {
            username: name.into(),
            display_name: None,
            threepids: addrs
                .iter()
                .map(|(m, a)| ThreePidSpec {
                    medium: (*m).into(),
                    address: (*a).into(),
                })
                .collect(),
            roles: vec![],
            attributes: Default::default(),
            password: None,
        }
    }

    #[test]
    fn a_fetch_digest_changes_with_anything_resolving_depends_on() {
        let a = user("a", &[("email", "a@x.org")]);
        let b = user("b", &[("email", "b@x.org")]);
        let pacer = crate::pace::Pacer::default();
        let base = Fetched::from(vec![a.clone(), b.clone()]).digest("x.org", &pacer);
        assert_eq!(
            base,
            Fetched::from(vec![a.clone(), b.clone()]).digest("x.org", &pacer)
        );
        assert_ne!(
            base,
            Fetched::from(vec![b.clone(), a.clone()]).digest("x.org", &pacer)
        );
        assert_ne!(
            base,
            Fetched::from(vec![a.clone(), b.clone()]).digest("y.org", &pacer)
        );
        let mut renamed = b.clone();
        renamed.display_name = Some("B".into());
        assert_ne!(
            base,
            Fetched::from(vec![a.clone(), renamed]).digest("x.org", &pacer)
        );
        let mut skipped = Fetched::from(vec![a, b]);
        skipped.skipped = 1;
        assert_ne!(base, skipped.digest("x.org", &pacer));
    }

    #[test]
    fn users_resolve_to_normalised_bindings_with_problems_reported() {
        let mut users = vec![
            user(
                "Zed",
                &[
                    ("email", "Shared@Example.org"),
                    ("msisdn", "+1 202 555 0100"),
                ],
            ),
            user("@amy:other.org", &[("email", "shared@example.org")]),
            user("bad name!", &[("email", "x@example.org")]),
            user("bob", &[("fax", "1"), ("email", "not-an-address")]),
        ];
        let mut twice = user("bob", &[("email", "bob@example.org")]);
        twice.display_name = Some(" Bob ".into());
        twice.roles = vec!["staff".into()];
        users.push(twice);
        let Resolved {
            wanted,
            users,
            problems,
            skipped,
        } = resolve(users.into(), "example.org", &crate::pace::Pacer::default());
        // Bob listed twice is one directory entry with everything he was listed with.
        let bob = &users["@bob:example.org"];
        assert_eq!(bob.display_name.as_deref(), Some("Bob"));
        assert_eq!(bob.roles, vec!["staff".to_owned()]);
        assert_eq!(bob.threepids.len(), 1);
        assert_eq!(users["@zed:example.org"].threepids.len(), 2);
        assert!(!users.contains_key("@bad name!:example.org"));
        let shared = ThreePid::new(Medium::Email, "shared@example.org").unwrap();
        assert_eq!(wanted[&shared], "@amy:other.org");
        let phone = ThreePid::new(Medium::Msisdn, "12025550100").unwrap();
        assert_eq!(wanted[&phone], "@zed:example.org");
        assert_eq!(wanted.len(), 3);
        assert_eq!(skipped, 4);
        assert!(problems
            .iter()
            .any(|p| p.contains("claimed by @amy:other.org and @zed:example.org")));
        assert!(problems.iter().all(|p| !p.contains("shared@example.org")));
    }
}
