//! The progress bar of long work (`sync`, `bindings import`, `hashing rotate`,
//! `reindex`): while the request that does the work is out, the admin API's `progress`
//! is polled and the newest job of the same kind is drawn on standard error (phase,
//! count, rate, ETA). Nothing is drawn, and nothing polled, when standard error is not
//! a terminal: scripts and logs get only the one-line summary each verb prints.

use super::client::{json_answer, Target};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::future::Future;
use std::io::IsTerminal as _;
use std::time::Duration;

/// How often the server is asked where the job is.
const POLL: Duration = Duration::from_millis(250);

/// Runs `work`, drawing the progress of the server's `kind` job meanwhile (`total_hint`
/// stands in for a total the server does not know, as the lines of an import).
pub(super) async fn watch<F: Future>(
    target: Option<Target>,
    kind: &'static str,
    total_hint: Option<u64>,
    work: F,
) -> F::Output {
    let Some(target) = target.filter(|_| std::io::stderr().is_terminal()) else {
        return work.await;
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let mut shown: Option<(u64, String)> = None;
    let mut work = std::pin::pin!(work);
    let out = loop {
        let poll = async {
            tokio::time::sleep(POLL).await;
            newest_job(&target, kind).await
        };
        tokio::select! {
            out = &mut work => break out,
            job = poll => {
                if let Some(job) = job {
                    draw(&bar, &job, total_hint, &mut shown);
                }
            }
        }
    };
    bar.finish_and_clear();
    out
}

async fn newest_job(target: &Target, kind: &str) -> Option<Value> {
    let response = target
        .send(http::Method::GET, "progress", None, Duration::from_secs(2))
        .await
        .ok()?;
    let (status, body) = json_answer(response).await.ok()?;
    if status != 200 {
        return None;
    }
    body["jobs"]
        .as_array()?
        .iter()
        .filter(|j| j["kind"] == kind)
        .max_by_key(|j| j["id"].as_u64().unwrap_or(0))
        .cloned()
}

/// Updates the bar from one snapshot; a new job or phase starts it afresh (its rate
/// and ETA are the phase's).
fn draw(bar: &ProgressBar, job: &Value, hint: Option<u64>, shown: &mut Option<(u64, String)>) {
    let id = job["id"].as_u64().unwrap_or(0);
    let phase = job["phase"].as_str().unwrap_or("working").to_owned();
    let unit = job["unit"].as_str().unwrap_or("");
    let done = job["done"].as_u64().unwrap_or(0);
    let total = job["total"].as_u64().or(hint.filter(|_| !unit.is_empty()));
    if shown.as_ref() != Some(&(id, phase.clone())) {
        *shown = Some((id, phase.clone()));
        bar.reset();
        bar.set_message(format!(
            "{}: {phase}",
            job["what"].as_str().unwrap_or("working")
        ));
        bar.set_prefix(unit.to_owned());
        let template = match (total, unit) {
            (_, "") => "{spinner} {msg} ({elapsed})",
            (Some(_), _) => {
                "{msg} [{bar:30}] {human_pos}/{human_len} {prefix} ({per_sec}, ETA {eta})"
            }
            (None, _) => "{spinner} {msg}: {human_pos} {prefix} ({per_sec})",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    if let Some(total) = total {
        bar.set_length(total.max(done));
    } else {
        bar.unset_length();
    }
    bar.set_position(done);
}
