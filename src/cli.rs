//! Command-line verbs. `run` starts the server; the others either read files directly
//! (`check-config`, `keys show`) or talk to a running server over HTTP (`healthcheck`,
//! `status`), because sled lets only one process open the store. Every error says what
//! to do next.

use crate::config::{self, Config};
use argh::FromArgs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mxisd: a federated Matrix identity server.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Run(RunArgs),
    CheckConfig(CheckConfigArgs),
    Keys(KeysArgs),
    Healthcheck(HealthcheckArgs),
    Status(StatusArgs),
    Bindings(BindingsArgs),
    Hashing(HashingArgs),
    Invites(InvitesArgs),
    Outbox(OutboxArgs),
    Sync(SyncArgs),
    Search(SearchArgs),
    Reindex(ReindexArgs),
    Backup(BackupArgs),
    Restore(RestoreArgs),
    ImportMa1sd(ImportMa1sdArgs),
}

/// Back up the store and signing key to one file: from a running server through its
/// admin listener (it goes on serving), or from the store directly when it is stopped.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup")]
pub struct BackupArgs {
    /// file to write (must not exist; default mxisd-<time>.mxisd-backup here)
    #[argh(option, short = 'o')]
    pub output: Option<PathBuf>,
    /// read the store directly; the server must be stopped (default: only when the
    /// admin listener does not answer)
    #[argh(switch)]
    pub offline: bool,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Restore a backup into storage.path and key.path; the server must be stopped.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restore")]
pub struct RestoreArgs {
    /// the backup file
    #[argh(positional)]
    pub file: PathBuf,
    /// replace an existing store (and a different signing key); both are kept beside
    #[argh(switch)]
    pub force: bool,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Import a ma1sd (or mxisd 1.x) installation: its config, signing key, pending
/// invites and accepted terms. Writes nothing unless everything can be imported.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import-ma1sd")]
pub struct ImportMa1sdArgs {
    /// ma1sd's configuration file (e.g. /etc/ma1sd/ma1sd.yaml)
    #[argh(option, short = 'c')]
    pub config: PathBuf,
    /// the mxisd configuration file to write (default /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'o')]
    pub output: Option<PathBuf>,
    /// mxisd's state directory, storage.path (default /var/lib/mxisd)
    #[argh(option)]
    pub storage: Option<PathBuf>,
    /// check everything and show what would be imported; write nothing
    #[argh(switch)]
    pub dry_run: bool,
    /// replace the output file if it exists
    #[argh(switch)]
    pub force: bool,
    /// merge into a store that already holds data
    #[argh(switch)]
    pub allow_existing_store: bool,
}

/// Search the directory index of a running server, as users' searches will.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "search")]
pub struct SearchArgs {
    /// words to look for (names, addresses, attributes)
    #[argh(positional)]
    pub term: String,
    /// most results (default 10)
    #[argh(option)]
    pub limit: Option<usize>,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Rebuild the directory index of a running server from its store.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reindex")]
pub struct ReindexArgs {
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Identity-source sync on a running server: `mxisd sync` runs every source now (or
/// one with --source); `mxisd sync status` shows how each last ran.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sync")]
pub struct SyncArgs {
    /// status: show how each source last ran, instead of running them
    #[argh(positional)]
    pub what: Option<String>,
    /// only this source (e.g. file, memory)
    #[argh(option)]
    pub source: Option<String>,
    /// apply even if the source would lose more than half of its bindings
    #[argh(switch)]
    pub force: bool,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Pending 3PID room invites, on a running server.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "invites")]
pub struct InvitesArgs {
    #[argh(subcommand)]
    pub command: InvitesCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum InvitesCommand {
    List(InvitesListArgs),
    Show(InvitesTokenArgs),
    Remove(InvitesRemoveArgs),
}

/// List every pending invite.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct InvitesListArgs {
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Show one pending invite.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct InvitesTokenArgs {
    /// the invite's token
    #[argh(positional)]
    pub token: String,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Drop one pending invite (it will not be delivered).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct InvitesRemoveArgs {
    /// the invite's token
    #[argh(positional)]
    pub token: String,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Onbind deliveries to homeservers: pending (with their last error) and failed.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "outbox")]
pub struct OutboxArgs {
    /// put failed deliveries back in line (from the start of their backoff)
    #[argh(switch)]
    pub retry: bool,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Operator bindings (3PID → Matrix ID), on a running server.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bindings")]
pub struct BindingsArgs {
    #[argh(subcommand)]
    pub command: BindingsCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum BindingsCommand {
    Add(BindingsAddArgs),
    Remove(BindingsRemoveArgs),
    Show(BindingsShowArgs),
    Import(BindingsImportArgs),
}

/// Bind a 3PID to a Matrix ID (operator bindings outrank users' binds and sync).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
pub struct BindingsAddArgs {
    /// email or msisdn
    #[argh(positional)]
    pub medium: String,
    /// the address (e-mail address, or phone number in international form)
    #[argh(positional)]
    pub address: String,
    /// the Matrix user ID, @user:domain
    #[argh(positional)]
    pub mxid: String,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Remove the operator's and the user's binding of a 3PID.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct BindingsRemoveArgs {
    /// email or msisdn
    #[argh(positional)]
    pub medium: String,
    /// the address
    #[argh(positional)]
    pub address: String,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Show every origin's binding of a 3PID and the one lookups answer with.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct BindingsShowArgs {
    /// email or msisdn
    #[argh(positional)]
    pub medium: String,
    /// the address
    #[argh(positional)]
    pub address: String,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Import bindings from a file of `medium<TAB>address<TAB>mxid` lines.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import")]
pub struct BindingsImportArgs {
    /// the file to import (- for standard input)
    #[argh(positional)]
    pub file: PathBuf,
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// The lookup pepper.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "hashing")]
pub struct HashingArgs {
    #[argh(subcommand)]
    pub command: HashingCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum HashingCommand {
    Rotate(HashingRotateArgs),
}

/// Rotate the lookup pepper now (rehashes every binding).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "rotate")]
pub struct HashingRotateArgs {
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Run the identity server (without -c: the embedded default, state under ./mxisd-data).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// configuration file (YAML)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Validate a configuration file: lists every problem, or prints a summary.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check-config")]
pub struct CheckConfigArgs {
    /// configuration file (YAML)
    #[argh(option, short = 'c')]
    pub config: PathBuf,
}

/// Signing keys.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "keys")]
pub struct KeysArgs {
    #[argh(subcommand)]
    pub command: KeysCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum KeysCommand {
    Show(KeysShowArgs),
}

/// Print the key id and public key of the server's signing key.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct KeysShowArgs {
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Exit 0 if the server is up and its store works, 1 otherwise; prints what needs
/// attention (a failing sync source, failed deliveries) without failing for it, unless
/// --strict.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "healthcheck")]
pub struct HealthcheckArgs {
    /// URL to probe (default: the admin listener's status, else the public /status)
    #[argh(option)]
    pub url: Option<String>,
    /// configuration file to find the server from (default: the embedded default)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// seconds to wait for an answer (default 5)
    #[argh(option, default = "5")]
    pub timeout: u64,
    /// also fail when something needs attention (status DEGRADED)
    #[argh(switch)]
    pub strict: bool,
}

/// Show the detailed status of a running server (through its admin listener).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {
    /// configuration file (YAML); the embedded default when absent
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the config named on the command line, or the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, config::ConfigErrors> {
    match path {
        Some(p) => config::load_file(p, &env_lookup),
        None => config::load_embedded(&env_lookup),
    }
}

/// Prints config problems the way every verb does.
pub fn report_config_errors(errors: &config::ConfigErrors) {
    eprintln!("error: invalid configuration in {}", errors.source);
    for p in &errors.problems {
        eprintln!("  - {p}");
    }
}

/// `mxisd check-config -c FILE`
pub fn check_config(args: &CheckConfigArgs) -> ExitCode {
    match config::load_file(&args.config, &env_lookup) {
        Ok(c) => {
            println!("{}: valid", args.config.display());
            for w in &c.warnings {
                println!("  warning: {w}");
            }
            print!("{}", c.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report_config_errors(&errors);
            ExitCode::FAILURE
        }
    }
}

/// `mxisd keys show`
pub fn keys_show(args: &KeysShowArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report_config_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    match crate::crypto::keyfile::load(&config.key.path) {
        Ok(Some(signer)) => {
            println!("{} {}", signer.key_id(), signer.public_key_b64());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "error: no signing key in {}; `mxisd run` creates one on first start",
                config.key.path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn http_client(timeout_secs: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .dns_resolver(crate::dns::ForReqwest::new()?)
        .timeout(std::time::Duration::from_secs(timeout_secs.max(1)))
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// `mxisd healthcheck`
pub async fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => match load_config(args.config.as_deref()) {
            Ok(c) => match c.admin_url() {
                Some(admin) => format!("{admin}_mxisd/admin/v1/status"),
                None => format!("{}/status", c.local_url()),
            },
            Err(e) => {
                report_config_errors(&e);
                return ExitCode::FAILURE;
            }
        },
    };
    let client = match http_client(args.timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => {
            let code = resp.status().as_u16();
            let body = resp.json::<serde_json::Value>().await.unwrap_or_default();
            let problems: Vec<&str> = body["problems"]
                .as_array()
                .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if problems.is_empty() {
                println!("ok: {url} answered {code}");
                return ExitCode::SUCCESS;
            }
            println!("degraded: {url} answered {code}; needs attention:");
            for p in &problems {
                println!("  - {p}");
            }
            if args.strict {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(resp) => {
            let code = resp.status();
            let body = resp.json::<serde_json::Value>().await.unwrap_or_default();
            eprintln!("unhealthy: {url} answered {code}");
            if let Some(problems) = body["problems"].as_array() {
                for p in problems.iter().filter_map(|v| v.as_str()) {
                    eprintln!("  - {p}");
                }
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unreachable: {url}: {e} (is mxisd running? check --url or -c)");
            ExitCode::FAILURE
        }
    }
}

/// `mxisd status`
pub async fn status(args: &StatusArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report_config_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    let Some(admin) = config.admin_url() else {
        eprintln!("error: the admin listener is disabled (server.admin.enabled: false); enable it to use this command");
        return ExitCode::FAILURE;
    };
    let url = format!("{admin}_mxisd/admin/v1/status");
    let client = match http_client(10) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let response = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot reach the admin listener at {url}: {e} (is mxisd running with this config?)");
            return ExitCode::FAILURE;
        }
    };
    let ok = response.status().is_success();
    match response.json::<serde_json::Value>().await {
        Ok(body) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string())
            );
        }
        Err(e) => eprintln!("error: the admin listener answered something that is not JSON: {e}"),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Calls the admin API of the server described by `config_path`. Returns the status and
/// the JSON answer, or a message saying what to do.
async fn admin_call(
    config_path: Option<&Path>,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<reqwest::Body>,
    timeout_secs: u64,
) -> Result<(u16, serde_json::Value), String> {
    let config = load_config(config_path).map_err(|e| {
        report_config_errors(&e);
        "invalid configuration".to_owned()
    })?;
    let admin = config.admin_url().ok_or_else(|| {
        "the admin listener is disabled (server.admin.enabled: false); enable it to use this command".to_owned()
    })?;
    let url = format!("{admin}_mxisd/admin/v1/{path_and_query}");
    let client = http_client(timeout_secs)?;
    let mut request = client.request(method, &url);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| {
        format!(
            "cannot reach the admin listener at {admin}: {e} (is mxisd running with this config?)"
        )
    })?;
    let status = response.status().as_u16();
    let body = response
        .json::<serde_json::Value>()
        .await
        .map_err(|e| format!("the admin listener answered something that is not JSON: {e}"))?;
    Ok((status, body))
}

fn print_result(result: Result<(u16, serde_json::Value), String>) -> ExitCode {
    match result {
        Ok((status, body)) if (200..300).contains(&status) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string())
            );
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

/// `mxisd bindings ...`
pub async fn bindings(args: &BindingsArgs) -> ExitCode {
    use reqwest::Method;
    match &args.command {
        BindingsCommand::Add(a) => {
            let body =
                serde_json::json!({"medium": a.medium, "address": a.address, "mxid": a.mxid});
            print_result(
                admin_call(
                    a.config.as_deref(),
                    Method::POST,
                    "bindings",
                    Some(body.to_string().into()),
                    30,
                )
                .await,
            )
        }
        BindingsCommand::Remove(a) => {
            let body = serde_json::json!({"medium": a.medium, "address": a.address});
            print_result(
                admin_call(
                    a.config.as_deref(),
                    Method::POST,
                    "bindings/remove",
                    Some(body.to_string().into()),
                    30,
                )
                .await,
            )
        }
        BindingsCommand::Show(a) => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("medium", &a.medium)
                .append_pair("address", &a.address)
                .finish();
            print_result(
                admin_call(
                    a.config.as_deref(),
                    Method::GET,
                    &format!("bindings?{query}"),
                    None,
                    30,
                )
                .await,
            )
        }
        BindingsCommand::Import(a) => import(a).await,
    }
}

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
    let result = admin_call(
        args.config.as_deref(),
        reqwest::Method::POST,
        "bindings/import",
        Some(data.into()),
        3600,
    )
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
    use reqwest::Method;
    let (config, method, path, body) = match &args.command {
        InvitesCommand::List(a) => (&a.config, Method::GET, "invites".to_owned(), None),
        InvitesCommand::Show(a) => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("token", &a.token)
                .finish();
            (&a.config, Method::GET, format!("invites?{query}"), None)
        }
        InvitesCommand::Remove(a) => (
            &a.config,
            Method::POST,
            "invites/remove".to_owned(),
            Some(serde_json::json!({ "token": a.token }).to_string().into()),
        ),
    };
    print_result(admin_call(config.as_deref(), method, &path, body, 30).await)
}

/// `mxisd sync [status] [--source NAME]`
pub async fn sync(args: &SyncArgs) -> ExitCode {
    let call = match args.what.as_deref() {
        Some("status") => admin_call(
            args.config.as_deref(),
            reqwest::Method::GET,
            "sync",
            None,
            30,
        ),
        None => admin_call(
            args.config.as_deref(),
            reqwest::Method::POST,
            "sync",
            Some(
                serde_json::json!({ "source": args.source, "force": args.force })
                    .to_string()
                    .into(),
            ),
            3600,
        ),
        Some(other) => {
            eprintln!(
                "error: unknown `mxisd sync {other}`; use `mxisd sync` or `mxisd sync status`"
            );
            return ExitCode::FAILURE;
        }
    };
    let result = call.await;
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
    let (method, path) = if args.retry {
        (reqwest::Method::POST, "outbox/retry")
    } else {
        (reqwest::Method::GET, "outbox")
    };
    print_result(admin_call(args.config.as_deref(), method, path, None, 30).await)
}

/// `mxisd search TERM`
pub async fn search(args: &SearchArgs) -> ExitCode {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("term", &args.term)
        .append_pair("limit", &args.limit.unwrap_or(10).to_string())
        .finish();
    print_result(
        admin_call(
            args.config.as_deref(),
            reqwest::Method::GET,
            &format!("search?{query}"),
            None,
            30,
        )
        .await,
    )
}

/// `mxisd reindex`
pub async fn reindex(args: &ReindexArgs) -> ExitCode {
    print_result(
        admin_call(
            args.config.as_deref(),
            reqwest::Method::POST,
            "reindex",
            None,
            3600,
        )
        .await,
    )
}

/// `mxisd hashing rotate`
pub async fn hashing(args: &HashingArgs) -> ExitCode {
    match &args.command {
        HashingCommand::Rotate(a) => print_result(
            admin_call(
                a.config.as_deref(),
                reqwest::Method::POST,
                "hashing/rotate",
                None,
                3600,
            )
            .await,
        ),
    }
}

/// `mxisd backup`
pub async fn backup(args: &BackupArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report_config_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    let out = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "mxisd-{}.mxisd-backup",
            crate::store::now_ms() / 1000
        ))
    });
    if out.exists() {
        eprintln!("error: {} already exists", out.display());
        return ExitCode::FAILURE;
    }
    let online = if args.offline {
        None
    } else {
        config.admin_url()
    };
    let result = match online {
        Some(admin) => match backup_online(&admin, &out).await {
            Err(BackupFailure::Unreachable(why)) => {
                eprintln!("the admin listener does not answer ({why}); reading the store directly");
                // Nothing else runs on this runtime: blocking here is fine.
                crate::service::backup::offline(&config, &out)
            }
            Err(BackupFailure::Other(why)) => Err(why),
            Ok(s) => Ok(s),
        },
        None => crate::service::backup::offline(&config, &out),
    };
    match result {
        Ok(s) => {
            println!(
                "backup written to {}: {} store entries, {} key files, {} bytes (checked)",
                out.display(),
                s.entries,
                s.files,
                s.bytes
            );
            println!("it holds the signing key: keep it as private as the key itself");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

enum BackupFailure {
    /// Nothing listens: the server is probably stopped.
    Unreachable(String),
    Other(String),
}

/// Streams a backup from the admin listener into `out` (through a `.partial` file that
/// is checked whole before it is renamed).
async fn backup_online(
    admin: &str,
    out: &Path,
) -> Result<crate::store::backup::Summary, BackupFailure> {
    use std::io::Write as _;
    let url = format!("{admin}_mxisd/admin/v1/backup");
    let client = reqwest::Client::builder()
        .dns_resolver(crate::dns::ForReqwest::new().map_err(BackupFailure::Other)?)
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(std::time::Duration::from_secs(300))
        .no_proxy()
        .build()
        .map_err(|e| BackupFailure::Other(format!("cannot build an HTTP client: {e}")))?;
    let mut response = client.get(&url).send().await.map_err(|e| {
        if e.is_connect() {
            BackupFailure::Unreachable(e.to_string())
        } else {
            BackupFailure::Other(format!("{url}: {e}"))
        }
    })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .json::<serde_json::Value>()
            .await
            .unwrap_or_default();
        return Err(BackupFailure::Other(format!(
            "{url} answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let partial = crate::service::backup::partial_path(out);
    let file = crate::service::backup::create_private(&partial).map_err(BackupFailure::Other)?;
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
    let written = async {
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("the backup stream broke off: {e}"))?
        {
            writer
                .write_all(&chunk)
                .map_err(|e| format!("{}: {e}", partial.display()))?;
        }
        writer
            .into_inner()
            .map_err(|e| format!("{}: {e}", partial.display()))?
            .sync_all()
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        Ok(crate::store::backup::Summary::default())
    }
    .await;
    crate::service::backup::finish_file(&partial, out, written).map_err(BackupFailure::Other)
}

/// `mxisd restore`
pub fn restore(args: &RestoreArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report_config_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    match crate::service::backup::restore(&config, &args.file, args.force) {
        Ok(r) => {
            println!(
                "restored {} store entries and {} key files from a backup of {} made by mxisd {} (store schema {})",
                r.summary.entries,
                r.summary.files,
                r.header.server_name,
                r.header.version,
                r.header.schema
            );
            if r.keys_written == 0 && r.summary.files > 0 {
                println!(
                    "the signing key in {} is the backup's already; left as it is",
                    config.key.path.display()
                );
            }
            if let Some(p) = r.previous_store {
                println!("the store it replaced is kept in {}", p.display());
            }
            if let Some(p) = r.previous_keys {
                println!("the key directory it replaced is kept in {}", p.display());
            }
            println!("start mxisd: the store is migrated if needed and the search index rebuilt");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
