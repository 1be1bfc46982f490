//! The admin listener's API (loopback by default, no CORS, local Host only): what the
//! CLI verbs of a running server call. Status, bindings, pepper rotation.

use crate::error::Error;
use crate::http::reply::respond;
use crate::service::Services;
use crate::service::{bindings, hashing, health, invite};
use bytes::Buf;
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use warp::reply::Response;
use warp::Reply as _;

/// `GET /_mxisd/admin/v1/status` (also `GET /status` on this listener): every part of
/// the server and what needs attention; 503 when the store fails.
pub async fn status(state: Services) -> Result<Response, Infallible> {
    let report = tokio::task::spawn_blocking(move || health::admin_status(&state)).await;
    Ok(match report {
        Ok(report) => {
            let code = if report.serving {
                http::StatusCode::OK
            } else {
                http::StatusCode::SERVICE_UNAVAILABLE
            };
            crate::http::reply::json_response(code, &report)
        }
        Err(e) => crate::http::reply::error_response(&Error::internal("reading the status", e)),
    })
}

/// `GET /metrics`: Prometheus' text format.
pub async fn metrics(state: Services) -> Result<Response, Infallible> {
    let text = tokio::task::spawn_blocking(move || health::metrics_text(&state)).await;
    Ok(match text {
        Ok(text) => {
            let mut response = Response::new(text.into());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(e) => crate::http::reply::error_response(&Error::internal("rendering metrics", e)),
    })
}

#[derive(Debug, Deserialize)]
pub struct BindingBody {
    pub medium: String,
    pub address: String,
    #[serde(default)]
    pub mxid: Option<String>,
}

/// `POST /_mxisd/admin/v1/bindings` `{medium, address, mxid}`
pub async fn bindings_add(
    body: Result<BindingBody, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(b) => match b.mxid.as_deref() {
            Some(mxid) => bindings::add(&state, &b.medium, &b.address, mxid).await,
            None => Err(Error::missing_params(&["mxid"])),
        },
        Err(e) => Err(e),
    };
    respond(result)
}

/// `POST /_mxisd/admin/v1/bindings/remove` `{medium, address}`
pub async fn bindings_remove(
    body: Result<BindingBody, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(b) => bindings::remove(&state, &b.medium, &b.address).await,
        Err(e) => Err(e),
    };
    respond(result)
}

/// `GET /_mxisd/admin/v1/bindings?medium=&address=`
pub async fn bindings_show(
    query: HashMap<String, String>,
    state: Services,
) -> Result<Response, Infallible> {
    respond(match (query.get("medium"), query.get("address")) {
        (Some(m), Some(a)) => bindings::show(&state, m, a),
        _ => Err(Error::missing_params(&["medium", "address"])),
    })
}

/// `POST /_mxisd/admin/v1/bindings/import`: a body of `medium<TAB>address<TAB>mxid`
/// lines (`text/tab-separated-values`), read as a stream (any size) and applied in
/// batches; or (`application/json`) an array of `{medium, address, mxid}` objects of at
/// most [`MAX_JSON_IMPORT`] bytes.
pub async fn bindings_import<S, B>(
    content_type: Option<String>,
    body: S,
    state: Services,
) -> Result<Response, Infallible>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let json = content_type.is_some_and(|t| crate::http::body::is_json_type(&t));
    if json {
        return respond(import_json(body, &state).await);
    }
    // Streamed as it comes: each piece must come within the body timeout.
    let time = state.config().server.connections.body_timeout;
    let mut body = std::pin::pin!(crate::http::body::progressing(body, time));
    let result = import_stream(body.as_mut(), &state).await;
    if result.is_ok() {
        return respond(result);
    }
    // Refused halfway (a bad line, a full disk): the client is still sending. Read the
    // rest so it sees the answer, and close the connection when that is too much
    // (hyper would close it anyway, racing the client's next request on it).
    let ended = crate::http::body::drain(body).await;
    let mut response = respond(result)?;
    if !ended {
        response.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// The largest JSON import body (a TSV import streams and has no limit).
pub const MAX_JSON_IMPORT: u64 = 64 << 20;

async fn import_json<S, B>(body: S, state: &Services) -> Result<bindings::ImportReport, Error>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let limit = crate::http::body::Limit {
        size: MAX_JSON_IMPORT,
        ..crate::http::body::Limit::of(&state.config().server)
    };
    let bytes = crate::http::body::read(None, body, limit).await?;
    let entries: Vec<BindingBody> = serde_json::from_slice(&bytes).map_err(|e| {
        Error::bad_json(format!(
            "a JSON import is an array of {{\"medium\", \"address\", \"mxid\"}} objects: {e}"
        ))
    })?;
    let mut import = bindings::Import::watched(state);
    for entry in &entries {
        let mxid = entry.mxid.as_deref().unwrap_or_default();
        import
            .feed_binding(state, &entry.medium, &entry.address, mxid)
            .await?;
    }
    finish_import(import, state).await
}

async fn import_stream<S, B>(body: S, state: &Services) -> Result<bindings::ImportReport, Error>
where
    S: Stream<Item = Result<B, Error>>,
    B: Buf,
{
    let mut import = bindings::Import::watched(state);
    let mut body = std::pin::pin!(body);
    let mut carry: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk?;
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            carry.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
        let mut start = 0;
        while let Some(pos) = carry[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&carry[start..start + pos]).into_owned();
            import.feed(state, &line).await?;
            start += pos + 1;
        }
        carry.drain(..start);
        if carry.len() > 64 * 1024 {
            return Err(Error::bad_json(format!(
                "line {} is longer than 64 KiB",
                import.line + 1
            )));
        }
    }
    if !carry.is_empty() {
        let line = String::from_utf8_lossy(&carry).into_owned();
        import.feed(state, &line).await?;
    }
    finish_import(import, state).await
}

async fn finish_import(
    mut import: bindings::Import,
    state: &Services,
) -> Result<bindings::ImportReport, Error> {
    import.finish(state).await?;
    tracing::info!(
        entries = import.line,
        imported = import.imported,
        skipped = import.skipped,
        "bindings imported"
    );
    Ok(import.report())
}

/// `POST /_mxisd/admin/v1/hashing/rotate`: a new lookup pepper now.
pub async fn rotate_pepper(state: Services) -> Result<Response, Infallible> {
    respond(
        hashing::rotate(&state)
            .await
            .map(|p| json!({ "generation": p.generation, "since_ms": p.since_ms })),
    )
}

/// `GET /_mxisd/admin/v1/invites[?token=]`: every pending invite, or one.
pub async fn invites(
    query: HashMap<String, String>,
    state: Services,
) -> Result<Response, Infallible> {
    match query.get("token") {
        Some(token) => respond(invite::show(&state, token)),
        None => respond(invite::list(&state)),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenBody {
    pub token: String,
}

/// `POST /_mxisd/admin/v1/invites/remove` `{token}`
pub async fn invites_remove(
    body: Result<TokenBody, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(b) => invite::remove(&state, &b.token).await,
        Err(e) => Err(e),
    };
    respond(result)
}

/// `POST /_mxisd/admin/v1/outbox/retry`: failed deliveries back in line.
pub async fn outbox_retry(state: Services) -> Result<Response, Infallible> {
    respond(invite::retry_failed(&state).await)
}

/// `GET /_mxisd/admin/v1/outbox`: onbind deliveries pending and failed.
pub async fn outbox(state: Services) -> Result<Response, Infallible> {
    respond(invite::outbox(&state))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub term: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /_mxisd/admin/v1/search?term=&limit=`: the directory index, as users see it.
pub async fn search(q: SearchQuery, state: Services) -> Result<Response, Infallible> {
    let limit = q.limit.unwrap_or(10).min(1000);
    respond(crate::service::sync::search(&state, &q.term, limit))
}

/// `POST /_mxisd/admin/v1/reindex`: rebuild the directory index from the store.
pub async fn reindex(state: Services) -> Result<Response, Infallible> {
    let result = crate::service::sync::reindex(&state)
        .await
        .map(|n| serde_json::json!({ "entries": n }));
    respond(result)
}

/// `GET /_mxisd/admin/v1/progress`: the long work running now (sync runs, imports,
/// rotations, reindexes), which `mxisd` polls for its progress bar.
pub async fn progress(state: Services) -> Result<Response, Infallible> {
    respond(Ok::<_, Error>(crate::service::progress::running(&state)))
}

/// `POST /_mxisd/admin/v1/reload`: re-read the config file (as SIGHUP does); answers
/// what changed and what needs a restart, or 409 with every problem of a bad file
/// (nothing changed then).
pub async fn reload(state: Services) -> Result<Response, Infallible> {
    respond(crate::service::reload::from_file(&state).await)
}

/// `GET /_mxisd/admin/v1/sync`: every sync source's status.
pub async fn sync_status(state: Services) -> Result<Response, Infallible> {
    respond(crate::service::sync::statuses(&state))
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncBody {
    #[serde(default)]
    pub source: Option<String>,
    /// Apply even a run that would remove most of a source's bindings.
    #[serde(default)]
    pub force: bool,
}

/// `POST /_mxisd/admin/v1/sync` `{source?}`: run one source, or all, now. 200 with
/// each source's status when every run worked; when one failed, its error's status
/// (502 a source that failed, 409 a run refused by the shrink guard, 500 our own
/// failure) with the Matrix error and the same statuses in `sources`, so scripts notice.
pub async fn sync_run(
    body: Result<SyncBody, Error>,
    state: Services,
) -> Result<Response, Infallible> {
    let result = match body {
        Ok(b) => crate::service::sync::run_now(&state, b.source.as_deref(), b.force).await,
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(report) => match report.failed {
            None => crate::http::reply::json_response(http::StatusCode::OK, &report.views),
            Some(e) => {
                let sources =
                    serde_json::to_value(&report.views.sources).unwrap_or(serde_json::Value::Null);
                crate::http::reply::error_response(&e.with("sources", sources))
            }
        },
        Err(e) => crate::http::reply::error_response(&e),
    })
}

/// Chunks of a backup on their way from the writing thread to the response.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const BACKUP_CHUNK: usize = 256 * 1024;

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(BACKUP_CHUNK),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BACKUP_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /_mxisd/admin/v1/backup`: the store as it is now, and the key files, streamed
/// while the server goes on serving (see `store::backup`). A failure midway cuts the
/// response short, which `mxisd backup` notices by the missing checksum.
pub async fn backup(state: Services) -> Result<Response, Infallible> {
    let backup = match crate::service::backup::start_online(&state) {
        Ok(b) => b,
        Err(e) => return Ok(crate::http::reply::error_response(&e)),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkSender {
            tx: tx.clone(),
            buf: Vec::with_capacity(BACKUP_CHUNK),
        };
        if let Err(e) = backup.write(&mut out) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = warp::reply::stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
