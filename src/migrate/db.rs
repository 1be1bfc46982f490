//! ma1sd's database, read-only, through sqlx: SQLite (`storage.provider.sqlite`) or
//! PostgreSQL (`storage.provider.postgresql`, JDBC `//host[:port]/db`). Tables are
//! ORMLite's, with the Java field names as columns (quoted on PostgreSQL):
//! `invite_3pid(id, token, sender, medium, address, "roomId", properties)` and
//! `accepted(url, "userId", "acceptedAt")`. The other tables are only counted, to say
//! what is left behind. Errors never carry the password.

use super::translate::DbSource;
use crate::config::reader::Secret;
use sqlx::Connection as _;
use std::time::Duration;

/// Longest wait for the database to answer one step.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One `invite_3pid` row as stored.
#[derive(Debug, Clone, Default)]
pub struct RawInvite {
    pub token: Option<String>,
    pub sender: Option<String>,
    pub medium: Option<String>,
    pub address: Option<String>,
    pub room_id: Option<String>,
    /// A JSON object of strings.
    pub properties: Option<String>,
}

/// What was read.
#[derive(Debug, Default)]
pub struct Data {
    pub invites: Vec<RawInvite>,
    /// (user ID, URL) rows of `accepted`; `None` when the table does not exist (mxisd
    /// 1.x had no terms).
    pub accepted: Option<Vec<(Option<String>, Option<String>)>>,
    /// Rows of the tables left behind, by table (absent tables are left out).
    pub left_behind: Vec<(&'static str, i64)>,
}

/// ma1sd tables not imported, with the query counting their rows.
const LEFT_BEHIND: &[(&str, &str)] = &[
    ("hashes", "SELECT count(*) FROM hashes"),
    ("account", "SELECT count(*) FROM account"),
    ("session_3pid", "SELECT count(*) FROM session_3pid"),
    (
        "invite_3pid_history",
        "SELECT count(*) FROM invite_3pid_history",
    ),
    ("as_txn", "SELECT count(*) FROM as_txn"),
];

/// PostgreSQL connection settings from ma1sd's JDBC form.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ssl: Option<sqlx::postgres::PgSslMode>,
}

impl PgTarget {
    /// `host:port/db` (no credentials), for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

/// Parses `storage.provider.postgresql.database` as the PostgreSQL JDBC driver reads
/// it after `jdbc:postgresql:` (`//host[:port]/db[?k=v&...]`, or a bare database
/// name on localhost); `user`/`password` in the query count when the dedicated keys
/// are absent.
pub fn pg_target(
    database: &str,
    username: Option<String>,
    password: Option<Secret>,
) -> Result<PgTarget, String> {
    let text = database.trim();
    let text = text.strip_prefix("jdbc:postgresql:").unwrap_or(text);
    let rest = match text.strip_prefix("//") {
        Some(rest) => rest.to_owned(),
        None if !text.is_empty() && !text.contains('/') && !text.contains(':') => {
            format!("localhost/{text}")
        }
        None => {
            return Err(format!(
                "{text:?} is not //host[:port]/database (JDBC form, as ma1sd reads it)"
            ))
        }
    };
    let url = url::Url::parse(&format!("postgres://{rest}"))
        .map_err(|e| format!("not //host[:port]/database: {e}"))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("no host in //host[:port]/database")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let db = url.path().trim_start_matches('/');
    if db.is_empty() {
        return Err("no database name in //host[:port]/database".into());
    }
    let db = percent_encoding::percent_decode_str(db)
        .decode_utf8_lossy()
        .into_owned();
    let mut target = PgTarget {
        host,
        port: url.port().unwrap_or(5432),
        database: db,
        username,
        password,
        ssl: None,
    };
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "user" if target.username.is_none() => target.username = Some(v.into_owned()),
            "password" if target.password.is_none() => {
                target.password = Some(Secret::new(v.into_owned()))
            }
            "ssl" if v == "true" => target.ssl = Some(sqlx::postgres::PgSslMode::Require),
            "sslmode" => {
                target.ssl = Some(
                    v.parse()
                        .map_err(|_| format!("sslmode={v} is not a PostgreSQL SSL mode"))?,
                )
            }
            _ => {}
        }
    }
    Ok(target)
}

/// Where to read from.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(PgTarget),
}

impl Target {
    pub fn from_source(source: &DbSource) -> Result<Option<Self>, String> {
        Ok(match source {
            DbSource::Memory => None,
            DbSource::Sqlite(p) => Some(Self::Sqlite(p.clone())),
            DbSource::Postgres {
                database,
                username,
                password,
            } => Some(Self::Postgres(pg_target(
                database,
                username.clone(),
                password.clone(),
            )?)),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("SQLite database {}", p.display()),
            Self::Postgres(t) => format!("PostgreSQL database {}", t.describe()),
        }
    }
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => format!("cannot reach it: {io}"),
        sqlx::Error::Tls(t) => format!("TLS failed: {t}"),
        other => other.to_string(),
    }
}

async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", describe(&e))),
        Err(_) => Err(format!("{what}: no answer within {}s", TIMEOUT.as_secs())),
    }
}

type InviteRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn invite_of(r: InviteRow) -> RawInvite {
    RawInvite {
        token: r.0,
        sender: r.1,
        medium: r.2,
        address: r.3,
        room_id: r.4,
        properties: r.5,
    }
}

const INVITES_SQL: &str =
    r#"SELECT "token", "sender", "medium", "address", "roomId", "properties" FROM invite_3pid"#;
const ACCEPTED_SQL: &str = r#"SELECT "userId", "url" FROM accepted"#;

/// What both databases do once connected: the same queries on either connection type.
/// `$key` names the config key of the database, for the error message.
macro_rules! read_tables {
    ($conn:ident, $exists:ident, $name:ident, $key:literal) => {{
        let mut data = Data::default();
        if timed(&$name, $exists("invite_3pid").fetch_one(&mut $conn)).await? == 0 {
            return Err(format!(
                "{} has no invite_3pid table: is it ma1sd's ({})?",
                $name, $key
            ));
        }
        let rows: Vec<InviteRow> = timed(
            &format!("{}, table invite_3pid", $name),
            sqlx::query_as(INVITES_SQL).fetch_all(&mut $conn),
        )
        .await?;
        data.invites = rows.into_iter().map(invite_of).collect();
        if timed(&$name, $exists("accepted").fetch_one(&mut $conn)).await? > 0 {
            data.accepted = Some(
                timed(
                    &format!("{}, table accepted", $name),
                    sqlx::query_as(ACCEPTED_SQL).fetch_all(&mut $conn),
                )
                .await?,
            );
        }
        for (table, count) in LEFT_BEHIND {
            if timed(&$name, $exists(table).fetch_one(&mut $conn)).await? > 0 {
                let n: i64 =
                    timed(&$name, sqlx::query_scalar(*count).fetch_one(&mut $conn)).await?;
                data.left_behind.push((table, n));
            }
        }
        let _ = $conn.close().await;
        Ok(data)
    }};
}

/// Reads everything the import needs. `Err` is one line naming the database.
pub async fn read(target: &Target) -> Result<Data, String> {
    let name = target.describe();
    match target {
        Target::Sqlite(path) => {
            if !path.is_file() {
                return Err(format!(
                    "storage.provider.sqlite.database {}: no such file",
                    path.display()
                ));
            }
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .create_if_missing(false);
            let mut conn = timed(&name, sqlx::SqliteConnection::connect_with(&options)).await?;
            let exists = |table: &'static str| {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                )
                .bind(table)
            };
            read_tables!(conn, exists, name, "storage.provider.sqlite.database")
        }
        Target::Postgres(t) => {
            let mut options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
                .host(&t.host)
                .port(t.port)
                .database(&t.database);
            if let Some(u) = &t.username {
                options = options.username(u);
            }
            if let Some(p) = &t.password {
                options = options.password(p.expose());
            }
            if let Some(mode) = t.ssl {
                options = options.ssl_mode(mode);
            }
            let who = t.username.as_deref().unwrap_or("(default user)");
            let mut conn = timed(
                &format!("{name} as {who}"),
                sqlx::PgConnection::connect_with(&options),
            )
            .await
            .map_err(|e| format!("storage.provider.postgresql: {e}"))?;
            let exists = |table: &'static str| {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = $1",
                )
                .bind(table)
            };
            read_tables!(conn, exists, name, "storage.provider.postgresql.database")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_forms() {
        let t = pg_target("//db.local:5433/ma1sd", Some("u".into()), None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.database.as_str()),
            ("db.local", 5433, "ma1sd")
        );
        assert_eq!(t.username.as_deref(), Some("u"));
        let t = pg_target(
            "jdbc:postgresql://h/d?user=a&password=b&sslmode=require",
            None,
            None,
        )
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h", 5432));
        assert_eq!(t.username.as_deref(), Some("a"));
        assert_eq!(t.password.unwrap().expose(), "b");
        assert!(matches!(t.ssl, Some(sqlx::postgres::PgSslMode::Require)));
        let t = pg_target("ma1sd", None, None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.database.as_str()),
            ("localhost", "ma1sd")
        );
        // The dedicated keys win over the query.
        let t = pg_target("//h/d?user=a", Some("b".into()), None).unwrap();
        assert_eq!(t.username.as_deref(), Some("b"));
        assert!(pg_target("//h/", None, None).is_err());
        assert!(pg_target("http://h/d", None, None).is_err());
        assert!(pg_target("//h/d?sslmode=bogus", None, None).is_err());
        assert_eq!(
            pg_target("//[::1]:6000/x", None, None).unwrap().describe(),
            "::1:6000/x"
        );
    }
}
