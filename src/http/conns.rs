//! The open connections of one listener: how many, from which address, and which are
//! idle, so no client can hold the server's file descriptors.
//!
//! - A connection with no request in flight is closed once no byte has moved either
//!   way for `server.connections.idleTimeout` (a client that sends nothing, stops in
//!   the middle of its headers, or keeps an idle keep-alive connection, or does not
//!   read its answer). A request in flight is not idle: its body has its own deadline
//!   (`server.connections.bodyTimeout`, in `body`), its handler its own timeouts.
//! - Each listener holds at most `max` connections, and at most `perAddress` from one
//!   client address (addresses in `perAddressExempt`, by default loopback, where a
//!   reverse proxy carries many clients, count only against `max`). At the cap a new connection closes the
//!   idle connection that has been quiet longest (of that address when the address is
//!   at its cap); when none is idle, the new one is answered 503 and closed. So a
//!   flood of idle sockets cannot keep a homeserver's lookup out.
//! - Accept failures (out of file descriptors) back off and are logged once per ten
//!   seconds with a count, as are refused connections.
//! - When a storm of connections has ended, the allocator is asked to return what they
//!   held (`progress::burst_ended`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How a listener limits its connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub idle: Duration,
    /// The time to send a request's headers (and finish the TLS handshake).
    pub header: Duration,
    pub max: usize,
    pub per_address: usize,
    /// Addresses only `max` applies to.
    pub exempt: Vec<ipnet::IpNet>,
}

/// The connections of each listener beside the public one (admin, metrics, internal).
const SIDE_MAX: usize = 64;
/// The public listener's default cap at most (about 20 KB each while idle).
const PUBLIC_MAX: usize = 4096;

impl Limits {
    /// The public listener's: `server.connections`, with `max` by default what the
    /// open-file limit leaves after a reserve for the store, outbound connections and
    /// the other listeners (half the limit, at most 512), and at most 4096.
    pub fn public(c: &crate::config::ConnectionsConfig, open_files: u64) -> Self {
        let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
        let reserve = (open_files / 2).min(512);
        let max = c
            .max
            .unwrap_or_else(|| (open_files - reserve).clamp(16, PUBLIC_MAX));
        Self {
            idle: c.idle_timeout,
            header: c.header_timeout,
            max,
            per_address: c.per_address,
            exempt: c.per_address_exempt.clone(),
        }
    }

    /// Another listener's: the same timeouts, 64 connections.
    pub fn side(c: &crate::config::ConnectionsConfig) -> Self {
        Self {
            idle: c.idle_timeout,
            header: c.header_timeout,
            max: SIDE_MAX,
            per_address: SIDE_MAX,
            exempt: Vec::new(),
        }
    }
}

/// The process's soft limit on open files (`ulimit -n`), from /proc; 1024 if unknown.
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// What one open connection shares with its tracker and its watchdog.
#[derive(Debug, Default)]
pub struct Shared {
    /// Milliseconds since [`epoch`] when a byte last moved.
    last: AtomicU64,
    in_flight: AtomicU32,
    closing: AtomicBool,
    close: Notify,
    /// Set when the connection's task let go of it (its socket is closed).
    gone: AtomicBool,
    gone_notify: Notify,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Shared {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && !self.closing.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }

    /// Returns once the connection's socket is closed.
    pub async fn gone(&self) {
        loop {
            let notified = self.gone_notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.gone.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Marks a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Returns when the connection should close: idle past `idle`, or closed by the
    /// tracker to make room.
    pub async fn watch(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let now = now_ms();
            let due = self.last.load(Ordering::Relaxed).saturating_add(idle_ms);
            let wait = if self.in_flight.load(Ordering::Relaxed) > 0 {
                idle
            } else if now >= due {
                return;
            } else {
                Duration::from_millis(due - now)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.close.notified() => return,
            }
        }
    }
}

/// A request in flight on a connection (see [`Shared::request`]).
pub struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    address: Option<IpAddr>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    /// The most connections open at once since the last storm ended.
    peak: usize,
}

impl Registry {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(address) = entry.address {
            if let Some(n) = self.per_address.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&address);
                }
            }
        }
        Some(entry)
    }

    /// Closes the idle connection quiet longest among those `pick` allows and returns
    /// it; none when there is none.
    fn evict(&mut self, pick: impl Fn(&Entry) -> bool) -> Option<Arc<Shared>> {
        let victim = self
            .open
            .iter()
            .filter(|(_, e)| pick(e) && e.shared.idle())
            .min_by_key(|(_, e)| e.shared.last.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        let entry = self.remove(victim?)?;
        entry.shared.close();
        Some(entry.shared)
    }
}

/// Counts events and logs them at most once per ten seconds.
struct Gate {
    what: &'static str,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Gate {
    const EVERY: Duration = Duration::from_secs(10);

    fn new(what: &'static str) -> Self {
        Self {
            what,
            state: Mutex::new((None, 0)),
        }
    }

    fn note(&self, listener: &str, detail: &dyn std::fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state.0.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        let count = std::mem::take(&mut state.1);
        state.0 = Some(Instant::now());
        drop(state);
        tracing::warn!(
            listener,
            count,
            "{} ({count} in the last 10 s or since the last such line): {detail}",
            self.what
        );
    }
}

/// One listener's connections.
pub struct Tracker {
    name: &'static str,
    limits: Limits,
    registry: Mutex<Registry>,
    refused: Gate,
    accept_failed: Gate,
}

/// What [`Tracker::admit`] decided.
pub enum Admission {
    /// Admitted; with the connection closed to make room, whose socket should be gone
    /// before the next accept (so descriptors are not exceeded meanwhile).
    Open(Ticket, Option<Arc<Shared>>),
    /// Over the cap with nothing idle to close: answer 503 and close.
    Refused,
}

/// An admitted connection; dropping it forgets the connection.
pub struct Ticket {
    tracker: Arc<Tracker>,
    id: u64,
    pub shared: Arc<Shared>,
}

impl Ticket {
    /// The limits of the connection's listener.
    pub fn limits(&self) -> &Limits {
        &self.tracker.limits
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Release);
        self.shared.gone_notify.notify_waiters();
        let mut registry = self.tracker.lock();
        registry.remove(self.id);
        // A storm is over when what is open fell to a quarter of a peak of hundreds:
        // its buffers are free, and the allocator may keep them unless asked.
        if registry.peak >= 256 && registry.open.len() <= registry.peak / 4 {
            registry.peak = registry.open.len();
            crate::progress::burst_ended();
        }
    }
}

impl Tracker {
    pub fn new(name: &'static str, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            name,
            limits,
            registry: Mutex::new(Registry::default()),
            refused: Gate::new("connections refused or closed at the connection limit"),
            accept_failed: Gate::new("accepting a connection failed"),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn capped(&self, address: IpAddr) -> bool {
        !self.limits.exempt.iter().any(|n| n.contains(&address))
    }

    /// Admits a connection from `address` (none for the Unix socket), closing an idle
    /// one to make room if the listener or the address is at its cap.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Admission {
        let address = address.map(canonical);
        let mut registry = self.lock();
        let mut evicted = None;
        if let Some(a) = address.filter(|a| self.capped(*a)) {
            if registry.per_address.get(&a).copied().unwrap_or(0) >= self.limits.per_address {
                evicted = registry.evict(|e| e.address == Some(a));
                if evicted.is_none() {
                    drop(registry);
                    self.refused.note(
                        self.name,
                        &format_args!(
                            "{a} holds {} connections (server.connections.perAddress)",
                            self.limits.per_address
                        ),
                    );
                    return Admission::Refused;
                }
            }
        }
        if registry.open.len() >= self.limits.max {
            evicted = registry.evict(|_| true);
            if evicted.is_none() {
                drop(registry);
                self.refused.note(
                    self.name,
                    &format_args!(
                        "{} connections open, none idle (server.connections.max)",
                        self.limits.max
                    ),
                );
                return Admission::Refused;
            }
        }
        let id = registry.next;
        registry.next += 1;
        let shared = Arc::new(Shared::default());
        shared.touch();
        registry.open.insert(
            id,
            Entry {
                address,
                shared: shared.clone(),
            },
        );
        if let Some(a) = address {
            *registry.per_address.entry(a).or_insert(0) += 1;
        }
        registry.peak = registry.peak.max(registry.open.len());
        drop(registry);
        if evicted.is_some() {
            self.refused.note(
                self.name,
                &"an idle connection was closed to make room for a new one",
            );
        }
        Admission::Open(
            Ticket {
                tracker: self.clone(),
                id,
                shared,
            },
            evicted,
        )
    }

    /// An accept failed (out of file descriptors, ...): log (rate-limited), make room
    /// by closing the quietest idle connection if descriptors ran out, and return how
    /// long to wait before accepting again.
    pub fn accept_failed(&self, error: &std::io::Error, failures_in_a_row: u32) -> Duration {
        self.accept_failed.note(self.name, error);
        if matches!(error.raw_os_error(), Some(EMFILE | ENFILE)) {
            self.lock().evict(|_| true);
        }
        Duration::from_millis(10u64 << failures_in_a_row.min(7))
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }
}

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// An IPv4 address mapped into IPv6 counts as the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// A connection's stream, noting when bytes move. It also gives hyper's own answers
/// to requests it cannot parse (400, 414, 431: an empty body) the Matrix error body
/// every other answer has (see [`automatic_answer`]).
pub struct Watched<S> {
    inner: S,
    shared: Arc<Shared>,
    /// A replaced answer not yet fully written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            pending: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, at)) = &mut self.pending {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.shared.touch();
                    *at += n;
                    if *at >= bytes.len() {
                        self.pending = None;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Before a write of `buf` (none: a write that cannot be an automatic answer):
    /// finishes a replaced answer, or takes `buf` whole if it is one of hyper's
    /// automatic answers. `Some`: the write is answered.
    fn before_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: Option<&[u8]>,
    ) -> Option<Poll<std::io::Result<usize>>> {
        match self.write_pending(cx) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
            Poll::Ready(Ok(())) => {}
        }
        let buf = buf.filter(|b| b.starts_with(b"HTTP/1.1 4"))?;
        self.replace(cx, buf).map(Poll::Ready)
    }

    /// Notes that bytes moved, if they did.
    fn wrote(&self, polled: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.shared.touch();
        }
        polled
    }

    /// Takes `buf` whole if it is one of hyper's automatic answers, writing the
    /// Matrix one instead.
    fn replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<std::io::Result<usize>> {
        let replacement = automatic_answer(buf)?;
        self.pending = Some((replacement, 0));
        match self.write_pending(cx) {
            Poll::Ready(Err(e)) => Some(Err(e)),
            _ => Some(Ok(buf.len())),
        }
    }
}

/// hyper answers a request it cannot parse itself, with an empty body: a malformed
/// request line or header (400), a URI over 64 KiB (414), too many or too large
/// headers (431). Given what hyper writes, returns the same answer with a Matrix error
/// body; `None` for anything else (every answer of ours has a body).
pub fn automatic_answer(head: &[u8]) -> Option<Vec<u8>> {
    let (errcode, error) = match head.get(..13)? {
        b"HTTP/1.1 400 " => (
            "M_UNRECOGNIZED",
            "The request is not valid HTTP (a malformed request line or header)",
        ),
        b"HTTP/1.1 414 " => ("M_TOO_LARGE", "The request URI is longer than 64 KiB"),
        b"HTTP/1.1 431 " => (
            "M_TOO_LARGE",
            "The request has too many headers (at most 100) or they are too large",
        ),
        _ => return None,
    };
    let text = std::str::from_utf8(head).ok()?;
    let head_text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => empty = value.trim() == "0",
            "content-type" | "connection" => {}
            _ => kept.push(line),
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::json!({ "errcode": errcode, "error": error }).to_string();
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\naccess-control-allow-origin: *\r\n",
        body.len()
    );
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.shared.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if let Some(done) = this.before_write(cx, Some(buf)) {
            return done;
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        // hyper's own answers are one buffer: only then can it be one.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        let only = match (filled.next(), filled.next()) {
            (Some(only), None) => Some(&only[..]),
            _ => None,
        };
        if let Some(done) = this.before_write(cx, only) {
            return done;
        }
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.write_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.write_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_address: usize) -> Limits {
        Limits {
            idle: Duration::from_secs(60),
            header: Duration::from_secs(30),
            max,
            per_address,
            exempt: vec![
                "10.9.0.0/16".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap(),
            ],
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn open(tracker: &Arc<Tracker>, address: Option<IpAddr>) -> Ticket {
        match tracker.admit(address) {
            Admission::Open(ticket, _) => ticket,
            Admission::Refused => panic!("refused"),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_quietest_idle_connection_makes_room() {
        let tracker = Tracker::new("test", limits(3, 100));
        let first = open(&tracker, ip("192.0.2.1"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = open(&tracker, ip("192.0.2.2"));
        let _working = busy.shared.request();
        let third = open(&tracker, ip("192.0.2.3"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        third.shared.touch();
        // Full: the oldest idle one (not the one with a request in flight) goes.
        let _fourth = open(&tracker, ip("192.0.2.4"));
        assert!(first.shared.closing.load(Ordering::Relaxed));
        assert!(!busy.shared.closing.load(Ordering::Relaxed));
        assert!(!third.shared.closing.load(Ordering::Relaxed));
        assert_eq!(tracker.open(), 3);
        // Its watchdog returns at once.
        tokio::time::timeout(
            Duration::from_secs(1),
            first.shared.watch(Duration::from_secs(60)),
        )
        .await
        .unwrap();
        drop(first);
        assert_eq!(tracker.open(), 3, "the closed one was already forgotten");
        // With nothing idle left but the newest, that goes; with none idle, refused.
        let _w3 = third.shared.request();
        let _w4 = _fourth.shared.request();
        assert!(matches!(tracker.admit(ip("192.0.2.5")), Admission::Refused));
    }

    #[tokio::test]
    async fn one_address_cannot_take_more_than_its_share() {
        let tracker = Tracker::new("test", limits(100, 2));
        let a = open(&tracker, ip("192.0.2.1"));
        let _a_busy = a.shared.request();
        let b = open(&tracker, ip("192.0.2.1"));
        let _b_busy = b.shared.request();
        assert!(matches!(tracker.admit(ip("192.0.2.1")), Admission::Refused));
        // IPv4 mapped into IPv6 is the same client.
        assert!(matches!(
            tracker.admit(ip("::ffff:192.0.2.1")),
            Admission::Refused
        ));
        // Others, loopback and exempt ranges are not held back by it.
        let _other = open(&tracker, ip("192.0.2.9"));
        let _proxied: Vec<_> = (0..5).map(|_| open(&tracker, ip("10.9.1.1"))).collect();
        let _local: Vec<_> = (0..5).map(|_| open(&tracker, ip("127.0.0.1"))).collect();
        // Once one of its connections ends, the address may open another.
        drop(_b_busy);
        drop(b);
        let _again = open(&tracker, ip("192.0.2.1"));
    }

    #[tokio::test]
    async fn idle_is_counted_from_the_last_byte_and_not_while_a_request_runs() {
        let shared = Arc::new(Shared::default());
        shared.touch();
        let idle = Duration::from_millis(50);
        let started = Instant::now();
        shared.watch(idle).await;
        assert!(started.elapsed() >= idle);
        let working = shared.request();
        let watched = tokio::time::timeout(Duration::from_millis(200), shared.watch(idle)).await;
        assert!(watched.is_err(), "a request in flight keeps it open");
        drop(working);
        tokio::time::timeout(Duration::from_secs(1), shared.watch(idle))
            .await
            .unwrap();
    }

    #[test]
    fn hypers_own_answers_get_a_matrix_body() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(automatic_answer(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Mon, 07 Dec 2026"));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["errcode"], "M_TOO_LARGE");
        for status in ["400 Bad Request", "431 Request Header Fields Too Large"] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(automatic_answer(head.as_bytes()).is_some(), "{status}");
        }
        // Answers with a body, other statuses and partial heads are left alone.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 52\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(automatic_answer(other).is_none());
        }
    }

    #[test]
    fn the_default_cap_leaves_a_reserve_of_the_open_file_limit() {
        let c = crate::config::ConnectionsConfig {
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max: None,
            per_address: 256,
            per_address_exempt: Vec::new(),
        };
        assert_eq!(Limits::public(&c, 1024).max, 512);
        assert_eq!(Limits::public(&c, 256).max, 128);
        assert_eq!(Limits::public(&c, 65536).max, 4096);
        assert_eq!(Limits::public(&c, 10).max, 16);
        let set = crate::config::ConnectionsConfig {
            max: Some(100),
            ..c
        };
        assert_eq!(Limits::public(&set, 65536).max, 100);
        assert!(open_file_limit() >= 16);
    }
}
