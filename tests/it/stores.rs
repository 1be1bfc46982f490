//! Identity stores synced from real servers: OpenLDAP (`slapd`), PostgreSQL and SQLite
//! (ma1sd's `sql` and `synapseSql`). For each: initial sync → hashed lookups find the
//! users; changes in the source → resync → lookups follow; the source down → the run
//! fails, the status says why, lookups answer from the last good state; a restart keeps
//! the state. Plus the ways a source can be misconfigured or misbehave.

use crate::common::ldap::{person, Slapd, PEOPLE, SYNC_DN, SYNC_PW};
use crate::common::pg::Postgres;
use crate::common::{alice_and_bob, federation_override, FakeHomeserver, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

/// A client of the hashed v2 lookup: a registered token and the current pepper.
struct Looker {
    token: String,
    pepper: String,
}

impl Looker {
    async fn new(s: &TestServer) -> Self {
        let token = s.register("example.org", "alice").await;
        let pepper = s
            .get_auth("/_matrix/identity/v2/hash_details", &token)
            .await
            .body["lookup_pepper"]
            .as_str()
            .unwrap()
            .to_owned();
        Self { token, pepper }
    }

    /// The Matrix ID the hashed lookup gives for an address, or null.
    async fn find(&self, s: &TestServer, medium: &str, address: &str) -> Value {
        let hash = crate::common::client_hash(address, medium, &self.pepper);
        let r = s
            .post_json(
                "/_matrix/identity/v2/lookup",
                &json!({"algorithm": "sha256", "pepper": self.pepper, "addresses": [hash]}),
                Some(&self.token),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["mappings"]
            .get(&hash)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

pub(crate) async fn status(s: &TestServer, source: &str) -> Value {
    let r = s.admin_get("/_mxisd/admin/v1/sync").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["source"] == source)
        .cloned()
        .unwrap_or_else(|| panic!("no {source} in {}", r.body))
}

/// The status after the run at start of a server started at `since` (ms).
pub(crate) async fn first_run(s: &TestServer, source: &str, since: u64) -> Value {
    for _ in 0..600 {
        let st = status(s, source).await;
        if st["last_attempt_ms"].as_u64().is_some_and(|at| at >= since) {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{source} did not run at start");
}

/// Runs `source` now; its status afterwards. A run that failed is answered with an
/// error status and errcode, the statuses still in `sources`.
pub(crate) async fn sync_now(s: &TestServer, source: &str) -> Value {
    let r = s
        .admin_post("/_mxisd/admin/v1/sync", &json!({"source": source}))
        .await;
    let st = r.body["sources"][0].clone();
    if st["last_error"].is_null() {
        assert_eq!(r.status, 200, "{}", r.body);
    } else {
        assert!(matches!(r.status, 409 | 502), "{} {}", r.status, r.body);
        assert_eq!(r.body["errcode"], "M_UNKNOWN", "{}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains(source),
            "{}",
            r.body
        );
    }
    st
}

/// The operators' search of the directory index: the Matrix IDs found, and `limited`.
pub(crate) async fn search(s: &TestServer, term: &str, limit: usize) -> (Vec<String>, bool) {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("term", term)
        .append_pair("limit", &limit.to_string())
        .finish();
    let r = s.admin_get(&format!("/_mxisd/admin/v1/search?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ids = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["user_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, r.body["limited"].as_bool().unwrap())
}

async fn server(hs: &FakeHomeserver, dir: tempfile::TempDir, source_yaml: &str) -> TestServer {
    let config = format!("{}{source_yaml}", federation_override("example.org", hs));
    TestServer::start_in(dir, &config).await
}

pub(crate) fn ldap_yaml(url: &str, extra_connection: &str, password: &str) -> String {
    format!(
        "ldap:\n  enabled: true\n  filter: '(objectClass=inetOrgPerson)'\n  connection:\n    host: 127.0.0.1\n    port: {port}\n    bindDn: {SYNC_DN}\n    bindPassword: {password}\n    baseDNs: ['{PEOPLE}']\n    timeout: 5s\n    pageSize: 100\n{extra_connection}  attribute:\n    uid:\n      type: uid\n      value: uid\n    name: displayName\n    threepid:\n      email: [mail]\n      msisdn: [telephoneNumber, mobile]\n  directory:\n    attribute:\n      other: [title]\n  sync:\n    interval: 1h\n",
        port = url.rsplit(':').next().unwrap()
    )
}

/// The directory of the LDAP tests: three people, 600 more so that the search needs
/// paging (slapd's size limit is 500), an entry without uid and a bad phone number.
fn directory() -> String {
    let mut ldif = String::new();
    ldif.push_str(&person(
        "alice",
        "Alice Liddell",
        &["Alice@Example.org"],
        &["+44 20 7946 0001"],
    ));
    ldif.push_str(&person(
        "bob",
        "Bob",
        &["bob@example.org"],
        &["call me maybe"],
    ));
    ldif.push_str(&person("Carol", "Carol", &["carol@example.org"], &[]));
    for i in 0..600 {
        ldif.push_str(&person(
            &format!("filler{i}"),
            "Filler",
            &[&format!("filler{i}@example.org")],
            &[],
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=Printer,{PEOPLE}\nobjectClass: inetOrgPerson\ncn: Printer\nsn: Printer\nmail: printer@example.org\n\n"
    ));
    ldif
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_sync_follows_the_directory_and_survives_an_outage() {
    let mut slapd = Slapd::start(&directory());
    let hs = alice_and_bob().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = ldap_yaml(&slapd.url, "", SYNC_PW);
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &yaml).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    // All 603 people with a uid, through pages of 100 past the size limit of 500.
    assert_eq!(st["users"], 603, "{st}");
    // The printer (no uid) and bob's phone number are reported, without values.
    assert_eq!(st["skipped"], 2, "{st}");
    let problems = st["problems"].to_string();
    assert!(problems.contains("no uid attribute"), "{problems}");
    assert!(problems.contains("@bob:example.org"), "{problems}");
    assert!(!problems.contains("call me"), "{problems}");

    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "alice@example.org").await,
        "@alice:example.org"
    );
    assert_eq!(
        look.find(&s, "msisdn", "442079460001").await,
        "@alice:example.org"
    );
    assert_eq!(
        look.find(&s, "email", "carol@example.org").await,
        "@carol:example.org"
    );
    assert_eq!(
        look.find(&s, "email", "filler599@example.org").await,
        "@filler599:example.org"
    );
    assert_eq!(
        look.find(&s, "email", "printer@example.org").await,
        Value::Null
    );

    // The directory index (built right after the run's status is written): by name,
    // partial name, typo, e-mail prefix; limit.
    for _ in 0..200 {
        if !search(&s, "alice", 10).await.0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for term in ["alice", "Alice Lid", "Lidell", "alice@exa", "bob"] {
        let (ids, _) = search(&s, term, 10).await;
        let wanted = if term == "bob" {
            "@bob:example.org"
        } else {
            "@alice:example.org"
        };
        assert_eq!(
            ids.first().map(String::as_str),
            Some(wanted),
            "{term}: {ids:?}"
        );
    }
    let (ids, limited) = search(&s, "filler", 5).await;
    assert_eq!((ids.len(), limited), (5, true));

    // alice changes her mail, bob leaves, dave arrives.
    slapd.modify(&format!(
        "dn: uid=alice,{PEOPLE}\nchangetype: modify\nreplace: mail\nmail: alice@wonderland.example\n\n\
         dn: uid=bob,{PEOPLE}\nchangetype: delete\n\n\
         dn: uid=dave,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: Dave\nmobile: +1 202 555 0199\n\n"
    ));
    let st = sync_now(&s, "ldap").await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(
        (
            st["added"].clone(),
            st["changed"].clone(),
            st["removed"].clone()
        ),
        (json!(2), json!(0), json!(2)),
        "{st}"
    );
    assert_eq!(
        look.find(&s, "email", "alice@example.org").await,
        Value::Null
    );
    assert_eq!(
        look.find(&s, "email", "alice@wonderland.example").await,
        "@alice:example.org"
    );
    assert_eq!(look.find(&s, "email", "bob@example.org").await, Value::Null);
    assert_eq!(
        look.find(&s, "msisdn", "12025550199").await,
        "@dave:example.org"
    );
    assert!(!search(&s, "bob", 10)
        .await
        .0
        .contains(&"@bob:example.org".to_owned()));
    assert_eq!(search(&s, "dave", 10).await.0, vec!["@dave:example.org"]);

    // The directory goes down: the run fails, the status says so, lookups answer.
    slapd.stop();
    let st = sync_now(&s, "ldap").await;
    let error = st["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("cannot connect"), "{st}");
    assert!(!st["last_success_ms"].is_null());
    assert_eq!(
        look.find(&s, "msisdn", "12025550199").await,
        "@dave:example.org"
    );

    assert_eq!(search(&s, "dave", 10).await.0, vec!["@dave:example.org"]);

    // A restart while it is still down keeps the state; a lost index is rebuilt.
    let before = search(&s, "filler 12", 50).await;
    let dir = s.stop().await;
    std::fs::remove_dir_all(dir.path().join("state/index")).unwrap();
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &yaml).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].as_str().is_some(), "{st}");
    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "alice@wonderland.example").await,
        "@alice:example.org"
    );
    assert_eq!(search(&s, "filler 12", 50).await, before);
    // Reindexing from scratch gives the same answers.
    let r = s.admin_post("/_mxisd/admin/v1/reindex", &json!({})).await;
    assert_eq!(r.body["entries"], 603, "{}", r.body);
    assert_eq!(search(&s, "filler 12", 50).await, before);

    // Back up: in sync again.
    slapd.restart();
    let st = sync_now(&s, "ldap").await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["users"], 603, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_misconfigurations_are_reported_and_change_nothing() {
    let slapd = Slapd::start_tls(&person("alice", "Alice", &["alice@example.org"], &[]));
    let hs = alice_and_bob().await;

    // Wrong password.
    let t0 = crate::common::now_ms();
    let s = server(
        &hs,
        tempfile::tempdir().unwrap(),
        &ldap_yaml(&slapd.url, "", "wrong"),
    )
    .await;
    let st = first_run(&s, "ldap", t0).await;
    let error = st["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("bindPassword"), "{st}");
    assert!(!error.contains("wrong"), "the password leaked: {error}");
    assert!(st["last_success_ms"].is_null());
    drop(s);

    // Nothing listening.
    let closed = format!("ldap://127.0.0.1:{}", crate::common::free_port());
    let t0 = crate::common::now_ms();
    let s = server(
        &hs,
        tempfile::tempdir().unwrap(),
        &ldap_yaml(&closed, "", SYNC_PW),
    )
    .await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{st}"
    );
    drop(s);

    // LDAPS with a certificate the system does not trust: refused...
    let ldaps = slapd.ldaps_url.clone().unwrap();
    let tls_yaml = |extra: &str| ldap_yaml(&ldaps, &format!("    tls: true\n{extra}"), SYNC_PW);
    let t0 = crate::common::now_ms();
    let s = server(&hs, tempfile::tempdir().unwrap(), &tls_yaml("")).await;
    let st = first_run(&s, "ldap", t0).await;
    let error = st["last_error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("certificate"), "{st}");
    drop(s);

    // ...and accepted with connection.caFile.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), slapd.ca_pem.clone().unwrap()).unwrap();
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &tls_yaml("    caFile: ca.pem\n")).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "alice@example.org").await,
        "@alice:example.org"
    );
    drop(s);

    // StartTLS on the plain port, with the CA.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), slapd.ca_pem.clone().unwrap()).unwrap();
    let yaml = ldap_yaml(
        &slapd.url,
        "    startTls: true\n    caFile: ca.pem\n",
        SYNC_PW,
    );
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &yaml).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["users"], 1, "{st}");
    drop(s);

    // A base DN that does not exist.
    let yaml = ldap_yaml(&slapd.url, "", SYNC_PW).replace(PEOPLE, "ou=nobody,dc=example,dc=org");
    let t0 = crate::common::now_ms();
    let s = server(&hs, tempfile::tempdir().unwrap(), &yaml).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{st}"
    );
}

/// erin's `mail` is listed twice with another attribute between (kept so by the
/// fixture's `slapadd -q`, which does not merge them): slapd then sends two `mail`
/// attributes, and both addresses must survive.
fn erin() -> String {
    format!(
        "dn: uid=erin,{PEOPLE}\nobjectClass: inetOrgPerson\nmail: erin@example.org\nuid: erin\ncn: Erin\nsn: Erin\nmail: erin.b@example.org\ndisplayName: Erin\n\n"
    )
}

/// An entry without uid or sAMAccountName (a printer, a shared mailbox).
fn device(name: &str) -> String {
    format!(
        "dn: cn={name},{PEOPLE}\nobjectClass: inetOrgPerson\ncn: {name}\nsn: {name}\nmail: {name}@example.org\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_uid_default_repeated_attributes_and_sources_that_give_nobody() {
    let mut ldif = person("alice", "Alice", &["alice@example.org"], &[]);
    ldif.push_str(&erin());
    for name in ["printer1", "printer2", "printer3"] {
        ldif.push_str(&device(name));
    }
    let slapd = Slapd::start(&ldif);
    let hs = alice_and_bob().await;
    // ldap.attribute.uid left out: OpenLDAP entries give their uid.
    let default_uid = ldap_yaml(&slapd.url, "", SYNC_PW)
        .replace("    uid:\n      type: uid\n      value: uid\n", "");
    assert!(!default_uid.contains("value: uid"));
    let t0 = crate::common::now_ms();
    let s = server(&hs, tempfile::tempdir().unwrap(), &default_uid).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(
        (st["users"].clone(), st["skipped"].clone()),
        (json!(2), json!(3)),
        "{st}"
    );
    let look = Looker::new(&s).await;
    for (address, mxid) in [
        ("alice@example.org", "@alice:example.org"),
        ("erin@example.org", "@erin:example.org"),
        ("erin.b@example.org", "@erin:example.org"),
    ] {
        assert_eq!(look.find(&s, "email", address).await, mxid, "{address}");
    }
    // Three of five entries skipped for lacking a uid: DEGRADED, saying why.
    let status = s.admin_get("/_mxisd/admin/v1/status").await.body;
    assert_eq!(status["status"]["health"], "DEGRADED", "{status}");
    assert_eq!(status["sync"][0]["state"], "degraded", "{status}");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("3 of 5 entries have no sAMAccountName or uid attribute"),
        "{problems}"
    );
    // Two of them go: one skipped for two kept is fine.
    slapd.modify(&format!(
        "dn: cn=printer1,{PEOPLE}\nchangetype: delete\n\ndn: cn=printer2,{PEOPLE}\nchangetype: delete\n\n"
    ));
    let st = sync_now(&s, "ldap").await;
    assert_eq!(st["skipped"], 1, "{st}");
    let status = s.admin_get("/_mxisd/admin/v1/status").await.body;
    assert_eq!(status["status"]["health"], "OK", "{status}");
    assert_eq!(status["sync"][0]["state"], "ok", "{status}");
    drop(s);
    // check-config says what the default is.
    let dir = tempfile::tempdir().unwrap();
    let yaml = crate::common::base_yaml(dir.path(), &default_uid);
    std::fs::write(dir.path().join("c.yaml"), &yaml).unwrap();
    let o = crate::cli::mxisd(dir.path(), &["check-config", "-c", "c.yaml"]);
    let (out, err) = crate::cli::text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(
        out.contains("ldap.attribute.uid     sAMAccountName, else uid (as a localpart)"),
        "{out}"
    );

    // ma1sd's trap: an Active Directory attribute named on OpenLDAP (and the default
    // filter built from it) lists nobody. check-config warns; the run is DEGRADED,
    // and `healthcheck --strict` fails.
    let ad_uid = default_uid
        .replace("  filter: '(objectClass=inetOrgPerson)'\n", "")
        .replacen(
            "\n  attribute:\n",
            "\n  attribute:\n    uid:\n      value: sAMAccountName\n",
            1,
        );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let yaml = crate::common::base_yaml(
        &d,
        &format!("{}{ad_uid}", federation_override("example.org", &hs)),
    );
    std::fs::write(d.join("c.yaml"), &yaml).unwrap();
    let o = crate::cli::mxisd(&d, &["check-config", "-c", "c.yaml"]);
    let (out, err) = crate::cli::text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(
        out.contains(
            "warning: ldap.attribute.uid.value: sAMAccountName exists only in Active Directory"
        ),
        "{out}"
    );
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &ad_uid).await;
    let st = first_run(&s, "ldap", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["users"], 0, "{st}");
    let status = s.admin_get("/_mxisd/admin/v1/status").await.body;
    assert_eq!(status["status"]["health"], "DEGRADED", "{status}");
    let reason = status["sync"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("its last run listed no users"),
        "{status}"
    );
    assert!(reason.contains("(sAMAccountName=*)"), "{reason}");
    let (strict, table) = tokio::task::spawn_blocking(move || {
        (
            crate::cli::mxisd(&d, &["healthcheck", "-c", "c.yaml", "--strict"]),
            crate::cli::mxisd(&d, &["sync", "status", "-c", "c.yaml"]),
        )
    })
    .await
    .unwrap();
    let (out, err) = crate::cli::text(&strict);
    assert_eq!(strict.status.code(), Some(1), "{out} {err}");
    assert!(
        out.contains("sync source ldap: its last run listed no users"),
        "{out}"
    );
    // `mxisd sync status` says so too, with the reason.
    let (out, err) = crate::cli::text(&table);
    assert!(table.status.success(), "{out} {err}");
    assert!(out.contains("ldap    degraded"), "{out}");
    assert!(
        out.contains("ldap: degraded: its last run listed no users"),
        "{out}"
    );
}

#[test]
fn ldap_config_mistakes_are_caught_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("  filter: '(objectClass=person'\n", "ldap.filter"),
        (
            "  attribute:\n    uid:\n      value: 'uid)(x=*'\n",
            "ldap.attribute.uid.value",
        ),
        (
            "  attribute:\n    uid:\n      type: email\n",
            "ldap.attribute.uid.type",
        ),
        ("  activeDirectory: true\n", "ldap.defaultDomain"),
    ];
    for (extra, key) in cases {
        let yaml = format!(
            "{}ldap:\n  enabled: true\n  connection:\n    host: 127.0.0.1\n    baseDNs: [dc=x]\n{extra}",
            crate::common::base_yaml(dir.path(), "")
        );
        let err = mxisd::config::load_str(&yaml, "t", dir.path().to_owned(), &|_| None)
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(err.contains(key), "{key} not in {err}");
    }
    // Without baseDNs.
    let yaml = format!(
        "{}ldap:\n  enabled: true\n  connection:\n    host: h\n    bindPassword: x\n",
        crate::common::base_yaml(dir.path(), "")
    );
    let err = mxisd::config::load_str(&yaml, "t", dir.path().to_owned(), &|_| None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("baseDNs"), "{err}");

    // The uid attribute: its default, and the warnings about AD-only attributes.
    let load = |extra: &str| {
        let yaml = format!(
            "{}ldap:\n  enabled: true\n  connection:\n    host: 127.0.0.1\n    baseDNs: [dc=x]\n{extra}",
            crate::common::base_yaml(dir.path(), "")
        );
        let c = mxisd::config::load_str(&yaml, "t", dir.path().to_owned(), &|_| None).unwrap();
        let mxisd::config::stores::SourceKind::Ldap(ldap) = &c.sync[0].kind else {
            panic!("not ldap");
        };
        (
            ldap.uid_attr.clone(),
            ldap.uid_fallback.clone(),
            ldap.filter.clone(),
            c.warnings.join("\n"),
        )
    };
    let (attr, fallback, filter, warnings) = load("");
    assert_eq!(
        (attr.as_str(), fallback.as_deref()),
        ("sAMAccountName", Some("uid"))
    );
    assert_eq!(filter, "(|(sAMAccountName=*)(uid=*))");
    assert!(!warnings.contains("attribute.uid"), "{warnings}");
    let (attr, fallback, _, warnings) =
        load("  activeDirectory: true\n  defaultDomain: corp.example\n");
    assert_eq!((attr.as_str(), fallback), ("userPrincipalName", None));
    assert!(!warnings.contains("attribute.uid"), "{warnings}");
    let (attr, fallback, filter, warnings) =
        load("  attribute:\n    uid:\n      value: userPrincipalName\n");
    assert_eq!((attr.as_str(), fallback), ("userPrincipalName", None));
    assert_eq!(filter, "(userPrincipalName=*)");
    assert!(
        warnings.contains("ldap.attribute.uid.value: userPrincipalName values are login@domain"),
        "{warnings}"
    );
    let (_, _, _, warnings) = load("  attribute:\n    uid:\n      value: uid\n");
    assert!(!warnings.contains("attribute.uid"), "{warnings}");
}

/// A slice of Synapse's schema: what the `synapseSql` preset reads.
const SYNAPSE_SCHEMA: &str = "
CREATE TABLE users (name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT DEFAULT 0 NOT NULL,
  is_guest SMALLINT DEFAULT 0 NOT NULL, appservice_id TEXT, deactivated SMALLINT DEFAULT 0 NOT NULL, UNIQUE(name));
CREATE TABLE profiles (user_id TEXT NOT NULL, displayname TEXT, avatar_url TEXT, UNIQUE(user_id));
CREATE TABLE user_threepids (user_id TEXT NOT NULL, medium TEXT NOT NULL, address TEXT NOT NULL,
  validated_at BIGINT NOT NULL, added_at BIGINT NOT NULL);
INSERT INTO users (name) VALUES ('@alice:example.org'), ('@bob:example.org'), ('@nomail:example.org');
INSERT INTO users (name, is_guest) VALUES ('@guest:example.org', 1);
INSERT INTO users (name, deactivated) VALUES ('@gone:example.org', 1);
INSERT INTO users (name, appservice_id) VALUES ('@irc_bot:example.org', 'irc');
INSERT INTO profiles (user_id, displayname) VALUES ('alice', 'Alice'), ('bob', 'Bob');
INSERT INTO user_threepids VALUES ('@alice:example.org', 'email', 'alice@example.org', 1, 1),
  ('@alice:example.org', 'msisdn', '447700900001', 1, 1), ('@bob:example.org', 'email', 'bob@example.org', 1, 1),
  ('@guest:example.org', 'email', 'guest@example.org', 1, 1), ('@gone:example.org', 'email', 'gone@example.org', 1, 1),
  ('@irc_bot:example.org', 'email', 'bot@example.org', 1, 1);
";

/// What every Synapse database of these tests gives, then after `change` ran.
async fn check_synapse_source(s: &TestServer, t0: u64) {
    let st = first_run(s, "synapseSql", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    // alice, bob and nomail: not the guest, the deactivated user or the bridge bot.
    assert_eq!(
        (st["users"].clone(), st["bindings"].clone()),
        (json!(3), json!(3)),
        "{st}"
    );
    let look = Looker::new(s).await;
    assert_eq!(
        look.find(s, "email", "alice@example.org").await,
        "@alice:example.org"
    );
    assert_eq!(
        look.find(s, "msisdn", "447700900001").await,
        "@alice:example.org"
    );
    assert_eq!(
        look.find(s, "email", "bob@example.org").await,
        "@bob:example.org"
    );
    for hidden in ["guest@example.org", "gone@example.org", "bot@example.org"] {
        assert_eq!(look.find(s, "email", hidden).await, Value::Null, "{hidden}");
    }
}

const SYNAPSE_CHANGE: &str = "
UPDATE user_threepids SET address = 'alice@new.example' WHERE address = 'alice@example.org';
UPDATE users SET deactivated = 1 WHERE name = '@bob:example.org';
INSERT INTO users (name) VALUES ('@carol:example.org');
INSERT INTO user_threepids VALUES ('@carol:example.org', 'email', 'Carol@Example.org', 1, 1);
";

async fn check_synapse_change(s: &TestServer) {
    let st = sync_now(s, "synapseSql").await;
    assert!(st["last_error"].is_null(), "{st}");
    let look = Looker::new(s).await;
    assert_eq!(
        look.find(s, "email", "alice@example.org").await,
        Value::Null
    );
    assert_eq!(
        look.find(s, "email", "alice@new.example").await,
        "@alice:example.org"
    );
    assert_eq!(look.find(s, "email", "bob@example.org").await, Value::Null);
    assert_eq!(
        look.find(s, "email", "carol@example.org").await,
        "@carol:example.org"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_database_on_postgresql() {
    let mut pg = Postgres::start();
    pg.sql("postgres", "CREATE DATABASE synapse;");
    pg.sql("synapse", SYNAPSE_SCHEMA);
    let hs = alice_and_bob().await;
    // ma1sd's JDBC-style connection string.
    let yaml = format!(
        "synapseSql:\n  enabled: true\n  type: postgresql\n  connection: //127.0.0.1:{}/synapse?user=postgres\n  sync:\n    interval: 1h\n    timeout: 10s\n",
        pg.port
    );
    let t0 = crate::common::now_ms();
    let s = server(&hs, tempfile::tempdir().unwrap(), &yaml).await;
    check_synapse_source(&s, t0).await;
    pg.sql("synapse", SYNAPSE_CHANGE);
    check_synapse_change(&s).await;

    // The database goes away: the run fails and says so; lookups answer.
    pg.stop();
    let st = sync_now(&s, "synapseSql").await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot connect"),
        "{st}"
    );
    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "carol@example.org").await,
        "@carol:example.org"
    );

    // Restart with the database still down: state intact; then back in sync.
    let dir = s.stop().await;
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &yaml).await;
    let st = first_run(&s, "synapseSql", t0).await;
    assert!(st["last_error"].is_string(), "{st}");
    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "alice@new.example").await,
        "@alice:example.org"
    );
    pg.restart();
    let st = sync_now(&s, "synapseSql").await;
    assert!(st["last_error"].is_null(), "{st}");
}

async fn sqlite_db(path: &std::path::Path, sql: &str) {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_database_on_sqlite() {
    let hs = alice_and_bob().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("homeserver.db");
    sqlite_db(&db, SYNAPSE_SCHEMA).await;
    // A path relative to the config's directory.
    let yaml = "synapseSql:\n  enabled: true\n  type: sqlite\n  connection: homeserver.db\n  sync:\n    interval: 1h\n";
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, yaml).await;
    check_synapse_source(&s, t0).await;
    sqlite_db(&db, SYNAPSE_CHANGE).await;
    check_synapse_change(&s).await;
    // Opened read-only: the sync never writes to it.
    let st = status(&s, "synapseSql").await;
    assert!(st["last_error"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_source_with_its_own_query_and_bad_queries() {
    let hs = alice_and_bob().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hr.db");
    sqlite_db(
        &db,
        "CREATE TABLE staff (login TEXT, full_name TEXT, mail TEXT, phone INTEGER);
         INSERT INTO staff VALUES ('Ann', 'Ann Example', 'ann@example.org', 33612345678),
           ('ben', 'Ben', NULL, NULL), (NULL, 'Nobody', 'nobody@example.org', NULL);",
    )
    .await;
    // Phone numbers stored as integers; users without 3PIDs; a row without a login.
    let query = "SELECT login AS uid, full_name AS display_name, 'email' AS medium, mail AS address FROM staff \
                 UNION ALL SELECT login, full_name, 'msisdn', phone FROM staff";
    let yaml = format!(
        "sql:\n  enabled: true\n  type: sqlite\n  connection: hr.db\n  sync:\n    interval: 1h\n    query: \"{query}\"\n"
    );
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, &yaml).await;
    let st = first_run(&s, "sql", t0).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(
        (st["users"].clone(), st["bindings"].clone()),
        (json!(2), json!(2)),
        "{st}"
    );
    assert_eq!(st["skipped"], 2, "{st}");
    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "ann@example.org").await,
        "@ann:example.org"
    );
    assert_eq!(
        look.find(&s, "msisdn", "33612345678").await,
        "@ann:example.org"
    );
    let dir = s.stop().await;

    // A query without an id column, one that does not parse, a missing file.
    let cases = [
        (
            "SELECT mail AS address, 'email' AS medium FROM staff",
            "mxid, uid or localpart",
        ),
        ("SELEC nonsense", "the query failed"),
        (
            "SELECT login AS uid, mail AS address FROM staff",
            "medium without address",
        ),
    ];
    let mut dir = dir;
    for (query, expected) in cases {
        let yaml = format!(
            "sql:\n  enabled: true\n  type: sqlite\n  connection: hr.db\n  sync:\n    interval: 1h\n    query: \"{query}\"\n"
        );
        let t0 = crate::common::now_ms();
        let s = server(&hs, dir, &yaml).await;
        let st = first_run(&s, "sql", t0).await;
        assert!(
            st["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{query}: {st}"
        );
        // The earlier good state stays.
        let look = Looker::new(&s).await;
        assert_eq!(
            look.find(&s, "email", "ann@example.org").await,
            "@ann:example.org"
        );
        dir = s.stop().await;
    }
    let yaml = "sql:\n  enabled: true\n  type: sqlite\n  connection: missing.db\n  sync:\n    interval: 1h\n    query: SELECT 1 AS uid\n";
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, yaml).await;
    let st = first_run(&s, "sql", t0).await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot connect"),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_taken_out_of_the_config_stops_answering() {
    let hs = alice_and_bob().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "memory:\n  enabled: true\n  identities:\n    - username: mem\n      threepids:\n        - {medium: email, address: mem@example.org}\n";
    let t0 = crate::common::now_ms();
    let s = server(&hs, dir, yaml).await;
    first_run(&s, "memory", t0).await;
    let look = Looker::new(&s).await;
    assert_eq!(
        look.find(&s, "email", "mem@example.org").await,
        "@mem:example.org"
    );
    let dir = s.stop().await;
    let s = server(&hs, dir, "").await;
    let look = Looker::new(&s).await;
    let mut found = Value::Null;
    for _ in 0..200 {
        found = look.find(&s, "email", "mem@example.org").await;
        if found.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(found, Value::Null);
    let r = s.admin_get("/_mxisd/admin/v1/sync").await;
    assert_eq!(r.body["sources"], json!([]), "{}", r.body);
}
