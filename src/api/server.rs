//! The HTTP API's server, built to face clients that misbehave: an accept loop of its own around
//! hyper's HTTP/1 connections (`axum::serve` has neither a connection cap nor a header timeout).
//!
//! - At most [`Limits::max_connections`] connections are open at once. At the cap the loop stops
//!   accepting until one closes: further connections wait in the kernel's accept queue
//!   ([`ACCEPT_BACKLOG`] long; past it the kernel drops their handshakes and their clients try
//!   again), where they cost the agent no file descriptor and no memory, and are served in turn.
//!   Accepting and closing them at once would spin the loop under a flood and turn away clients
//!   that only had to wait a moment.
//! - A client has [`Limits::header_timeout`] to send a whole request head, from the moment it is
//!   accepted and again after each response on a kept-alive connection, else it is disconnected
//!   (hyper's `header_read_timeout`: hyper starts it when it begins to read a request head, which
//!   on a kept-alive connection is as soon as the previous response is written). Every open
//!   connection therefore either sends requests or ends.
//! - A request head (request line and headers) is at most [`MAX_REQUEST_HEAD`] bytes, and hyper
//!   buffers at most [`MAX_CONNECTION_BUFFER`] per connection.
//! - A request not answered within [`Limits::request_timeout`] is a 503; a declared body over
//!   [`MAX_REQUEST_BODY`] is a 413 (no route reads a body; hyper discards an unread one or closes
//!   the connection).
//! - Every 4xx and 5xx has a JSON body `{"error": "…"}` naming the problem; a 405 also has `Allow`.
//!   Only the answers hyper writes itself before there is a request to route (400 for a malformed
//!   head, 414 and 431 for one too long, each closing the connection) have no body.
//!
//! A client that stops reading its answer holds its connection until it reads or disconnects
//! (hyper has no write timeout); the cap bounds what such clients can hold.
//!
//! Shutdown stops accepting at once and lets requests in flight finish; idle connections close.
//! The agent's shutdown deadline aborts the whole server, and with it every connection, anyway.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// Largest request head (request line and headers) in bytes; a longer one is a 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Largest request body in bytes (by its `Content-Length`); a larger one is a 413. No route reads
/// a body.
pub const MAX_REQUEST_BODY: usize = 1024;
/// Most bytes hyper buffers from one connection (a request head and whatever is pipelined behind
/// it).
pub const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// Connections the kernel keeps waiting to be accepted (at most `net.core.somaxconn` on Linux).
pub const ACCEPT_BACKLOG: u32 = 1024;

/// Binds `addr` for [`serve`], with an accept queue of [`ACCEPT_BACKLOG`] connections.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted agent can bind again while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The HTTP API's limits (`agent.http_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a whole request head after connecting or after the previous response.
    pub header_timeout: Duration,
    /// Time within which a request is answered, else a 503.
    pub request_timeout: Duration,
}

impl Limits {
    /// The limits of an `[agent]` table.
    pub fn of(agent: &AgentConfig) -> Self {
        Self {
            max_connections: agent.http_max_connections,
            header_timeout: agent.http_header_timeout.0,
            request_timeout: agent.http_request_timeout.0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::of(&AgentConfig::default())
    }
}

/// `router` behind the per-request limits: the request timeout, the body limit, and JSON bodies on
/// every error answer.
pub fn harden(router: Router, limits: Limits) -> Router {
    // Wrapped whole rather than layered route by route: axum adds a 405's `Allow` only after the
    // layers of a route have run, and `json_errors` reads it.
    Router::new()
        .fallback_service(router)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_REQUEST_BODY,
        ))
        .layer(axum::middleware::from_fn_with_state(limits, json_errors))
}

/// Gives every 4xx and 5xx that has no JSON body yet (axum's 405, the body limit's 413, the
/// timeout's 503) one: `{"error": "…"}` naming the problem.
async fn json_errors(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let message = error_message(&res, &method, &path, limits);
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, Json(serde_json::json!({ "error": message }))).into_response()
}

fn error_message(res: &Response, method: &Method, path: &str, limits: Limits) -> String {
    match res.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed: Vec<&str> = res
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect();
            format!(
                "method {method} not allowed on {path}: use {}",
                allowed.join(" or ")
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "request body too large: at most {MAX_REQUEST_BODY} bytes (no route reads a body)"
        ),
        StatusCode::SERVICE_UNAVAILABLE => format!(
            "{method} {path} was not answered within {} (agent.http_request_timeout)",
            humantime::format_duration(limits.request_timeout)
        ),
        s => format!(
            "{method} {path}: {}",
            s.canonical_reason().unwrap_or("request failed")
        ),
    }
}

/// Serves `router`, hardened by [`harden`], on `listener` within `limits` until `cancel` fires;
/// then stops accepting and waits for the open connections to finish their requests (see the
/// module documentation).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    cancel: CancellationToken,
) {
    let service = TowerToHyperService::new(harden(router, limits));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_REQUEST_HEAD)
        .max_buf_size(MAX_CONNECTION_BUFFER);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Dropping the set (when the agent aborts this task) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: wait rather than spin.
                    tracing::warn!(error = %e, "HTTP API cannot accept a connection");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP API connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors that concern one connection only (the next accept may well succeed).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;

    /// Serves a small router (`/ok` answers at once, `/slow` after a minute) within `limits`.
    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let router = Router::new().route("/ok", get(|| async { "ok" })).route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, router, limits, cancel.clone()));
        (addr, cancel)
    }

    /// Sends `head` (a request head without its final blank line) with `Connection: close` and
    /// returns the status, the response head and the body.
    async fn request(addr: std::net::SocketAddr, head: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("no answer within 10s")
            .unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    fn error_of(body: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON: {body:?}: {e}"));
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string: {body}"))
            .to_owned()
    }

    #[tokio::test]
    async fn every_error_answer_is_json() {
        let limits = Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, cancel) = start(limits).await;
        let (code, head, body) = request(addr, "GET /ok HTTP/1.1\r\nHost: x").await;
        assert_eq!((code, body.as_str()), (200, "ok"), "{head}");

        let (code, head, body) = request(addr, "POST /ok HTTP/1.1\r\nHost: x").await;
        assert_eq!(code, 405, "{head}");
        assert!(head.contains("\r\nallow: get"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(
            error_of(&body),
            "method POST not allowed on /ok: use GET or HEAD"
        );

        // The body is refused by its declared length, before anything of it is read.
        let (code, _, body) = request(
            addr,
            "GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 100000",
        )
        .await;
        assert_eq!(code, 413);
        assert!(error_of(&body).contains("at most 1024 bytes"), "{body}");

        let t0 = Instant::now();
        let (code, _, body) = request(addr, "GET /slow HTTP/1.1\r\nHost: x").await;
        assert_eq!(code, 503, "{body}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(
            error_of(&body),
            "GET /slow was not answered within 200ms (agent.http_request_timeout)"
        );

        // No route, no fallback: axum's bare 404 gets a body too.
        let (code, _, body) = request(addr, "GET /nope HTTP/1.1\r\nHost: x").await;
        assert_eq!(code, 404);
        assert_eq!(error_of(&body), "GET /nope: Not Found");
        cancel.cancel();
    }

    /// Reads until the server closes the connection (EOF or reset); returns when, or `None` after
    /// `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Instant> {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(within, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
    }

    #[tokio::test]
    async fn a_slow_or_idle_client_is_disconnected_after_the_header_timeout() {
        let timeout = Duration::from_millis(400);
        let (addr, cancel) = start(Limits {
            header_timeout: timeout,
            ..Limits::default()
        })
        .await;
        // Half a request head.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let closed = closed_within(&mut s, 3 * timeout)
            .await
            .expect("half a head not disconnected");
        assert!(closed - t0 >= timeout / 2, "closed after {:?}", closed - t0);

        // A kept-alive connection, idle after its first answer.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(3 * timeout, s.read(&mut buf))
                .await
                .expect("no answer")
                .unwrap();
            assert!(n > 0, "closed before answering: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        let t0 = Instant::now();
        let closed = closed_within(&mut s, 3 * timeout)
            .await
            .expect("idle kept-alive connection not disconnected");
        assert!(closed - t0 >= timeout / 2, "closed after {:?}", closed - t0);
        cancel.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let (addr, cancel) = start(Limits {
            max_connections: 2,
            header_timeout: Duration::from_secs(30),
            ..Limits::default()
        })
        .await;
        let idle1 = TcpStream::connect(addr).await.unwrap();
        let _idle2 = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        // Both slots are held: the third connection waits in the accept queue, unanswered.
        let early =
            tokio::time::timeout(Duration::from_millis(300), third.read_to_end(&mut out)).await;
        assert!(early.is_err(), "answered beyond the cap: {out:?}");
        // A slot frees: it is served.
        drop(idle1);
        tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut out))
            .await
            .expect("not served once a slot was free")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
            "{out:?}"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish() {
        let started = Arc::new(tokio::sync::Notify::new());
        let in_handler = started.clone();
        let router = Router::new().route(
            "/wait",
            get(move || {
                in_handler.notify_one();
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, Limits::default(), cancel.clone()));
        let idle = TcpStream::connect(addr).await.unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Shutdown while the request is in its handler.
        started.notified().await;
        cancel.cancel();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("the request in flight was not finished")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("done"),
            "{text}"
        );
        // The idle connection was closed, and the server stopped, well before its header timeout.
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("the server did not stop")
            .unwrap();
        drop(idle);
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
