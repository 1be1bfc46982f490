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

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    stop: bool,
    /// Completed flush rounds, for the status page and tests.
    rounds: u64,
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
    thread: Option<JoinHandle<()>>,
}

impl GroupFlusher {
    pub fn start(kv: Arc<dyn Kv>) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || run(&worker, kv.as_ref()))
            .map_err(|e| StoreError::Io {
                what: "cannot start the store flush thread".into(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Resolves once everything applied before this call is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.stop {
                return Err(StoreError::Closed);
            }
            state.waiting.push(tx);
        }
        self.shared.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io {
                what: "flush".into(),
                detail: e,
            }),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Number of fsync rounds so far.
    pub fn rounds(&self) -> u64 {
        self.shared.lock().rounds
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

fn run(shared: &Shared, kv: &dyn Kv) {
    loop {
        let (batch, stop) = {
            let mut state = shared.lock();
            while state.waiting.is_empty() && !state.stop {
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            (std::mem::take(&mut state.waiting), state.stop)
        };
        let result = kv.flush().map_err(|e| e.to_string());
        shared.lock().rounds += 1;
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
        if stop {
            return;
        }
    }
}
