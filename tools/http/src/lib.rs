//! The one HTTP stack of every HTTP surface the project has (the storage node's dashboard,
//! status and metrics; the validator's and the tagger's metrics): hyper's HTTP/1 server under
//! limits a client cannot talk us out of, and a small client for the commands and tests that
//! read those surfaces.
//!
//! Limits ([`HttpLimits`]): a request head larger than `header_bytes_max` is answered 431 by
//! hyper; a body over `body_bytes_max` is answered 413 without being read further; past
//! `connections_max` open connections a new one is closed at once; a client must send its
//! head within `header_timeout_ms` and the whole exchange, response included, ends within
//! `connection_timeout_ms` (one request per connection: no keep-alive to hold a slot with).
//! Surfaces bind to loopback unless told otherwise ([`bind`]), and say so when they do not.
//!
//! Handlers are plain functions from a [`Request`] to a [`Response`]; they run on the blocking
//! pool (a node's handler reads its store's statistics, which is a blocking call).
#![forbid(unsafe_code)]

pub mod metrics;

pub use hyper::Method;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What one HTTP surface allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request line and headers together (hyper's read buffer; hyper needs at least 8 KiB).
    pub header_bytes_max: usize,
    /// A request body; these surfaces serve reads, so a small one.
    pub body_bytes_max: usize,
    /// Open connections; one past this is closed on accept.
    pub connections_max: usize,
    /// From accept to the end of the request head.
    pub header_timeout_ms: u64,
    /// From accept to the last byte of the response.
    pub connection_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_bytes_max: 16 << 10,
            body_bytes_max: 64 << 10,
            connections_max: 64,
            header_timeout_ms: 5_000,
            connection_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{addr} is not a loopback address: this surface serves loopback unless its \
         configuration says `http_public = true`"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP to {addr}: {message}")]
    Protocol { addr: SocketAddr, message: String },
    #[error("{addr} did not answer within {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("http://{addr}{path} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        path: String,
        status: u16,
        body: String,
    },
    #[error("http://{addr}{path}: the body is over {bytes_max} bytes")]
    TooLarge {
        addr: SocketAddr,
        path: String,
        bytes_max: usize,
    },
}

/// Binds `addr` for an HTTP surface: loopback, or anywhere when `public` (with a warning, as
/// what these surfaces show is the operator's, not the world's).
pub async fn bind(addr: SocketAddr, public: bool) -> Result<TcpListener, HttpError> {
    if !addr.ip().is_loopback() {
        if !public {
            return Err(HttpError::NotLoopback { addr });
        }
        tracing::warn!(%addr, "HTTP surface bound beyond loopback: anyone who reaches it reads it");
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// A request as a handler sees it: the body whole (it is bounded).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: hyper::Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// A handler's answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn json(body: impl Into<Bytes>) -> Response {
        Response::new(200, "application/json", body)
    }

    pub fn html(body: impl Into<Bytes>) -> Response {
        Response::new(200, "text/html; charset=utf-8", body)
    }

    /// The Prometheus text format's content type.
    pub fn metrics(body: impl Into<Bytes>) -> Response {
        Response::new(200, metrics::CONTENT_TYPE, body)
    }

    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn not_found(what: &str) -> Response {
        Response::text(404, format!("not found; try {what}\n"))
    }
}

/// A surface's answers: a function of the request, run on the blocking pool.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A surface that serves only `/metrics` from `registry` (a validator's, a tagger's).
pub fn metrics_handler(registry: Arc<metrics::Registry>) -> Handler {
    Arc::new(move |request: &Request| match request.path.as_str() {
        "/metrics" => Response::metrics(metrics::encode(&registry)),
        _ => Response::not_found("/metrics"),
    })
}

/// What a surface did, for its own metrics.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests answered, by class: 2xx, 4xx, 5xx.
    pub ok: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Connections closed on accept because `connections_max` were open.
    pub connections_refused: AtomicU64,
    /// Connections cut at `header_timeout_ms` or `connection_timeout_ms`.
    pub connections_timed_out: AtomicU64,
}

impl HttpStats {
    fn count(&self, status: u16) {
        match status {
            200..=399 => &self.ok,
            400..=499 => &self.client_errors,
            _ => &self.server_errors,
        }
        .fetch_add(1, Relaxed);
    }

    /// Its counters under `cess_http_*`, labelled with the surface.
    pub fn scrape(&self, scrape: &mut metrics::Scrape<'_, '_>) {
        scrape.counters(
            "cess_http_requests",
            "HTTP requests answered, by status class",
            None,
            "class",
            &[
                ("2xx", self.ok.load(Relaxed)),
                ("4xx", self.client_errors.load(Relaxed)),
                ("5xx", self.server_errors.load(Relaxed)),
            ],
        );
        scrape.counter(
            "cess_http_connections_refused",
            "HTTP connections closed on accept: the connection limit was reached",
            None,
            self.connections_refused.load(Relaxed),
        );
        scrape.counter(
            "cess_http_connections_timed_out",
            "HTTP connections cut for sending their request or reading their response too slowly",
            None,
            self.connections_timed_out.load(Relaxed),
        );
    }
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    limits: HttpLimits,
    handler: Handler,
    stats: Arc<HttpStats>,
) {
    let open = Arc::new(Semaphore::new(limits.connections_max));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a reset before accept: wait a little, do not spin.
                tracing::debug!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            stats.connections_refused.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service_stats = stats.clone();
            let service = service_fn(move |request| {
                answer(request, limits, handler.clone(), service_stats.clone())
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
                .max_buf_size(limits.header_bytes_max.max(8192))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(
                Duration::from_millis(limits.connection_timeout_ms),
                connection,
            )
            .await
            {
                Err(_) => {
                    stats.connections_timed_out.fetch_add(1, Relaxed);
                }
                Ok(Err(e)) if e.is_timeout() => {
                    stats.connections_timed_out.fetch_add(1, Relaxed);
                }
                Ok(Err(e)) if e.is_parse_too_large() => stats.count(431),
                Ok(Err(e)) if e.is_parse() => stats.count(400),
                Ok(_) => {}
            }
        });
    }
}

async fn answer(
    request: hyper::Request<Incoming>,
    limits: HttpLimits,
    handler: Handler,
    stats: Arc<HttpStats>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let response = match read_request(request, limits).await {
        Ok(request) => tokio::task::spawn_blocking(move || handler(&request))
            .await
            .unwrap_or_else(|_| Response::text(500, "the handler failed\n")),
        Err(refusal) => refusal,
    };
    stats.count(response.status);
    let mut out = hyper::Response::new(Full::new(response.body));
    *out.status_mut() =
        hyper::StatusCode::from_u16(response.status).unwrap_or(hyper::StatusCode::OK);
    let headers = out.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(response.content_type),
    );
    headers.insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Ok(out)
}

/// The request with its body read, or the refusal to send instead.
async fn read_request(
    request: hyper::Request<Incoming>,
    limits: HttpLimits,
) -> Result<Request, Response> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.body_bytes_max as u64) {
        return Err(Response::text(413, "request body too large\n"));
    }
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, limits.body_bytes_max)
        .collect()
        .await
        .map_err(|_| Response::text(413, "request body too large\n"))?
        .to_bytes();
    Ok(Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    })
}

/// The most a client reads of a body.
const CLIENT_BODY_BYTES_MAX: usize = 64 << 20;

/// `GET http://addr/path`: the body of a 2xx answer, or why not.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, HttpError> {
    send(Method::GET, addr, path, None, timeout).await
}

/// A request without a body (`method`, and `header` if any): the body of a 2xx answer, or
/// why not.
pub async fn send(
    method: Method,
    addr: SocketAddr,
    path: &str,
    header: Option<(&'static str, &'static str)>,
    timeout: Duration,
) -> Result<String, HttpError> {
    let timeout_ms = timeout.as_millis() as u64;
    tokio::time::timeout(timeout, send_inner(method, addr, path, header))
        .await
        .map_err(|_| HttpError::Timeout { addr, timeout_ms })?
}

async fn send_inner(
    method: Method,
    addr: SocketAddr,
    path: &str,
    header: Option<(&'static str, &'static str)>,
) -> Result<String, HttpError> {
    let protocol = |e: hyper::Error| HttpError::Protocol {
        addr,
        message: e.to_string(),
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect { addr, source })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string());
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| HttpError::Protocol {
            addr,
            message: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(protocol)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), CLIENT_BODY_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| HttpError::TooLarge {
            addr,
            path: path.to_string(),
            bytes_max: CLIENT_BODY_BYTES_MAX,
        })?
        .to_bytes();
    driver.abort();
    let body = String::from_utf8_lossy(&body).into_owned();
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            addr,
            path: path.to_string(),
            status,
            body,
        });
    }
    Ok(body)
}

/// [`get`] from synchronous code (a command, a test, a benchmark), on a thread of its own so
/// it works inside and outside a runtime alike.
pub fn get_blocking(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, HttpError> {
    send_blocking(Method::GET, addr, path, None, timeout)
}

/// [`send`] from synchronous code.
pub fn send_blocking(
    method: Method,
    addr: SocketAddr,
    path: &str,
    header: Option<(&'static str, &'static str)>,
    timeout: Duration,
) -> Result<String, HttpError> {
    let path = path.to_string();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| HttpError::Connect { addr, source })?;
                runtime.block_on(send(method, addr, &path, header, timeout))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(HttpError::Protocol {
                    addr,
                    message: "the client thread panicked".into(),
                })
            })
    })
}
