//! The threads sync runs execute on: one for fetching, diffing and applying, and one for
//! the parts that hold the bindings lock. Both run at the server's normal priority; a
//! run keeps out of the way of lookups by pacing itself while requests are answered
//! ([`crate::pace`]), not by a scheduling class: in Linux's SCHED_IDLE class a run next
//! to two busy processes took 339× its idle time, and might never finish on a server
//! whose homeserver or database keeps the CPU busy. Only the threads and their runtimes
//! live here; what runs on them is the driver's business (`service::sync`).

/// Sync runs (fetch, diff, apply) execute on a thread of their own, so a run's blocking
/// parts (reading the store, feeding the index) never hold up the server's workers.
/// The thread ends when the server's state is dropped.
#[derive(Debug)]
pub(super) struct SyncThread {
    pub(super) handle: tokio::runtime::Handle,
    /// A second thread for the parts of a run that hold the bindings lock (see
    /// [`crate::store::Store::apply_sync`]): never behind a run's pause or its reads.
    pub(super) writer: tokio::runtime::Handle,
    _stop: tokio::sync::watch::Sender<()>,
}

/// A thread running a current-thread runtime until `stop` is dropped.
fn runtime_thread(
    name: &str,
    stop: &tokio::sync::watch::Sender<()>,
) -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()?;
    let handle = runtime.handle().clone();
    let mut stopped = stop.subscribe();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(async {
                // Err once the sender is dropped.
                while stopped.changed().await.is_ok() {}
            });
        })?;
    Ok(handle)
}

impl SyncThread {
    pub(super) fn start() -> std::io::Result<Self> {
        let (stop, _) = tokio::sync::watch::channel(());
        Ok(Self {
            handle: runtime_thread("mxisd-sync", &stop)?,
            writer: runtime_thread("mxisd-sync-write", &stop)?,
            _stop: stop,
        })
    }
}
