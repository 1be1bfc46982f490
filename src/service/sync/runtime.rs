//! The thread sync runs execute on: fetching, diffing, applying (with the chunks that
//! hold the bindings lock) and updating the index. It runs at the server's normal
//! priority; a run keeps out of the way of lookups by pacing itself while requests are
//! answered ([`crate::pace`]), not by a scheduling class: in Linux's SCHED_IDLE class a
//! run next to two busy processes took 339× its idle time, and might never finish on a
//! server whose homeserver or database keeps the CPU busy. Only the thread and its
//! runtime live here; what runs on them is the driver's business (`service::sync`).

/// Sync runs (fetch, diff, apply) execute on a thread of their own, so a run's blocking
/// parts (reading the store, feeding the index) never hold up the server's workers.
/// The thread ends when the server's state is dropped.
#[derive(Debug)]
pub(super) struct SyncThread {
    pub(super) handle: tokio::runtime::Handle,
    /// Runs take turns on the thread, one at a time. A run's chunks wait for the
    /// bindings lock on this thread, and tokio's lock is handed to the next waiter when
    /// released: were another run's pause or a long step of its fetch to hold the
    /// thread then, every bind would wait behind a lock nobody uses. (The chunks used to
    /// go to a second thread for that; its allocations then landed in another malloc
    /// arena than the run's input, as often as not, and the input's freed memory could
    /// not be reused for sled's pages: a first sync of 100k users peaked at 150-160 MB
    /// RSS against 126-132 MB on one thread, and kept 20 MB more at rest.)
    pub(super) turn: std::sync::Arc<tokio::sync::Mutex<()>>,
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
            turn: std::sync::Arc::default(),
            _stop: stop,
        })
    }
}
