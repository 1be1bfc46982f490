//! Prometheus metrics, served as text at `/metrics` on the admin listener.
//!
//! Every label has a fixed set of values: requests are counted by route *template*
//! (`/_matrix/identity/v2/pubkey/{keyId}`, never the raw path; anything else is
//! `unmatched`), status class and listener; sync metrics by configured source. Nothing
//! a client sends can create a new series.
//!
//! The hot counters (requests, lookups) are sharded: each thread adds to its own copy
//! and a scrape sums them, so two cores serving lookups do not fight over one cache line.
//! Everything that the store or another component already knows (outbox, sync status,
//! store size) is read at scrape time instead of being counted twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
/// The hottest route, which the fast lane counts with a precomputed route id.
pub const LOOKUP_PATH: &str = "/_matrix/identity/v2/lookup";

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Route templates below the identity API prefixes (served on v2 and, mostly, v1).
const IDENTITY_ROUTES: &[&str] = &[
    "",
    "/lookup",
    "/bulk_lookup",
    "/hash_details",
    "/account",
    "/account/register",
    "/account/logout",
    "/terms",
    "/validate/{medium}/requestToken",
    "/validate/{medium}/submitToken",
    "/3pid/getValidated3pid",
    "/3pid/bind",
    "/3pid/unbind",
    "/store-invite",
    "/sign-ed25519",
    "/pubkey/isvalid",
    "/pubkey/ephemeral/isvalid",
    "/pubkey/{keyId}",
];
const IDENTITY_PREFIXES: [&str; 2] = ["/_matrix/identity/v2", "/_matrix/identity/api/v1"];
const CLIENT_ROUTES: &[&str] = &[
    "/user_directory/search",
    "/profile/{userId}",
    "/profile/{userId}/{field}",
];
const CLIENT_PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];
const ADMIN_ROUTES: &[&str] = &[
    "/status",
    "/bindings",
    "/bindings/remove",
    "/bindings/import",
    "/invites",
    "/invites/remove",
    "/outbox",
    "/outbox/retry",
    "/search",
    "/reindex",
    "/sync",
    "/hashing/rotate",
    "/backup",
];
const ADMIN_PREFIX: &str = "/_mxisd/admin/v1";
const OTHER_ROUTES: &[&str] = &[
    "/_matrix/identity/versions",
    "/version",
    "/status",
    "/metrics",
    "/_matrix-internal/identity/v1/check_credentials",
];

/// What a lookup entry found.
#[derive(Debug, Clone, Copy)]
pub enum LookupKind {
    /// v2 `/lookup` with `sha256`.
    Hashed,
    /// v2 `/lookup` with `none`.
    Plain,
    /// v1 `/lookup` and `/bulk_lookup`.
    V1,
    /// Entries not bound here that were asked of other identity servers.
    Recursive,
}

const LOOKUP_KINDS: [&str; 4] = ["sha256", "none", "v1", "recursive"];

/// Distinct remotes counted by name; the rest share the label `other`.
const MAX_REMOTE_LABELS: usize = 64;

/// Which listener served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
    /// The homeserver-facing listener (`server.internal`).
    Internal,
}

impl Listener {
    /// The name in the request log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Admin => "admin",
            Self::Internal => "internal",
        }
    }
}

const LISTENERS: [&str; 3] = ["public", "admin", "internal"];

/// Cells of one route on one listener: a count per status class, the histogram's
/// buckets (non-cumulative here; cumulated when rendered) and the sum in microseconds.
const ROUTE_STRIDE: usize = STATUS_CLASSES.len() + BUCKETS.len() + 1 + 1;

/// Sharded counters: `SHARDS` copies, each thread adding to one.
const SHARDS: usize = 8;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
}

#[derive(Debug, Default, Clone)]
struct SyncCounters {
    ok: u64,
    failed: u64,
    seconds: f64,
}

/// Counters of what happened since start.
#[derive(Debug)]
pub struct Metrics {
    /// Full route templates, index = route id. The last one is `unmatched`.
    routes: Vec<String>,
    /// Route ids by prefix, so a path is compared with its own family only; the
    /// family with the empty prefix comes last.
    families: Vec<(&'static str, std::ops::Range<usize>)>,
    lookup_route: usize,
    /// `SHARDS` × (routes × listeners × stride + lookup cells).
    cells: Vec<Box<[AtomicU64]>>,
    sync: Mutex<BTreeMap<String, SyncCounters>>,
    /// Onbind deliveries: [delivered, retry, failed for good].
    deliveries: [AtomicU64; 3],
    /// Password checks by (backend, result).
    auth: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Login identifiers rewritten, by kind (`thirdparty`, `phone`, `rule`).
    rewrites: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests refused by a policy, by kind (`register`, `invite`).
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Recursive lookups by remote, counted per outcome of [`REMOTE_OUTCOMES`].
    remotes: Mutex<BTreeMap<String, [u64; REMOTE_OUTCOMES.len()]>>,
}

/// The outcomes of calls to remote identity servers.
const REMOTE_OUTCOMES: [&str; 9] = [
    "found",
    "not_found",
    "error",
    "limited",
    "bad_answer",
    "refused",
    "skipped",
    "withheld",
    "pushed",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut routes = Vec::new();
        let mut families = Vec::new();
        let mut family = |prefix: &'static str, templates: &[&str], routes: &mut Vec<String>| {
            let start = routes.len();
            routes.extend(templates.iter().map(|r| format!("{prefix}{r}")));
            families.push((prefix, start..routes.len()));
        };
        for prefix in IDENTITY_PREFIXES {
            family(prefix, IDENTITY_ROUTES, &mut routes);
        }
        for prefix in CLIENT_PREFIXES {
            family(prefix, CLIENT_ROUTES, &mut routes);
        }
        family(ADMIN_PREFIX, ADMIN_ROUTES, &mut routes);
        family("", OTHER_ROUTES, &mut routes);
        routes.push("unmatched".to_owned());
        let per_shard = routes.len() * LISTENERS.len() * ROUTE_STRIDE + LOOKUP_KINDS.len() * 2;
        let cells = (0..SHARDS)
            .map(|_| (0..per_shard).map(|_| AtomicU64::new(0)).collect())
            .collect();
        let mut metrics = Self {
            routes,
            families,
            lookup_route: 0,
            cells,
            sync: Mutex::new(BTreeMap::new()),
            deliveries: Default::default(),
            auth: Mutex::new(BTreeMap::new()),
            rewrites: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(BTreeMap::new()),
            remotes: Mutex::new(BTreeMap::new()),
        };
        metrics.lookup_route = metrics.route_id(crate::metrics::LOOKUP_PATH);
        metrics
    }

    /// The route id of `POST /_matrix/identity/v2/lookup` (the direct route).
    pub fn lookup_route(&self) -> usize {
        self.lookup_route
    }

    fn add(&self, cell: usize, n: u64) {
        let shard = SHARD.with(|s| *s);
        if let Some(c) = self.cells.get(shard).and_then(|s| s.get(cell)) {
            c.fetch_add(n, Relaxed);
        }
    }

    fn sum(&self, cell: usize) -> u64 {
        self.cells
            .iter()
            .filter_map(|s| s.get(cell))
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// The route id of a request path (the template it matches, else `unmatched`).
    pub fn route_id(&self, path: &str) -> usize {
        let unmatched = self.routes.len() - 1;
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let Some((_, range)) = self
            .families
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
        else {
            return unmatched;
        };
        self.routes
            .get(range.clone())
            .and_then(|templates| templates.iter().position(|t| template_matches(t, path)))
            .map_or(unmatched, |i| range.start + i)
    }

    /// Records one answered request.
    pub fn request(&self, listener: Listener, route: usize, status: u16, elapsed: Duration) {
        let listener = match listener {
            Listener::Public => 0,
            Listener::Admin => 1,
            Listener::Internal => 2,
        };
        let base = (route.min(self.routes.len() - 1) * LISTENERS.len() + listener) * ROUTE_STRIDE;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.add(base + class, 1);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.add(base + STATUS_CLASSES.len() + bucket, 1);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.add(base + ROUTE_STRIDE - 1, micros);
    }

    /// Requests answered on the public listener so far, every route and status (what
    /// background work looks at to know whether the server is serving; a few hundred
    /// relaxed loads, no lock).
    pub fn public_answered(&self) -> u64 {
        (0..self.routes.len())
            .map(|route| route * LISTENERS.len() * ROUTE_STRIDE)
            .flat_map(|base| (0..STATUS_CLASSES.len()).map(move |class| base + class))
            .map(|cell| self.sum(cell))
            .fold(0u64, u64::wrapping_add)
    }

    fn lookup_base(&self) -> usize {
        self.routes.len() * LISTENERS.len() * ROUTE_STRIDE
    }

    /// Records the entries of one lookup request: how many matched and how many did not.
    pub fn lookups(&self, kind: LookupKind, hits: usize, misses: usize) {
        let k = kind as usize;
        let base = self.lookup_base() + k * 2;
        if hits > 0 {
            self.add(base, hits as u64);
        }
        if misses > 0 {
            self.add(base + 1, misses as u64);
        }
    }

    /// Records one sync run of `source`.
    pub fn sync_run(&self, source: &str, ok: bool, elapsed: Duration) {
        if let Ok(mut map) = self.sync.lock() {
            let c = map.entry(source.to_owned()).or_default();
            if ok {
                c.ok += 1;
            } else {
                c.failed += 1;
            }
            c.seconds += elapsed.as_secs_f64();
        }
    }

    /// Records one password check answered by `backend` (a source's name, or `none`
    /// when no source knew the user) with `result`: `success`, `failure`, `error`
    /// (the backend could not be asked) or `limited`.
    pub fn auth_attempt(&self, backend: &str, result: &'static str) {
        if let Ok(mut map) = self.auth.lock() {
            *map.entry((backend.to_owned(), result)).or_default() += 1;
        }
    }

    /// Records one login whose identifier was rewritten to the user it names.
    pub fn login_rewrite(&self, kind: &'static str) {
        if let Ok(mut map) = self.rewrites.lock() {
            *map.entry(kind).or_default() += 1;
        }
    }

    /// Records one request a policy refused.
    pub fn policy_refusal(&self, kind: &'static str) {
        if let Ok(mut map) = self.refusals.lock() {
            *map.entry(kind).or_default() += 1;
        }
    }

    /// Records `n` entries (or calls) of recursive lookups at `remote` with `outcome`
    /// (`found`, `not_found`, `error`, `bad_answer`, `refused`, `skipped` by an open
    /// breaker; remote `-`: `withheld` by session control).
    pub fn remote_call(&self, remote: &str, outcome: &'static str, n: usize) {
        let Some(i) = REMOTE_OUTCOMES.iter().position(|o| *o == outcome) else {
            return;
        };
        if n == 0 {
            return;
        }
        if let Ok(mut map) = self.remotes.lock() {
            // The common case (a known remote) allocates nothing.
            if let Some(counts) = map.get_mut(remote) {
                counts[i] += n as u64;
                return;
            }
            let name = if map.len() >= MAX_REMOTE_LABELS {
                "other"
            } else {
                remote
            };
            map.entry(name.to_owned()).or_default()[i] += n as u64;
        }
    }

    /// Records one onbind delivery attempt.
    pub fn delivery(&self, outcome: Delivery) {
        self.deliveries[outcome as usize].fetch_add(1, Relaxed);
    }

    /// The counters in Prometheus' text format (`gauges` is appended as it is).
    pub fn render(&self, out: &mut String) {
        self.render_http(out);
        header(
            out,
            "mxisd_lookup_entries_total",
            "counter",
            "Entries of lookup requests, by kind and whether a binding was found.",
        );
        let base = self.lookup_base();
        for (k, kind) in LOOKUP_KINDS.iter().enumerate() {
            for (r, result) in ["hit", "miss"].iter().enumerate() {
                let n = self.sum(base + k * 2 + r);
                let _ = writeln!(
                    out,
                    "mxisd_lookup_entries_total{{kind=\"{kind}\",result=\"{result}\"}} {n}"
                );
            }
        }
        header(
            out,
            "mxisd_invite_deliveries_total",
            "counter",
            "Attempts to tell homeservers about bound invites: delivered, to be retried, failed for good.",
        );
        for (i, result) in ["delivered", "retry", "failed"].iter().enumerate() {
            let n = self.deliveries[i].load(Relaxed);
            let _ = writeln!(
                out,
                "mxisd_invite_deliveries_total{{result=\"{result}\"}} {n}"
            );
        }
        header(
            out,
            "mxisd_auth_attempts_total",
            "counter",
            "Password checks (check_credentials), by backend and result.",
        );
        let auth = self.auth.lock().map(|m| m.clone()).unwrap_or_default();
        for ((backend, result), n) in &auth {
            let _ = writeln!(
                out,
                "mxisd_auth_attempts_total{{backend=\"{}\",result=\"{result}\"}} {n}",
                escape(backend)
            );
        }
        header(
            out,
            "mxisd_recursive_remote_total",
            "counter",
            "Recursive lookups at other identity servers, by remote and outcome (entries found and not found; calls that failed, were refused by the outbound guard or skipped by an open breaker).",
        );
        let remotes = self.remotes.lock().map(|m| m.clone()).unwrap_or_default();
        for (remote, counts) in &remotes {
            for (outcome, n) in REMOTE_OUTCOMES.iter().zip(counts) {
                if *n > 0 {
                    let _ = writeln!(
                        out,
                        "mxisd_recursive_remote_total{{remote=\"{}\",outcome=\"{outcome}\"}} {n}",
                        escape(remote)
                    );
                }
            }
        }
        header(
            out,
            "mxisd_login_rewrites_total",
            "counter",
            "Logins passed to the homeserver with their 3PID or rewritten name replaced by the user it is bound to, by kind.",
        );
        let rewrites = self.rewrites.lock().map(|m| m.clone()).unwrap_or_default();
        for kind in ["thirdparty", "phone", "rule"] {
            let n = rewrites.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "mxisd_login_rewrites_total{{kind=\"{kind}\"}} {n}");
        }
        header(
            out,
            "mxisd_policy_refusals_total",
            "counter",
            "Requests refused by the registration policy or the 3PID invite policy.",
        );
        let refusals = self.refusals.lock().map(|m| m.clone()).unwrap_or_default();
        for kind in ["register", "invite"] {
            let n = refusals.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "mxisd_policy_refusals_total{{kind=\"{kind}\"}} {n}");
        }
        let sync = self.sync.lock().map(|m| m.clone()).unwrap_or_default();
        header(
            out,
            "mxisd_sync_runs_total",
            "counter",
            "Sync runs since start, by source and outcome.",
        );
        for (source, c) in &sync {
            let source = escape(source);
            let _ = writeln!(
                out,
                "mxisd_sync_runs_total{{source=\"{source}\",result=\"ok\"}} {}",
                c.ok
            );
            let _ = writeln!(
                out,
                "mxisd_sync_runs_total{{source=\"{source}\",result=\"error\"}} {}",
                c.failed
            );
        }
        header(
            out,
            "mxisd_sync_run_seconds_total",
            "counter",
            "Time spent in sync runs since start, by source.",
        );
        for (source, c) in &sync {
            let _ = writeln!(
                out,
                "mxisd_sync_run_seconds_total{{source=\"{}\"}} {}",
                escape(source),
                c.seconds
            );
        }
    }

    fn render_http(&self, out: &mut String) {
        header(
            out,
            "mxisd_http_requests_total",
            "counter",
            "Requests answered, by listener, route template and status class.",
        );
        let mut histograms = String::new();
        header(
            &mut histograms,
            "mxisd_http_request_duration_seconds",
            "histogram",
            "Time to answer a request, by listener and route template.",
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (l, listener) in LISTENERS.iter().enumerate() {
                let base = (r * LISTENERS.len() + l) * ROUTE_STRIDE;
                let counts: Vec<u64> = (0..STATUS_CLASSES.len())
                    .map(|c| self.sum(base + c))
                    .collect();
                let total: u64 = counts.iter().sum();
                if total == 0 {
                    continue;
                }
                let labels = format!("listener=\"{listener}\",route=\"{}\"", escape(route));
                for (class, n) in STATUS_CLASSES.iter().zip(&counts) {
                    if *n > 0 {
                        let _ = writeln!(
                            out,
                            "mxisd_http_requests_total{{{labels},status=\"{class}\"}} {n}"
                        );
                    }
                }
                let mut cumulative = 0u64;
                for (b, le) in BUCKETS.iter().enumerate() {
                    cumulative += self.sum(base + STATUS_CLASSES.len() + b);
                    let _ = writeln!(
                        histograms,
                        "mxisd_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    histograms,
                    "mxisd_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
                );
                let micros = self.sum(base + ROUTE_STRIDE - 1);
                let _ = writeln!(
                    histograms,
                    "mxisd_http_request_duration_seconds_sum{{{labels}}} {}",
                    micros as f64 / 1e6
                );
                let _ = writeln!(
                    histograms,
                    "mxisd_http_request_duration_seconds_count{{{labels}}} {total}"
                );
            }
        }
        out.push_str(&histograms);
    }
}

/// Outcome of one onbind delivery attempt.
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    Delivered = 0,
    Retry = 1,
    Failed = 2,
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample without labels.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value as the text format wants it.
pub fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Whether `path` fits `template`, where a `{name}` segment matches any one non-empty
/// segment.
fn template_matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let wildcard = ts.starts_with('{') && ts.ends_with('}');
                if !(ts == ps || wildcard && !ps.is_empty()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_and_unknown_paths_share_one_label() {
        let m = Metrics::new();
        let name = |p: &str| m.routes[m.route_id(p)].clone();
        assert_eq!(
            name("/_matrix/identity/v2/lookup"),
            "/_matrix/identity/v2/lookup"
        );
        assert_eq!(
            name("/_matrix/identity/v2/pubkey/ed25519:0"),
            "/_matrix/identity/v2/pubkey/{keyId}"
        );
        assert_eq!(
            name("/_matrix/identity/api/v1/pubkey/isvalid"),
            "/_matrix/identity/api/v1/pubkey/isvalid"
        );
        assert_eq!(
            name("/_matrix/identity/v2/validate/email/requestToken"),
            "/_matrix/identity/v2/validate/{medium}/requestToken"
        );
        assert_eq!(name("/_matrix/identity/v2"), "/_matrix/identity/v2");
        assert_eq!(name("/_matrix/identity/v2/"), "/_matrix/identity/v2");
        assert_eq!(
            name("/_matrix/client/v3/profile/@a:b/displayname"),
            "/_matrix/client/v3/profile/{userId}/{field}"
        );
        assert_eq!(name("/_mxisd/admin/v1/sync"), "/_mxisd/admin/v1/sync");
        for junk in [
            "/",
            "",
            "/_matrix/identity/v2/pubkey/",
            "/_matrix/identity/v2/pubkey/a/b/c",
            "/wp-login.php",
            "/_matrix/identity/v3/lookup",
            "/_matrix/client/v3/profile",
        ] {
            assert_eq!(name(junk), "unmatched", "{junk}");
        }
    }

    #[test]
    fn requests_render_as_counts_and_cumulative_histograms() {
        let m = Metrics::new();
        let lookup = m.route_id("/_matrix/identity/v2/lookup");
        m.request(Listener::Public, lookup, 200, Duration::from_micros(300));
        m.request(Listener::Public, lookup, 200, Duration::from_millis(3));
        m.request(Listener::Public, lookup, 401, Duration::from_secs(20));
        // A status outside 100..599 is clamped into a class rather than dropped.
        m.request(Listener::Admin, m.route_id("/nope"), 999, Duration::ZERO);
        m.lookups(LookupKind::Hashed, 2, 3);
        m.lookups(LookupKind::V1, 0, 1);
        m.sync_run("ldap", true, Duration::from_millis(1500));
        m.sync_run("ldap", false, Duration::from_millis(500));
        m.delivery(Delivery::Retry);
        let mut out = String::new();
        m.render(&mut out);
        let route = "listener=\"public\",route=\"/_matrix/identity/v2/lookup\"";
        for line in [
            format!("mxisd_http_requests_total{{{route},status=\"2xx\"}} 2"),
            format!("mxisd_http_requests_total{{{route},status=\"4xx\"}} 1"),
            format!("mxisd_http_request_duration_seconds_bucket{{{route},le=\"0.0005\"}} 1"),
            format!("mxisd_http_request_duration_seconds_bucket{{{route},le=\"0.005\"}} 2"),
            format!("mxisd_http_request_duration_seconds_bucket{{{route},le=\"10\"}} 2"),
            format!("mxisd_http_request_duration_seconds_bucket{{{route},le=\"+Inf\"}} 3"),
            format!("mxisd_http_request_duration_seconds_count{{{route}}} 3"),
            format!("mxisd_http_request_duration_seconds_sum{{{route}}} 20.0033"),
            "mxisd_http_requests_total{listener=\"admin\",route=\"unmatched\",status=\"5xx\"} 1"
                .into(),
            "mxisd_lookup_entries_total{kind=\"sha256\",result=\"hit\"} 2".into(),
            "mxisd_lookup_entries_total{kind=\"sha256\",result=\"miss\"} 3".into(),
            "mxisd_lookup_entries_total{kind=\"v1\",result=\"miss\"} 1".into(),
            "mxisd_sync_runs_total{source=\"ldap\",result=\"ok\"} 1".into(),
            "mxisd_sync_runs_total{source=\"ldap\",result=\"error\"} 1".into(),
            "mxisd_sync_run_seconds_total{source=\"ldap\"} 2".into(),
            "mxisd_invite_deliveries_total{result=\"retry\"} 1".into(),
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
        // Routes never asked for produce no series.
        assert!(!out.contains("bulk_lookup"));
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = std::sync::Arc::new(Metrics::new());
        let route = m.route_id("/status");
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.request(Listener::Public, route, 200, Duration::from_micros(10));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "mxisd_http_requests_total{listener=\"public\",route=\"/status\",status=\"2xx\"} 12000"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
