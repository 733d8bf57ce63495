//! The connection loop: accepts TCP connections and serves each with hyper's HTTP/1 server, with
//! the limits that keep one client from holding the hub: a deadline for a request's headers (a
//! slowloris client is cut off), a cap on the header count, and a cap on the bytes buffered while
//! reading them (over either: 431). `axum::serve` exposes none of these, hence this loop.
//!
//! Shutdown: when `stop` is cancelled the loop stops accepting, every connection is told to finish
//! its request in flight and close, and [`serve`] returns once all have (the caller bounds the wait).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// The HTTP limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Most bytes of a request's line and headers.
    pub max_header_bytes: usize,
}

/// Serves `app` on `listener` until `stop`, then drains the connections (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
    limits: ConnLimits,
    quotas: super::quota::Quotas,
) {
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes.max(1024))
        // The read buffer must hold a whole head (and hyper wants at least 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // moment (the fds come back as connections close) rather than spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // One client may hold so many connections, and the hub so many in all: past that, a short
        // 503 and the connection is closed, before a byte of the request is read.
        let Some(slot) = quotas.connection(addr.ip()) else {
            connections.spawn(refuse(tcp));
            continue;
        };
        // Answers and tunnel frames are many small writes: without TCP_NODELAY each waits on the
        // peer's delayed ACK (~40 ms) instead of leaving at once.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            app.clone().oneshot(req)
        });
        let conn = http.serve_connection(TokioIo::new(tcp), service).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, client = %addr, "connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Answers a connection over the caps with 503 and closes it, within a second whatever the client
/// does.
async fn refuse(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":{"code":"CAPACITY_EXCEEDED","message":"Too many open connections from this address (or to this hub); try again shortly.","hint":"Close idle connections (each event stream holds one)."}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        super::quota::CONNECTION_RETRY.as_secs(),
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
