//! The threads sync runs execute on: one in Linux's SCHED_IDLE class for fetching,
//! diffing and applying, and one at normal priority for the parts that hold the
//! bindings lock. Only the threads and their runtimes live here; what runs on them is
//! the driver's business (`service::sync`).

/// Sync runs (fetch, diff, apply) execute on a thread of their own in the SCHED_IDLE
/// class: on a small server a run of a big directory would otherwise take a whole core
/// from lookups for its duration. Idle, a run goes at full speed. The thread ends when
/// the server's state is dropped.
#[derive(Debug)]
pub(super) struct SyncThread {
    pub(super) handle: tokio::runtime::Handle,
    /// A second thread, at normal priority, for the parts of a run that hold the
    /// bindings lock (see [`crate::store::Store::apply_sync`]).
    pub(super) writer: tokio::runtime::Handle,
    _stop: tokio::sync::watch::Sender<()>,
}

/// Puts the calling thread in Linux's SCHED_IDLE class: it runs only on CPU time no
/// other thread wants, and yields the moment one does (nice 19 still takes its share
/// and is not preempted at once).
fn set_idle_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!(error = ?e, "cannot lower the sync thread's priority");
    }
}

/// A thread running a current-thread runtime until `stop` is dropped. Threads inherit
/// their creator's scheduling class, so both sync threads are made by the caller
/// (a normal-priority thread at start-up) and only one then lowers itself.
fn runtime_thread(
    name: &str,
    idle: bool,
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
            if idle {
                set_idle_priority();
            }
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
            handle: runtime_thread("mxisd-sync", true, &stop)?,
            writer: runtime_thread("mxisd-sync-write", false, &stop)?,
            _stop: stop,
        })
    }
}
