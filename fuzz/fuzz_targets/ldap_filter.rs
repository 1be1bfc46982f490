//! LDAP filter building: the filter a password check searches with, from a Matrix ID
//! the caller chose. Whatever the ID, the filter parses, and the value in it reads
//! back as the uid: nothing in an ID can add a clause or a wildcard.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxisd::config::stores::{is_valid_filter, LdapSource, UidKind};
use std::time::Duration;

fn source(shape: u8) -> LdapSource {
    LdapSource {
        url: "ldap://127.0.0.1:1".into(),
        starttls: false,
        ca_file: None,
        bind: None,
        base_dns: vec![],
        filter: "(&(objectClass=person)(!(disabled=TRUE)))".into(),
        uid_attr: "uid".into(),
        uid_fallback: (shape & 1 == 1).then(|| "mail".into()),
        auth_filter: (shape & 2 == 2).then(|| "(memberOf=cn=chat,ou=groups,dc=x)".into()),
        uid_kind: if shape & 4 == 4 { UidKind::Mxid } else { UidKind::Localpart },
        name_attr: "cn".into(),
        threepid_attrs: vec![],
        extra_attrs: vec![],
        groups_attr: None,
        active_directory: (shape & 8 == 8).then(|| "corp.example.org".into()),
        domain: "example.org".into(),
        timeout: Duration::from_secs(1),
        page_size: 500,
    }
}

/// The value between `(attr=` and the next unescaped `)`, unescaped; None if a byte
/// that would change the filter's structure stands unescaped in it.
fn value_after(filter: &str, attr: &str) -> Option<Vec<u8>> {
    let start = filter.find(&format!("({attr}="))? + attr.len() + 2;
    let bytes = filter.as_bytes();
    let mut out = Vec::new();
    let mut i = start;
    loop {
        match *bytes.get(i)? {
            b')' => return Some(out),
            b'(' | b'*' => return None,
            b'\\' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let Ok(mxid) = std::str::from_utf8(rest) else {
        return;
    };
    let source = source(shape);
    let Some((uid, filter)) = source.user_filter(mxid) else {
        return;
    };
    assert!(is_valid_filter(&filter), "{filter:?}");
    assert_eq!(value_after(&filter, "uid").as_deref(), Some(uid.as_bytes()), "{filter:?}");
    if source.uid_fallback.is_some() {
        assert_eq!(value_after(&filter, "mail").as_deref(), Some(uid.as_bytes()), "{filter:?}");
    }
});
