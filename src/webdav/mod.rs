//! The drive over WebDAV, for the devices a FUSE mount cannot serve (TVs, Windows, phones,
//! other machines), from the same fs core as the mount: one cache, one rate budget, one
//! upload queue. `alipanfs serve webdav` runs it alone; `mount --webdav-listen` inside a mount.
//!
//! The protocol is dav-server's (PROPFIND, PROPPATCH, LOCK/UNLOCK class 2, COPY/MOVE with
//! Overwrite, Range GET); `davfs` is the glue to the core. In front of it, per request:
//! Basic authentication (`auth`), `--read-only` (every change answered 403), and PROPFIND with
//! `Depth: infinity` refused with 403 as Apache does by default (a walk of the whole drive
//! would spend the account's listing budget for everyone).

mod auth;
mod davfs;
mod props;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dav_server::body::Body;
use dav_server::{memls::MemLs, DavHandler};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::fs::FsCore;

pub use auth::{Credentials, Verdict};
pub use davfs::KernelHook;

/// What `--webdav-*` (or `serve webdav`'s options) ask for.
#[derive(Debug, Clone, Default)]
pub struct WebdavConfig {
    /// HOST:PORT (port 0: any free port, logged).
    pub listen: String,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub read_only: bool,
}

/// A running server; `stop` ends its listener (requests under way finish).
pub struct Server {
    pub addr: SocketAddr,
    pub tls: bool,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// How long a connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes a GET asks the core for at a time (the reader's read-ahead does the rest).
const READ_CHUNK: usize = 1 << 20;

/// Check the configuration, bind, and serve `core` in the background.
pub async fn start(
    core: Arc<FsCore>,
    cfg: &WebdavConfig,
    kernel: Option<KernelHook>,
) -> Result<Server> {
    let credentials = match (&cfg.user, &cfg.password_file) {
        (Some(user), Some(file)) => Some(Arc::new(Credentials::load(user, file)?)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::Config(
                "--webdav-user needs --webdav-password-file (the password is never given on the command line)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Config(
                "--webdav-password-file needs --webdav-user".into(),
            ))
        }
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&cfg.listen)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "WebDAV address {:?} is not HOST:PORT ({e})",
                cfg.listen
            ))
        })?
        .collect();
    let addr = *addrs.first().ok_or_else(|| {
        Error::Config(format!("WebDAV address {:?} names no address", cfg.listen))
    })?;
    if credentials.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(Error::Config(format!(
            "refusing to serve WebDAV on {} without a password: anyone who can reach it could read and change the drive; \
             give --webdav-user and --webdav-password-file, or listen on 127.0.0.1",
            cfg.listen
        )));
    }
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "give both --webdav-tls-cert and --webdav-tls-key, or neither".into(),
            ))
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot serve WebDAV on {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr()?;
    let dav = DavHandler::builder()
        .filesystem(Box::new(davfs::CoreFs::new(core, kernel)))
        .locksystem(MemLs::new())
        .read_buf_size(READ_CHUNK)
        .autoindex(true)
        .build_handler();
    let front = Arc::new(Front {
        dav,
        credentials,
        read_only: cfg.read_only,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = Server {
        addr,
        tls: tls.is_some(),
        stop,
    };
    info!(url = %server.url(), user = ?front.credentials.as_ref().map(|c| c.user()), read_only = cfg.read_only, "serving WebDAV");
    tokio::spawn(accept_loop(listener, tls, front, stopped));
    Ok(server)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    front: Arc<Front>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!("WebDAV accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, front).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, front).await,
                        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    info!("WebDAV server stopped");
}

async fn serve_connection<IO>(io: IO, front: Arc<Front>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let front = front.clone();
        async move { Ok::<_, Infallible>(front.handle(req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        debug!("WebDAV connection ended: {e}");
    }
}

/// What stands before dav-server: credentials, read-only, depth limits.
struct Front {
    dav: DavHandler,
    credentials: Option<Arc<Credentials>>,
    read_only: bool,
}

/// Methods that change the drive (or its locks and properties).
fn is_change(method: &Method) -> bool {
    !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "PROPFIND")
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut res = Response::new(Body::from(format!("{text}\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

impl Front {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        // The path only: a query string is never logged.
        let path = req.uri().path().to_string();
        let res = self.answer(req).await;
        debug!(%method, %path, status = res.status().as_u16(), "webdav");
        res
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(credentials) = &self.credentials {
            let header = req.headers().get(http::header::AUTHORIZATION);
            match credentials.check(header.map(|h| h.as_bytes())) {
                Verdict::Allowed => {}
                verdict => {
                    if verdict == Verdict::Wrong {
                        warn!(user_agent = ?req.headers().get(http::header::USER_AGENT), "WebDAV: wrong user or password");
                        credentials.delay_failure().await;
                    }
                    let mut res = plain(StatusCode::UNAUTHORIZED, "credentials required");
                    res.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static(
                            "Basic realm=\"alipanfs\", charset=\"UTF-8\"",
                        ),
                    );
                    return res;
                }
            }
        }
        if self.read_only && is_change(req.method()) {
            return plain(
                StatusCode::FORBIDDEN,
                "this server is read-only (--read-only)",
            );
        }
        let infinite = req.method().as_str() == "PROPFIND"
            && req
                .headers()
                .get("depth")
                .is_some_and(|d| d.as_bytes().eq_ignore_ascii_case(b"infinity"));
        if infinite {
            let mut res = Response::new(Body::from(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n",
            ));
            *res.status_mut() = StatusCode::FORBIDDEN;
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/xml; charset=utf-8"),
            );
            return res;
        }
        self.dav.handle(req).await
    }
}
