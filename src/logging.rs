//! Log set-up: tracing to stderr, human-readable or JSON lines. `RUST_LOG` overrides the
//! configured levels. The per-request line (target `mxisd::http`, [`request`]) is
//! appended to a buffer that a thread of its own writes every 25 ms ([`AccessLog`]), so
//! a request never waits on stderr (a write syscall under stderr's lock cost about a
//! quarter of the rate of `GET /v2`); every other line is written at once. The request
//! line is formatted here, in the shape tracing's formatter gives every other line,
//! without its field visitors, `Debug` escaping and float printing (7 % of a single
//! lookup's CPU); only with colours on a terminal, or under another program's
//! subscriber, does it go through tracing. What must never be logged (tokens,
//! passwords, private keys, full 3PID addresses) is kept out at the call sites;
//! [`redact_address`] is the helper for addresses.

use crate::config::{LogFormat, LoggingConfig};
use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};
use tracing_subscriber::EnvFilter;

/// The target of the per-request log line.
pub const ACCESS_TARGET: &str = "mxisd::http";

/// Bytes of request lines waiting for the writer thread at most; beyond, lines are
/// dropped and counted (the log says how many), never waited for.
const ACCESS_BUFFER: usize = 4 << 20;

/// How often the writer thread writes what requests appended. A request never wakes
/// it: a wake-up per line (a channel) cost more than the write it saved.
const ACCESS_EVERY: Duration = Duration::from_millis(25);

/// The buffer of request lines, written by a thread of its own.
struct AccessLog {
    buffer: Mutex<Vec<u8>>,
    /// Held while a drained buffer is written, so lines leave in order.
    writing: Mutex<Vec<u8>>,
    /// Lines dropped because the buffer was full, not yet reported.
    dropped: AtomicU64,
}

static ACCESS: OnceLock<Option<AccessLog>> = OnceLock::new();

/// The buffer, its writer thread started on first use (`None`: no thread could be
/// started, lines are written at once).
fn access_log() -> Option<&'static AccessLog> {
    ACCESS
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("mxisd-log".into())
                .spawn(|| loop {
                    std::thread::sleep(ACCESS_EVERY);
                    if let Some(log) = ACCESS.get().and_then(Option::as_ref) {
                        log.write_out();
                    }
                })
                .ok()
                .map(|_| AccessLog {
                    buffer: Mutex::new(Vec::with_capacity(64 << 10)),
                    writing: Mutex::new(Vec::with_capacity(64 << 10)),
                    dropped: AtomicU64::new(0),
                })
        })
        .as_ref()
}

impl AccessLog {
    /// Appends one line, or counts it dropped when the buffer is full.
    fn append(&self, line: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.len() + line.len() > ACCESS_BUFFER {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buffer.extend_from_slice(line);
        }
    }

    /// Writes what was appended so far to stderr.
    fn write_out(&self) {
        let mut out = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *buffer, &mut *out);
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "{dropped} request log lines were dropped: stderr could not keep up"
            );
        }
        if !out.is_empty() {
            let _ = std::io::stderr().write_all(&out);
            out.clear();
        }
    }
}

/// Writes the request lines appended so far: before the process exits.
pub fn flush() {
    if let Some(log) = ACCESS.get().and_then(Option::as_ref) {
        log.write_out();
    }
}

/// One request line being formatted; appended to the buffer when tracing is done.
pub struct QueuedLine(Vec<u8>);

impl std::io::Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        match access_log() {
            Some(log) => log.append(&self.0),
            None => {
                let _ = std::io::stderr().write_all(&self.0);
            }
        }
    }
}

/// Where log lines go: request lines to the queue, the rest straight to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EitherWriter<std::io::Stderr, QueuedLine>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::A(std::io::stderr())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        if meta.target() == ACCESS_TARGET && *meta.level() >= tracing::Level::INFO {
            EitherWriter::B(QueuedLine(Vec::with_capacity(256)))
        } else {
            EitherWriter::A(std::io::stderr())
        }
    }
}

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the installed subscriber's filter (a SIGHUP changing `logging.root`/`.app`).
/// Process-wide like the subscriber it belongs to; set once by [`init`].
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

fn filter_of(config: &LoggingConfig) -> EnvFilter {
    EnvFilter::new(format!("{},mxisd={}", config.root, config.app))
}

fn from_env() -> Option<EnvFilter> {
    std::env::var_os(EnvFilter::DEFAULT_ENV)
        .is_some()
        .then(EnvFilter::try_from_default_env)
        .and_then(Result::ok)
}

/// Installs the global subscriber. Safe to call once per process; later calls are no-ops.
pub fn init(config: &LoggingConfig) {
    let filter = from_env().unwrap_or_else(|| filter_of(config));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter);
    let installed = match config.format {
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map(|()| -> SetFilter {
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
            })
        }
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map(|()| -> SetFilter {
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
            })
        }
    };
    if let Ok(set) = installed {
        let _ = SET_FILTER.set(set);
        let coloured = config.format == LogFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !coloured {
            let _ = ACCESS_STYLE.set(config.format);
        }
    }
}

/// The shape of the request lines [`request`] formats itself: set by [`init`] when our
/// subscriber is installed without colours.
static ACCESS_STYLE: OnceLock<LogFormat> = OnceLock::new();

thread_local! {
    /// A request thread's line being formatted (kept to spare an allocation per line).
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// One answered request, for its log line.
pub struct RequestLine<'a> {
    pub listener: &'static str,
    pub method: &'a str,
    /// The path alone: the query string may hold an access token.
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
}

/// Logs one answered request at INFO under [`ACCESS_TARGET`], when that level is on.
pub fn request(line: &RequestLine<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    match (ACCESS_STYLE.get(), access_log()) {
        (Some(&style), Some(log)) => LINE.with(|cell| {
            let Ok(mut text) = cell.try_borrow_mut() else {
                return;
            };
            text.clear();
            format_request(&mut text, style, SystemTime::now(), line);
            log.append(&text);
        }),
        _ => tracing::info!(
            target: ACCESS_TARGET,
            listener = line.listener,
            method = line.method,
            path = line.path,
            status = line.status,
            ms = line.elapsed.as_secs_f64() * 1000.0,
            "request"
        ),
    }
}

/// The request line as tracing's formatter would write it: text
/// (`<time>  INFO mxisd::http: request listener="public" method="GET" path="/x"
/// status=200 ms=0.052`) or a JSON object with the event's fields flattened.
fn format_request(out: &mut Vec<u8>, style: LogFormat, now: SystemTime, line: &RequestLine<'_>) {
    let json = style == LogFormat::Json;
    let key = |out: &mut Vec<u8>, name: &str| {
        out.extend_from_slice(if json { b",\"" } else { b" " });
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(if json { b"\":" } else { b"=" });
    };
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        push_timestamp(out, now);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
    } else {
        push_timestamp(out, now);
        out.extend_from_slice(b"  INFO ");
        out.extend_from_slice(ACCESS_TARGET.as_bytes());
        out.extend_from_slice(b": request");
    }
    for (name, value) in [
        ("listener", line.listener),
        ("method", line.method),
        ("path", line.path),
    ] {
        key(out, name);
        push_quoted(out, value);
    }
    key(out, "status");
    push_number(out, u64::from(line.status), 1);
    key(out, "ms");
    push_millis(
        out,
        u64::try_from(line.elapsed.as_micros()).unwrap_or(u64::MAX),
    );
    if json {
        out.extend_from_slice(b",\"target\":\"");
        out.extend_from_slice(ACCESS_TARGET.as_bytes());
        out.extend_from_slice(b"\"}");
    }
    out.push(b'\n');
}

/// `n` in decimal, zero-padded to `width` digits.
fn push_number(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    while n > 0 || len < width {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    out.extend(digits[..len].iter().rev());
}

/// Microseconds as milliseconds with three decimals (`52` → `0.052`).
fn push_millis(out: &mut Vec<u8>, micros: u64) {
    push_number(out, micros / 1000, 1);
    out.push(b'.');
    push_number(out, micros % 1000, 3);
}

/// A string in double quotes, escaped the way both JSON and `Debug` read it: quotes,
/// backslashes and control characters (hyper hands over a path of visible ASCII;
/// anything else is escaped rather than trusted).
fn push_quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &b in text.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// RFC 3339 in UTC with microseconds, as tracing's default timer writes it:
/// `2026-12-07T03:30:54.892395Z`.
fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let time = jiff::Timestamp::try_from(now)
        .map(|t| jiff::tz::Offset::UTC.to_datetime(t))
        .unwrap_or_default();
    let field = |n: i64| u64::try_from(n).unwrap_or(0);
    push_number(out, field(time.year().into()), 4);
    out.push(b'-');
    push_number(out, field(time.month().into()), 2);
    out.push(b'-');
    push_number(out, field(time.day().into()), 2);
    out.push(b'T');
    push_number(out, field(time.hour().into()), 2);
    out.push(b':');
    push_number(out, field(time.minute().into()), 2);
    out.push(b':');
    push_number(out, field(time.second().into()), 2);
    out.push(b'.');
    push_number(out, field((time.subsec_nanosecond() / 1000).into()), 6);
    out.push(b'Z');
}

/// What [`set_levels`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// The new levels are in force.
    Applied,
    /// `RUST_LOG` decides the levels; the config's are not used.
    FromEnvironment,
    /// No subscriber of ours is installed (the server runs inside another program).
    NotOurs,
}

/// Puts `logging.root` and `logging.app` in force without a restart.
pub fn set_levels(config: &LoggingConfig) -> Result<Levels, String> {
    if from_env().is_some() {
        return Ok(Levels::FromEnvironment);
    }
    match SET_FILTER.get() {
        Some(set) => set(filter_of(config)).map(|()| Levels::Applied),
        None => Ok(Levels::NotOurs),
    }
}

/// Shortens a 3PID address for logs: `alice@example.org` → `al…@example.org`,
/// `447700900123` → `44…23`. Enough to tell entries apart, not enough to harvest.
pub fn redact_address(address: &str) -> String {
    let take = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}…@{domain}", take(local, 2)),
        None => {
            let chars: Vec<char> = address.chars().collect();
            if chars.len() <= 4 {
                "…".into()
            } else {
                let tail: String = chars[chars.len() - 2..].iter().collect();
                format!("{}…{tail}", take(address, 2))
            }
        }
    }
}

/// Writes to standard output for the CLI's [`outln!`](crate::outln): when the reader
/// has gone away (`mxisd status | head -1`), exits quietly instead of panicking as
/// `println!` does; any other write error ends the command with exit status 1.
pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Whoever reads has what they wanted: no message, no failure.
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_the_calendars() {
        let at = |day: u64| {
            let mut out = Vec::new();
            push_timestamp(
                &mut out,
                SystemTime::UNIX_EPOCH + Duration::from_secs(day * 86_400),
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(59), "1970-03-01T00:00:00.000000Z");
        assert_eq!(at(11_016), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(11_017), "2000-03-01T00:00:00.000000Z");
        assert_eq!(at(20_794), "2026-12-07T00:00:00.000000Z");
        assert_eq!(at(47_540), "2100-02-28T00:00:00.000000Z");
        assert_eq!(at(47_541), "2100-03-01T00:00:00.000000Z");
    }

    fn line(path: &str, micros: u64) -> RequestLine<'_> {
        RequestLine {
            listener: "public",
            method: "GET",
            path,
            status: 200,
            elapsed: Duration::from_micros(micros),
        }
    }

    #[test]
    fn request_lines_have_tracings_shape() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_615_454_892_395);
        let mut text = Vec::new();
        format_request(
            &mut text,
            LogFormat::Text,
            at,
            &line("/_matrix/identity/v2", 52),
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2026-12-07T03:50:54.892395Z  INFO mxisd::http: request listener=\"public\" \
             method=\"GET\" path=\"/_matrix/identity/v2\" status=200 ms=0.052\n"
        );
        let mut json = Vec::new();
        format_request(
            &mut json,
            LogFormat::Json,
            at,
            &line("/a\"b\\c\u{1}", 12_345_678),
        );
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "timestamp": "2026-12-07T03:50:54.892395Z",
                "level": "INFO",
                "message": "request",
                "listener": "public",
                "method": "GET",
                "path": "/a\"b\\c\u{1}",
                "status": 200,
                "ms": 12345.678,
                "target": "mxisd::http",
            })
        );
        assert!(json.ends_with(b"}\n"));
    }

    #[test]
    fn addresses_are_shortened() {
        assert_eq!(redact_address("alice@example.org"), "al…@example.org");
        assert_eq!(redact_address("447700900123"), "44…23");
        assert_eq!(redact_address("123"), "…");
        assert_eq!(redact_address("é@x"), "é…@x");
    }
}
