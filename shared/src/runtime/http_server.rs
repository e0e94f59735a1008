//! Plain HTTP mode: a small HTTP/1 server (hyper, no framework) for local runs, the sandbox and
//! SCF web functions. Every request, whatever its path, goes to the one [`Handler`]; routing is
//! the handler's business, as it is behind API Gateway.
//!
//! Bodies are collected as raw bytes up to [`MAX_BODY_BYTES`]; larger ones get 413 rather than
//! an unbounded buffer. Shutdown on SIGTERM / ctrl-c is graceful: stop accepting, let requests
//! in flight finish (bounded by [`DRAIN_TIMEOUT`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::RuntimeError;
use crate::http::{ApiError, Handler, Request, Response};

/// Largest request body accepted (1 MiB): our JSON requests and WeChat Pay notifications are a
/// few KiB; API Gateway itself caps bodies at 6 MB (SCF) / 10 MB (AWS).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// An oversize body is still read (and dropped) up to this much before the 413 goes out, so
/// the client gets the response instead of a reset connection; beyond it we just close.
const DRAIN_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// How long a graceful shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not sent its request headers by then is dropped (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that has sent its headers but not its whole body by then gets a 408 and the
/// connection is closed: a slow body must not hold a handler (or WeChat Pay's 5 s) hostage.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` until SIGTERM or ctrl-c, then shuts down gracefully.
pub async fn serve_http(
    handler: Arc<dyn Handler>,
    listener: TcpListener,
) -> Result<(), RuntimeError> {
    serve_http_until(handler, listener, shutdown_signal()).await
}

/// Serves `handler` on `listener` until `shutdown` completes (tests and the sandbox pass their
/// own signal), then stops accepting and waits for requests in flight.
pub async fn serve_http_until(
    handler: Arc<dyn Handler>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    serve_http_with(handler, listener, shutdown, BODY_READ_TIMEOUT).await
}

/// [`serve_http_until`] with another body read timeout.
pub async fn serve_http_with(
    handler: Arc<dyn Handler>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    body_read_timeout: Duration,
) -> Result<(), RuntimeError> {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(mode = "http", %addr, "ready"),
        Err(_) => tracing::info!(mode = "http", "ready"),
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener survives.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let handler = Arc::clone(&handler);
        let service = service_fn(move |request| {
            let handler = Arc::clone(&handler);
            async move {
                Ok::<_, Infallible>(handle(handler.as_ref(), request, body_read_timeout).await)
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
    }
    Ok(())
}

async fn handle(
    handler: &dyn Handler,
    request: http::Request<Incoming>,
    body_read_timeout: Duration,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = tokio::time::timeout(body_read_timeout, collect_limited(body, MAX_BODY_BYTES))
        .await
        .unwrap_or(Body::TimedOut);
    let response = match body {
        Body::Complete(bytes) => {
            let mut request: Request = http::Request::new(bytes);
            *request.method_mut() = parts.method;
            // Proxies may send absolute-form; handlers only ever see origin-form.
            *request.uri_mut() = parts
                .uri
                .path_and_query()
                .map_or_else(|| http::Uri::from_static("/"), |pq| pq.clone().into());
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers;
            handler.handle(request).await
        }
        Body::TooLarge { drained } => {
            let mut response = ApiError::new(
                413,
                "PAYLOAD_TOO_LARGE",
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
            if !drained {
                close_after(&mut response);
            }
            response
        }
        Body::TimedOut => {
            let mut response = ApiError::new(
                408,
                "REQUEST_TIMEOUT",
                format!("request body not received within {body_read_timeout:?}"),
            )
            .into_response();
            close_after(&mut response);
            response
        }
        Body::Broken(e) => {
            let mut response = ApiError::new(
                400,
                "INVALID_REQUEST",
                format!("request body unreadable: {e}"),
            )
            .into_response();
            close_after(&mut response);
            response
        }
    };
    response.map(Full::new)
}

fn close_after(response: &mut Response) {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
}

enum Body {
    Complete(Bytes),
    /// `drained`: the whole body was read (and dropped), so the connection is reusable.
    TooLarge {
        drained: bool,
    },
    Broken(hyper::Error),
    TimedOut,
}

async fn collect_limited(mut body: Incoming, limit: usize) -> Body {
    use hyper::body::Body as _;
    // A declared Content-Length shows up as the size hint's lower bound.
    if body.size_hint().lower() > DRAIN_LIMIT_BYTES as u64 {
        return Body::TooLarge { drained: false };
    }
    let mut buffer = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Body::Broken(e),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_LIMIT_BYTES {
            return Body::TooLarge { drained: false };
        }
        if seen <= limit {
            buffer.extend_from_slice(&data);
        }
    }
    if seen > limit {
        Body::TooLarge { drained: true }
    } else {
        Body::Complete(buffer.freeze())
    }
}

/// SIGTERM (what SCF, containers and `kill` send) or ctrl-c. A signal that cannot be
/// installed never fires, rather than firing at once and stopping the server.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;

    struct Echo;

    #[async_trait]
    impl Handler for Echo {
        async fn handle(&self, request: Request) -> Response {
            let mut r = crate::http::response(200, request.body().clone(), None);
            r.headers_mut().insert(
                "x-uri",
                http::HeaderValue::from_str(&request.uri().to_string()).unwrap(),
            );
            r
        }
    }

    #[tokio::test]
    async fn serves_until_shutdown_and_caps_bodies() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http_until(Arc::new(Echo), listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let body = vec![0xffu8, 0, 1, 2];
        let r = client
            .post(format!("http://{addr}/a/b?c=d%20e"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-uri"], "/a/b?c=d%20e");
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());

        let exact = vec![7u8; MAX_BODY_BYTES];
        let r = client
            .post(format!("http://{addr}/"))
            .body(exact)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), MAX_BODY_BYTES);

        let over = vec![7u8; MAX_BODY_BYTES + 1];
        let r = client
            .post(format!("http://{addr}/"))
            .body(over)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let err: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(err["code"], "PAYLOAD_TOO_LARGE");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops after the shutdown signal")
            .unwrap()
            .unwrap();
    }
}

#[cfg(test)]
mod slow_body {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Never;

    #[async_trait::async_trait]
    impl Handler for Never {
        async fn handle(&self, _: Request) -> Response {
            panic!("a request whose body never came must not reach the handler")
        }
    }

    /// Issue 12.5: headers sent, the body promised and never finished: a 408 with the error
    /// body once the timeout passes, and the connection closed.
    #[tokio::test]
    async fn a_body_that_never_arrives_is_answered_408_in_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        let server = tokio::spawn(serve_http_with(
            Arc::new(Never),
            listener,
            std::future::pending(),
            timeout,
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        stream
            .write_all(b"POST /notify/wechatpay HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"id\":")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .unwrap();
        let elapsed = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"REQUEST_TIMEOUT""#), "{answer}");
        assert!(
            elapsed >= timeout && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        server.abort();
    }
}
