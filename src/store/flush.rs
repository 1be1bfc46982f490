//! Group flush: a write acknowledged to a client must be on disk first, but an fsync per
//! request would cap the server at the disk's fsync rate. Writers apply their batch, then
//! wait on [`GroupFlusher::flush`]; one thread runs `Kv::flush` for everyone who asked
//! before it started, so N concurrent writers share one fsync. A writer that asks while
//! a flush is running waits for the next one, which covers its (already applied) batch.

use super::kv::Kv;
use super::StoreError;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), Failure>>;

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    stop: bool,
    /// Completed flush rounds, for the status page and tests.
    rounds: u64,
    /// Set by the first failed flush or write and kept until the store is reopened:
    /// after an fsync error nothing written since can be trusted to be durable, so
    /// every later write is refused.
    failed: Option<Failure>,
}

/// Why writes are refused.
#[derive(Debug, Clone)]
pub struct Failure {
    pub detail: String,
    /// For lack of space.
    pub full: bool,
}

impl Failure {
    fn of(e: &StoreError) -> Self {
        Self {
            detail: e.to_string(),
            full: matches!(
                e,
                StoreError::Full(_) | StoreError::ReadOnly { full: true, .. }
            ),
        }
    }

    fn error(&self) -> StoreError {
        StoreError::ReadOnly {
            full: self.full,
            detail: self.detail.clone(),
        }
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct GroupFlusher {
    shared: Arc<Shared>,
    kv: Arc<dyn Kv>,
    thread: Option<JoinHandle<()>>,
}

impl GroupFlusher {
    pub fn start(kv: Arc<dyn Kv>) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let backend = Arc::clone(&kv);
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || run(&worker, backend.as_ref()))
            .map_err(|e| StoreError::Io {
                what: "cannot start the store flush thread".into(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            shared,
            kv,
            thread: Some(thread),
        })
    }

    /// Resolves once everything applied before this call is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(f) = &state.failed {
                return Err(f.error());
            }
            if state.stop {
                return Err(StoreError::Closed);
            }
            state.waiting.push(tx);
        }
        self.shared.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(f)) => Err(f.error()),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Number of fsync rounds so far.
    pub fn rounds(&self) -> u64 {
        self.shared.lock().rounds
    }

    /// Refuses work once a flush failed or the flusher stopped.
    pub fn check(&self) -> Result<(), StoreError> {
        let state = self.shared.lock();
        match (&state.failed, state.stop) {
            (Some(f), _) => Err(f.error()),
            (None, true) => Err(StoreError::Closed),
            (None, false) => Ok(()),
        }
    }

    /// Why writes are refused, if they are.
    pub fn failure(&self) -> Option<Failure> {
        self.shared.lock().failed.clone()
    }

    /// Records a failed write of the backend (which refuses later ones): writes are
    /// refused from now on. Returns the error the writer answers with.
    pub fn fail(&self, e: StoreError) -> StoreError {
        if !matches!(e, StoreError::Io { .. } | StoreError::Full(_)) {
            return e;
        }
        let failure = Failure::of(&e);
        let first = {
            let mut state = self.shared.lock();
            let first = state.failed.is_none();
            if first {
                tracing::error!(error = %e, "a store write failed; refusing writes until the store can write again (reads go on)");
                state.failed = Some(failure.clone());
            }
            first
        };
        if first {
            serve_copy(self.kv.as_ref());
        }
        failure.error()
    }

    /// Accepts writes again (the backend was reopened).
    pub fn reset(&self) {
        self.shared.lock().failed = None;
    }

    /// Stops the thread after a last flush of whatever is waiting.
    pub fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GroupFlusher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// After the first failure, before anyone hears of it: reads move to a copy of the
/// store when the backend's own reads may fail from now on.
fn serve_copy(kv: &dyn Kv) {
    match kv.serve_copy() {
        Ok(true) => tracing::warn!(
            "reads are served from a copy of the store in memory until it can write again"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "reads stay on the store that failed (some may fail until it can write again)"
        ),
    }
}

fn run(shared: &Shared, kv: &dyn Kv) {
    loop {
        let (batch, stop) = {
            let mut state = shared.lock();
            while state.waiting.is_empty() && !state.stop {
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            (std::mem::take(&mut state.waiting), state.stop)
        };
        // sled can panic inside a flush; that must fail the waiters, not hang them.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kv.flush()))
            .unwrap_or_else(|_| {
                Err(StoreError::Io {
                    what: "flush".into(),
                    detail: "the storage engine panicked".into(),
                })
            })
            .map_err(|e| Failure::of(&e));
        let first = {
            let mut state = shared.lock();
            state.rounds += 1;
            match &result {
                Err(f) if state.failed.is_none() => {
                    tracing::error!(error = %f.detail, "store flush failed; refusing writes until the store can write again (reads go on)");
                    state.failed = Some(f.clone());
                    true
                }
                _ => false,
            }
        };
        if first {
            serve_copy(kv);
        }
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
        if stop {
            // Anyone who queued after the final round was taken gets an answer too: a
            // dropped sender reads as "the store is closed".
            drop(std::mem::take(&mut shared.lock().waiting));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::{Batch, Entry};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A Kv that counts flushes, can fail them, and is slow enough to make grouping
    /// observable.
    #[derive(Default)]
    struct CountingKv {
        flushes: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Kv for CountingKv {
        fn get(&self, _: &'static str, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn scan_prefix<'a>(
            &'a self,
            _: &'static str,
            _: &[u8],
        ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
            Box::new(std::iter::empty())
        }
        fn scan_chunk(
            &self,
            _: &'static str,
            _: &[u8],
            _: Option<&[u8]>,
            _: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            Ok(Vec::new())
        }
        fn apply(&self, _: Batch) -> Result<(), StoreError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Io {
                    what: "disk".into(),
                    detail: "EIO".into(),
                });
            }
            Ok(())
        }
        fn count(&self, _: &'static str) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn size_on_disk(&self) -> Option<u64> {
            None
        }
        fn scan_all<'a>(&'a self) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
            Box::new(std::iter::empty())
        }
        fn put_raw(&self, _: Vec<Entry>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_share_flushes() {
        let kv = Arc::new(CountingKv::default());
        let flusher = Arc::new(GroupFlusher::start(kv.clone()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let f = Arc::clone(&flusher);
            tasks.push(tokio::spawn(async move { f.flush().await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // 100 waiters with a 20 ms fsync: a handful of rounds, far fewer than 100.
        let flushes = kv.flushes.load(Ordering::SeqCst);
        assert!(
            (1..=10).contains(&flushes),
            "{flushes} flushes for 100 waiters"
        );
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_waiters_and_every_later_write() {
        let kv = Arc::new(CountingKv::default());
        kv.fail.store(true, Ordering::SeqCst);
        let flusher = GroupFlusher::start(kv.clone()).unwrap();
        assert!(flusher.flush().await.is_err());
        kv.fail.store(false, Ordering::SeqCst);
        assert!(flusher.flush().await.is_err(), "failure is sticky");
        assert!(flusher.check().is_err());
    }
}
