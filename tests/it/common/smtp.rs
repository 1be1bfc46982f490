//! An SMTP sink on 127.0.0.1 that speaks real SMTP (EHLO, STARTTLS or TLS from the first
//! byte, AUTH PLAIN, MAIL, RCPT, DATA with dot-unstuffing, RSET, QUIT) and hands every
//! accepted message to the test. It can refuse recipients or data, or stay silent, to
//! test delivery failures.

use base64::Engine as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// 550 to every RCPT TO.
    RejectRecipient,
    /// 554 after the message data.
    RejectData,
    /// Accepts the connection and never says a word (no greeting), until the client
    /// gives up.
    Silent,
}

/// How the sink offers TLS.
#[derive(Clone)]
pub enum Tls {
    None,
    /// Advertises STARTTLS and upgrades when asked.
    Starttls(tokio_rustls::TlsAcceptor),
    /// TLS from the first byte (SMTPS).
    Implicit(tokio_rustls::TlsAcceptor),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as received (CRLF line endings, dots unstuffed).
    pub data: String,
    /// The `user` of a successful AUTH, if any.
    pub login: Option<String>,
    /// Whether the message came over TLS.
    pub tls: bool,
}

impl Mail {
    /// The header `name` (first one), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                if n.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_owned());
                }
            }
        }
        value
    }

    /// The query parameter `name` of the first link in the text that has it, decoded.
    pub fn link_param(&self, name: &str) -> String {
        let text = self.text();
        let start = text.find(&format!("{name}=")).expect(name) + name.len() + 1;
        let raw: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '&' | '"' | '<'))
            .collect();
        percent_encoding::percent_decode_str(&raw)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// Every text part, decoded from base64 where it was sent so.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for section in self.data.split("\r\n--") {
            let (head, body) = match section.split_once("\r\n\r\n") {
                Some(x) => x,
                None => continue,
            };
            if head
                .to_ascii_lowercase()
                .contains("content-transfer-encoding: base64")
            {
                let joined: String = body.lines().take_while(|l| !l.starts_with("--")).collect();
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(joined.trim()) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            } else {
                out.push_str(body);
            }
            out.push('\n');
        }
        out
    }
}

pub struct SmtpSink {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Mail>>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink; with `credentials`, it advertises AUTH and requires exactly them.
    pub async fn start(credentials: Option<(&str, &str)>) -> Self {
        Self::start_tls(credentials, Tls::None).await
    }

    /// A sink offering TLS as `tls` says.
    pub async fn start_tls(credentials: Option<(&str, &str)>, tls: Tls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        let mode = Arc::new(Mutex::new(Mode::Accept));
        let creds = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let shared_mode = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let mode = *shared_mode.lock().unwrap();
                let creds = creds.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = session(stream, tx, mode, creds, tls).await;
                });
            }
        });
        Self {
            port,
            mode,
            rx: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The next accepted message (waits up to 10 s).
    pub async fn next(&self) -> Mail {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no mail arrived within 10 s")
            .expect("sink closed")
    }

    /// A message if one is already there.
    pub async fn try_next(&self) -> Option<Mail> {
        self.rx.lock().await.try_recv().ok()
    }

    /// Config for mxisd's SMTP connector pointing here.
    pub fn config(&self, extra_smtp: &str) -> String {
        format!(
            "threepid:\n  medium:\n    email:\n      identity:\n        from: \"id@example.org\"\n        name: \"Example ID\"\n      connectors:\n        smtp:\n          host: 127.0.0.1\n          port: {}\n          tls: 0\n          timeout: 5s\n{extra_smtp}",
            self.port
        )
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Mail>,
    mode: Mode,
    creds: Option<(String, String)>,
    tls: Tls,
) -> std::io::Result<()> {
    if mode == Mode::Silent {
        let mut stream = stream;
        let mut buf = [0u8; 1024];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await? > 0 {}
        return Ok(());
    }
    let (io, mut encrypted): (Box<dyn Io>, bool) = match &tls {
        Tls::Implicit(acceptor) => (Box::new(acceptor.accept(stream).await?), true),
        _ => (Box::new(stream), false),
    };
    let mut lines = BufReader::new(io);
    lines
        .get_mut()
        .write_all(b"220 sink.test ESMTP ready\r\n")
        .await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut login: Option<String> = None;
    let mut line = String::new();
    // Bounded: a session ends after this many commands.
    for _ in 0..1000 {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let auth = if creds.is_some() {
                "250-AUTH PLAIN LOGIN\r\n"
            } else {
                ""
            };
            let starttls = if matches!(tls, Tls::Starttls(_)) && !encrypted {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            format!("250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{starttls}{auth}250 OK\r\n")
        } else if upper == "STARTTLS" {
            match (&tls, encrypted) {
                (Tls::Starttls(acceptor), false) => {
                    lines.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
                    let plain = lines.into_inner();
                    let upgraded: Box<dyn Io> = Box::new(acceptor.accept(plain).await?);
                    lines = BufReader::new(upgraded);
                    encrypted = true;
                    from.clear();
                    to.clear();
                    login = None;
                    continue;
                }
                _ => "454 4.7.0 TLS not available\r\n".into(),
            }
        } else if upper.starts_with("HELO") {
            "250 sink.test\r\n".into()
        } else if upper.starts_with("AUTH PLAIN") {
            let b64 = cmd.split_whitespace().nth(2).unwrap_or_default().to_owned();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            match (&creds, parts.as_slice()) {
                (Some((u, p)), [_, user, pass]) if user == u && pass == p => {
                    login = Some(user.clone());
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                _ => "535 5.7.8 Authentication credentials invalid\r\n".into(),
            }
        } else if upper.starts_with("AUTH LOGIN") {
            "504 5.5.4 use PLAIN\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            if creds.is_some() && login.is_none() {
                "530 5.7.0 Authentication required\r\n".into()
            } else {
                from = cmd[10..].trim().to_owned();
                "250 OK\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if mode == Mode::RejectRecipient {
                "550 5.1.1 mailbox unavailable\r\n".into()
            } else {
                to.push(cmd[8..].trim().to_owned());
                "250 OK\r\n".into()
            }
        } else if upper == "DATA" {
            lines.get_mut().write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            let mut l = String::new();
            loop {
                l.clear();
                if lines.read_line(&mut l).await? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" || l == ".\n" {
                    break;
                }
                let unstuffed = l.strip_prefix('.').unwrap_or(&l);
                data.push_str(unstuffed);
            }
            if mode == Mode::RejectData {
                "554 5.6.0 message refused\r\n".into()
            } else {
                let _ = tx.send(Mail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                    login: login.clone(),
                    tls: encrypted,
                });
                "250 2.0.0 queued\r\n".into()
            }
        } else if upper == "RSET" {
            from.clear();
            to.clear();
            "250 OK\r\n".into()
        } else if upper == "NOOP" {
            "250 OK\r\n".into()
        } else if upper == "QUIT" {
            lines.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 command not implemented\r\n".into()
        };
        lines.get_mut().write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
