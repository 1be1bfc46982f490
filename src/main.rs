//! The `mxisd` binary: parses the command line and hands over to the library. Binding the
//! listeners and waiting for SIGTERM/SIGINT happen here; everything else is in `mxisd`.

use anyhow::Context as _;
use mxisd::cli::{self, Cli, Command, KeysCommand};
use mxisd::config::{host_port, Config};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = parse_args();
    // One TLS stack everywhere: ring's provider, installed before anything uses rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.version {
        mxisd::outln!("mxisd {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(command) = args.command else {
        eprintln!(
            "mxisd {}: a federated Matrix identity server",
            env!("CARGO_PKG_VERSION")
        );
        eprintln!(
            "Run `mxisd run` to start on the embedded default, or `mxisd help` for every command."
        );
        return ExitCode::FAILURE;
    };
    match command {
        Command::Run(a) => {
            let code = run(a.config.as_deref());
            // The last request lines are written before the process ends.
            mxisd::logging::flush();
            code
        }
        Command::CheckConfig(a) => cli::check_config(&a),
        Command::Keys(k) => match k.command {
            KeysCommand::Show(a) => cli::keys_show(&a),
        },
        Command::Healthcheck(a) => block_on(cli::healthcheck(&a)),
        Command::Status(a) => block_on(cli::status(&a)),
        Command::Bindings(a) => block_on(cli::bindings(&a)),
        Command::Hashing(a) => block_on(cli::hashing(&a)),
        Command::Invites(a) => block_on(cli::invites(&a)),
        Command::Outbox(a) => block_on(cli::outbox(&a)),
        Command::Sync(a) => block_on(cli::sync(&a)),
        Command::Search(a) => block_on(cli::search(&a)),
        Command::Reindex(a) => block_on(cli::reindex(&a)),
        Command::Reload(a) => block_on(cli::reload(&a)),
        Command::Backup(a) => block_on(cli::backup(&a)),
        Command::Restore(a) => cli::restore(&a),
        Command::ImportMa1sd(a) => block_on(cli::import_ma1sd(&a)),
    }
}

/// The command line, `-h` and `-V` read as `--help` and `--version` (see
/// [`cli::normalise_args`]); help and usage errors are printed here and end the process,
/// as `argh::from_env` would.
fn parse_args() -> Cli {
    use argh::FromArgs as _;
    let raw: Vec<String> = std::env::args().collect();
    let name = raw
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("mxisd")
        .to_owned();
    let rest = cli::normalise_args(raw.get(1..).unwrap_or_default());
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match Cli::from_args(&[&name], &rest) {
        Ok(cli) => cli,
        Err(early) => match early.status {
            Ok(()) => {
                mxisd::outln!("{}", early.output.trim_end());
                std::process::exit(0)
            }
            Err(()) => {
                eprintln!(
                    "{}\nRun `{name} --help` (or `{name} COMMAND --help`) for more.",
                    early.output.trim_end()
                );
                std::process::exit(1)
            }
        },
    }
}

fn block_on<F: std::future::Future<Output = ExitCode>>(fut: F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_path: Option<&std::path::Path>) -> ExitCode {
    let source = match cli::find_config(config_path, true) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match cli::load_from(&source) {
        Ok(c) => c,
        Err(e) => {
            cli::report_config_errors(&e);
            return ExitCode::from(2);
        }
    };
    mxisd::logging::init(&config.logging);
    match serve(config, source.to_string()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Hands the memory a finished job (a sync run, an import, a reindex, a rotation) freed
/// back to the system. glibc's allocator keeps freed memory inside its heap and returns
/// only the top of it, so one first sync of 100k users left the server 240 MB resident
/// with 80 MB in use; `malloc_trim` releases every free page. A thread waits for a job,
/// or a phase of one that freed much (a sync's apply, before its index update), to end
/// (the library counts them; it has no unsafe code). Other allocators return freed
/// memory themselves. The one unsafe block of the project.
#[allow(unsafe_code)]
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        let spawned = std::thread::Builder::new()
            .name("mxisd-trim".into())
            .spawn(|| {
                let mut seen = mxisd::progress::jobs_ended();
                // SAFETY: malloc_trim takes no pointer; it only releases pages the
                // allocator holds free, under the allocator's own locks.
                let trim = || unsafe {
                    malloc_trim(0);
                };
                loop {
                    seen = mxisd::progress::wait_for_end(seen);
                    trim();
                    // Once more when what a job's threads free after it ended (the
                    // index's merge, connections closing) is free too; ends close
                    // together share these.
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    trim();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread returning freed memory");
        }
    }
}

/// Runs the server; `config_source` says where its configuration came from (logged).
fn serve(config: Config, config_source: String) -> anyhow::Result<()> {
    return_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mxisd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let reload = reload_signal()?;
        for warning in &config.warnings {
            tracing::warn!("config: {warning}");
        }
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %config_source,
            storage = %config.storage.path.display(),
            keys = %config.key.path.display(),
            "starting mxisd"
        );
        let s = &config.server;
        let public = bind(&s.hostname, s.port, "server.hostname/server.port").await?;
        let admin = match s.admin.tcp.as_ref().filter(|_| s.admin.enabled) {
            Some(t) => Some(
                bind(
                    &t.hostname,
                    t.port,
                    "server.admin.hostname/server.admin.port",
                )
                .await?,
            ),
            None => None,
        };
        let metrics = if s.metrics.enabled {
            Some(
                bind(
                    &s.metrics.hostname,
                    s.metrics.port,
                    "server.metrics.hostname/server.metrics.port",
                )
                .await?,
            )
        } else {
            None
        };
        let internal = if s.internal.enabled {
            Some(
                bind(
                    &s.internal.hostname,
                    s.internal.port,
                    "server.internal.hostname/server.internal.port",
                )
                .await?,
            )
        } else {
            None
        };
        mxisd::run_reloadable(
            config,
            mxisd::Listeners {
                public,
                admin,
                metrics,
                internal,
            },
            shutdown,
            Some(reload),
        )
        .await
        .map_err(anyhow::Error::from)
    })
}

async fn bind(host: &str, port: u16, keys: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = host_port(host, port);
    // Names are resolved by hickory, not getaddrinfo (see mxisd::dns).
    let resolver = mxisd::dns::resolver().map_err(anyhow::Error::msg)?;
    let addrs = mxisd::dns::lookup(&resolver, host, port)
        .await
        .with_context(|| format!("cannot listen on {addr} (set by {keys})"))?;
    tokio::net::TcpListener::bind(&addrs[..])
        .await
        .with_context(|| {
            format!(
                "cannot listen on {addr} (set by {keys}; is another mxisd or service using it?)"
            )
        })
}

/// Registers the SIGHUP handler now (without one, SIGHUP ends the process) and hands
/// each signal on as a reload request.
fn reload_signal() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received");
            // A reload already waiting covers this signal too.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok(rx)
}

/// Registers the SIGTERM and SIGINT handlers now (so a signal during start-up is not
/// fatal) and returns a future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
