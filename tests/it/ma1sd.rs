//! `mxisd import-ma1sd` against fixtures in ma1sd's real formats, made here: its YAML,
//! its key store (`current` with the Java enum name `Regular`, `regular/` and
//! `ephemeral/` key files, or mxisd's pre-1.4 single key file), and its ORMLite tables
//! in SQLite and in a real PostgreSQL. The real binary imports, `check-config` reads
//! the output, and the real server then serves ma1sd's key, invites and terms.

use crate::cli::{mxisd, text, Running};
use crate::common::{pg::Postgres, FakeHomeserver, Userinfo};
use mxisd::crypto::b64_encode;
use serde_json::{json, Value};
use sqlx::{ConnectOptions as _, Executor as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

const SERIAL: &str = "AAAAAWTg4ZMq";
const EPHEMERAL_SERIAL: &str = "AAAAAWTg4ZNx";
const SEED: [u8; 32] = [11; 32];
const EPHEMERAL_SEED: [u8; 32] = [22; 32];
const TOS: &str = "https://example.org/tos-1.0.html";

fn public(seed: &[u8; 32]) -> String {
    b64_encode(
        ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .as_bytes(),
    )
}

fn key_json(seed: &[u8; 32]) -> String {
    format!(
        r#"{{"version":"0","isValid":true,"key":"{}"}}"#,
        b64_encode(seed)
    )
}

/// ma1sd's key store as FileKeyStore writes it.
fn write_keystore(dir: &Path, seed: &[u8; 32]) {
    std::fs::create_dir_all(dir.join("regular/ed25519")).unwrap();
    std::fs::create_dir_all(dir.join("ephemeral/ed25519")).unwrap();
    std::fs::write(dir.join("regular/ed25519").join(SERIAL), key_json(seed)).unwrap();
    std::fs::write(
        dir.join("ephemeral/ed25519").join(EPHEMERAL_SERIAL),
        key_json(&EPHEMERAL_SEED),
    )
    .unwrap();
    // A resolved invite's key, left behind.
    std::fs::write(
        dir.join("ephemeral/ed25519/AAAAAWTg4ZAa"),
        key_json(&[33; 32]),
    )
    .unwrap();
    std::fs::write(
        dir.join("current"),
        format!(r#"{{"type":"Regular","algo":"ed25519","serial":"{SERIAL}"}}"#),
    )
    .unwrap();
}

fn now_ms() -> u64 {
    crate::common::now_ms()
}

/// `properties` of an invite as ma1sd stores them (a JSON map of strings).
fn properties(created_ms: u64) -> String {
    json!({
        "created_at": created_ms.to_string(),
        "p_key_algo": "ed25519", "p_key_serial": SERIAL, "p_key_public": public(&SEED),
        "e_key_algo": "ed25519", "e_key_serial": EPHEMERAL_SERIAL,
        "e_key_public": public(&EPHEMERAL_SEED),
        "room_name": "Project room", "sender_display_name": "Alice",
    })
    .to_string()
}

/// The rows both databases get: one pending invite, one expired, terms of alice, and
/// rows of tables that are left behind.
fn rows_sql() -> String {
    let fresh = properties(now_ms() - 3_600_000).replace('\'', "''");
    let old = properties(now_ms() - 8 * 86_400_000).replace('\'', "''");
    format!(
        "INSERT INTO invite_3pid VALUES ('ZXhhbXBsZS5vcmdlbWFpbGJvYkBleGFtcGxlLmNvbQ', 'tokpending', '@alice:example.org', 'email', 'bob@example.com', '!room:example.org', '{fresh}');\n\
         INSERT INTO invite_3pid VALUES ('b2xk', 'tokexpired', '@alice:example.org', 'email', 'old@example.com', '!room:example.org', '{old}');\n\
         INSERT INTO accepted VALUES ('{TOS}', '@alice:example.org', 1600000000000);\n\
         INSERT INTO hashes VALUES ('@alice:example.org', 'email', 'alice@example.org', 'somehash');\n\
         INSERT INTO account VALUES ('istoken', 'openid', 'Bearer', 'example.org', 3600, 1600000000, '@alice:example.org');\n"
    )
}

/// ORMLite's SQLite DDL for ma1sd's tables (backquoted camelCase columns).
const SQLITE_DDL: &[&str] = &[
    "CREATE TABLE `changelog` (`id` VARCHAR , `createdAt` TIMESTAMP , `comment` VARCHAR , PRIMARY KEY (`id`) )",
    "CREATE TABLE `invite_3pid` (`id` VARCHAR , `token` VARCHAR NOT NULL , `sender` VARCHAR NOT NULL , `medium` VARCHAR NOT NULL , `address` VARCHAR NOT NULL , `roomId` VARCHAR NOT NULL , `properties` VARCHAR , PRIMARY KEY (`id`) )",
    "CREATE TABLE `invite_3pid_history` (`id` VARCHAR , `token` VARCHAR NOT NULL , `sender` VARCHAR NOT NULL , `medium` VARCHAR NOT NULL , `address` VARCHAR NOT NULL , `roomId` VARCHAR NOT NULL , `properties` VARCHAR , `resolvedTo` VARCHAR , `resolvedAt` BIGINT , `couldPublish` BOOLEAN , `publishAttempts` BIGINT , PRIMARY KEY (`id`) )",
    "CREATE TABLE `session_3pid` (`id` VARCHAR , `creationTime` BIGINT , `server` VARCHAR , `medium` VARCHAR , `address` VARCHAR , `secret` VARCHAR , `attempt` INTEGER , `nextLink` VARCHAR , `token` VARCHAR , `validated` BOOLEAN , `validationTime` BIGINT , PRIMARY KEY (`id`) )",
    "CREATE TABLE `account` (`token` VARCHAR NOT NULL , `accessToken` VARCHAR NOT NULL , `tokenType` VARCHAR NOT NULL , `matrixServerName` VARCHAR NOT NULL , `expiresIn` BIGINT NOT NULL , `createdAt` BIGINT NOT NULL , `userId` VARCHAR NOT NULL , PRIMARY KEY (`token`) )",
    "CREATE TABLE `accepted` (`url` VARCHAR NOT NULL , `userId` VARCHAR NOT NULL , `acceptedAt` BIGINT NOT NULL )",
    "CREATE TABLE `hashes` (`mxid` VARCHAR NOT NULL , `medium` VARCHAR NOT NULL , `address` VARCHAR NOT NULL , `hash` VARCHAR NOT NULL )",
];

/// ORMLite's PostgreSQL DDL after ma1sd's migrations (quoted camelCase, text columns).
const PG_DDL: &str = r#"
CREATE TABLE "changelog" ("id" VARCHAR(255), "createdAt" TIMESTAMP, "comment" VARCHAR(255), PRIMARY KEY ("id"));
CREATE TABLE "invite_3pid" ("id" TEXT, "token" TEXT NOT NULL, "sender" TEXT NOT NULL, "medium" TEXT NOT NULL, "address" TEXT NOT NULL, "roomId" TEXT NOT NULL, "properties" TEXT, PRIMARY KEY ("id"));
CREATE TABLE "account" ("token" VARCHAR(255) NOT NULL, "accessToken" VARCHAR(255) NOT NULL, "tokenType" VARCHAR(255) NOT NULL, "matrixServerName" VARCHAR(255) NOT NULL, "expiresIn" BIGINT NOT NULL, "createdAt" BIGINT NOT NULL, "userId" VARCHAR(255) NOT NULL, PRIMARY KEY ("token"));
CREATE TABLE "accepted" ("url" VARCHAR(255) NOT NULL, "userId" VARCHAR(255) NOT NULL, "acceptedAt" BIGINT NOT NULL);
CREATE TABLE "hashes" ("mxid" VARCHAR(255) NOT NULL, "medium" VARCHAR(255) NOT NULL, "address" VARCHAR(255) NOT NULL, "hash" VARCHAR(255) NOT NULL);
INSERT INTO "changelog" VALUES ('2020_04_21__2338__change_type_table_invites', now(), 'Modify column type to text.');
"#;

async fn make_sqlite(path: &Path) {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    for ddl in SQLITE_DDL {
        conn.execute(*ddl).await.unwrap();
    }
    for stmt in rows_sql().lines() {
        conn.execute(sqlx::AssertSqlSafe(stmt.to_owned()))
            .await
            .unwrap();
    }
}

/// ma1sd's YAML, with the parts that differ per test.
fn ma1sd_yaml(storage: &str, hs_url: &str) -> String {
    format!(
        "matrix:\n  domain: example.org\n  v2: true\n\
         server:\n  name: id.example.org\n  hostname: 127.0.0.1\n  port: 8090\n\
         key:\n  path: keys\n\
         {storage}\
         logging:\n  root: info\n  requests: false\n\
         hashing:\n  enabled: true\n  pepperLength: 20\n  rotationPolicy: per_requests\n  requests: 10\n  hashStorageType: sql\n  algorithms: [none, sha256]\n\
         policy:\n  policies:\n    tos:\n      version: '1.0'\n      terms:\n        en:\n          name: Terms\n          url: {TOS}\n      regexp:\n        - '/_matrix/identity/v2/account.*'\n        - '/_matrix/identity/v2/hash_details'\n\
         invite:\n  expiration:\n    enabled: true\n    after: 10080\n\
         appsvc:\n  enabled: false\n\
         internal:\n  enabled: true\n\
         dns:\n  overwrite:\n    homeserver:\n      federation:\n        - name: example.org\n          value: {hs_url}\n"
    )
}

const SQLITE_STORAGE: &str =
    "storage:\n  backend: sqlite\n  provider:\n    sqlite:\n      database: store.db\n";

fn import(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "import-ma1sd",
        "-c",
        "ma1sd/ma1sd.yaml",
        "-o",
        "out/mxisd.yaml",
        "--storage",
        "state",
    ];
    args.extend_from_slice(extra);
    let o = mxisd(dir, &args);
    let (out, err) = text(&o);
    // Neither seeds nor whole 3PID addresses nor passwords are ever printed.
    for secret in [
        b64_encode(&SEED),
        b64_encode(&EPHEMERAL_SEED),
        "bob@example.com".into(),
        "pgs3cret".into(),
    ] {
        assert!(
            !out.contains(&secret) && !err.contains(&secret),
            "{secret} printed:\n{out}\n{err}"
        );
    }
    (o.status.success(), out, err)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A ma1sd installation in `dir/ma1sd` (config, key store; the database is the
/// caller's).
fn ma1sd_dir(dir: &Path, storage: &str, hs_url: &str) -> PathBuf {
    let m = dir.join("ma1sd");
    std::fs::create_dir_all(&m).unwrap();
    write_keystore(&m.join("keys"), &SEED);
    std::fs::write(m.join("ma1sd.yaml"), ma1sd_yaml(storage, hs_url)).unwrap();
    m
}

/// Starts the imported server and checks, over HTTP, that it serves ma1sd's key, the
/// pending invite (and its ephemeral key) and alice's accepted terms.
async fn check_served(dir: &Path, hs: &FakeHomeserver) {
    crate::common::init();
    let server = Running::start(dir, &["run", "-c", "out/mxisd.yaml"]);
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let (status, body) = get(format!(
        "{base}/_matrix/identity/v2/pubkey/ed25519:{SERIAL}"
    ))
    .await;
    assert_eq!((status, body), (200, json!({"public_key": public(&SEED)})));
    let (status, _) = get(format!("{base}/_matrix/identity/v2/pubkey/ed25519:0")).await;
    assert_eq!(status, 404);

    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("public_key", &public(&EPHEMERAL_SEED))
        .finish();
    let (_, body) = get(format!(
        "{base}/_matrix/identity/v2/pubkey/ephemeral/isvalid?{query}"
    ))
    .await;
    assert_eq!(body, json!({"valid": true}));

    let socket = dir.join("state/admin.sock");
    let (status, body) = crate::common::raw_unix(
        &socket,
        "GET /_mxisd/admin/v1/invites HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let invites = body["invites"].as_array().unwrap();
    assert_eq!(invites.len(), 1, "{body}");
    assert_eq!(invites[0]["token"], "tokpending");
    assert_eq!(invites[0]["address"], "bob@example.com");
    assert_eq!(invites[0]["room_id"], "!room:example.org");
    assert_eq!(invites[0]["sender"], "@alice:example.org");
    assert_eq!(invites[0]["details"]["room_name"], "Project room");

    // The invitee's client signs with the ephemeral key from ma1sd's mail (v1: no
    // account needed).
    let r = client
        .post(format!("{base}/_matrix/identity/api/v1/sign-ed25519"))
        .json(&json!({"mxid": "@bob:example.com", "token": "tokpending",
            "private_key": b64_encode(&EPHEMERAL_SEED)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let signed: Value = r.json().await.unwrap();
    assert_eq!(signed["sender"], "@alice:example.org");
    assert!(
        signed["signatures"]["id.example.org"].is_object(),
        "{signed}"
    );

    // Alice accepted the terms on ma1sd: her gated calls go through; bob's do not.
    let register = |openid: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client
                .post(format!("{base}/_matrix/identity/v2/account/register"))
                .json(&json!({"access_token": openid, "token_type": "Bearer",
                    "matrix_server_name": "example.org", "expires_in": 3600}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let hash_details = |token: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client
                .get(format!("{base}/_matrix/identity/v2/hash_details"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = hash_details(register("alice").await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["algorithms"]
        .as_array()
        .unwrap()
        .contains(&json!("sha256")));
    let (status, body) = hash_details(register("bob").await).await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (403, json!("M_TERMS_NOT_SIGNED"))
    );
    assert!(hs.hits() >= 2);
    drop(server);
}

async fn alice_and_bob() -> FakeHomeserver {
    FakeHomeserver::start(vec![
        ("alice", Userinfo::Sub("@alice:example.org".into())),
        ("bob", Userinfo::Sub("@bob:example.org".into())),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_installation_imports_and_serves() {
    let hs = alice_and_bob().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = ma1sd_dir(dir, SQLITE_STORAGE, &hs.url);
    make_sqlite(&m.join("store.db")).await;

    // A dry run shows everything and writes nothing.
    let (ok, out, err) = import(dir, &["--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert!(!dir.join("out").exists() && !dir.join("state").exists());
    // Its reader gone (`| head -1`), the report ends quietly.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mxisd"))
        .args([
            "import-ma1sd",
            "-c",
            "ma1sd/ma1sd.yaml",
            "-o",
            "out/mxisd.yaml",
        ])
        .args(["--storage", "state", "--dry-run"])
        .current_dir(dir)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!text(&o).1.contains("panicked"), "{}", text(&o).1);

    let (ok, out, err) = import(dir, &[]);
    assert!(ok, "{out}\n{err}");
    for expected in [
        &format!("key: ed25519:{SERIAL} (public key {})", public(&SEED)),
        "invites: 1 pending invite(s) to import",
        "skipped 1: expired",
        "terms: 1 acceptance(s) of 1 user(s)",
        "not imported: hashes (1 row(s))",
        "not imported: account (1 row(s))",
        "not carried over: 1 ephemeral key(s)",
        "dropped logging.requests",
        "dropped hashing.rotationPolicy",
        "dropped appsvc",
        "dropped internal",
        "dropped policy.policies.tos.regexp",
        "pepper: not carried over",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let output = dir.join("out/mxisd.yaml");
    assert_eq!(mode(&output), 0o640);
    let keys = dir.join("state/keys");
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join("regular/ed25519").join(SERIAL)), 0o600);
    let yaml = std::fs::read_to_string(&output).unwrap();
    assert!(
        !yaml.contains("provider") && !yaml.contains("requests"),
        "{yaml}"
    );
    // Relative paths of ma1sd's config became absolute ones.
    assert!(
        yaml.contains(&dir.join("state").display().to_string()),
        "{yaml}"
    );
    // Nothing staged is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let o = mxisd(dir, &["check-config", "-c", "out/mxisd.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = mxisd(dir, &["keys", "show", "-c", "out/mxisd.yaml"]);
    assert_eq!(
        text(&o).0.trim(),
        format!("ed25519:{SERIAL} {}", public(&SEED))
    );

    check_served(dir, &hs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_installation_imports_and_wrong_credentials_write_nothing() {
    let hs = alice_and_bob().await;
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE ROLE ma1sd LOGIN PASSWORD 'pgs3cret'; CREATE DATABASE ma1sd OWNER ma1sd;",
    );
    pg.sql(
        "ma1sd",
        &format!("SET ROLE ma1sd;\n{PG_DDL}\n{}", rows_sql()),
    );
    pg.require_passwords();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let storage = |password: &str| {
        format!(
            "storage:\n  backend: postgresql\n  provider:\n    postgresql:\n      database: //127.0.0.1:{}/ma1sd\n      username: ma1sd\n      password: {password}\n      pool: true\n",
            pg.port
        )
    };

    let m = ma1sd_dir(dir, &storage("wrong"), &hs.url);
    let (ok, out, err) = import(dir, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("storage.provider.postgresql")
            && err.contains(&format!("127.0.0.1:{}/ma1sd", pg.port))
            && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!dir.join("out").exists() && !dir.join("state").exists());

    std::fs::write(
        m.join("ma1sd.yaml"),
        ma1sd_yaml(&storage("pgs3cret"), &hs.url),
    )
    .unwrap();
    let (ok, out, err) = import(dir, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("invites: 1 pending invite(s) to import"),
        "{out}"
    );
    assert!(out.contains("terms: 1 acceptance(s) of 1 user(s)"), "{out}");
    let yaml = std::fs::read_to_string(dir.join("out/mxisd.yaml")).unwrap();
    assert!(!yaml.contains("pgs3cret"));
    check_served(dir, &hs).await;
}

#[test]
fn a_broken_installation_lists_every_problem_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("ma1sd");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("store.db"),
        "this is not an SQLite database, just text\n".repeat(200),
    )
    .unwrap();
    // No matrix.domain, wrong types, a key store that is not there, a broken database.
    std::fs::write(
        m.join("ma1sd.yaml"),
        "server:\n  port: lots\n  hostname: 127.0.0.1\nkey:\n  path: /nonexistent/ma1sd/keys\nstorage:\n  provider:\n    sqlite:\n      database: store.db\nlookup:\n  bulk:\n    enabled: maybe\n",
    )
    .unwrap();
    let (ok, out, err) = import(dir, &[]);
    assert!(!ok, "{out}");
    for expected in [
        "matrix.domain: required",
        "server.port",
        "lookup.bulk.enabled",
        "key.path /nonexistent/ma1sd/keys",
        "store.db",
        "nothing was written",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!dir.join("out").exists() && !dir.join("state").exists());

    // A corrupt key file in an otherwise good installation.
    let hs_url = "http://127.0.0.1:9";
    ma1sd_dir(dir, SQLITE_STORAGE, hs_url);
    std::fs::remove_file(m.join("store.db")).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(make_sqlite(&m.join("store.db")));
    std::fs::write(m.join("keys/regular/ed25519").join(SERIAL), "{\"key\": 12").unwrap();
    let (ok, out, err) = import(dir, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("regular/ed25519/{SERIAL}")) && err.contains("not a ma1sd key file"),
        "{err}"
    );
    assert!(!dir.join("out").exists() && !dir.join("state").exists());
}

#[test]
fn existing_output_store_and_key_are_not_overwritten_unasked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = ma1sd_dir(dir, SQLITE_STORAGE, "http://127.0.0.1:9");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(make_sqlite(&m.join("store.db")));
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/mxisd.yaml"), "# mine\n").unwrap();

    let (ok, _, err) = import(dir, &[]);
    assert!(!ok);
    assert!(err.contains("exists; pass --force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("out/mxisd.yaml")).unwrap(),
        "# mine\n"
    );
    assert!(!dir.join("state").exists());

    let (ok, out, err) = import(dir, &["--force"]);
    assert!(ok, "{out}\n{err}");

    // Again: the key is the same (fine), but the store holds data now.
    let (ok, out, err) = import(dir, &["--force"]);
    assert!(!ok, "{out}");
    assert!(out.contains("holds this key already"), "{out}");
    assert!(
        err.contains("already holds") && err.contains("--allow-existing-store"),
        "{err}"
    );
    let (ok, out, err) = import(dir, &["--force", "--allow-existing-store"]);
    assert!(ok, "{out}\n{err}");

    // Another key in ma1sd's store than in ours: refused, ours untouched.
    write_keystore(&m.join("keys"), &[44; 32]);
    let (ok, _, err) = import(dir, &["--force", "--allow-existing-store"]);
    assert!(!ok);
    assert!(err.contains("holds another key"), "{err}");
    let o = mxisd(dir, &["keys", "show", "-c", "out/mxisd.yaml"]);
    assert!(text(&o).0.contains(&public(&SEED)));
}

#[test]
fn the_pre_1_4_single_key_file_becomes_ed25519_0() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("ma1sd");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("sign.key"), format!("{}\n", b64_encode(&SEED))).unwrap();
    std::fs::write(
        m.join("ma1sd.yaml"),
        "matrix:\n  domain: example.org\nserver:\n  hostname: 127.0.0.1\nkey:\n  path: sign.key\nstorage:\n  provider:\n    sqlite:\n      database: ':memory:'\n",
    )
    .unwrap();
    let (ok, out, err) = import(dir, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("in memory (:memory:)"), "{out}");
    let o = mxisd(dir, &["keys", "show", "-c", "out/mxisd.yaml"]);
    assert_eq!(text(&o).0.trim(), format!("ed25519:0 {}", public(&SEED)));
    // ma1sd's file is read, never moved.
    assert!(m.join("sign.key").is_file());
}
