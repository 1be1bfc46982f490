//! What each identity source fetches: its users with their 3PIDs, as a [`Fetched`].
//! `memory` (inline in the config) and `file` (a YAML or JSON list re-read at every
//! run) are here; `rest`, `ldap` and `sql` have a file each. A source only reads:
//! diffing, applying and recording a run is the sync driver's (`service::sync`).

mod file;
pub mod ldap;
pub mod rest;
pub mod sql;

use crate::config::stores::{SourceKind, UserSpec};
use crate::pace::Pacer;

/// Users handled between two pauses of a paced fetch or digest.
pub const PACE_STEP: usize = 1_000;

/// An error with its causes, `outer: inner: ...` (the reason: refused, TLS, DNS...).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        why.push_str(": ");
        why.push_str(&c.to_string());
        cause = c.source();
    }
    why
}

/// What a fetch gave: the users, and entries it already had to skip (with reasons).
#[derive(Debug, Default)]
pub struct Fetched {
    pub users: Vec<UserSpec>,
    pub problems: Vec<String>,
    pub skipped: u64,
}

impl Fetched {
    /// SHA-256 of everything resolving depends on: the users in the order given, what
    /// was skipped, and the domain localparts are completed with.
    /// Paced by `pacer` (the hashing of 100k users is a few hundred milliseconds of CPU).
    pub(crate) fn digest(&self, domain: &str, pacer: &Pacer) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        struct Hashing(Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(Sha256::new());
        h.0.update(domain.as_bytes());
        h.0.update([0]);
        let config = bincode::config::standard();
        // Writing into a hash cannot fail; a failure would only make the digest
        // differ, which means a full diff.
        // The list's bytes as bincode writes a whole Vec (its length, then each user),
        // a piece at a time.
        let _ = bincode::serde::encode_into_std_write(self.users.len() as u64, &mut h, config);
        for piece in self.users.chunks(PACE_STEP) {
            for user in piece {
                let _ = bincode::serde::encode_into_std_write(user, &mut h, config);
            }
            pacer.pause_blocking();
        }
        let _ = bincode::serde::encode_into_std_write(&self.problems, &mut h, config);
        h.0.update(self.skipped.to_le_bytes());
        h.0.finalize().into()
    }
}

impl From<Vec<UserSpec>> for Fetched {
    fn from(users: Vec<UserSpec>) -> Self {
        Self {
            users,
            ..Self::default()
        }
    }
}

/// Runs one fetch of a source, its CPU-bound parts paced by `pacer`.
pub async fn fetch(kind: &SourceKind, pacer: &Pacer) -> Result<Fetched, String> {
    match kind {
        SourceKind::Memory(users) => Ok(users.clone().into()),
        SourceKind::File(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            file::parse(&text, pacer).map_err(|why| format!("{} {why}", path.display()))
        }
        SourceKind::Rest(rest) => rest::fetch(rest).await.map(Fetched::from),
        SourceKind::Ldap(source) => ldap::fetch(source, pacer).await,
        SourceKind::Sql(source) => sql::fetch(source).await,
    }
}

/// The user a `memory` or `file` source lists as `mxid` (a username is a localpart of
/// `domain` or a full ID), as the source says now (a file is read again), for a password
/// check. `Ok(None)` when it lists no such user.
pub async fn listed_user(
    kind: &SourceKind,
    mxid: &str,
    domain: &str,
) -> Result<Option<UserSpec>, String> {
    let users = match kind {
        SourceKind::Memory(_) | SourceKind::File(_) => fetch(kind, &Pacer::default()).await?.users,
        _ => return Ok(None),
    };
    let is_wanted = |u: &UserSpec| {
        let name = u.username.trim();
        if name.starts_with('@') {
            name.eq_ignore_ascii_case(mxid)
        } else {
            format!("@{name}:{domain}").eq_ignore_ascii_case(mxid)
        }
    };
    Ok(users.into_iter().find(is_wanted))
}

/// Whether `password` matches `hash`, an argon2 PHC string (`$argon2id$v=19$...`).
/// A value that is no such string is an error (a plain-text password in a source is
/// never compared).
pub fn verify_argon2(hash: &str, password: &str) -> Result<bool, String> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash)
        .map_err(|_| "a user's password is not an argon2 hash ($argon2id$...): plain-text passwords are never compared".to_owned())?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "a user's password is a {} hash; only argon2 is accepted here",
            parsed.algorithm
        ));
    }
    Ok(argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest hashes the list a piece at a time, as the bytes bincode writes for
    /// the whole list: a digest stored by an earlier version still matches.
    #[test]
    fn the_paced_digest_hashes_the_whole_list_bytes() {
        use sha2::{Digest, Sha256};
        let users: Vec<UserSpec> = (0..PACE_STEP * 2 + 7)
            .map(|i| UserSpec {
                username: format!("u{i}"),
                display_name: Some(format!("User {i}")),
                threepids: Vec::new(),
                roles: vec!["staff".into()],
                attributes: Default::default(),
                password: None,
            })
            .collect();
        let fetched = Fetched {
            users,
            problems: vec!["p".into()],
            skipped: 3,
        };
        let config = bincode::config::standard();
        let mut whole = Sha256::new();
        whole.update(b"example.org\0");
        whole.update(bincode::serde::encode_to_vec(&fetched.users, config).unwrap());
        whole.update(bincode::serde::encode_to_vec(&fetched.problems, config).unwrap());
        whole.update(3u64.to_le_bytes());
        let expected: [u8; 32] = whole.finalize().into();
        assert_eq!(fetched.digest("example.org", &Pacer::default()), expected);
        assert_ne!(fetched.digest("example.com", &Pacer::default()), expected);
    }
}
