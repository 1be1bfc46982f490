//! The `mxisd` binary: parses the command line and hands over to the library. Binding the
//! listeners and waiting for SIGTERM/SIGINT happen here; everything else is in `mxisd`.

use anyhow::Context as _;
use mxisd::cli::{self, Cli, Command, KeysCommand};
use mxisd::config::{host_port, Config};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Cli = argh::from_env();
    // One TLS stack everywhere: ring's provider, installed before anything uses rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.version {
        println!("mxisd {}", env!("CARGO_PKG_VERSION"));
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
        Command::Run(a) => run(a.config.as_deref()),
        Command::CheckConfig(a) => cli::check_config(&a),
        Command::Keys(k) => match k.command {
            KeysCommand::Show(a) => cli::keys_show(&a),
        },
        Command::Healthcheck(a) => block_on(cli::healthcheck(&a)),
        Command::Status(a) => block_on(cli::status(&a)),
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
    let config = match cli::load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            cli::report_config_errors(&e);
            return ExitCode::from(2);
        }
    };
    mxisd::logging::init(&config.logging);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mxisd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %config.source.as_ref().map_or_else(|| "embedded default".into(), |p| p.display().to_string()),
            storage = %config.storage.path.display(),
            keys = %config.key.path.display(),
            "starting mxisd"
        );
        let s = &config.server;
        let public = bind(&s.hostname, s.port, "server.hostname/server.port").await?;
        let admin = if s.admin.enabled {
            Some(bind(&s.admin.hostname, s.admin.port, "server.admin.hostname/server.admin.port").await?)
        } else {
            None
        };
        mxisd::run(config, mxisd::Listeners { public, admin }, shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    })
}

async fn bind(host: &str, port: u16, keys: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = host_port(host, port);
    tokio::net::TcpListener::bind(&addr).await.with_context(|| {
        format!("cannot listen on {addr} (set by {keys}; is another mxisd or service using it?)")
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
