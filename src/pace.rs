//! Pacing background work (sync runs, index updates) against the requests the server
//! answers. A job calls [`Pacer::pause`] between steps; while requests are being
//! answered, the pause keeps the job to a small share of one core (its work time
//! measured since the last pause), and when none are, it returns at once: on an idle
//! server a run goes at full speed, and on a box busy with *other* programs it competes
//! at a normal priority instead of waiting for an idle CPU that may never come (the
//! SCHED_IDLE class it used before took 339× longer next to two busy processes).
//! Nothing here knows what the job does or how requests are counted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The share of one core a job may take while requests are answered.
pub const SHARE_WHILE_SERVING: f64 = 0.15;

/// The longest single pause (a step that took long is not made up for all at once).
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// How requests are counted: any number that grows with each request answered.
pub type Activity = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Paces one job; cheap to clone (clones share the job's clock).
#[derive(Clone, Default)]
pub struct Pacer(Option<Arc<Paced>>);

struct Paced {
    activity: Activity,
    share: f64,
    state: Mutex<State>,
}

struct State {
    /// The activity count at the last pause.
    seen: u64,
    /// When the job last resumed work.
    resumed: Instant,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("paced", &self.0.is_some())
            .finish()
    }
}

impl Pacer {
    /// A pacer for a job started now, looking at `activity`.
    pub fn new(activity: Activity, share: f64) -> Self {
        let seen = activity();
        Self(Some(Arc::new(Paced {
            activity,
            share: share.clamp(0.01, 1.0),
            state: Mutex::new(State {
                seen,
                resumed: Instant::now(),
            }),
        })))
    }

    /// How long to pause now: zero when no request was answered since the last pause,
    /// else the job's work since then stretched to its share (at most [`MAX_PAUSE`]).
    fn due(&self) -> Duration {
        let Some(paced) = &self.0 else {
            return Duration::ZERO;
        };
        let now = (paced.activity)();
        let mut state = paced.state.lock().unwrap_or_else(|p| p.into_inner());
        let serving = now != state.seen;
        state.seen = now;
        let worked = state.resumed.elapsed();
        if !serving {
            state.resumed = Instant::now();
            return Duration::ZERO;
        }
        let pause = worked
            .mul_f64((1.0 - paced.share) / paced.share)
            .min(MAX_PAUSE);
        state.resumed = Instant::now() + pause;
        pause
    }

    /// Between two steps of async work.
    pub async fn pause(&self) {
        let pause = self.due();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    /// Between two steps of blocking work (on a thread of the job's own).
    pub fn pause_blocking(&self) {
        let pause = self.due();
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn pauses_only_while_requests_are_answered_and_in_proportion() {
        let answered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&answered);
        let pacer = Pacer::new(Arc::new(move || counter.load(Ordering::Relaxed)), 0.25);
        // Idle: no pause, however long the step.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pacer.due(), Duration::ZERO);
        // Serving: 20 ms of work at a 25 % share is a 60 ms pause (the sleep is at
        // least 20 ms; the pause is three times the measured work, capped).
        std::thread::sleep(Duration::from_millis(20));
        answered.fetch_add(5, Ordering::Relaxed);
        let pause = pacer.due();
        assert!(pause >= Duration::from_millis(60), "{pause:?}");
        assert!(pause <= MAX_PAUSE);
        // A long step is not made up for all at once.
        std::thread::sleep(Duration::from_millis(120));
        answered.fetch_add(1, Ordering::Relaxed);
        assert!(pacer.due() <= MAX_PAUSE);
        // An unpaced job never waits.
        assert_eq!(Pacer::default().due(), Duration::ZERO);
    }
}
