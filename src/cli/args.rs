//! The command line as argh reads it: one struct per verb, one enum per group of
//! subcommands. Only syntax and help text live here; what a verb does is in the sibling
//! modules (`admin`, `local`, `backup`), so changing a message never touches parsing.

use argh::FromArgs;
use std::path::PathBuf;

/// argh knows only `--help` and `--version`: `-h` anywhere (before a `--`) becomes
/// `--help`, and `-V` first on the line `--version`, as in most tools. argh also takes a
/// bare `-` (standard input, as in `bindings import -`) for an unknown option, so it is
/// moved behind a `--`, where argh reads it as the positional it is.
pub fn normalise_args(args: &[String]) -> Vec<String> {
    let mut rest = false;
    let mut dashes = 0;
    let mut out: Vec<String> = Vec::with_capacity(args.len() + 1);
    for (i, a) in args.iter().enumerate() {
        match a.as_str() {
            _ if rest => out.push(a.clone()),
            "--" => rest = true,
            "-" => dashes += 1,
            "-h" => out.push("--help".into()),
            "-V" if i == 0 => out.push("--version".into()),
            _ => out.push(a.clone()),
        }
    }
    if rest || dashes > 0 {
        // Everything that followed the `--` stays after it, the moved `-` first.
        let after = args
            .iter()
            .position(|a| a == "--")
            .map_or(&[][..], |at| &args[at + 1..]);
        out.truncate(out.len() - after.len());
        out.push("--".into());
        out.extend(std::iter::repeat_n("-".to_owned(), dashes));
        out.extend(after.iter().cloned());
    }
    out
}

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
    Reload(ReloadArgs),
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Rebuild the directory index of a running server from its store.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reindex")]
pub struct ReindexArgs {
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Make a running server re-read its configuration file (as SIGHUP does) and say what
/// changed, what needs a restart, or why the new file was refused.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reload")]
pub struct ReloadArgs {
    /// print the server's answer as JSON
    #[argh(switch)]
    pub json: bool,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Show one pending invite.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct InvitesTokenArgs {
    /// the invite's token
    #[argh(positional)]
    pub token: String,
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Drop one pending invite (it will not be delivered).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct InvitesRemoveArgs {
    /// the invite's token
    #[argh(positional)]
    pub token: String,
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Onbind deliveries to homeservers: pending (with their last error) and failed.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "outbox")]
pub struct OutboxArgs {
    /// put failed deliveries back in line (from the start of their backoff)
    #[argh(switch)]
    pub retry: bool,
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Import bindings from a file of `medium<TAB>address<TAB>mxid` lines.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import")]
pub struct BindingsImportArgs {
    /// the file to import (- for standard input)
    #[argh(positional)]
    pub file: PathBuf,
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

/// Run the identity server. Without -c: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml, else
/// the embedded default (state under ./mxisd-data).
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
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
    /// configuration file (default: $MXISD_CONFIG, else /etc/mxisd/mxisd.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print the answer as JSON, for scripts (default: text for people)
    #[argh(switch)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn short_help_and_version_are_the_long_ones() {
        assert_eq!(normalise_args(&strings(&["-V"])), ["--version"]);
        assert_eq!(normalise_args(&strings(&["-h"])), ["--help"]);
        assert_eq!(
            normalise_args(&strings(&["sync", "-h", "-V"])),
            ["sync", "--help", "-V"]
        );
        // After `--`, words are left alone (a search term may be `-h`).
        assert_eq!(
            normalise_args(&strings(&["search", "--", "-h"])),
            ["search", "--", "-h"]
        );
        // A bare `-` goes behind `--` so that argh takes it as a positional.
        assert_eq!(
            normalise_args(&strings(&["bindings", "import", "-", "--json"])),
            ["bindings", "import", "--json", "--", "-"]
        );
        assert_eq!(
            normalise_args(&strings(&["search", "-", "--", "-x"])),
            ["search", "--", "-", "-x"]
        );
    }
}
