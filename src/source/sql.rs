//! SQL sources: a query over the organisation's database (`sql`), or Synapse's own
//! database (`synapseSql`), so the 3PIDs users added in Synapse become lookups.
//!
//! The query returns one row per (user, 3PID), in any order:
//! - `mxid` (a full Matrix ID) or `uid` / `localpart` (made one with `matrix.domain`);
//! - optionally `display_name`;
//! - `medium` and `address`, NULL for a user without 3PIDs.
//!
//! PostgreSQL, MySQL/MariaDB and SQLite go through sqlx's `Any` driver. A run opens
//! one connection, streams the rows and closes it; SQLite files are opened read-only.

use super::Fetched;
use crate::config::stores::{Dialect, SqlAuth, SqlSource, ThreePidSpec, UserSpec};
use futures_util::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{Column, Connection, Row};
use std::collections::BTreeMap;

fn describe(e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("the database refused: {}", db.message()),
        sqlx::Error::ColumnNotFound(c) => format!("the query returns no {c} column"),
        sqlx::Error::PoolTimedOut => "the database did not answer in time".into(),
        sqlx::Error::Io(io) => format!("cannot reach the database: {io}"),
        sqlx::Error::Tls(t) => format!("TLS with the database failed: {t}"),
        // Messages of other errors name columns and types, not values.
        other => other.to_string(),
    }
}

/// A text column, accepting integers (phone numbers are often stored as numbers).
fn text(row: &AnyRow, column: &str) -> Result<Option<String>, String> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(v) => Ok(v),
        Err(sqlx::Error::ColumnNotFound(_)) => Err(format!("the query returns no {column} column")),
        Err(_) => match row.try_get::<Option<i64>, _>(column) {
            Ok(v) => Ok(v.map(|n| n.to_string())),
            Err(_) => Err(format!(
                "the {column} column is neither text nor an integer"
            )),
        },
    }
}

/// How the query's rows are laid out.
#[derive(Clone, Copy)]
struct Layout {
    /// The column naming the user, and whether it holds Matrix IDs.
    id: &'static str,
    is_mxid: bool,
    has_name: bool,
    has_3pid: bool,
    /// A `role` column: one group or role of the user per row.
    has_role: bool,
}

impl Layout {
    fn of(row: &AnyRow) -> Result<Self, String> {
        let names: Vec<String> = row
            .columns()
            .iter()
            .map(|c| c.name().to_ascii_lowercase())
            .collect();
        let has = |n: &str| names.iter().any(|c| c == n);
        let (id, is_mxid) = if has("mxid") {
            ("mxid", true)
        } else if has("uid") {
            ("uid", false)
        } else if has("localpart") {
            ("localpart", false)
        } else {
            return Err(format!(
                "the query must return an mxid, uid or localpart column (it returns: {})",
                names.join(", ")
            ));
        };
        if has("medium") != has("address") {
            return Err(
                "the query returns medium without address, or address without medium".into(),
            );
        }
        Ok(Self {
            id,
            is_mxid,
            has_name: has("display_name"),
            has_3pid: has("medium"),
            has_role: has("role"),
        })
    }
}

pub async fn fetch(source: &SqlSource) -> Result<Fetched, String> {
    sqlx::any::install_default_drivers();
    match tokio::time::timeout(source.timeout, read(source)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the database did not answer within {} s",
            source.timeout.as_secs()
        )),
    }
}

/// Checks `password` against the hash `auth.query` returns for the user: `Ok(false)`
/// when there is no such user, no hash, or another password. Every row's hash is
/// tried (a user listed twice). Errors say why the database could not be asked.
pub async fn authenticate(
    source: &SqlSource,
    auth: &SqlAuth,
    mxid: &str,
    localpart: &str,
    password: &str,
    timeout: std::time::Duration,
) -> Result<bool, String> {
    sqlx::any::install_default_drivers();
    let user = if auth.by_mxid { mxid } else { localpart };
    let hashes = tokio::time::timeout(timeout, async {
        let mut conn = connect(source).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(auth.query.clone()))
            .bind(user.to_owned())
            .fetch_all(&mut conn)
            .await
            .map_err(|e| format!("the password query failed: {}", describe(e)))?;
        let _ = conn.close().await;
        let mut hashes = Vec::new();
        for row in rows.iter().take(16) {
            let hash: Option<String> = row
                .try_get(0)
                .map_err(|e| format!("the password query's first column is not text: {e}"))?;
            hashes.extend(hash.filter(|h| !h.is_empty()));
        }
        Ok::<_, String>(hashes)
    })
    .await
    .map_err(|_| format!("the database did not answer within {} s", timeout.as_secs()))??;
    if hashes.is_empty() {
        return Ok(false);
    }
    let mut candidate = if auth.normalize {
        use unicode_normalization::UnicodeNormalization;
        password.nfkc().collect::<String>()
    } else {
        password.to_owned()
    };
    if let Some(pepper) = &auth.pepper {
        candidate.push_str(pepper.expose());
    }
    tokio::task::spawn_blocking(move || {
        for hash in &hashes {
            if verify_hash(hash, &candidate)? {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .map_err(|e| format!("checking a hash: {e}"))?
}

/// Whether `password` matches `hash`: bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`) or argon2
/// (PHC string). Another kind of value is an error: it is never compared as it is.
pub fn verify_hash(hash: &str, password: &str) -> Result<bool, String> {
    if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        // bcrypt reads 72 bytes at most (Synapse cuts longer ones the same way).
        let bytes = password.as_bytes();
        let bytes = &bytes[..bytes.len().min(72)];
        return bcrypt::verify(bytes, hash)
            .map_err(|e| format!("a stored bcrypt hash is not valid: {e}"));
    }
    if hash.starts_with("$argon2") {
        return crate::source::verify_argon2(hash, password);
    }
    Err("a stored password is neither a bcrypt nor an argon2 hash; it is not compared".into())
}

/// The URL with the database server's host name replaced by each of its addresses,
/// resolved by [`crate::dns`]: sqlx would resolve it with getaddrinfo. Empty when the URL
/// is used as it is: SQLite, an address or a socket already, or TLS that verifies the
/// host name (PostgreSQL `sslmode=verify-full`, MySQL `ssl-mode=VERIFY_IDENTITY`), for
/// which sqlx needs the name itself.
async fn pinned_urls(dialect: Dialect, url: &str) -> Result<Vec<String>, String> {
    if dialect == Dialect::Sqlite {
        return Ok(Vec::new());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(Vec::new());
    };
    // `url` leaves the host of these (non-special) schemes unparsed: an IPv4 address
    // comes back as a domain.
    let Some(url::Host::Domain(host)) = parsed.host() else {
        return Ok(Vec::new());
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(Vec::new());
    }
    let mut verifies_name = dialect == Dialect::Postgres
        && std::env::var("PGSSLMODE").is_ok_and(|m| m.eq_ignore_ascii_case("verify-full"));
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "host" | "hostaddr" | "socket" => return Ok(Vec::new()),
            "sslmode" | "ssl-mode" => {
                verifies_name = value.eq_ignore_ascii_case("verify-full")
                    || value.eq_ignore_ascii_case("verify_identity")
            }
            _ => {}
        }
    }
    if verifies_name {
        return Ok(Vec::new());
    }
    let resolver = crate::dns::resolver()?;
    let addrs = crate::dns::lookup(&resolver, host, 0)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut urls = Vec::new();
    for addr in addrs {
        let mut pinned = parsed.clone();
        match (dialect, addr.ip()) {
            // sqlx passes a bracketed IPv6 host to the system resolver; PostgreSQL's
            // `host` parameter takes it bare.
            (Dialect::Postgres, ip) => {
                pinned
                    .query_pairs_mut()
                    .append_pair("host", &ip.to_string());
            }
            (_, std::net::IpAddr::V4(ip)) => {
                if pinned.set_ip_host(ip.into()).is_err() {
                    continue;
                }
            }
            (_, std::net::IpAddr::V6(_)) => continue,
        }
        urls.push(pinned.to_string());
    }
    Ok(urls)
}

/// One connection: to each address of the server in turn while the connection itself
/// fails, or with the URL as it is (see [`pinned_urls`]).
async fn connect(source: &SqlSource) -> Result<sqlx::AnyConnection, String> {
    let urls = pinned_urls(source.dialect, source.url.expose()).await?;
    if urls.is_empty() {
        return sqlx::AnyConnection::connect(source.url.expose())
            .await
            .map_err(|e| format!("cannot connect: {}", describe(e)));
    }
    let mut last = None;
    for url in &urls {
        match sqlx::AnyConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(sqlx::Error::Io(e)) => last = Some(e),
            Err(e) => return Err(format!("cannot connect: {}", describe(e))),
        }
    }
    Err(match last {
        Some(e) => format!("cannot connect: {}", describe(sqlx::Error::Io(e))),
        None => "cannot connect: the server has no address".into(),
    })
}

async fn read(source: &SqlSource) -> Result<Fetched, String> {
    let mut conn = connect(source).await?;
    let mut users: BTreeMap<String, UserSpec> = BTreeMap::new();
    let mut layout: Option<Layout> = None;
    let mut rows = 0u64;
    let mut fetched = Fetched::default();
    {
        let mut stream = sqlx::query(sqlx::AssertSqlSafe(source.query.clone())).fetch(&mut conn);
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| format!("the query failed: {}", describe(e)))?
        {
            rows += 1;
            if rows > source.max_rows {
                return Err(format!(
                    "the query returns more than {} rows (sync.maxRows)",
                    source.max_rows
                ));
            }
            let layout = match layout {
                Some(l) => l,
                None => *layout.insert(Layout::of(&row)?),
            };
            let Some(id) = text(&row, layout.id)? else {
                fetched.skipped += 1;
                if fetched.problems.len() < crate::model::MAX_PROBLEMS {
                    fetched
                        .problems
                        .push(format!("row {rows}: the {} column is NULL", layout.id));
                }
                continue;
            };
            let username = if layout.is_mxid {
                id.trim().to_owned()
            } else {
                format!("@{}:{}", id.trim(), source.domain)
            };
            let user = users.entry(username.clone()).or_insert_with(|| UserSpec {
                username,
                display_name: None,
                threepids: Vec::new(),
                roles: Vec::new(),
                attributes: Default::default(),
                password: None,
            });
            if layout.has_name && user.display_name.is_none() {
                user.display_name = text(&row, "display_name")?;
            }
            if layout.has_role {
                if let Some(role) = text(&row, "role")?.filter(|r| !r.trim().is_empty()) {
                    if !user.roles.contains(&role) {
                        user.roles.push(role);
                    }
                }
            }
            if layout.has_3pid {
                if let (Some(medium), Some(address)) =
                    (text(&row, "medium")?, text(&row, "address")?)
                {
                    user.threepids.push(ThreePidSpec { medium, address });
                }
            }
        }
    }
    let _ = conn.close().await;
    fetched.users = users.into_values().collect();
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stores::connection_url;
    use std::path::Path;

    #[tokio::test]
    async fn server_names_are_resolved_here_unless_tls_needs_them() {
        // Used as they are: SQLite, addresses, sockets, TLS that verifies the name.
        for (dialect, url) in [
            (Dialect::Sqlite, "sqlite:///tmp/x.db?mode=ro"),
            (Dialect::Postgres, "postgres://u:p@127.0.0.1:5432/db"),
            (
                Dialect::Postgres,
                "postgres://u:p@localhost/db?host=/run/postgresql",
            ),
            (
                Dialect::Postgres,
                "postgres://u:p@localhost/db?sslmode=verify-full",
            ),
            (
                Dialect::MySql,
                "mysql://u:p@localhost/db?ssl-mode=VERIFY_IDENTITY",
            ),
        ] {
            assert!(pinned_urls(dialect, url).await.unwrap().is_empty(), "{url}");
        }
        let pg = pinned_urls(
            Dialect::Postgres,
            "postgres://u:p@localhost:5433/db?sslmode=require",
        )
        .await
        .unwrap();
        assert!(!pg.is_empty());
        for url in &pg {
            let parsed = url::Url::parse(url).unwrap();
            assert_eq!(parsed.port(), Some(5433), "{url}");
            let host = parsed
                .query_pairs()
                .find(|(k, _)| k == "host")
                .map(|(_, v)| v.parse::<std::net::IpAddr>().unwrap())
                .unwrap();
            assert!(host.is_loopback(), "{url}");
        }
        let my = pinned_urls(Dialect::MySql, "mysql://u:p@localhost/db")
            .await
            .unwrap();
        assert_eq!(my, vec!["mysql://u:p@127.0.0.1/db".to_owned()]);
    }

    #[test]
    fn ma1sd_connections_become_sqlx_urls() {
        let dir = Path::new("/etc/mxisd");
        let (d, u) = connection_url(
            "postgresql",
            "//db.example.org:5433/synapse?user=syn&password=p%40ss&sslmode=require",
            dir,
        )
        .unwrap();
        assert_eq!(d, Dialect::Postgres);
        assert_eq!(
            u,
            "postgres://syn:p%40ss@db.example.org:5433/synapse?sslmode=require"
        );
        let (_, u) = connection_url("postgresql", "postgres://a@h/db", dir).unwrap();
        assert_eq!(u, "postgres://a@h/db");
        let (d, u) = connection_url("mariadb", "//h/db?user=u", dir).unwrap();
        assert_eq!((d, u.as_str()), (Dialect::MySql, "mysql://u@h/db"));
        let (d, u) = connection_url("sqlite", "synapse/homeserver.db", dir).unwrap();
        assert_eq!(d, Dialect::Sqlite);
        assert_eq!(u, "sqlite:///etc/mxisd/synapse/homeserver.db?mode=ro");
        let (_, u) = connection_url("sqlite", "/var/lib/s.db", dir).unwrap();
        assert_eq!(u, "sqlite:///var/lib/s.db?mode=ro");
        assert!(connection_url("oracle", "//h/db", dir).is_err());
        assert!(connection_url("postgresql", "h/db", dir).is_err());
        assert!(connection_url("postgresql", "mysql://h/db", dir).is_err());
        assert!(connection_url("sqlite", "", dir).is_err());
    }
}
