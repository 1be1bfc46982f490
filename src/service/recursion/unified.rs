//! The unified view of MSC4004, as LINAGORA's Twake federated identity service has
//! it: we push the hashes of our bound 3PIDs there on a schedule (under each pepper it
//! accepts, with our `host:port`), and ask it during recursive lookups, with hashes
//! only. It answers what it knows and names the servers that have the others
//! (`third_party_mappings`); those are asked with hashes too. No address goes to the
//! view, or to a server it names, in clear.

use super::remote::{forget_account, forget_details, remote_hash, v2_session};
use super::{ask, lock, Found, Reply, Via};
use crate::config::recursion::{LeavePolicy, RecursionConfig, UnifiedView};
use crate::federation::identity::RemoteError;
use crate::model::{now_ms, ThreePid};
use crate::service::Services;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hashes in one push (Twake reads JSON bodies of limited size).
const PUSH_CHUNK: usize = 1_000;

/// What the view has taken: per pepper, a fingerprint of each hash, for one view and
/// name since one time; and how the last round went.
#[derive(Default)]
pub(super) struct Pushes {
    taken: Mutex<Taken>,
    last: Mutex<Option<PushStatus>>,
}

#[derive(Default)]
struct Taken {
    /// The view's base URL and our name in it.
    basis: (String, String),
    since: Option<Instant>,
    by_pepper: HashMap<String, HashSet<u64>>,
}

/// Everything is sent again this often: a 500 from Twake may have been an outage
/// rather than duplicates, and what it lost comes back.
const REFRESH: Duration = Duration::from_secs(86_400);

/// The last push to the unified view, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushStatus {
    pub server: String,
    /// When the round ended (unix ms).
    pub at_ms: u64,
    /// 3PIDs whose hashes the view holds (session control's share of our bindings).
    pub threepids: u64,
    /// Hashes sent in that round (only new ones are sent).
    pub sent: u64,
    pub error: Option<String>,
}

impl super::Recursion {
    pub fn push_status(&self) -> Option<PushStatus> {
        lock(&self.pushes.last).clone()
    }
}

/// Our name in the view's answers: `publishAs`, or `server.publicUrl`'s host and port.
fn publish_name(state: &Services, view: &UnifiedView) -> String {
    view.publish_as.clone().unwrap_or_else(|| {
        let public = &state.config().server.public_url;
        reqwest::Url::parse(public)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| public.clone())
    })
}

/// Asks the view about `pending`, then the servers it names (never ourselves).
/// Answers go to `fresh`; 3PIDs whose server could not be asked to `unsure`.
pub(super) async fn ask_view(
    state: &Services,
    config: &RecursionConfig,
    view: &UnifiedView,
    pending: &[ThreePid],
    fresh: &mut HashMap<ThreePid, Found>,
    unsure: &mut HashSet<ThreePid>,
) {
    let Some(reply) = ask(state, config, &view.server, pending, Via::Unified).await else {
        unsure.extend(pending.iter().cloned());
        return;
    };
    fresh.extend(reply.found);
    let me = publish_name(state, view);
    let followed: Vec<(Vec<ThreePid>, Option<Reply>)> = futures_util::stream::iter(
        reply
            .elsewhere
            .into_iter()
            .filter(|(server, _)| !server.eq_ignore_ascii_case(&me)),
    )
    .map(|(server, group)| async move {
        let base = format!("https://{server}");
        let reply = ask(state, config, &base, &group, Via::Hashes).await;
        (group, reply)
    })
    .buffer_unordered(8)
    .collect()
    .await;
    for (group, reply) in followed {
        match reply {
            Some(r) => fresh.extend(r.found),
            None => unsure.extend(group),
        }
    }
}

/// Pushes to the view every `federation.unifiedView.push.every`, the first time at
/// start. Reads the config at each tick (at most 30 s apart), so a reload applies; a
/// round in progress ends with the server.
pub async fn push_task(state: Services, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut last: Option<Instant> = None;
    loop {
        let config = state.config().lookup.recursive.clone();
        let due = config
            .unified
            .as_ref()
            .and_then(|view| Some((view, view.push_every?)));
        let mut tick = Duration::from_secs(30);
        if let Some((view, every)) = due {
            tick = tick.min(every);
            if last.is_none_or(|t| t.elapsed() >= every) {
                let status = tokio::select! {
                    status = push_round(&state, &config, view) => status,
                    _ = shutdown.changed() => return,
                };
                *lock(&state.recursion.pushes.last) = Some(status);
                last = Some(Instant::now());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One round, as `/status` shows it.
async fn push_round(state: &Services, config: &RecursionConfig, view: &UnifiedView) -> PushStatus {
    match push(state, config, view).await {
        Ok((threepids, sent)) => {
            tracing::info!(threepids, sent, "pushed our hashes to the unified view");
            PushStatus {
                server: view.server.clone(),
                at_ms: now_ms(),
                threepids,
                sent,
                error: None,
            }
        }
        Err(e) => {
            tracing::warn!(server = %view.server, error = %e, "pushing our hashes to the unified view failed; trying again next round");
            PushStatus {
                server: view.server.clone(),
                at_ms: now_ms(),
                threepids: state.recursion.push_status().map_or(0, |b| b.threepids),
                sent: 0,
                error: Some(e),
            }
        }
    }
}

/// One round: the view's peppers, our hashes under each that it has not taken yet, in
/// chunks. How many 3PIDs, and how many hashes were sent.
async fn push(
    state: &Services,
    config: &RecursionConfig,
    view: &UnifiedView,
) -> Result<(u64, u64), String> {
    let fed = &state.federation;
    fed.identity_target_allowed(&view.server)
        .await
        .map_err(|e| e.to_string())?;
    let remote = state.recursion.remote(&view.server);
    let me = publish_name(state, view);
    let label = super::label_of(&view.server);
    {
        let mut taken = lock(&state.recursion.pushes.taken);
        let basis = (view.server.clone(), me.clone());
        if taken.basis != basis || taken.since.is_none_or(|t| t.elapsed() >= REFRESH) {
            *taken = Taken {
                basis,
                since: Some(Instant::now()),
                by_pepper: HashMap::new(),
            };
        }
    }
    // Each round reads its peppers anew (Twake rotates daily and never says so).
    forget_details(&remote);
    let mut renewed = false;
    'round: loop {
        let (token, details) = match v2_session(state, config, &remote).await {
            Err(RemoteError::Unauthorized) if !renewed => {
                renewed = true;
                forget_account(&remote);
                continue;
            }
            other => other.map_err(|e| e.to_string())?,
        };
        if !details.sha256 {
            return Err("the unified view does not take sha256 hashes".into());
        }
        let peppers: Vec<String> = std::iter::once(details.pepper.clone())
            .chain(details.alt_peppers.iter().cloned())
            .collect();
        let (threepids, todo) = {
            let state = state.clone();
            let allow = config.allow.clone();
            let peppers = peppers.clone();
            tokio::task::spawn_blocking(move || hashes_to_push(&state, allow, &peppers))
                .await
                .map_err(|e| e.to_string())??
        };
        let mut sent = 0u64;
        for (pepper, list) in todo {
            for chunk in list.chunks(PUSH_CHUNK) {
                let hashes: Vec<String> = chunk.iter().map(|(_, h)| h.clone()).collect();
                match fed
                    .identity_push_hashes(
                        &view.server,
                        token.as_deref(),
                        &pepper,
                        &me,
                        &hashes,
                        config.timeout,
                    )
                    .await
                {
                    // Twake's 500 for hashes it already has counts as taken too
                    // (the daily refresh covers a 500 that was an outage).
                    Ok(_) => {
                        let mut taken = lock(&state.recursion.pushes.taken);
                        taken
                            .by_pepper
                            .entry(pepper.clone())
                            .or_default()
                            .extend(chunk.iter().map(|(f, _)| *f));
                        sent += hashes.len() as u64;
                        state.metrics.remote_call(&label, "pushed", hashes.len());
                    }
                    Err(RemoteError::Unauthorized) if !renewed => {
                        renewed = true;
                        forget_account(&remote);
                        continue 'round;
                    }
                    Err(RemoteError::InvalidPepper) => {
                        // Rotated meanwhile: the next round uses the new one.
                        forget_details(&remote);
                        break;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        lock(&state.recursion.pushes.taken)
            .by_pepper
            .retain(|p, _| peppers.contains(p));
        return Ok((threepids, sent));
    }
}

/// Our bound 3PIDs that session control lets out (its media and domain lists; not
/// `localDomain`, which keeps our own users out of *queries*: the view is where they
/// are published, as hashes), hashed under each pepper, minus what was taken.
#[allow(clippy::type_complexity)]
fn hashes_to_push(
    state: &Services,
    mut allow: LeavePolicy,
    peppers: &[String],
) -> Result<(u64, Vec<(String, Vec<(u64, String)>)>), String> {
    allow.local_domain = true;
    let domain = state.config().matrix.domain.to_ascii_lowercase();
    let mut threepids = Vec::new();
    state
        .store
        .each_bound_threepid(now_ms(), &mut |t| {
            if allow.allows(t.medium(), t.address(), &domain) {
                threepids.push(t);
            }
        })
        .map_err(|e| e.to_string())?;
    let taken = lock(&state.recursion.pushes.taken);
    let empty = HashSet::new();
    let todo = peppers
        .iter()
        .map(|pepper| {
            let taken = taken.by_pepper.get(pepper).unwrap_or(&empty);
            let list = threepids
                .iter()
                .filter_map(|t| {
                    let hash = remote_hash(t, pepper);
                    let print = fingerprint(&hash);
                    (!taken.contains(&print)).then_some((print, hash))
                })
                .collect();
            (pepper.clone(), list)
        })
        .collect();
    Ok((threepids.len() as u64, todo))
}

/// 64 bits of a hash, enough to tell which were taken.
fn fingerprint(hash: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    hash.hash(&mut h);
    h.finish()
}
