//! Serving a warp filter on a listener we bound ourselves, over plain TCP, TLS (rustls)
//! or the admin Unix socket, with graceful shutdown: on the signal we stop accepting,
//! let requests in flight finish (bounded by `server.shutdownTimeout`) and return. The
//! admin listeners pass every request through the admin door (`door`) first.

use super::conns::{Admission, Shared, Ticket, Tracker, Watched};
use super::door::{Door, PeerCredentials, PeerRule};
use crate::error::{ErrCode, Error};
use crate::service::Services;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Builds a TLS acceptor from PEM files (certificate chain and private key).
pub fn tls_acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| format!("server.tls.certificate {}: {e}", certificate.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls.certificate {}: {e}", certificate.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.certificate {}: no PEM certificate found",
            certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("server.tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener we bound: TCP (public, metrics, the admin listener with a token) or the
/// admin Unix socket with the rule its peers must meet.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PeerRule),
}

/// What a listener does before warp's routes.
#[derive(Clone)]
pub enum Lane {
    /// The public listener: exact lookups and constant answers take the direct route.
    Public(super::fast::Direct),
    /// An admin listener: every request goes through the door first.
    Admin(Door, Services),
    /// Straight to the routes (metrics).
    Plain,
}

/// What one connection carries to its requests.
#[derive(Clone)]
struct Connection {
    peer: Option<std::net::SocketAddr>,
    /// The admin socket refused this peer: every request is answered with this.
    refused: Option<String>,
}

/// Serves `routes` on `listener` until `shutdown` turns true, then drains for at most
/// `drain`. `conns` admits each connection and closes idle ones (see `conns`).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    name: &'static str,
    listener: Bound,
    tls: Option<TlsAcceptor>,
    routes: BoxedFilter<(Response,)>,
    lane: Lane,
    conns: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut failures = 0u32;
    // Every connection task, so shutdown can wait for them (they hold the state) and
    // abort the ones that outlive the drain time.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = accept(&listener) => accepted,
            // Reap finished connection tasks as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                failures = failures.saturating_add(1);
                let wait = conns.accept_failed(&e, failures);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        failures = 0;
        let address = match &accepted {
            Accepted::Tcp(_, peer) => Some(peer.ip()),
            Accepted::Unix(..) => None,
        };
        let ticket = match conns.admit(address) {
            Admission::Open(ticket, evicted) => {
                if let Some(evicted) = evicted {
                    // Its socket closes when its task sees the notice: wait for that
                    // (briefly), so a burst of accepts cannot outrun the closes.
                    let _ = tokio::time::timeout(Duration::from_millis(100), evicted.gone()).await;
                }
                ticket
            }
            Admission::Refused => {
                accepted.refuse(tls.is_none());
                continue;
            }
        };
        let header_timeout = conns.limits().header;
        let routes = routes.clone();
        let lane = lane.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        connections.spawn(async move {
            match accepted {
                Accepted::Unix(stream, refused) => {
                    let conn = Connection {
                        peer: None,
                        refused,
                    };
                    serve_connection(stream, conn, routes, lane, watcher, ticket).await
                }
                Accepted::Tcp(stream, peer) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Connection {
                        peer: Some(peer),
                        refused: None,
                    };
                    match tls {
                        None => serve_connection(stream, conn, routes, lane, watcher, ticket).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(header_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls_stream)) => {
                                    serve_connection(
                                        tls_stream, conn, routes, lane, watcher, ticket,
                                    )
                                    .await
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!(
        listener = name,
        "stopped accepting; draining requests in flight"
    );
    let drained = tokio::time::timeout(drain, async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = name,
            open = connections.len(),
            "requests still running after the shutdown timeout; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

enum Accepted {
    Tcp(TcpStream, std::net::SocketAddr),
    /// A Unix socket peer, and why it is refused if it is.
    Unix(UnixStream, Option<String>),
}

/// What a connection refused at the connection limit is told, if it is plain HTTP.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 84\r\n\r\n\
{\"errcode\":\"M_LIMIT_EXCEEDED\",\"error\":\"Too many connections; try again in a second\"}";

impl Accepted {
    /// Answers 503 where the stream is plain HTTP (never waiting for the peer), then
    /// closes it.
    fn refuse(self, plain: bool) {
        if plain {
            let _ = match &self {
                Accepted::Tcp(stream, _) => stream.try_write(BUSY),
                Accepted::Unix(stream, _) => stream.try_write(BUSY),
            };
        }
    }
}

async fn accept(listener: &Bound) -> std::io::Result<Accepted> {
    match listener {
        Bound::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            Ok(Accepted::Tcp(stream, peer))
        }
        Bound::Unix(l, rule) => {
            let (stream, _) = l.accept().await?;
            let verdict = match stream.peer_cred() {
                Ok(cred) => rule.admits(&PeerCredentials {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                }),
                Err(e) => Err(format!("the peer's credentials are unknown: {e}")),
            };
            let refused = verdict.err();
            if let Some(why) = &refused {
                tracing::warn!(
                    listener = "admin",
                    "admin socket: refused a connection: {why}"
                );
            }
            Ok(Accepted::Unix(stream, refused))
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    conn: Connection,
    routes: BoxedFilter<(Response,)>,
    lane: Lane,
    watcher: hyper_util::server::graceful::Watcher,
    ticket: Ticket,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let filtered = warp::service(routes);
    let dispatch = move |mut request: hyper::Request<hyper::body::Incoming>| {
        use futures_util::future::{ready, Either};
        match &lane {
            Lane::Public(direct) => {
                if super::fast::is_lookup(&request) {
                    return Either::Left(Either::Left(super::fast::lookup(
                        direct.state().clone(),
                        request,
                        conn.peer,
                    )));
                }
                if let Some(response) = direct.constant(&request) {
                    return Either::Left(Either::Right(ready(Ok(response))));
                }
            }
            Lane::Admin(door, state) => {
                let verdict = match &conn.refused {
                    Some(why) => Err(Error::new(ErrCode::Forbidden, why.clone())),
                    None => door.check(&request),
                };
                if let Err(e) = verdict {
                    return Either::Left(Either::Right(ready(Ok(refuse(state, &request, &e)))));
                }
            }
            _ => {}
        }
        if let Some(peer) = conn.peer {
            request
                .extensions_mut()
                .insert(super::extract::PeerAddr(peer));
        }
        let mut filtered = filtered.clone();
        Either::Right(tower_service::Service::call(&mut filtered, request))
    };
    let shared: Arc<Shared> = ticket.shared.clone();
    let in_flight = shared.clone();
    let service = hyper::service::service_fn(move |request| {
        // The connection is not idle while a request is in flight.
        let guard = in_flight.request();
        let answer = dispatch(request);
        async move {
            let answer = answer.await;
            drop(guard);
            answer
        }
    });
    let (idle, header) = (ticket.limits().idle, ticket.limits().header);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header);
    let conn = builder
        .serve_connection(TokioIo::new(Watched::new(stream, shared.clone())), service)
        .into_owned();
    tokio::select! {
        served = watcher.watch(conn) => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = shared.watch(idle) => tracing::debug!("idle connection closed"),
    }
    drop(ticket);
}

/// The answer to a request the admin door refused, counted and logged like any other.
fn refuse<B>(state: &Services, request: &hyper::Request<B>, error: &Error) -> Response {
    let response = super::reply::error_response(error);
    let path = request.uri().path();
    super::middleware::log_request(
        &state.metrics,
        crate::metrics::Listener::Admin,
        state.metrics.route_id(path),
        request.method().as_str(),
        path,
        response.status().as_u16(),
        Duration::ZERO,
    );
    tracing::warn!(
        listener = "admin",
        method = request.method().as_str(),
        path,
        "admin request refused: {}",
        error.message
    );
    response
}

/// Binds the admin Unix socket at `path`: a socket left by a server that is gone is
/// replaced, a live one is not; the file gets mode 0660 and `group` (or keeps the
/// server's own group). Returns the listener and who may use it.
pub fn bind_admin_socket(path: &Path, group: Option<&str>) -> Result<Bound, String> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
    let shown = path.display();
    let gid = group.map(super::door::group_id).transpose()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| {
                format!(
                    "cannot create {} for the admin socket (server.admin.socket): {e}",
                    parent.display()
                )
            })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "another server is listening on the admin socket {shown} (server.admin.socket); stop it first"
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot replace the old admin socket {shown}: {e}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "{shown} (server.admin.socket) exists and is not a socket; move it away or choose another path"
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on the admin socket {shown}: {e}"))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {shown} to group {gid} (server.admin.group): {e}"))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {shown}: {e}"))?;
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    Ok(Bound::Unix(
        listener,
        PeerRule {
            own_uid: meta.uid(),
            group: meta.gid(),
        },
    ))
}
