//! The LDAP / Active Directory source: one paged subtree search (RFC 2696) per base DN
//! over one connection, reading the uid, name, 3PID and extra attributes of every
//! entry the filter selects.
//!
//! Unlike ma1sd (a new connection per lookup, no paging, so directories above the
//! server's size limit broke), a run is a single connection and a paged search, so
//! 100k-entry directories sync whole. The sync's filter is the operator's, checked at
//! config time, and attribute names are checked against the LDAP grammar; the only
//! thing from a request ever put in a filter is a password check's uid, escaped
//! ([`LdapSource::user_filter`]).

use super::Fetched;
use crate::config::stores::{LdapSource, UidKind, UserSpec};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::asn1::StructureTag;
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope};
use rustls::pki_types::pem::PemObject;
use std::collections::HashSet;
use std::sync::Arc;

impl LdapSource {
    fn attributes(&self) -> Vec<String> {
        let mut attrs = vec![self.uid_attr.clone()];
        attrs.extend(self.uid_fallback.iter().cloned());
        attrs.push(self.name_attr.clone());
        for (_, list) in &self.threepid_attrs {
            attrs.extend(list.iter().cloned());
        }
        attrs.extend(self.extra_attrs.iter().cloned());
        attrs.extend(self.groups_attr.iter().cloned());
        let mut seen = HashSet::new();
        attrs.retain(|a| seen.insert(a.to_ascii_lowercase()));
        attrs
    }

    /// The Matrix ID (unchecked: `resolve` checks it) of an entry's uid value.
    fn username(&self, uid: &str) -> String {
        let uid = uid.trim();
        let localpart = match (self.uid_kind, &self.active_directory) {
            (UidKind::Mxid, _) => return uid.to_owned(),
            (UidKind::Localpart, Some(default_domain)) => match uid.rsplit_once('@') {
                Some((login, domain)) if domain.eq_ignore_ascii_case(default_domain) => {
                    login.to_owned()
                }
                Some((login, domain)) => format!("{login}/{domain}"),
                None => uid.to_owned(),
            },
            (UidKind::Localpart, None) => uid.to_owned(),
        };
        // Always a full ID, so a uid that looks like a Matrix ID stays a (refused)
        // localpart rather than naming a user of another server.
        format!("@{localpart}:{}", self.domain)
    }

    /// The uid `mxid` has in the directory, and the filter that finds its entry for a
    /// password check: the operator's filter (`ldap.auth.filter`, else `ldap.filter`)
    /// and the uid attribute (or its fallback) equal to the uid, escaped, so nothing in
    /// an ID can add a clause or a wildcard (fuzzed: fuzz/fuzz_targets/ldap_filter.rs).
    /// `None` for an ID that is no user of this source.
    pub fn user_filter(&self, mxid: &str) -> Option<(String, String)> {
        let uid = self.uid_of(mxid)?;
        let value = ldap3::ldap_escape(&uid);
        let mut wanted = format!("({}={value})", self.uid_attr);
        if let Some(other) = &self.uid_fallback {
            wanted = format!("(|{wanted}({other}={value}))");
        }
        let base = self.auth_filter.as_deref().unwrap_or(&self.filter);
        let filter = format!("(&{base}{wanted})");
        Some((uid, filter))
    }

    /// The uid attribute value that gives `mxid` (the inverse of [`Self::username`]):
    /// `None` for a user of another domain or one no entry could give.
    fn uid_of(&self, mxid: &str) -> Option<String> {
        if self.uid_kind == UidKind::Mxid {
            return Some(mxid.to_owned());
        }
        let localpart = mxid
            .strip_prefix('@')?
            .strip_suffix(&format!(":{}", self.domain))?;
        if localpart.is_empty() {
            return None;
        }
        Some(match &self.active_directory {
            Some(default_domain) => match localpart.split_once('/') {
                Some((login, domain)) => format!("{login}@{domain}"),
                None => format!("{localpart}@{default_domain}"),
            },
            None => localpart.to_owned(),
        })
    }

    fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read connection.caFile {}: {e}", path.display()))?;
        let mut found = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|_| {
                format!(
                    "connection.caFile {} is not PEM certificates",
                    path.display()
                )
            })?;
            roots
                .add(cert)
                .map_err(|e| format!("connection.caFile {}: {e}", path.display()))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "connection.caFile {} holds no certificate",
                path.display()
            ));
        }
        Ok(Some(Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )))
    }
}

/// A reason for an LDAP failure, for the status and the log: what went wrong, never a
/// password.
fn describe(e: LdapError) -> String {
    match e {
        LdapError::LdapResult { result } => {
            let what = match result.rc {
                32 => "a base DN does not exist (noSuchObject)".to_owned(),
                34 => "a DN is malformed (invalidDNSyntax)".to_owned(),
                48 | 49 => {
                    "the server refused the bind: check connection.bindDn and connection.bindPassword"
                        .to_owned()
                }
                50 => "the bind DN may not read the directory (insufficientAccessRights)".to_owned(),
                51..=53 => format!("the server is not available (result code {})", result.rc),
                rc => format!("the server answered result code {rc}"),
            };
            if result.text.is_empty() {
                what
            } else {
                format!("{what}: {}", result.text)
            }
        }
        LdapError::Timeout { .. } => "the server did not answer in time".to_owned(),
        other => super::error_chain(&other),
    }
}

/// One search result entry: its DN and every attribute with all its values, in the
/// order the server sent them.
#[derive(Debug)]
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    /// Reads a SearchResultEntry (RFC 4511 §4.5.2). ldap3's own `SearchEntry` keeps
    /// attributes in a map, so an attribute the server lists twice (as slapd does for an
    /// entry loaded with `slapadd -q` that names `mail` in two places) would keep only
    /// its last values; here every listing is kept. `None` for a malformed entry
    /// (where ldap3 would panic). Values that are not UTF-8 are left out.
    fn read(entry: ResultEntry) -> Option<Self> {
        let mut parts = entry.0.match_id(4)?.expect_constructed()?.into_iter();
        let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
        let mut attrs = Vec::new();
        for attr in parts.next()?.expect_constructed()? {
            let mut attr = attr.expect_constructed()?.into_iter();
            let name = String::from_utf8(attr.next()?.expect_primitive()?).ok()?;
            let values: Vec<String> = attr
                .next()?
                .expect_constructed()?
                .into_iter()
                .map(StructureTag::expect_primitive)
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .filter_map(|v| String::from_utf8(v).ok())
                .collect();
            attrs.push((name, values));
        }
        Some(Self { dn, attrs })
    }
}

fn first(entry: &Entry, attr: &str) -> Option<String> {
    values(entry, attr).first().map(|v| (*v).to_owned())
}

/// An attribute's values, from every listing of it; attribute names are
/// case-insensitive.
fn values<'e>(entry: &'e Entry, attr: &str) -> Vec<&'e str> {
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
        .collect()
}

/// The TCP connection for an `ldap://` or `ldaps://` URL, its host resolved by
/// [`crate::dns`] rather than getaddrinfo; ldap3 then speaks LDAP (and TLS, checked
/// against the URL's host name) over it. `None` for other URLs (ldap3 handles them).
async fn connect_tcp(source: &LdapSource) -> Result<Option<std::net::TcpStream>, String> {
    let Ok(url) = url::Url::parse(&source.url) else {
        return Ok(None);
    };
    let default_port = match url.scheme() {
        "ldap" => 389,
        "ldaps" => 636,
        _ => return Ok(None),
    };
    let host = match url.host_str() {
        None => return Ok(None),
        // As ldap3 reads `ldap:///`.
        Some("") => "localhost",
        Some(h) => h,
    };
    let port = url.port().unwrap_or(default_port);
    let resolver = crate::dns::resolver()?;
    let stream = crate::dns::connect(&resolver, host, port, source.timeout)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .into_std()
        .map(Some)
        .map_err(|e| format!("cannot connect: {e}"))
}

/// An open connection and the task driving it (aborted with [`close`]).
async fn open(
    source: &LdapSource,
    timeout: std::time::Duration,
) -> Result<(ldap3::Ldap, tokio::task::JoinHandle<()>), String> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_starttls(source.starttls);
    if let Some(config) = source.tls_config()? {
        settings = settings.set_config(config);
    }
    if let Some(stream) = connect_tcp(source).await? {
        settings = settings.set_std_stream(ldap3::StdStream::Tcp(stream));
    }
    let (conn, ldap) = LdapConnAsync::with_settings(settings, &source.url)
        .await
        .map_err(|e| format!("cannot connect: {}", describe(e)))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "LDAP connection ended");
        }
    });
    Ok((ldap, driver))
}

async fn close(mut ldap: ldap3::Ldap, driver: tokio::task::JoinHandle<()>) {
    let _ = ldap.unbind().await;
    driver.abort();
}

/// Binds with the configured service account, if any.
async fn service_bind(
    source: &LdapSource,
    ldap: &mut ldap3::Ldap,
    timeout: std::time::Duration,
) -> Result<(), String> {
    if let Some((dn, password)) = &source.bind {
        ldap.with_timeout(timeout)
            .simple_bind(dn, password.expose())
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("bind failed: {}", describe(e)))?;
    }
    Ok(())
}

/// Reads every user the filter selects.
/// Paced by `pacer` between pages' worth of entries (the server keeps a paged
/// search's place meanwhile).
pub async fn fetch(source: &LdapSource, pacer: &crate::pace::Pacer) -> Result<Fetched, String> {
    let (mut ldap, driver) = open(source, source.timeout).await?;
    let result = search_all(source, &mut ldap, pacer).await;
    close(ldap, driver).await;
    result
}

/// Password checks use at most this many directory connections at once; more
/// concurrent logins wait their turn (within their timeout). Connections are kept
/// between checks (each check binds as the service account again first), so a login
/// costs a search and two binds, not a TCP (and TLS) handshake.
const AUTH_CONNECTIONS: usize = 4;
static AUTH_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AUTH_CONNECTIONS);

/// A connection left open after a password check.
struct Idle {
    ldap: ldap3::Ldap,
    driver: tokio::task::JoinHandle<()>,
    since: std::time::Instant,
}

/// Idle connections are closed after this (directories drop idle clients too).
const AUTH_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Idle password-check connections, by directory and service account.
static AUTH_POOL: std::sync::Mutex<Vec<(String, Idle)>> = std::sync::Mutex::new(Vec::new());

fn pool_key(source: &LdapSource) -> String {
    format!(
        "{}|{}|{}|{:?}",
        source.url,
        source.starttls,
        source.bind.as_ref().map_or("", |(dn, _)| dn.as_str()),
        source.ca_file
    )
}

/// A kept connection to the directory that still looks alive (the server may have
/// closed it since: the caller then opens a new one).
fn take_idle(key: &str) -> Option<Idle> {
    let mut pool = AUTH_POOL.lock().ok()?;
    while let Some(at) = pool.iter().position(|(k, _)| k == key) {
        let (_, idle) = pool.swap_remove(at);
        if !idle.driver.is_finished() && idle.since.elapsed() < AUTH_IDLE {
            return Some(idle);
        }
        idle.driver.abort();
    }
    None
}

fn keep(key: String, ldap: ldap3::Ldap, driver: tokio::task::JoinHandle<()>) {
    if let Ok(mut pool) = AUTH_POOL.lock() {
        if pool.len() < AUTH_CONNECTIONS * 4 {
            pool.push((
                key,
                Idle {
                    ldap,
                    driver,
                    since: std::time::Instant::now(),
                },
            ));
            return;
        }
    }
    driver.abort();
}

/// Checks `password` for the Matrix user `mxid` against the directory: finds the
/// entry whose uid attribute gives that ID (the value escaped, under `ldap.auth.filter`
/// or else `ldap.filter`, in every base DN), then binds as that entry with the
/// password. `Ok(Some(user))` with what the entry says of the user; `Ok(None)` for no
/// such user or a wrong password; `Err` when the directory could not be asked (the
/// caller fails closed). Never called with an empty password (an LDAP bind with an
/// empty password is an unauthenticated bind, which "succeeds").
pub async fn authenticate(
    source: &LdapSource,
    mxid: &str,
    password: &str,
    timeout: std::time::Duration,
) -> Result<Option<UserSpec>, String> {
    if password.is_empty() {
        return Ok(None);
    }
    let Some((_, filter)) = source.user_filter(mxid) else {
        return Ok(None);
    };
    let _slot = tokio::time::timeout(timeout, AUTH_SLOTS.acquire())
        .await
        .map_err(|_| "every directory connection for password checks stayed busy".to_owned())?
        .map_err(|_| "password checks are shut down".to_owned())?;
    let key = pool_key(source);
    // A kept connection the server has closed since fails at once: then a new one.
    if let Some(Idle {
        mut ldap, driver, ..
    }) = take_idle(&key)
    {
        match check_password(source, &mut ldap, mxid, &filter, password, timeout).await {
            Ok(found) => {
                keep(key, ldap, driver);
                return Ok(found);
            }
            Err(e) => {
                tracing::debug!(error = %e, "a kept LDAP connection failed; opening a new one");
                close(ldap, driver).await;
            }
        }
    }
    let (mut ldap, driver) = open(source, timeout).await?;
    let result = check_password(source, &mut ldap, mxid, &filter, password, timeout).await;
    if result.is_ok() {
        keep(key, ldap, driver);
    } else {
        close(ldap, driver).await;
    }
    result
}

async fn check_password(
    source: &LdapSource,
    ldap: &mut ldap3::Ldap,
    mxid: &str,
    filter: &str,
    password: &str,
    timeout: std::time::Duration,
) -> Result<Option<UserSpec>, String> {
    // A kept connection is still bound as the last user checked: searches must run
    // as the service account, or anonymously when none is configured.
    if source.bind.is_some() {
        service_bind(source, ldap, timeout).await?;
    } else {
        ldap.with_timeout(timeout)
            .simple_bind("", "")
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("anonymous bind failed: {}", describe(e)))?;
    }
    let attrs = source.attributes();
    let mut candidates = Vec::new();
    let mut seen = HashSet::new();
    for base in &source.base_dns {
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(base, Scope::Subtree, filter, attrs.clone())
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("search of {base:?} failed: {}", describe(e)))?;
        for entry in entries {
            let entry = Entry::read(entry).ok_or_else(|| {
                format!("search of {base:?}: the server sent an unreadable entry")
            })?;
            if seen.insert(entry.dn.to_ascii_lowercase()) {
                candidates.push(entry);
            }
        }
    }
    for entry in candidates {
        // The entry must really be this user (the server's matching rules may be
        // looser than ours, e.g. case or look-alike characters).
        let Some(entry_uid) = first(&entry, &source.uid_attr).or_else(|| {
            source
                .uid_fallback
                .as_deref()
                .and_then(|other| first(&entry, other))
        }) else {
            continue;
        };
        if !source.username(&entry_uid).eq_ignore_ascii_case(mxid) {
            continue;
        }
        match ldap
            .with_timeout(timeout)
            .simple_bind(&entry.dn, password)
            .await
        {
            Ok(r) if r.rc == 0 => return Ok(Some(to_user(source, &entry, &entry_uid))),
            // invalidCredentials; inappropriateAuthentication; a locked account.
            Ok(r) if matches!(r.rc, 48..=50 | 53) => continue,
            Ok(r) => {
                return Err(format!(
                    "bind as the user failed: {}",
                    describe(LdapError::LdapResult { result: r })
                ))
            }
            Err(e) => return Err(format!("bind as the user failed: {}", describe(e))),
        }
    }
    Ok(None)
}

/// The first 128 bits of the SHA-256 of `dn` in lowercase.
fn dn_digest(dn: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(dn.to_ascii_lowercase());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

async fn search_all(
    source: &LdapSource,
    ldap: &mut ldap3::Ldap,
    pacer: &crate::pace::Pacer,
) -> Result<Fetched, String> {
    service_bind(source, ldap, source.timeout).await?;
    let attrs = source.attributes();
    let mut users = Vec::new();
    // Entries already read (base DNs may overlap), by a 128-bit digest of the DN in
    // lowercase: 16 bytes an entry where the DNs themselves took about 100 (10 MB for
    // 100k entries, held until the run's end). A collision, which would drop an entry,
    // is as likely as guessing a random 128-bit key.
    let mut seen_dns: HashSet<u128> = HashSet::new();
    let mut missing_uid = 0u64;
    for base in &source.base_dns {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(source.page_size)),
        ];
        let mut stream = ldap
            .with_timeout(source.timeout)
            .streaming_search_with(
                adapters,
                base,
                Scope::Subtree,
                &source.filter,
                attrs.clone(),
            )
            .await
            .map_err(|e| format!("search of {base:?} failed: {}", describe(e)))?;
        loop {
            let entry = match stream.next().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    return Err(format!("search of {base:?} failed: {}", describe(e)));
                }
            };
            // One bad entry from a misbehaving server fails the run.
            let entry = Entry::read(entry).ok_or_else(|| {
                format!("search of {base:?}: the server sent an unreadable entry")
            })?;
            if !seen_dns.insert(dn_digest(&entry.dn)) {
                continue;
            }
            if seen_dns.len().is_multiple_of(super::PACE_STEP) {
                pacer.pause().await;
            }
            let uid = first(&entry, &source.uid_attr).or_else(|| {
                source
                    .uid_fallback
                    .as_deref()
                    .and_then(|other| first(&entry, other))
            });
            let Some(uid) = uid else {
                missing_uid += 1;
                continue;
            };
            users.push(to_user(source, &entry, &uid));
        }
        stream
            .finish()
            .await
            .success()
            .map_err(|e| format!("search of {base:?} failed: {}", describe(e)))?;
    }
    let mut fetched = Fetched {
        users,
        ..Fetched::default()
    };
    let uid_attrs = match &source.uid_fallback {
        Some(other) => format!("{} or {other}", source.uid_attr),
        None => source.uid_attr.clone(),
    };
    if missing_uid > 0 {
        fetched.skipped = missing_uid;
        fetched.problems.push(format!(
            "{missing_uid} of {} entries have no {uid_attrs} attribute (ldap.attribute.uid.value) and were skipped",
            seen_dns.len()
        ));
    } else if seen_dns.is_empty() {
        // Nothing to skip, nothing listed: say where nothing was found.
        fetched.problems.push(format!(
            "no entry under {} matches the filter {} (ldap.filter, connection.baseDNs; a uid attribute {uid_attrs} the directory does not know matches nothing)",
            source.base_dns.join("; "),
            source.filter
        ));
    }
    Ok(fetched)
}

fn to_user(source: &LdapSource, entry: &Entry, uid: &str) -> UserSpec {
    let mut threepids = Vec::new();
    for (medium, attrs) in &source.threepid_attrs {
        for attr in attrs {
            for value in values(entry, attr) {
                threepids.push(crate::config::stores::ThreePidSpec {
                    medium: medium.clone(),
                    address: value.to_owned(),
                });
            }
        }
    }
    let mut attributes = crate::model::Attributes::default();
    for attr in &source.extra_attrs {
        let v: Vec<String> = values(entry, attr).into_iter().map(str::to_owned).collect();
        if !v.is_empty() {
            attributes.insert(attr.clone(), v);
        }
    }
    let roles = source
        .groups_attr
        .as_deref()
        .map(|a| values(entry, a).into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    UserSpec {
        username: source.username(uid),
        display_name: first(entry, &source.name_attr),
        threepids,
        roles,
        attributes,
        password: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stores::{is_attribute_name, is_valid_filter};
    use std::time::Duration;

    fn source() -> LdapSource {
        LdapSource {
            url: "ldap://127.0.0.1:1".into(),
            starttls: false,
            ca_file: None,
            bind: None,
            base_dns: vec![],
            filter: "(objectClass=*)".into(),
            uid_attr: "uid".into(),
            uid_fallback: None,
            auth_filter: None,
            uid_kind: UidKind::Localpart,
            name_attr: "cn".into(),
            threepid_attrs: vec![],
            extra_attrs: vec!["UID".into(), "title".into()],
            groups_attr: None,
            active_directory: None,
            domain: "example.org".into(),
            timeout: Duration::from_secs(1),
            page_size: 500,
        }
    }

    #[test]
    fn attribute_names_follow_the_ldap_grammar() {
        for good in [
            "mail",
            "telephoneNumber",
            "x-custom",
            "2.5.4.3",
            "cn;lang-en",
        ] {
            assert!(is_attribute_name(good), "{good}");
        }
        for bad in ["", "1mail", "ma il", "mail)(uid=*", "cn;", "2..5", "*"] {
            assert!(!is_attribute_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_matrix_id_cannot_change_the_password_check_filter() {
        let mut s = source();
        s.filter = "(objectClass=person)".into();
        let (uid, filter) = s.user_filter("@a)(uid=*:example.org").unwrap();
        assert_eq!(uid, "a)(uid=*");
        assert_eq!(filter, "(&(objectClass=person)(uid=a\\29\\28uid=\\2a))");
        assert!(is_valid_filter(&filter));
        s.uid_fallback = Some("mail".into());
        s.auth_filter = Some("(memberOf=cn=chat)".into());
        let (_, filter) = s.user_filter("@b\\:example.org").unwrap();
        assert_eq!(filter, "(&(memberOf=cn=chat)(|(uid=b\\5c)(mail=b\\5c)))");
        assert_eq!(
            s.user_filter("@b:other.org"),
            None,
            "not a user of this source"
        );
    }

    #[test]
    fn filters_are_checked() {
        assert!(is_valid_filter("(&(objectClass=person)(mail=*))"));
        assert!(is_valid_filter("(cn=a\\2ab)"));
        assert!(!is_valid_filter("objectClass=person)("));
        assert!(!is_valid_filter("(&(objectClass=person)"));
    }

    #[test]
    fn uids_become_usernames_with_active_directory_upns() {
        let mut s = source();
        assert_eq!(s.username(" jdoe "), "@jdoe:example.org");
        assert_eq!(s.username("@x:evil.org"), "@@x:evil.org:example.org");
        s.active_directory = Some("corp.example.org".into());
        assert_eq!(s.username("jdoe@CORP.example.org"), "@jdoe:example.org");
        assert_eq!(
            s.username("jdoe@emea.example.org"),
            "@jdoe/emea.example.org:example.org"
        );
        assert_eq!(s.username("jdoe"), "@jdoe:example.org");
        s.uid_kind = UidKind::Mxid;
        assert_eq!(s.username("@jdoe:example.org"), "@jdoe:example.org");
    }

    fn tag(id: u64, payload: ldap3::asn1::PL) -> StructureTag {
        StructureTag {
            class: ldap3::asn1::TagClass::Universal,
            id,
            payload,
        }
    }

    fn octets(s: &str) -> StructureTag {
        tag(4, ldap3::asn1::PL::P(s.as_bytes().to_vec()))
    }

    fn attribute(name: &str, vals: &[&str]) -> StructureTag {
        use ldap3::asn1::PL;
        tag(
            16,
            PL::C(vec![
                octets(name),
                tag(17, PL::C(vals.iter().map(|v| octets(v)).collect())),
            ]),
        )
    }

    #[test]
    fn an_attribute_listed_twice_keeps_every_value() {
        use ldap3::asn1::{TagClass, PL};
        let entry = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![
                octets("uid=erin,ou=people"),
                tag(
                    16,
                    PL::C(vec![
                        attribute("mail", &["erin@example.org"]),
                        attribute("uid", &["erin"]),
                        attribute("MAIL", &["erin.b@example.org", "e@example.org"]),
                    ]),
                ),
            ]),
        };
        let e = Entry::read(ResultEntry::new(entry)).unwrap();
        assert_eq!(e.dn, "uid=erin,ou=people");
        assert_eq!(
            values(&e, "mail"),
            vec!["erin@example.org", "erin.b@example.org", "e@example.org"]
        );
        assert_eq!(first(&e, "UID").as_deref(), Some("erin"));
        // Malformed: no attribute list, or a primitive where a set belongs.
        let bad = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets("cn=x")]),
        };
        assert!(Entry::read(ResultEntry::new(bad)).is_none());
        let bad = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets("cn=x"), tag(16, PL::C(vec![octets("mail")]))]),
        };
        assert!(Entry::read(ResultEntry::new(bad)).is_none());
    }

    #[test]
    fn requested_attributes_are_listed_once() {
        let attrs = source().attributes();
        assert_eq!(attrs, vec!["uid", "cn", "title"]);
    }
}
