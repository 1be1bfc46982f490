//! Wiring: opens the store, the index and the signing key, builds the services, starts
//! the listeners and the named background tasks, and owns shutdown (stop accepting,
//! drain, stop the tasks, flush the store). The only module that sees every other one;
//! nothing imports it but the crate root.

use crate::config::Config;
use crate::{crypto, federation, http, index, model, notify, service, store};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// The TCP listeners the caller bound for us (the admin Unix socket is bound here, from
/// `server.admin.socket`).
pub struct Listeners {
    pub public: TcpListener,
    /// The TCP admin listener (`server.admin.port`, with its token), if configured.
    pub admin: Option<TcpListener>,
    /// The metrics listener, unless `server.metrics.enabled` is false.
    pub metrics: Option<TcpListener>,
    /// The homeserver-facing listener, when `server.internal.enabled` is true.
    pub internal: Option<TcpListener>,
}

/// Why the server could not start (each a one-line message naming the cause).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Key(#[from] crypto::keyfile::KeyFileError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Runtime(String),
}

/// What a server instance runs on, before it listens: the services over the opened
/// store, signing key and directory index (`index_created`: the index was made anew).
pub struct Built {
    pub config: Arc<Config>,
    pub store: Arc<store::Store>,
    pub state: service::Services,
    pub index_created: bool,
}

/// Opens the store, the signing key and the directory index and builds the services
/// over them: everything [`run`] does before binding its listeners (the fuzz targets
/// drive the routes over the same).
pub async fn build(config: Config) -> Result<Built, StartError> {
    let started = Instant::now();
    let store_path = store::dir(&config);
    let cache = config.storage.cache_size;
    let pepper_length = config.hashing.pepper_length;
    let store = tokio::task::spawn_blocking(move || {
        store::Store::open_serving(&store_path, cache, pepper_length, &scratch_dir())
    })
    .await
    .map_err(|e| StartError::Runtime(e.to_string()))??;
    tracing::info!(path = %store::dir(&config).display(), schema = store.schema_version()?, "store open");
    if let Ok(store::StoreStatus {
        read_only: Some(why),
        ..
    }) = store.status()
    {
        tracing::warn!(reason = %why.reason, "the store is read-only: lookups and searches are answered, writes get 503 until the disk has space (checked every 5 s)");
    }
    // Lookups read the store until the table is built, so this does not delay them.
    store.start_lookup_table().await?;

    let key_dir = config.key.path.clone();
    let (signer, origin) = crypto::keyfile::load_or_create(&key_dir)?;
    tracing::info!(
        path = %key_dir.display(),
        key_id = signer.key_id(),
        public_key = %signer.public_key_b64(),
        "signing key {}",
        match origin {
            crypto::keyfile::KeyOrigin::Generated => "generated",
            crypto::keyfile::KeyOrigin::Loaded => "loaded",
        }
    );

    let federation =
        federation::Federation::new(&config.federation).map_err(StartError::Runtime)?;
    let keys = service::keys::Keys::new(signer, config.server.name.clone());
    let notifier = notify::Notifier::new(&config).map_err(StartError::Runtime)?;
    for (medium, what) in [
        (model::Medium::Email, "threepid.medium.email.connector"),
        (model::Medium::Msisdn, "threepid.medium.msisdn.connector"),
    ] {
        if config.session.validation_enabled && !notifier.delivers(medium) {
            tracing::warn!(
                "{what} is none: {} validation messages are dropped, so nobody can validate such an address",
                medium.as_str()
            );
        }
    }
    let limits = service::ratelimit::Limiters::new(&config.rate_limit);
    let index_dir = config.storage.path.join("index");
    let (directory, index_created) =
        index::DirectoryIndex::open(&index_dir).map_err(|e| StartError::Runtime(e.to_string()))?;
    directory.set_cache_size(config.directory.search_cache);
    let config = Arc::new(config);
    let store = Arc::new(store);
    let state = service::Services::new(service::Parts {
        config: Arc::clone(&config),
        store: Arc::clone(&store),
        keys,
        federation,
        notifier,
        limits,
        sync: service::sync::Syncer::new(config.sync.clone()),
        homeserver: federation::homeserver::Homeserver::new(&config),
        directory,
        metrics: crate::metrics::Metrics::new(),
        started,
    });
    Ok(Built {
        config,
        store,
        state,
        index_created,
    })
}

/// Runs the server until `shutdown` completes, then drains, stops background work and
/// flushes the store.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_reloadable(config, listeners, shutdown, None).await
}

/// [`run`], also reloading the config file each time `reload` yields (the binary sends
/// one per SIGHUP).
pub async fn run_reloadable(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reload: Option<tokio::sync::mpsc::Receiver<()>>,
) -> Result<(), StartError> {
    let Built {
        config,
        store,
        state,
        index_created,
    } = build(config).await?;
    let tls = match &config.server.tls {
        Some(t) => {
            Some(http::listen::tls_acceptor(&t.certificate, &t.key).map_err(StartError::Tls)?)
        }
        None => None,
    };

    // Bound before anything starts, so a socket in the way stops us cleanly.
    let admin_bound = if config.server.admin.enabled {
        let a = &config.server.admin;
        Some(
            http::listen::bind_admin_socket(&a.socket, a.group.as_deref())
                .map_err(StartError::Runtime)?,
        )
    } else {
        None
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = config.server.shutdown_timeout;
    let mut tasks = tokio::task::JoinSet::new();
    let connections = &config.server.connections;
    let open_files = http::conns::open_file_limit();
    let public_limits = http::conns::Limits::public(connections, open_files);
    if public_limits.max as u64 + 256 > open_files {
        tracing::warn!(
            open_files,
            max = public_limits.max,
            "server.connections.max leaves fewer than 256 of the open-file limit for the store and the other listeners; raise the limit (LimitNOFILE) or lower max"
        );
    }
    tracing::info!(
        max = public_limits.max,
        per_address = public_limits.per_address,
        open_files,
        "public connection limits"
    );
    let side = |name| http::conns::Tracker::new(name, http::conns::Limits::side(connections));
    if let Ok(addr) = listeners.public.local_addr() {
        tracing::info!(
            %addr,
            scheme = if tls.is_some() { "https" } else { "http" },
            public_url = %config.server.public_url,
            server_name = %config.server.name,
            "identity API listening"
        );
    }
    tasks.spawn(http::listen::serve(
        "public",
        http::listen::Bound::Tcp(listeners.public),
        tls,
        http::public_routes(state.clone()),
        http::listen::Lane::Public(http::fast::Direct::new(state.clone())),
        http::conns::Tracker::new("public", public_limits),
        stop_rx.clone(),
        drain,
    ));
    let admin_socket = if let Some(bound) = admin_bound {
        let a = &config.server.admin;
        tracing::info!(path = %a.socket.display(), "admin socket listening");
        tasks.spawn(http::listen::serve(
            "admin",
            bound,
            None,
            http::admin_routes(state.clone()),
            http::listen::Lane::Admin(http::door::Door::socket(), state.clone()),
            side("admin"),
            stop_rx.clone(),
            drain,
        ));
        Some(a.socket.clone())
    } else {
        None
    };
    let admin_tcp = config
        .server
        .admin
        .tcp
        .as_ref()
        .filter(|_| config.server.admin.enabled);
    if let (Some(admin), Some(tcp)) = (listeners.admin, admin_tcp) {
        if let Ok(addr) = admin.local_addr() {
            tracing::info!(%addr, "admin TCP listener listening (bearer token required)");
        }
        let door = http::door::Door::tcp(tcp.token.expose(), tcp.allow_remote);
        tasks.spawn(http::listen::serve(
            "admin-tcp",
            http::listen::Bound::Tcp(admin),
            None,
            http::admin_routes(state.clone()),
            http::listen::Lane::Admin(door, state.clone()),
            side("admin-tcp"),
            stop_rx.clone(),
            drain,
        ));
    }
    if let Some(internal) = listeners.internal {
        if let Ok(addr) = internal.local_addr() {
            tracing::info!(%addr, "internal listener listening (check_credentials)");
        }
        tasks.spawn(http::listen::serve(
            "internal",
            http::listen::Bound::Tcp(internal),
            None,
            http::routes::internal_routes(state.clone()),
            http::listen::Lane::Plain,
            side("internal"),
            stop_rx.clone(),
            drain,
        ));
    }
    if let Some(metrics) = listeners.metrics {
        if let Ok(addr) = metrics.local_addr() {
            tracing::info!(%addr, "metrics listener listening");
        }
        tasks.spawn(http::listen::serve(
            "metrics",
            http::listen::Bound::Tcp(metrics),
            None,
            http::routes::metrics_routes(state.clone()),
            http::listen::Lane::Plain,
            side("metrics"),
            stop_rx.clone(),
            drain,
        ));
    }

    if let Some(every) = config.hashing.rotation {
        tracing::info!(
            every_secs = every.as_secs(),
            "lookup pepper rotation scheduled"
        );
        tasks.spawn(service::hashing::rotation_task(
            state.clone(),
            every,
            stop_rx.clone(),
        ));
    }

    tasks.spawn(service::session::purge_task(state.clone(), stop_rx.clone()));
    tasks.spawn(service::health::recovery_task(
        state.clone(),
        stop_rx.clone(),
    ));
    tasks.spawn(service::recursion::push_task(
        state.clone(),
        stop_rx.clone(),
    ));
    tasks.spawn(service::invite::delivery_task(
        state.clone(),
        stop_rx.clone(),
    ));
    let index_dirty = store.index_dirty().unwrap_or(true);
    if index_created || index_dirty {
        // New, broken and recreated, or maybe behind the store (we stopped while a
        // change was applied): rebuilt from the store, which is the truth. The
        // listeners are up: lookups are answered meanwhile, and searches read the
        // index as last committed (empty when it was recreated).
        let anyone = store.has_directory_listings().unwrap_or(true);
        if index_created && anyone {
            let meanwhile = if config.directory.exclude_homeserver {
                "searches find nobody until it is built"
            } else {
                "searches answer from the homeserver alone until it is built"
            };
            tracing::info!("directory index missing or unreadable: rebuilding it from the store; lookups are served meanwhile, {meanwhile}");
        } else if anyone {
            tracing::info!("directory index may be behind the store: rebuilding it; searches use it as it was until then");
        }
        let began = std::time::Instant::now();
        let built = match service::sync::reindex(&state).await {
            // No run has started yet: every source's change is in now.
            Ok(n) => store
                .clear_index_dirty()
                .await
                .map(|()| n)
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        match built {
            Ok(n) => tracing::info!(
                entries = n,
                took_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                "directory index built"
            ),
            Err(e) => tracing::error!(error = %e.message, "building the directory index failed"),
        }
    }
    tasks.spawn(service::sync::forget_removed_sources(state.clone()));
    tasks.spawn(service::sync::scheduler(state.clone(), stop_rx.clone()));
    if let Some(mut requests) = reload {
        let state = state.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    asked = requests.recv() => match asked {
                        // Logged by the reload itself, problems included.
                        Some(()) => { let _ = service::reload::from_file(&state).await; }
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        });
    }

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}

    // Handlers are gone; we should hold the last reference to the store now. A sync run
    // cancelled on its own thread lets go of it a moment later.
    drop(state);
    for _ in 0..100 {
        if Arc::strong_count(&store) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    match Arc::try_unwrap(store) {
        Ok(store) => tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| StartError::Runtime(e.to_string()))??,
        Err(still_shared) => {
            // A connection outlived the drain timeout; flush what we have anyway.
            tracing::warn!("store still in use at shutdown; flushing without closing");
            tokio::task::spawn_blocking(move || still_shared.sync())
                .await
                .map_err(|e| StartError::Runtime(e.to_string()))??;
        }
    }
    if let Some(path) = admin_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Where a store on a full disk is copied to be served read-only: memory.
fn scratch_dir() -> std::path::PathBuf {
    ["/dev/shm", "/run/shm"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
