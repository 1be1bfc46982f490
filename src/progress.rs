//! Progress of long work (a sync run, a bindings import, a pepper rotation, a reindex):
//! counters the working code bumps, a registry of the jobs running now that the admin
//! API lists for `mxisd` to draw its progress bar, and a log line every few seconds
//! while a job runs. Nothing here decides anything: a job is only watched.
//!
//! A [`Progress`] is cheap to clone and to bump (one atomic add); a detached one
//! (`Progress::default()`) counts for nobody. The job leaves the registry, and its log
//! line stops, when the last clone is dropped.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a running job logs where it is, unless `MXISD_PROGRESS_INTERVAL_MS` says
/// otherwise (tests).
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The jobs running now.
#[derive(Debug)]
pub struct Jobs {
    next_id: AtomicU64,
    running: Mutex<BTreeMap<u64, Weak<Job>>>,
    log_every: Duration,
}

impl Default for Jobs {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

/// A job being watched.
#[derive(Debug)]
struct Job {
    id: u64,
    kind: &'static str,
    what: String,
    started: Instant,
    done: AtomicU64,
    phase: Mutex<Phase>,
}

#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    unit: &'static str,
    total: Option<u64>,
    started: Instant,
}

/// Jobs ended since the start (see [`jobs_ended`]).
static ENDED: AtomicU64 = AtomicU64::new(0);
/// Wakes [`wait_for_end`] when [`ENDED`] grows.
static ENDED_LOCK: Mutex<()> = Mutex::new(());
static ENDED_WAKE: Condvar = Condvar::new();

fn count_end() {
    ENDED.fetch_add(1, Ordering::Relaxed);
    // Taken so a waiter between its check and its wait cannot miss the wake-up.
    let _held = ENDED_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    ENDED_WAKE.notify_all();
}

/// Blocks until [`jobs_ended`] differs from `seen`; returns the new count.
pub fn wait_for_end(seen: u64) -> u64 {
    let mut held = ENDED_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = ENDED.load(Ordering::Relaxed);
        if now != seen {
            return now;
        }
        held = ENDED_WAKE.wait(held).unwrap_or_else(|p| p.into_inner());
    }
}

/// How many jobs have ended since the process started (it only grows). A job is a
/// burst of allocations: the binary watches this to hand what a finished job freed
/// back to the system (glibc keeps freed memory inside its heap: after a first sync
/// of 100k users the process stayed 240 MB resident with 80 MB in use).
pub fn jobs_ended() -> u64 {
    ENDED.load(Ordering::Relaxed)
}

/// Counts a burst of allocations that is not a job (a storm of connections that has
/// ended), so its freed memory is handed back the same way.
pub fn burst_ended() {
    count_end();
}

impl Drop for Job {
    fn drop(&mut self) {
        count_end();
    }
}

/// The counters of one job; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<Arc<Job>>);

/// Where a job is, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub id: u64,
    /// `sync`, `import`, `rotate` or `reindex`.
    pub kind: &'static str,
    /// What it works on, for people (`sync of ldap`).
    pub what: String,
    pub phase: &'static str,
    /// What `done` and `total` count (`bindings`, `lines`).
    pub unit: &'static str,
    pub done: u64,
    /// `null` while unknown.
    pub total: Option<u64>,
    pub elapsed_ms: u64,
    /// `done` per second in this phase so far.
    pub rate: f64,
}

impl Jobs {
    pub fn new(log_every: Duration) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            running: Mutex::new(BTreeMap::new()),
            log_every,
        }
    }

    /// The interval of `MXISD_PROGRESS_INTERVAL_MS` (milliseconds), else [`LOG_INTERVAL`].
    pub fn interval_from(value: Option<&str>) -> Duration {
        value
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(LOG_INTERVAL, Duration::from_millis)
    }

    /// Starts watching a job. On a tokio runtime, a task logs where it is every interval
    /// until the job ends.
    pub fn start(&self, kind: &'static str, what: impl Into<String>) -> Progress {
        let now = Instant::now();
        let job = Arc::new(Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            kind,
            what: what.into(),
            started: now,
            done: AtomicU64::new(0),
            phase: Mutex::new(Phase {
                name: "starting",
                unit: "",
                total: None,
                started: now,
            }),
        });
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.retain(|_, j| j.strong_count() > 0);
            running.insert(job.id, Arc::downgrade(&job));
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let watched = Arc::downgrade(&job);
            let every = self.log_every;
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match watched.upgrade() {
                        Some(job) => job.log(),
                        None => return,
                    }
                }
            });
        }
        Progress(Some(job))
    }

    /// Every job running now, oldest first.
    pub fn list(&self) -> Vec<Snapshot> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .values()
            .filter_map(Weak::upgrade)
            .map(|j| j.snapshot())
            .collect()
    }
}

impl Job {
    fn snapshot(&self) -> Snapshot {
        let phase = self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let done = self.done.load(Ordering::Relaxed);
        let in_phase = phase.started.elapsed().as_secs_f64();
        Snapshot {
            id: self.id,
            kind: self.kind,
            what: self.what.clone(),
            phase: phase.name,
            unit: phase.unit,
            done,
            total: phase.total,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            rate: if in_phase > 0.0 {
                done as f64 / in_phase
            } else {
                0.0
            },
        }
    }

    fn log(&self) {
        let s = self.snapshot();
        tracing::info!(
            job = %s.what,
            phase = s.phase,
            done = s.done,
            total = s.total,
            rate = s.rate.round() as u64,
            "{}",
            s.line()
        );
    }
}

impl Snapshot {
    /// `sync of ldap: applying 40000 of 100000 changes (8000/s, 12 s so far)`
    pub fn line(&self) -> String {
        let count = match (self.total, self.unit) {
            (_, "") => String::new(),
            (Some(total), unit) => format!(" {} of {total} {unit}", self.done),
            (None, unit) => format!(" {} {unit}", self.done),
        };
        let rate = if self.unit.is_empty() || self.done == 0 {
            String::new()
        } else {
            format!("{:.0}/s, ", self.rate)
        };
        format!(
            "{}: {}{count} ({rate}{} s so far)",
            self.what,
            self.phase,
            self.elapsed_ms / 1000
        )
    }
}

impl Progress {
    /// A new phase: its name, what it counts and how many there are (if known); the
    /// count starts again at 0.
    pub fn phase(&self, name: &'static str, unit: &'static str, total: Option<u64>) {
        if let Some(job) = &self.0 {
            let mut phase = job.phase.lock().unwrap_or_else(|p| p.into_inner());
            *phase = Phase {
                name,
                unit,
                total,
                started: Instant::now(),
            };
            job.done.store(0, Ordering::Relaxed);
        }
    }

    /// `n` more done.
    pub fn add(&self, n: u64) {
        if let Some(job) = &self.0 {
            job.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Where the job is now (`None` when detached).
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.0.as_ref().map(|j| j.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_listed_while_running_and_counted_by_phase() {
        let jobs = Jobs::new(LOG_INTERVAL);
        let p = jobs.start("import", "bindings import");
        p.phase("importing", "lines", None);
        p.add(3);
        p.add(4);
        let listed = jobs.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].kind, listed[0].phase, listed[0].done),
            ("import", "importing", 7)
        );
        assert!(listed[0]
            .line()
            .starts_with("bindings import: importing 7 lines ("));
        p.phase("rehashing", "bindings", Some(10));
        p.add(2);
        let s = p.snapshot().unwrap();
        assert_eq!((s.done, s.total), (2, Some(10)));
        assert!(
            s.line().contains("rehashing 2 of 10 bindings"),
            "{}",
            s.line()
        );
        let clone = p.clone();
        drop(p);
        assert_eq!(jobs.list().len(), 1, "a clone keeps the job alive");
        let ended = jobs_ended();
        drop(clone);
        assert!(jobs.list().is_empty());
        assert!(jobs_ended() > ended, "the last handle's drop ends the job");
        // Detached progress counts for nobody.
        let none = Progress::default();
        none.add(1);
        assert!(none.snapshot().is_none());
    }

    #[test]
    fn the_log_interval_comes_from_the_environment_or_defaults() {
        assert_eq!(Jobs::interval_from(None), LOG_INTERVAL);
        assert_eq!(Jobs::interval_from(Some("x")), LOG_INTERVAL);
        assert_eq!(Jobs::interval_from(Some("0")), LOG_INTERVAL);
        assert_eq!(Jobs::interval_from(Some("250")), Duration::from_millis(250));
    }
}
