//! Identifier newtypes, normalised at the edge: a value of these types is always in
//! canonical form, so the store, the hash index and comparisons never see two spellings
//! of one 3PID. E-mail: Unicode case-folded as a whole, as Sydent does (MSC2265), after
//! trimming; msisdn: E.164 digits without `+`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of third-party identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Medium {
    Email,
    Msisdn,
}

impl Medium {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "email" => Some(Self::Email),
            "msisdn" => Some(Self::Msisdn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Msisdn => "msisdn",
        }
    }
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("not a valid e-mail address")]
    Email,
    #[error("not a valid phone number (E.164: up to 15 digits)")]
    Msisdn,
}

/// A normalised (medium, address) pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ThreePid {
    medium: Medium,
    address: String,
}

/// Longest address accepted (Sydent: 500; RFC 5321 paths are shorter still).
const MAX_ADDRESS: usize = 500;

impl ThreePid {
    /// Normalises `address` for `medium`, or says why it cannot be one.
    pub fn new(medium: Medium, address: &str) -> Result<Self, AddressError> {
        let address = match medium {
            Medium::Email => normalise_email(address)?,
            Medium::Msisdn => normalise_msisdn(address)?,
        };
        Ok(Self { medium, address })
    }

    pub fn medium(&self) -> Medium {
        self.medium
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The domain of an e-mail address (none for a phone number).
    pub fn email_domain(&self) -> Option<&str> {
        match self.medium {
            Medium::Email => self.address.rsplit_once('@').map(|(_, d)| d),
            Medium::Msisdn => None,
        }
    }
}

fn normalise_email(address: &str) -> Result<String, AddressError> {
    let trimmed = address.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_ADDRESS {
        return Err(AddressError::Email);
    }
    let (local, domain) = trimmed.rsplit_once('@').ok_or(AddressError::Email)?;
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '@';
    if local.is_empty() || domain.is_empty() || local.chars().any(bad) || domain.chars().any(bad) {
        return Err(AddressError::Email);
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(AddressError::Email);
    }
    // Full Unicode case folding of the whole address (Python's str.casefold()): what
    // Sydent stores and what clients hash.
    Ok(caseless::default_case_fold_str(trimmed))
}

fn normalise_msisdn(address: &str) -> Result<String, AddressError> {
    let trimmed = address.trim();
    let digits_part = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(digits_part.len());
    for c in digits_part.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(AddressError::Msisdn),
        }
    }
    if digits.is_empty() || digits.len() > 15 || digits.starts_with('0') {
        return Err(AddressError::Msisdn);
    }
    Ok(digits)
}

/// A Matrix user ID, `@localpart:server`, checked against the spec's grammar (with the
/// historical localpart characters still in use on old servers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mxid(String);

impl Mxid {
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > 255 {
            return None;
        }
        let rest = text.strip_prefix('@')?;
        let (local, server) = rest.split_once(':')?;
        // Historical user IDs allow any printable ASCII but ':' in the localpart.
        let local_ok = !local.is_empty()
            && local
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b':');
        (local_ok && is_server_name(server)).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn localpart(&self) -> &str {
        self.0[1..].split_once(':').map_or("", |(l, _)| l)
    }

    /// The server part, `host[:port]`.
    pub fn server(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, s)| s)
    }
}

impl fmt::Display for Mxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user as a source lists them: a directory entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub display_name: Option<String>,
    /// Normalised 3PIDs, including any another user won in a conflict.
    pub threepids: Vec<ThreePid>,
    /// Extra attributes the source was asked for (department, title...).
    pub attributes: Attributes,
    /// Group or role membership, where the source has it.
    pub roles: Vec<String>,
}

/// A user's extra directory attributes (department, title...): each name once with its
/// values, sorted by name. A sorted list rather than a `BTreeMap`: a user has a few at
/// most, and a map's first node takes about 550 bytes whatever it holds (55 MB for 100k
/// users with one title each, held twice while a sync resolves what it fetched). Written
/// and read as a map, so stored records and config files are the same as a map's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(Vec<(String, Vec<String>)>);

impl Attributes {
    /// The values of `name`, added with none when it is missing.
    pub fn values_of(&mut self, name: String) -> &mut Vec<String> {
        let at = match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(at) => at,
            Err(at) => {
                // Room for this one only: most users never get another.
                self.0.reserve_exact(1);
                self.0.insert(at, (name, Vec::new()));
                at
            }
        };
        &mut self.0[at].1
    }

    /// Sets the values of `name`, replacing any it had (as a map's insert does).
    pub fn insert(&mut self, name: String, values: Vec<String>) {
        *self.values_of(name) = values;
    }

    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|at| self.0[at].1.as_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn values(&self) -> impl Iterator<Item = &[String]> {
        self.0.iter().map(|(_, v)| v.as_slice())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Vec<String>> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Vec<String>)> for Attributes {
    /// A name given twice keeps its last values, as collecting into a map does.
    fn from_iter<I: IntoIterator<Item = (String, Vec<String>)>>(items: I) -> Self {
        let mut out = Self::default();
        for (name, values) in items {
            out.insert(name, values);
        }
        out
    }
}

impl IntoIterator for Attributes {
    type Item = (String, Vec<String>);
    type IntoIter = std::vec::IntoIter<(String, Vec<String>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = Attributes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to lists of values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Attributes, A::Error> {
                let mut out = Attributes::default();
                while let Some((name, values)) = map.next_entry::<String, Vec<String>>()? {
                    out.insert(name, values);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Names)
    }
}

/// Server-name grammar of the spec appendix: hostname, IPv4 or `[IPv6]`, optional port.
pub fn is_server_name(name: &str) -> bool {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let (ip, after) = rest.split_at(end);
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        (None, after.strip_prefix(']').unwrap_or_default())
    } else {
        match name.rfind(':') {
            Some(i) => (Some(&name[..i]), &name[i..]),
            None => (Some(name), ""),
        }
    };
    if !port.is_empty() {
        let Some(digits) = port.strip_prefix(':') else {
            return false;
        };
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.parse::<u16>().is_err()
        {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
    }
}

/// Most problems (skipped users, conflicts) a sync run records in its status.
pub const MAX_PROBLEMS: usize = 20;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A UTC time for file names, readable and sortable: `2026-12-04T140311Z` (no colons,
/// which some file systems and tools refuse).
pub fn utc_stamp(ms: u64) -> String {
    let seconds = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(seconds) {
        Ok(t) => t.strftime("%Y-%m-%dT%H%M%SZ").to_string(),
        Err(_) => seconds.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attributes read and write as the map they replaced: a stored directory entry
    /// and a source's file are the same bytes either way.
    #[test]
    fn attributes_are_written_as_a_map() {
        use std::collections::BTreeMap;
        let map = BTreeMap::from([
            ("title".to_owned(), vec!["Engineer".to_owned()]),
            ("dept".to_owned(), vec!["R&D".to_owned(), "Ops".to_owned()]),
        ]);
        let attrs: Attributes = map.clone().into_iter().rev().collect();
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&attrs, config).unwrap();
        assert_eq!(bytes, bincode::serde::encode_to_vec(&map, config).unwrap());
        let (back, _): (Attributes, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, attrs);
        assert_eq!(
            serde_json::to_string(&attrs).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let read: Attributes =
            serde_json::from_str(r#"{"title":["A"],"dept":["B"],"title":["C"]}"#).unwrap();
        assert_eq!(read.get("title"), Some(&["C".to_owned()][..]));
        assert!(serde_json::from_str::<Attributes>(r#"["title"]"#).is_err());
        assert!(serde_json::from_str::<Attributes>(r#"{"title":"A"}"#).is_err());
    }

    #[test]
    fn attributes_stay_sorted_with_each_name_once() {
        let mut attrs = Attributes::default();
        attrs.values_of("title".into()).push("B".into());
        attrs.values_of("dept".into()).push("D".into());
        attrs.values_of("title".into()).push("A".into());
        attrs.insert("zone".into(), vec!["Z".into()]);
        let names: Vec<&str> = attrs.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["dept", "title", "zone"]);
        assert_eq!(
            attrs.get("title"),
            Some(&["B".to_owned(), "A".to_owned()][..])
        );
        assert_eq!(attrs.get("missing"), None);
        attrs.insert("title".into(), vec![]);
        assert_eq!(attrs.get("title"), Some(&[][..]));
        assert_eq!(attrs.len(), 3);
    }

    #[test]
    fn utc_stamps_are_readable() {
        assert_eq!(utc_stamp(1_796_392_991_000), "2026-12-04T140311Z");
        assert_eq!(utc_stamp(0), "1970-01-01T000000Z");
    }

    fn email(a: &str) -> Result<String, AddressError> {
        ThreePid::new(Medium::Email, a).map(|t| t.address().to_owned())
    }

    fn msisdn(a: &str) -> Result<String, AddressError> {
        ThreePid::new(Medium::Msisdn, a).map(|t| t.address().to_owned())
    }

    #[test]
    fn emails_are_case_folded_whole() {
        assert_eq!(email(" Alice@Example.ORG ").unwrap(), "alice@example.org");
        // Full case folding, not just lowercasing (Python's "ß".casefold() == "ss").
        assert_eq!(email("Straße@Example.de").unwrap(), "strasse@example.de");
        assert_eq!(email("ΣΊΣΥΦΟΣ@example.gr").unwrap(), "σίσυφοσ@example.gr");
        for bad in [
            "",
            "no-at-sign",
            "@example.org",
            "alice@",
            "a b@example.org",
            "a@b@c",
            "a@.example",
            "a@ex..ample",
            "a\n@example.org",
        ] {
            assert_eq!(email(bad), Err(AddressError::Email), "{bad:?}");
        }
        assert!(email(&format!("{}@example.org", "a".repeat(600))).is_err());
    }

    #[test]
    fn msisdns_are_e164_digits() {
        assert_eq!(msisdn("+44 7700 900123").unwrap(), "447700900123");
        assert_eq!(msisdn("1-800-555-2067").unwrap(), "18005552067");
        for bad in [
            "",
            "+",
            "abc",
            "0447700900123",
            "1234567890123456",
            "+44 7700 9001x3",
        ] {
            assert_eq!(msisdn(bad), Err(AddressError::Msisdn), "{bad:?}");
        }
    }

    #[test]
    fn mxids() {
        let m = Mxid::parse("@alice:example.org").unwrap();
        assert_eq!((m.localpart(), m.server()), ("alice", "example.org"));
        assert_eq!(
            Mxid::parse("@bob:[::1]:8448").unwrap().server(),
            "[::1]:8448"
        );
        assert!(Mxid::parse("@Old.Style+User:example.org").is_some());
        for bad in [
            "alice:example.org",
            "@:example.org",
            "@alice",
            "@alice:",
            "@al ice:example.org",
            "@alice:exa mple.org",
        ] {
            assert!(Mxid::parse(bad).is_none(), "{bad}");
        }
    }
}
