use super::*;
use crate::model::is_server_name;
use std::collections::HashMap;
use std::time::Duration;

fn load_with(text: &str, env: &HashMap<&str, &str>) -> Result<Config, ConfigErrors> {
    let lookup = |k: &str| env.get(k).map(|v| (*v).to_owned());
    load_str(text, "test.yaml", PathBuf::from("/etc/mxisd"), &lookup)
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_with(text, &HashMap::new())
}

const MINIMAL: &str = "matrix:\n  domain: example.org\nstorage:\n  path: /var/lib/mxisd\n";

#[test]
fn minimal_config_gets_the_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.matrix.domain, "example.org");
    assert!(c.matrix.v1);
    assert_eq!(c.server.name, "example.org");
    assert_eq!(c.server.public_url, "https://example.org");
    assert_eq!(c.server.port, 8090);
    assert_eq!(c.server.hostname, "127.0.0.1");
    assert_eq!(c.server.metrics.port, 8091);
    assert_eq!(
        c.server.admin.socket,
        PathBuf::from("/var/lib/mxisd/admin.sock")
    );
    assert!(c.server.admin.tcp.is_none());
    assert_eq!(c.server.max_body_size, 512 * 1024);
    assert_eq!(c.key.path, PathBuf::from("/var/lib/mxisd/keys"));
    assert_eq!(c.storage.cache_size, 8 << 20);
    assert!(c.server.tls.is_none());
}

#[test]
fn the_embedded_default_and_the_example_are_valid() {
    let c = load_embedded(&|_| None).unwrap();
    assert_eq!(c.matrix.domain, "localhost");
    assert_eq!(
        (c.server.hostname.as_str(), c.server.port),
        ("127.0.0.1", 8090)
    );
    assert!(c.storage.path.ends_with("mxisd-data"));
    // With an example directory, so lookups answer out of the box.
    assert_eq!(c.sync.len(), 1);
    let super::stores::SourceKind::Memory(users) = &c.sync[0].kind else {
        panic!("the embedded default has no example directory")
    };
    assert_eq!(users.len(), 3);
    let c = load(EXAMPLE).unwrap();
    assert_eq!(c.matrix.domain, "example.org");
}

#[test]
fn ma1sd_style_keys_are_read() {
    let c = load(
        "matrix:\n  domain: example.org\n  v1: false\n  v2: true\n\
         server:\n  name: id.example.org\n  hostname: 0.0.0.0\n  port: 9000\n  publicUrl: https://%SERVER_NAME%/\n\
         key:\n  path: keys\nstorage:\n  path: data\n  cacheSize: 16MiB\n\
         logging:\n  root: warn\n  app: DEBUG\n  format: json\n",
    )
    .unwrap();
    assert!(!c.matrix.v1);
    assert_eq!(c.server.name, "id.example.org");
    assert_eq!(c.server.public_url, "https://id.example.org");
    assert_eq!(c.server.port, 9000);
    assert_eq!(c.server.metrics.port, 9001);
    // Relative paths are resolved against the config file's directory.
    assert_eq!(c.key.path, PathBuf::from("/etc/mxisd/keys"));
    assert_eq!(c.storage.path, PathBuf::from("/etc/mxisd/data"));
    assert_eq!(c.storage.cache_size, 16 << 20);
    assert_eq!(c.logging.format, LogFormat::Json);
    assert_eq!(
        (c.logging.root.as_str(), c.logging.app.as_str()),
        ("warn", "debug")
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let err = load(
        "matrix:\n  domian: example.org\n\
         server:\n  port: 99999\n  publicUrl: ftp://x\n  tls:\n    certificate: cert.pem\n\
         storage:\n  backend: sqlite\n  provider:\n    sqlite:\n      database: /var/lib/ma1sd/store.db\n\
         ldap:\n  enabled: true\nlogging:\n  requests: true\n  format: xml\n",
    )
    .unwrap_err();
    let all = err.problems.join("\n");
    for expected in [
        "matrix.domian: unknown key",
        "matrix.domain: required",
        "server.port: 99999 is not a TCP port",
        "server.tls.key: required when server.tls.certificate is set",
        "storage.path: required",
        "ldap.connection.host: required when ldap.enabled is true",
        "logging.requests: logging request and response bodies (mxisd never logs request",
        "logging.format: \"xml\" is not text or json",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn wrong_types_name_the_key() {
    let err = load("matrix:\n  domain: [a, b]\nstorage: /var/lib\n").unwrap_err();
    let all = err.problems.join("\n");
    assert!(
        all.contains("matrix.domain: expected a string, found a list"),
        "{all}"
    );
    assert!(
        all.contains("storage: expected a mapping, found a string"),
        "{all}"
    );
    let err = load("matrix:\n  domain: x\n  v1: maybe\nstorage:\n  path: /x\n").unwrap_err();
    assert!(
        err.problems[0].contains("matrix.v1: expected true or false"),
        "{err}"
    );
}

#[test]
fn malformed_yaml_is_one_clear_problem() {
    let err = load("matrix:\n  domain: [unclosed\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].starts_with("not valid YAML"), "{err}");
    let err = load("- just\n- a list\n").unwrap_err();
    assert!(err.problems[0].contains("must be a YAML mapping"), "{err}");
    let err = load("").unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.contains("matrix.domain: required")),
        "{err}"
    );
}

#[test]
fn bad_domain_and_server_names() {
    for bad in [
        "exa mple.org",
        "example.org:notaport",
        "[::1",
        "example.org:123456",
        "",
    ] {
        let text = format!("matrix:\n  domain: \"{bad}\"\nstorage:\n  path: /x\n");
        assert!(load(&text).is_err(), "{bad:?} accepted");
    }
    for good in [
        "example.org",
        "example.org:8448",
        "127.0.0.1:8008",
        "[::1]:8448",
        "[2001:db8::1]",
    ] {
        assert!(is_server_name(good), "{good}");
    }
}

#[test]
fn environment_overrides_win() {
    let env = HashMap::from([
        ("MXISD_MATRIX_DOMAIN", "env.example.org"),
        ("MXISD_SERVER_PORT", "7000"),
        ("MXISD_MATRIX_V1", "off"),
    ]);
    let c = load_with(MINIMAL, &env).unwrap();
    assert_eq!(c.matrix.domain, "env.example.org");
    assert_eq!(c.server.port, 7000);
    assert!(!c.matrix.v1);
    let env = HashMap::from([("MXISD_SERVER_PORT", "seven")]);
    let err = load_with(MINIMAL, &env).unwrap_err();
    assert!(err.problems[0].contains("server.port"), "{err}");
}

#[test]
fn secrets_come_inline_from_env_or_from_a_file_and_stay_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let text = "a:\n  password: inline\n  tokenFile: pw\n  both: x\n  bothFile: pw\n";
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    let env = |k: &str| (k == "MXISD_A_OTHER").then(|| "from-env".to_owned());
    let ctx = Ctx::new(&env, dir.path().to_owned());
    let root = ctx.root(&value);
    let a = root.section("a");
    assert_eq!(a.secret("password").unwrap().expose(), "inline");
    assert_eq!(a.secret("token").unwrap().expose(), "s3cret");
    assert_eq!(a.secret("other").unwrap().expose(), "from-env");
    assert!(a.secret("both").is_none());
    assert_eq!(format!("{:?}", a.secret("password").unwrap()), "<redacted>");
    // For comparing configs (reload), secrets show as fingerprints of their value.
    let fingerprint = |s: &str| {
        crate::config::reader::debug_with_fingerprints(&crate::config::reader::Secret::new(
            s.into(),
        ))
    };
    assert_eq!(fingerprint("inline"), fingerprint("inline"));
    assert_ne!(fingerprint("inline"), fingerprint("s3cret"));
    assert!(!fingerprint("inline").contains("inline"));
    assert_eq!(format!("{:?}", a.secret("password").unwrap()), "<redacted>");
    a.finish(&[]);
    root.finish(&[]);
    let problems = ctx.into_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("not both"));
    assert!(!problems[0].contains("s3cret"));
}

#[test]
fn summary_lists_the_effective_settings() {
    let c = load(MINIMAL).unwrap();
    let s = c.summary();
    assert!(s.contains("matrix.domain          example.org"), "{s}");
    assert!(
        s.contains("server.admin.socket    /var/lib/mxisd/admin.sock"),
        "{s}"
    );
    assert!(s.contains("server.metrics         127.0.0.1:8091"), "{s}");
    assert!(s.contains("server.internal        disabled"), "{s}");
    assert_eq!(
        c.metrics_url().as_deref(),
        Some("http://127.0.0.1:8091/metrics")
    );
    assert_eq!(c.local_url(), "http://127.0.0.1:8090");
}

#[test]
fn delivery_sessions_and_limits_read_ma1sd_keys() {
    use threepid::{EmailConnector, SmsConnector, SmtpTls};
    let c = load(MINIMAL).unwrap();
    assert!(matches!(c.threepid.email.connector, EmailConnector::None));
    assert!(matches!(c.threepid.msisdn.connector, SmsConnector::None));
    assert_eq!(c.threepid.email.from, "mxisd@example.org");
    assert_eq!(c.session.lifetime, Duration::from_secs(86_400));
    assert!(c.rate_limit.enabled);

    let c = load(&format!(
        "{MINIMAL}threepid:\n  medium:\n    email:\n      identity:\n        from: id@example.org\n        name: ID\n      connectors:\n        smtp:\n          host: smtp.example.org\n          port: 465\n          tls: 3\n          login: me\n          password: pw\n    msisdn:\n      connector: twilio\n      connectors:\n        twilio:\n          account_sid: AC1\n          auth_token: tok\n          number: \"+15550001111\"\nsession:\n  policy:\n    validation:\n      maxAttempts: 3\n    unbind:\n      notifications: false\nrateLimit:\n  lookupPerToken:\n    burst: 10\n    interval: 1s\n"
    ))
    .unwrap();
    match &c.threepid.email.connector {
        EmailConnector::Smtp(s) => {
            assert_eq!(
                (s.host.as_str(), s.port, s.tls),
                ("smtp.example.org", 465, SmtpTls::Implicit)
            );
            assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("pw"));
        }
        EmailConnector::None => panic!("smtp expected"),
    }
    match &c.threepid.msisdn.connector {
        SmsConnector::Twilio(t) => assert_eq!(t.base_url, "https://api.twilio.com"),
        SmsConnector::None => panic!("twilio expected"),
    }
    assert_eq!(c.session.max_attempts, 3);
    assert!(!c.session.unbind_notifications);
    assert_eq!(c.rate_limit.lookup_per_token.burst, 10);
    assert!(!format!("{c:?}").contains("tok\""));
}

#[test]
fn delivery_mistakes_are_reported() {
    let e = load(&format!(
        "{MINIMAL}threepid:\n  medium:\n    email:\n      identity:\n        from: not-an-address\n      connectors:\n        smtp:\n          host: h\n          tls: 7\n    msisdn:\n      connector: twilio\n      connectors:\n        twilio:\n          account_sid: AC1\nrateLimit:\n  submitTokenPerIp:\n    burst: 0\nsession:\n  policy:\n    validation:\n      maxAttempts: 0\n"
    ))
    .unwrap_err();
    let all = e.problems.join("\n");
    for key in [
        "threepid.medium.email.connectors.smtp.tls",
        "threepid.medium.msisdn.connectors.twilio",
        "rateLimit.submitTokenPerIp",
        "session.policy.validation.maxAttempts",
    ] {
        assert!(all.contains(key), "{key} not in:\n{all}");
    }
    let e = load(&format!(
        "{MINIMAL}threepid:\n  medium:\n    email:\n      identity:\n        from: not-an-address\n"
    ))
    .unwrap_err();
    assert!(e
        .problems
        .join("\n")
        .contains("threepid.medium.email.identity.from"));
}

#[test]
fn compatibility_keys_give_warnings_not_errors() {
    let c = load(&format!(
        "{MINIMAL}hashing:\n  hashStorageType: sql\nthreepid:\n  medium:\n    msisdn:\n      connectors:\n        twilio:\n          account_sid: AC1\n          auth_token: t\n          number: \"+15550001111\"\n          baseUrl: http://127.0.0.1:9\n"
    ))
    .unwrap();
    let all = c.warnings.join("\n");
    assert!(all.contains("hashing.hashStorageType"), "{all}");
    assert!(
        all.contains("threepid.medium.msisdn.connectors.twilio.baseUrl"),
        "{all}"
    );
}

#[test]
fn identity_stores_are_read_with_ma1sd_keys() {
    let c = load(&format!(
        "{MINIMAL}memory:\n  enabled: true\n  identities:\n    - username: a\n      threepids:\n        - {{medium: email, address: a@example.org}}\n\
         ldap:\n  enabled: true\n  activeDirectory: true\n  defaultDomain: corp.example.org\n  connection:\n    host: dc1.corp.example.org\n    tls: true\n    bindDn: 'CN=mxisd,DC=corp'\n    bindPassword: pw\n    baseDn: 'DC=corp'\n  attribute:\n    uid:\n      value: userPrincipalName\n    threepid:\n      email: [mail]\n      kmx.employee.id: [employeeId]\n  identity:\n    token: '%3pid'\n\
         synapseSql:\n  enabled: true\n  type: postgresql\n  connection: '//db/synapse?user=u&password=p'\n"
    ))
    .unwrap();
    let names: Vec<&str> = c.sync.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["memory", "ldap", "synapseSql"]);
    let super::stores::SourceKind::Ldap(l) = &c.sync[1].kind else {
        panic!("not ldap")
    };
    assert_eq!(l.url, "ldaps://dc1.corp.example.org:636");
    assert_eq!(l.base_dns, ["DC=corp"]);
    assert_eq!(l.filter, "(userPrincipalName=*)");
    assert_eq!(
        l.threepid_attrs,
        [("email".to_owned(), vec!["mail".to_owned()])]
    );
    assert_eq!(l.active_directory.as_deref(), Some("corp.example.org"));
    // Custom media and per-lookup keys are accepted with a warning.
    let w = c.warnings.join("\n");
    assert!(w.contains("ldap.attribute.threepid.kmx.employee.id"), "{w}");
    assert!(w.contains("ldap.identity.token"), "{w}");
    let super::stores::SourceKind::Sql(q) = &c.sync[2].kind else {
        panic!("not sql")
    };
    assert!(q.query.contains("user_threepids"));
    assert_eq!(q.url.expose(), "postgres://u:p@db/synapse");
    // The secret stays out of Debug output.
    assert!(!format!("{:?}", c.sync[2]).contains(":p@"));
}

#[test]
fn memory_identities_with_bad_addresses_are_config_errors() {
    let e = load(&format!(
        "{MINIMAL}memory:\n  enabled: true\n  identities:\n    - username: a\n      threepids:\n        - {{medium: email, address: not-mail}}\n        - {{medium: fax, address: '1'}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("memory.identities[0].threepids[0].address"),
        "{e}"
    );
    assert!(
        e.contains("memory.identities[0].threepids[1].medium"),
        "{e}"
    );
    assert!(!e.contains("not-mail"), "{e}");
}

#[test]
fn every_ma1sd_key_is_used_or_explained() {
    let text = include_str!("testdata/ma1sd-full.yaml");
    let c = load(text).unwrap_or_else(|e| panic!("{e}"));
    // Each ignored key is named, with why.
    for key in [
        "matrix.v2:",
        "storage.backend:",
        "storage.provider:",
        "session.policy.validation.forLocal.toRemote.enabled:",
        "session.policy.validation.forRemote.toRemote.enabled:",
        "lookup.recursive.bridge: accepted and ignored",
        "invite.resolution:",
        "notification: accepted and ignored",
        "appsvc: accepted and ignored",
        "internal: accepted and ignored",
        "logging.requests: accepted and ignored",
        "exec: accepted and ignored",
        "firebase: accepted and ignored",
        "wordpress: accepted and ignored",
        "netiq: accepted and ignored",
    ] {
        assert!(
            c.warnings.iter().any(|w| w.starts_with(key)),
            "{key} not explained in {:#?}",
            c.warnings
        );
    }
    // Switched on, a missing feature is refused by name, never as a typo.
    let on = text
        .replace("appsvc:\n  enabled: false", "appsvc:\n  enabled: true")
        .replace(
            "notification:\n  handler:\n    email: raw",
            "notification:\n  handler:\n    email: sendgrid",
        );
    // Served, so they load and never warn.
    for key in [
        "auth",
        "register",
        "invite.policy",
        "forward",
        "matrix.identity",
        "lookup.recursive",
    ] {
        assert!(
            !c.warnings.iter().any(|w| w.starts_with(&format!("{key}:"))),
            "{key} is implemented but warned about: {:#?}",
            c.warnings
        );
    }
    assert!(c.auth.rewrite.is_empty());
    // mxisd's defaults: remote 3PIDs went to another server; here they are validated.
    assert!(c.session.for_local && c.session.for_remote);
    let closed = load(&text.replace(
        "      forRemote:\n        enabled: true",
        "      forRemote:\n        enabled: false",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(closed.session.for_local && !closed.session.for_remote);
    let register = c.register.as_ref().expect("register.policy is loaded");
    assert!(!register.allowed && register.invite);
    assert!(c.invite_policy.sender_roles.is_empty());
    let recursive = &c.lookup.recursive;
    assert!(!recursive.enabled && recursive.forward.is_empty());
    assert_eq!(
        recursive.allowed_cidrs,
        vec!["127.0.0.0/8".parse().unwrap()]
    );
    // Forwarding to a label of matrix.identity.servers.
    let forwarding = load(&text.replace(
        "forward:\n  servers: []",
        "forward:\n  servers: [matrix-org]",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        forwarding.lookup.recursive.forward,
        vec!["https://matrix.org".to_owned()]
    );
    let unknown = load(&text.replace("forward:\n  servers: []", "forward:\n  servers: [nowhere]"))
        .unwrap_err();
    assert!(
        unknown
            .problems
            .iter()
            .any(|p| p.contains("forward.servers") && p.contains("nowhere")),
        "{unknown:?}"
    );
    let problems = load(&on).unwrap_err().problems;
    assert_eq!(problems.len(), 2, "{problems:#?}");
    for p in &problems {
        assert!(p.contains("is not available in mxisd"), "{p}");
        assert!(!p.contains("unknown key"), "{p}");
    }
}

#[test]
fn the_unified_view_and_the_breaker_are_read_and_checked() {
    let c = load(&format!(
        "{MINIMAL}federation:\n  unifiedView:\n    server: https://fis.example.net/\n    push:\n      every: 5m\nlookup:\n  recursive:\n    breaker:\n      failures: 5\n      open: 1m\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let r = &c.lookup.recursive;
    let view = r.unified.as_ref().expect("the view is configured");
    assert_eq!(view.server, "https://fis.example.net");
    assert_eq!(view.publish_as, None);
    assert_eq!(view.push_every, Some(Duration::from_secs(300)));
    assert!(view.lookup);
    assert_eq!(
        (r.breaker_failures, r.breaker_open),
        (5, Duration::from_secs(60))
    );
    assert!(load(MINIMAL).unwrap().lookup.recursive.unified.is_none());

    let e = load(&format!(
        "{MINIMAL}federation:\n  unifiedView:\n    server: fis.example.net\n    publishAs: id.example.org\n    push:\n      every: 0s\nlookup:\n  recursive:\n    breaker:\n      failures: 0\n      open: 2h\n"
    ))
    .unwrap_err()
    .problems;
    for key in [
        "federation.unifiedView.server",
        "federation.unifiedView.publishAs",
        "federation.unifiedView.push.every",
        "lookup.recursive.breaker.failures",
        "lookup.recursive.breaker.open",
    ] {
        assert!(e.iter().any(|p| p.starts_with(key)), "{key} not in {e:#?}");
    }
    // Pushing off: no interval is checked or kept.
    let off = load(&format!(
        "{MINIMAL}federation:\n  unifiedView:\n    server: https://fis.example.net\n    publishAs: 'id.example.org:8443'\n    push:\n      enabled: false\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let view = off.lookup.recursive.unified.as_ref().unwrap();
    assert_eq!(view.push_every, None);
    assert_eq!(view.publish_as.as_deref(), Some("id.example.org:8443"));
}

#[test]
fn connection_limits_and_timeouts() {
    let c = load(MINIMAL).unwrap().server.connections;
    assert_eq!(c.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.body_timeout, Duration::from_secs(30));
    assert_eq!(c.header_timeout, Duration::from_secs(30));
    assert_eq!((c.max, c.per_address), (None, 256));
    assert_eq!(c.per_address_exempt.len(), 2);
    let c = load(&format!(
        "{MINIMAL}server:\n  connections:\n    idleTimeout: 5s\n    max: 100\n    perAddress: 4\n    perAddressExempt: [10.0.0.1]\n"
    ))
    .unwrap()
    .server
    .connections;
    assert_eq!(c.idle_timeout, Duration::from_secs(5));
    assert_eq!((c.max, c.per_address), (Some(100), 4));
    assert_eq!(c.per_address_exempt, vec!["10.0.0.1/32".parse().unwrap()]);
    let err = load(&format!(
        "{MINIMAL}server:\n  connections:\n    idleTimeout: 0s\n    max: 3\n    perAddressExempt: [nope]\n    idle: 5s\n"
    ))
    .unwrap_err()
    .to_string();
    for key in [
        "idleTimeout",
        "connections.max",
        "perAddressExempt",
        "connections.idle",
    ] {
        assert!(err.contains(key), "{key} not reported: {err}");
    }
}
