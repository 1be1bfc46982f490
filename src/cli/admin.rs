//! The HTTP client for a running server, and the verbs that are calls to it. Each verb
//! is one `AdminRequest` (route, method, body, how long to wait); its answer is shown
//! to people by `show` (or printed as it came with `--json`), a refusal or our own
//! failure as `error: ...` on standard error. Long work (sync, import, rotation,
//! reindex) draws a progress bar meanwhile (`progress`). Nothing here opens the store:
//! sled lets only the server do that.

use super::args::{
    BindingsArgs, BindingsCommand, BindingsImportArgs, HashingArgs, HashingCommand,
    HealthcheckArgs, InvitesArgs, InvitesCommand, OutboxArgs, ReindexArgs, ReloadArgs, SearchArgs,
    StatusArgs, SyncArgs,
};
use super::client::{json_answer, Target};
use super::{load_config, load_or_report, report_config_errors, show};
use crate::outln;
use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Seconds to wait for a quick admin answer.
const QUICK_SECS: u64 = 30;
/// Seconds to wait while the server does long work (a sync, a reindex, a rotation, an
/// import).
const LONG_SECS: u64 = 3600;

pub(super) fn http_client(timeout_secs: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .dns_resolver(crate::dns::ForReqwest::new()?)
        .timeout(std::time::Duration::from_secs(timeout_secs.max(1)))
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Pretty JSON, for `--json`.
fn pretty(body: &Value) -> String {
    serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string())
}

/// One call to the admin API (`/_mxisd/admin/v1/<route>`) of the server that a config
/// file describes.
struct AdminRequest<'a> {
    config: Option<&'a Path>,
    method: Method,
    route: String,
    /// Content-Type and bytes.
    body: Option<(&'static str, Bytes)>,
    timeout_secs: u64,
    /// The kind of server job to draw a progress bar of, and a total to use when the
    /// server does not know one.
    progress: Option<(&'static str, Option<u64>)>,
}

impl<'a> AdminRequest<'a> {
    fn new(config: &'a Option<PathBuf>, method: Method, route: &str) -> Self {
        Self {
            config: config.as_deref(),
            method,
            route: route.to_owned(),
            body: None,
            timeout_secs: QUICK_SECS,
            progress: None,
        }
    }

    fn get(config: &'a Option<PathBuf>, route: &str) -> Self {
        Self::new(config, Method::GET, route)
    }

    /// A POST; its body is `{}` unless one is given (the admin API wants every POST to
    /// declare a JSON body).
    fn post(config: &'a Option<PathBuf>, route: &str) -> Self {
        Self::new(config, Method::POST, route).json(&json!({}))
    }

    /// Appends `?name=value&...`, form-encoded.
    fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        self.route = format!("{}?{}", self.route, query.finish());
        self
    }

    /// A JSON body.
    fn json(self, value: &Value) -> Self {
        self.body("application/json", value.to_string())
    }

    fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }

    /// For routes where the server works before it answers: a long wait, and a
    /// progress bar of the server's `kind` job on a terminal.
    fn long(mut self, kind: &'static str, total_hint: Option<u64>) -> Self {
        self.timeout_secs = LONG_SECS;
        self.progress = Some((kind, total_hint));
        self
    }

    /// Sends the request. Returns the status and the JSON answer, or a message saying
    /// what could not be reached and what to do.
    async fn send(self) -> Result<(u16, Value), String> {
        // Its problems are printed already: nothing more to say.
        let config = load_or_report(self.config).ok_or_else(String::new)?;
        let target = Target::of(&config)?;
        let timeout = std::time::Duration::from_secs(self.timeout_secs.max(1));
        let call = async {
            let response = target
                .send(self.method, &self.route, self.body, timeout)
                .await?;
            Ok::<_, String>(json_answer(response).await?)
        };
        match self.progress {
            Some((kind, hint)) => {
                super::progress::watch(Some(target.clone()), kind, hint, call).await
            }
            None => call.await,
        }
    }

    /// Sends the request and shows what came back: people get `human`'s text, scripts
    /// (`json`) the answer as it came.
    async fn show(self, json: bool, human: impl FnOnce(&Value)) -> ExitCode {
        answer(self.send().await, json, human)
    }
}

/// A 2xx answer shown (exit 0); a refusal or our own error on standard error (exit 1).
/// With `json`, a refusal's body also goes to standard output, for scripts.
fn answer(
    result: Result<(u16, Value), String>,
    json: bool,
    human: impl FnOnce(&Value),
) -> ExitCode {
    match result {
        Ok((status, body)) if (200..300).contains(&status) => {
            if json {
                outln!("{}", pretty(&body));
            } else {
                human(&body);
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => answer_refused(status, &body, json),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A refusal shown: on standard error, and with `json` its body on standard output.
fn answer_refused(status: u16, body: &Value, json: bool) -> ExitCode {
    refused(status, body);
    if json {
        outln!("{}", pretty(body));
    }
    ExitCode::FAILURE
}

/// `error: <the server's reason> (<errcode>)`.
fn refused(status: u16, body: &Value) {
    match (body["error"].as_str(), body["errcode"].as_str()) {
        (Some(why), Some(code)) => eprintln!("error: {why} ({code})"),
        (Some(why), None) => eprintln!("error: {why}"),
        _ => eprintln!("error: the admin API refused the request ({status})"),
    }
}

/// `mxisd healthcheck`: the admin API's status (or `--url`, or the public `/status`
/// when the admin API is disabled).
pub async fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let answer = match &args.url {
        Some(url) => get_url(url, args.timeout).await.map(|a| (url.clone(), a)),
        None => match load_config(args.config.as_deref()) {
            Ok(c) if c.server.admin.enabled => match Target::of(&c) {
                Ok(target) => admin_status(&target, args.timeout)
                    .await
                    .map(|a| (target.to_string(), a)),
                Err(e) => Err(e),
            },
            Ok(c) => {
                let url = format!("{}/status", c.local_url());
                get_url(&url, args.timeout).await.map(|a| (url, a))
            }
            Err(e) => {
                report_config_errors(&e);
                return ExitCode::FAILURE;
            }
        },
    };
    let (place, (code, body)) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unreachable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let problems: Vec<&str> = body["problems"]
        .as_array()
        .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !(200..300).contains(&code) {
        eprintln!("unhealthy: {place} answered {code}");
        for p in &problems {
            eprintln!("  - {p}");
        }
        return ExitCode::FAILURE;
    }
    if problems.is_empty() {
        outln!("ok: {place} answered {code}");
        return ExitCode::SUCCESS;
    }
    outln!("degraded: {place} answered {code}; needs attention:");
    for p in &problems {
        outln!("  - {p}");
    }
    if args.strict {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// GET of a status URL: its code and JSON (null when it is not JSON).
async fn get_url(url: &str, timeout_secs: u64) -> Result<(u16, Value), String> {
    let response = http_client(timeout_secs)?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e} (is mxisd running? check --url or -c)"))?;
    let code = response.status().as_u16();
    Ok((code, response.json::<Value>().await.unwrap_or_default()))
}

/// The admin API's status document and its code.
async fn admin_status(target: &Target, timeout_secs: u64) -> Result<(u16, Value), String> {
    let timeout = std::time::Duration::from_secs(timeout_secs.max(1));
    let response = target.send(Method::GET, "status", None, timeout).await?;
    let (code, body) = json_answer(response).await?;
    // The door's refusal is not a status document.
    if code == 401 || code == 403 {
        let why = body["error"].as_str().unwrap_or("refused");
        return Err(format!("{target} refused the request: {why}"));
    }
    Ok((code, body))
}

/// `mxisd status`: the status document whatever the answer's code (it explains a
/// failure better than an errcode would).
pub async fn status(args: &StatusArgs) -> ExitCode {
    let Some(config) = load_or_report(args.config.as_deref()) else {
        return ExitCode::FAILURE;
    };
    let answer = match Target::of(&config) {
        Ok(target) => admin_status(&target, 10).await,
        Err(e) => Err(e),
    };
    match answer {
        // A refusal, not a status document (a 503 one explains itself).
        Ok((code, body)) if !(200..300).contains(&code) && body["errcode"].is_string() => {
            answer_refused(code, &body, args.json)
        }
        Ok((code, body)) => {
            if args.json {
                outln!("{}", pretty(&body));
            } else {
                show::status(&body);
            }
            if (200..300).contains(&code) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mxisd bindings ...`
pub async fn bindings(args: &BindingsArgs) -> ExitCode {
    match &args.command {
        BindingsCommand::Add(a) => {
            AdminRequest::post(&a.config, "bindings")
                .json(&json!({"medium": a.medium, "address": a.address, "mxid": a.mxid}))
                .show(a.json, |b| show::binding(b, Some("bound")))
                .await
        }
        BindingsCommand::Remove(a) => {
            AdminRequest::post(&a.config, "bindings/remove")
                .json(&json!({"medium": a.medium, "address": a.address}))
                .show(a.json, |b| show::binding(b, Some("removed")))
                .await
        }
        BindingsCommand::Show(a) => {
            let result = AdminRequest::get(&a.config, "bindings")
                .query(&[("medium", &a.medium), ("address", &a.address)])
                .send()
                .await;
            let bound = !matches!(&result, Ok((200, b)) if array_empty(&b["entries"]));
            let code = answer(result, a.json, |b| show::binding(b, None));
            // Nothing bound is a failure, as `grep` finding nothing (also with --json).
            if bound {
                code
            } else {
                ExitCode::FAILURE
            }
        }
        BindingsCommand::Import(a) => import(a).await,
    }
}

fn array_empty(v: &Value) -> bool {
    v.as_array().is_none_or(Vec::is_empty)
}

/// `mxisd bindings import FILE|-`: a one-line summary, and a failure if any line was
/// skipped.
async fn import(args: &BindingsImportArgs) -> ExitCode {
    let started = std::time::Instant::now();
    let stdin = args.file.as_os_str() == "-";
    let data = if stdin {
        let mut buf = Vec::new();
        match std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf) {
            Ok(_) => buf,
            Err(e) => {
                eprintln!("error: cannot read standard input: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match std::fs::read(&args.file) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "error: cannot read {}: {} (give a file of medium<TAB>address<TAB>mxid lines, or - for standard input)",
                    args.file.display(),
                    super::human::io_reason(&e)
                );
                return ExitCode::FAILURE;
            }
        }
    };
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64
        + u64::from(data.last().is_some_and(|b| *b != b'\n'));
    let result = AdminRequest::post(&args.config, "bindings/import")
        .body("text/tab-separated-values", data)
        .long("import", Some(lines))
        .send()
        .await;
    let from = if stdin {
        "standard input".to_owned()
    } else {
        args.file.display().to_string()
    };
    let mut skipped = 0;
    let code = answer(result, args.json, |report| {
        skipped = report["skipped"].as_u64().unwrap_or(0);
        show::import(report, &from, started.elapsed());
    });
    if skipped > 0 {
        ExitCode::FAILURE
    } else {
        code
    }
}

/// `mxisd invites ...`
pub async fn invites(args: &InvitesArgs) -> ExitCode {
    match &args.command {
        InvitesCommand::List(a) => {
            AdminRequest::get(&a.config, "invites")
                .show(a.json, show::invites)
                .await
        }
        InvitesCommand::Show(a) => {
            AdminRequest::get(&a.config, "invites")
                .query(&[("token", &a.token)])
                .show(a.json, show::invite)
                .await
        }
        InvitesCommand::Remove(a) => {
            AdminRequest::post(&a.config, "invites/remove")
                .json(&json!({ "token": a.token }))
                .show(a.json, |b| {
                    if b["removed"] == true {
                        outln!("removed the invite; it will not be delivered");
                    } else {
                        outln!("no pending invite has that token; nothing removed");
                    }
                })
                .await
        }
    }
}

/// `mxisd sync [status | NAME] [--source NAME]`
pub async fn sync(args: &SyncArgs) -> ExitCode {
    let only = match (args.what.as_deref(), args.source.as_deref()) {
        (Some("status"), _) => {
            return AdminRequest::get(&args.config, "sync")
                .show(args.json, show::sync_status)
                .await
        }
        (Some(name), Some(other)) if name != other => {
            eprintln!("error: `mxisd sync {name} --source {other}` names two sources; name one");
            return ExitCode::FAILURE;
        }
        (Some(name), _) => Some(name),
        (None, source) => source,
    };
    let result = AdminRequest::post(&args.config, "sync")
        .json(&json!({ "source": only, "force": args.force }))
        .long("sync", None)
        .send()
        .await;
    match result {
        Ok((status, body)) => {
            if args.json {
                outln!("{}", pretty(&body));
            }
            let ok = (200..300).contains(&status);
            if !ok {
                refused(status, &body);
            }
            // A source that failed makes the command fail too (for scripts and cron).
            let all_ran = show::sync_run(&body, !args.json, body["error"].as_str());
            if ok && all_ran {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `mxisd outbox [--retry]`
pub async fn outbox(args: &OutboxArgs) -> ExitCode {
    if args.retry {
        AdminRequest::post(&args.config, "outbox/retry")
            .show(args.json, |b| {
                let n = b["retried"].as_u64().unwrap_or(0);
                outln!(
                    "put {} back in line",
                    super::human::count(n, "failed delivery")
                );
            })
            .await
    } else {
        AdminRequest::get(&args.config, "outbox")
            .show(args.json, show::outbox)
            .await
    }
}

/// `mxisd search TERM`
pub async fn search(args: &SearchArgs) -> ExitCode {
    let limit = args.limit.unwrap_or(10).to_string();
    AdminRequest::get(&args.config, "search")
        .query(&[("term", &args.term), ("limit", &limit)])
        .show(args.json, show::search)
        .await
}

/// `mxisd reindex`
pub async fn reindex(args: &ReindexArgs) -> ExitCode {
    let started = std::time::Instant::now();
    AdminRequest::post(&args.config, "reindex")
        .long("reindex", None)
        .show(args.json, |b| {
            outln!(
                "rebuilt the directory index: {} in {}",
                super::human::count_of(&b["entries"], "entry"),
                super::human::duration_ms(started.elapsed().as_millis() as u64)
            );
        })
        .await
}

/// `mxisd reload`: what the server put in force, what waits for a restart, or every
/// problem of the file it refused (exit 1; the server goes on with its old config).
pub async fn reload(args: &ReloadArgs) -> ExitCode {
    let (status, body) = match AdminRequest::post(&args.config, "reload").send().await {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = (200..300).contains(&status);
    if args.json {
        println!("{}", pretty(&body));
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let list = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if !ok {
        eprintln!(
            "error: {}",
            body["error"]
                .as_str()
                .unwrap_or("the server refused to reload")
        );
        for problem in list("problems") {
            eprintln!("  - {problem}");
        }
        eprintln!("The server goes on with its running configuration; fix the file and run `mxisd reload` again.");
        return ExitCode::FAILURE;
    }
    let changed = list("changed");
    let restart = list("restart_needed");
    if changed.is_empty() {
        println!(
            "Reloaded {}: nothing reloadable changed.",
            body["source"].as_str().unwrap_or("the configuration")
        );
    } else {
        println!(
            "Reloaded {}; now in force:",
            body["source"].as_str().unwrap_or("the configuration")
        );
        for c in &changed {
            println!("  - {c}");
        }
    }
    if !restart.is_empty() {
        println!("Changed, but only a restart puts them in force (the running values are kept):");
        for r in &restart {
            println!("  - {r}");
        }
    }
    for w in list("warnings") {
        println!("warning: {w}");
    }
    ExitCode::SUCCESS
}

/// `mxisd hashing rotate`
pub async fn hashing(args: &HashingArgs) -> ExitCode {
    match &args.command {
        HashingCommand::Rotate(a) => {
            let started = std::time::Instant::now();
            AdminRequest::post(&a.config, "hashing/rotate")
                .long("rotate", None)
                .show(a.json, |b| {
                    outln!(
                        "rotated the lookup pepper in {}: now generation {}; clients fetch /hash_details again",
                        super::human::duration_ms(started.elapsed().as_millis() as u64),
                        b["generation"]
                    );
                })
                .await
        }
    }
}
