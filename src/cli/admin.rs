//! The HTTP client for a running server, and the verbs that are calls to it. Most verbs
//! are one `AdminRequest` (route, method, body, how long to wait) whose JSON answer is
//! printed as it came, or whose error is printed as `error: ...`; `sync` and
//! `bindings import` read the answer first, `status` and `healthcheck` keep their own
//! output. Nothing here opens the store: sled lets only the server do that.

use super::args::{
    BindingsArgs, BindingsCommand, BindingsImportArgs, HashingArgs, HashingCommand,
    HealthcheckArgs, InvitesArgs, InvitesCommand, OutboxArgs, ReindexArgs, ReloadArgs, SearchArgs,
    StatusArgs, SyncArgs,
};
use super::client::{json_answer, Target};
use super::{load_config, load_or_report, report_config_errors};
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

/// Pretty JSON for people (and still JSON for scripts).
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
}

impl<'a> AdminRequest<'a> {
    fn new(config: &'a Option<PathBuf>, method: Method, route: &str) -> Self {
        Self {
            config: config.as_deref(),
            method,
            route: route.to_owned(),
            body: None,
            timeout_secs: QUICK_SECS,
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

    /// For routes where the server works before it answers.
    fn long(mut self) -> Self {
        self.timeout_secs = LONG_SECS;
        self
    }

    /// Sends the request. Returns the status and the JSON answer, or a message saying
    /// what to do.
    async fn send(self) -> Result<(u16, Value), String> {
        let config = load_or_report(self.config).ok_or("invalid configuration")?;
        let target = Target::of(&config)?;
        let timeout = std::time::Duration::from_secs(self.timeout_secs.max(1));
        let response = target
            .send(self.method, &self.route, self.body, timeout)
            .await?;
        Ok(json_answer(response).await?)
    }

    /// Sends the request and prints what came back: what most verbs are.
    async fn run(self) -> ExitCode {
        print_result(self.send().await)
    }
}

/// The answer as pretty JSON on stdout (exit 0), or the server's refusal or our own
/// error on stderr (exit 1).
fn print_result(result: Result<(u16, Value), String>) -> ExitCode {
    match result {
        Ok((status, body)) if (200..300).contains(&status) => {
            println!("{}", pretty(&body));
            ExitCode::SUCCESS
        }
        Ok((_, body)) => {
            eprintln!(
                "error: {} ({})",
                body["error"].as_str().unwrap_or("request refused"),
                body["errcode"].as_str().unwrap_or("?")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
        println!("ok: {place} answered {code}");
        return ExitCode::SUCCESS;
    }
    println!("degraded: {place} answered {code}; needs attention:");
    for p in &problems {
        println!("  - {p}");
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
    Ok(json_answer(response).await?)
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
        Ok((code, body)) => {
            println!("{}", pretty(&body));
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
                .run()
                .await
        }
        BindingsCommand::Remove(a) => {
            AdminRequest::post(&a.config, "bindings/remove")
                .json(&json!({"medium": a.medium, "address": a.address}))
                .run()
                .await
        }
        BindingsCommand::Show(a) => {
            AdminRequest::get(&a.config, "bindings")
                .query(&[("medium", &a.medium), ("address", &a.address)])
                .run()
                .await
        }
        BindingsCommand::Import(a) => import(a).await,
    }
}

/// `mxisd bindings import FILE`: a one-line summary, and a failure if any line was
/// skipped.
async fn import(args: &BindingsImportArgs) -> ExitCode {
    let started = std::time::Instant::now();
    let data = if args.file.as_os_str() == "-" {
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
                eprintln!("error: cannot read {}: {e}", args.file.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let result = AdminRequest::post(&args.config, "bindings/import")
        .body("text/tab-separated-values", data)
        .long()
        .send()
        .await;
    match result {
        Ok((200, report)) => {
            let skipped = report["skipped"].as_u64().unwrap_or(0);
            for e in report["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", e.as_str().unwrap_or_default());
            }
            println!(
                "imported {} bindings from {} in {:.1} s ({} lines, {} skipped)",
                report["imported"],
                args.file.display(),
                started.elapsed().as_secs_f64(),
                report["lines"],
                skipped
            );
            if skipped > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        other => print_result(other),
    }
}

/// `mxisd invites ...`
pub async fn invites(args: &InvitesArgs) -> ExitCode {
    let request = match &args.command {
        InvitesCommand::List(a) => AdminRequest::get(&a.config, "invites"),
        InvitesCommand::Show(a) => {
            AdminRequest::get(&a.config, "invites").query(&[("token", &a.token)])
        }
        InvitesCommand::Remove(a) => {
            AdminRequest::post(&a.config, "invites/remove").json(&json!({ "token": a.token }))
        }
    };
    request.run().await
}

/// `mxisd sync [status] [--source NAME]`
pub async fn sync(args: &SyncArgs) -> ExitCode {
    let request = match args.what.as_deref() {
        Some("status") => AdminRequest::get(&args.config, "sync"),
        None => AdminRequest::post(&args.config, "sync")
            .json(&json!({ "source": args.source, "force": args.force }))
            .long(),
        Some(other) => {
            eprintln!(
                "error: unknown `mxisd sync {other}`; use `mxisd sync` or `mxisd sync status`"
            );
            return ExitCode::FAILURE;
        }
    };
    let result = request.send().await;
    // A source that failed makes the command fail too (for scripts and cron).
    let failed = matches!(&result, Ok((200, body)) if body["sources"]
        .as_array()
        .is_some_and(|list| args.what.is_none() && list.iter().any(|s| !s["last_error"].is_null())));
    let code = print_result(result);
    if failed {
        ExitCode::FAILURE
    } else {
        code
    }
}

/// `mxisd outbox`
pub async fn outbox(args: &OutboxArgs) -> ExitCode {
    let request = if args.retry {
        AdminRequest::post(&args.config, "outbox/retry")
    } else {
        AdminRequest::get(&args.config, "outbox")
    };
    request.run().await
}

/// `mxisd search TERM`
pub async fn search(args: &SearchArgs) -> ExitCode {
    let limit = args.limit.unwrap_or(10).to_string();
    AdminRequest::get(&args.config, "search")
        .query(&[("term", &args.term), ("limit", &limit)])
        .run()
        .await
}

/// `mxisd reindex`
pub async fn reindex(args: &ReindexArgs) -> ExitCode {
    AdminRequest::post(&args.config, "reindex")
        .long()
        .run()
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
            AdminRequest::post(&a.config, "hashing/rotate")
                .long()
                .run()
                .await
        }
    }
}
