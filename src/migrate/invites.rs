//! ma1sd's `invite_3pid` rows → our pending invites: field checks, expiry, and the
//! ephemeral public key (stated in the row, read from ma1sd's key files, or made up for
//! invites older than those keys). Per-row trouble skips the row with a counted reason;
//! only a failing random source stops the import. Nothing here writes.

use super::{db, keystore};
use crate::crypto::{b64_decode, b64_encode};
use crate::model::{Medium, Mxid, ThreePid};
use crate::store::invites::InviteRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// Invites ready to store, and why the others were left out.
#[derive(Debug, Default)]
pub struct Invites {
    pub records: Vec<InviteRecord>,
    pub skipped: BTreeMap<String, usize>,
    /// Invites without `created_at` (counted from now, as ma1sd counts from its start).
    pub undated: usize,
    /// Invites made before ma1sd kept ephemeral keys: given a fresh public key nobody
    /// holds (they are still delivered on bind; only `sign-ed25519` cannot serve them).
    pub keyless: usize,
}

/// Properties of ma1sd's that are bookkeeping, not request fields.
fn is_bookkeeping(key: &str) -> bool {
    key == "created_at"
        || key.starts_with("p_key_")
        || key.starts_with("e_key_")
        || matches!(key, "medium" | "address" | "room_id" | "sender")
}

/// The 32 bytes of a base64 key in our spelling (standard alphabet, unpadded).
fn normalise_key(text: &str) -> Option<String> {
    b64_decode(text.trim())
        .filter(|b| b.len() == 32)
        .map(|b| b64_encode(&b))
}

/// ma1sd's `invite_3pid` rows → our invites. Per-row trouble skips the row (counted by
/// reason); nothing here stops the import.
pub fn convert_invites(
    rows: Vec<db::RawInvite>,
    ephemeral_dir: Option<&Path>,
    expire_after: Option<Duration>,
    now: u64,
) -> Result<Invites, String> {
    let mut out = Invites::default();
    let mut seen = BTreeSet::new();
    let skip = |out: &mut Invites, why: &str| {
        *out.skipped.entry(why.to_owned()).or_default() += 1;
    };
    for row in rows {
        let Some(token) = row.token.filter(|t| !t.is_empty()) else {
            skip(&mut out, "no token");
            continue;
        };
        let Some(medium) = row
            .medium
            .as_deref()
            .and_then(|m| Medium::parse(&m.to_ascii_lowercase()))
        else {
            skip(&mut out, "medium is not email or msisdn");
            continue;
        };
        let Some(threepid) = row
            .address
            .as_deref()
            .and_then(|a| ThreePid::new(medium, a).ok())
        else {
            skip(&mut out, "not a valid address");
            continue;
        };
        let Some(sender) = row.sender.filter(|s| Mxid::parse(s).is_some()) else {
            skip(&mut out, "sender is not a Matrix user ID");
            continue;
        };
        let Some(room_id) = row.room_id.filter(|r| !r.is_empty() && r.len() <= 255) else {
            skip(&mut out, "no room ID");
            continue;
        };
        let props: serde_json::Map<String, serde_json::Value> =
            match row.properties.as_deref().map(str::trim) {
                None | Some("") => serde_json::Map::new(),
                Some(text) => match serde_json::from_str(text) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => {
                        skip(&mut out, "properties are not a JSON object");
                        continue;
                    }
                },
            };
        let prop = |k: &str| match props.get(k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let created_ms = match prop("created_at").and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(ms) => ms,
            None => {
                out.undated += 1;
                now
            }
        };
        let expired = expire_after.is_some_and(|after| {
            created_ms.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)) <= now
        });
        if expired {
            skip(&mut out, "expired (older than invite.expiration.after)");
            continue;
        }
        let stated = prop("e_key_public").and_then(|k| normalise_key(&k));
        let from_file = match (ephemeral_dir, prop("e_key_serial")) {
            (Some(dir), Some(serial)) => match keystore::ephemeral_public(dir, &serial) {
                Ok(k) => k,
                Err(_) => {
                    skip(&mut out, "its ephemeral key file is unreadable");
                    continue;
                }
            },
            _ => None,
        };
        let ephemeral_public_key = match (stated, from_file) {
            (Some(a), Some(b)) if a != b => {
                skip(
                    &mut out,
                    "its ephemeral key file does not match e_key_public",
                );
                continue;
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => {
                let seed = crate::crypto::random_bytes::<32>()
                    .map_err(|e| format!("cannot get random bytes: {e}"))?;
                out.keyless += 1;
                b64_encode(
                    ed25519_dalek::SigningKey::from_bytes(&seed)
                        .verifying_key()
                        .as_bytes(),
                )
            }
        };
        if !seen.insert(token.clone()) {
            skip(&mut out, "duplicate token");
            continue;
        }
        // The request's other fields, kept as store-invite keeps them.
        let mut details = BTreeMap::new();
        for (k, v) in &props {
            if let (false, serde_json::Value::String(v)) = (is_bookkeeping(k), v) {
                if details.len() < 32 && k.len() <= 64 && v.len() <= 2048 {
                    details.insert(k.clone(), v.clone());
                }
            }
        }
        out.records.push(InviteRecord {
            token,
            threepid,
            room_id,
            sender,
            ephemeral_public_key,
            created_ms,
            details,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn raw(token: &str, address: &str, props: &str) -> db::RawInvite {
        db::RawInvite {
            token: Some(token.into()),
            sender: Some("@alice:example.org".into()),
            medium: Some("email".into()),
            address: Some(address.into()),
            room_id: Some("!room:example.org".into()),
            properties: Some(props.into()),
        }
    }

    #[test]
    fn invites_keep_their_key_and_fields_and_expired_ones_go() {
        let now = 10_000_000_000;
        let seed = [4u8; 32];
        let public = b64_encode(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .as_bytes(),
        );
        let props = |created: u64| {
            format!(
                r#"{{"created_at":"{created}","e_key_algo":"ed25519","e_key_serial":"S1","e_key_public":"{public}","p_key_serial":"0","room_name":"Room","sender_display_name":"Alice"}}"#
            )
        };
        let week = Duration::from_secs(7 * 86_400);
        let rows = vec![
            raw("t1", "Bob@Example.org", &props(now - 1000)),
            raw("t2", "old@example.org", &props(now - 8 * 86_400_000)),
            raw("t3", "not an address", &props(now)),
            raw("t1", "dup@example.org", &props(now)),
            raw("t4", "nokey@example.org", "{}"),
            raw("t5", "bad@example.org", "[1]"),
        ];
        let inv = convert_invites(rows, None, Some(week), now).unwrap();
        assert_eq!(inv.records.len(), 2);
        let r = &inv.records[0];
        assert_eq!(r.token, "t1");
        assert_eq!(r.threepid.address(), "bob@example.org");
        assert_eq!(r.ephemeral_public_key, public);
        assert_eq!(r.created_ms, now - 1000);
        assert_eq!(r.details.get("room_name").map(String::as_str), Some("Room"));
        assert!(!r
            .details
            .keys()
            .any(|k| k.contains("key") || k == "created_at"));
        assert_eq!(inv.records[1].created_ms, now);
        assert_eq!((inv.undated, inv.keyless), (1, 1));
        let skipped: usize = inv.skipped.values().sum();
        assert_eq!(skipped, 4, "{:?}", inv.skipped);
        assert!(inv.skipped.keys().any(|k| k.starts_with("expired")));
        // Without expiry the old one stays.
        let inv = convert_invites(
            vec![raw("t2", "old@example.org", &props(1))],
            None,
            None,
            now,
        )
        .unwrap();
        assert_eq!(inv.records.len(), 1);
    }

    #[test]
    fn the_ephemeral_key_file_must_match() {
        let tmp = tempfile::tempdir().unwrap();
        let other = b64_encode(&[9u8; 32]);
        let key = b64_encode(&[5u8; 32]);
        fs::write(
            tmp.path().join("S1"),
            format!(r#"{{"version":"0","isValid":true,"key":"{key}"}}"#),
        )
        .unwrap();
        let p = format!(r#"{{"e_key_serial":"S1","e_key_public":"{other}"}}"#);
        let inv =
            convert_invites(vec![raw("t", "a@b.org", &p)], Some(tmp.path()), None, 1).unwrap();
        assert!(inv.records.is_empty());
        assert!(inv.skipped.keys().any(|k| k.contains("does not match")));
        // With the file alone, its public key is used.
        let inv = convert_invites(
            vec![raw("t", "a@b.org", r#"{"e_key_serial":"S1"}"#)],
            Some(tmp.path()),
            None,
            1,
        )
        .unwrap();
        let expected = b64_encode(
            ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        assert_eq!(inv.records[0].ephemeral_public_key, expected);
    }
}
