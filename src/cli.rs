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

/// Exit 0 if the server answers its status endpoint, 1 otherwise.
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
            println!("ok: {url} answered {}", resp.status().as_u16());
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!("unhealthy: {url} answered {}", resp.status());
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
