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
/// Largest request line plus headers (hyper's read buffer): API Gateway's own limit is
/// 10 KB; past this hyper answers 431 (or 414 for the target) before any handler runs.
const MAX_HEAD_BYTES: usize = 64 * 1024;
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
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(ErrorBodies::new(stream)), service);
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

/// The connection's byte stream, giving hyper's own answers to requests it cannot parse
/// (400 for control bytes in a header, a bad or doubled `Content-Length`, a raw space in the
/// target; 414 for a huge URI; 431 for huge headers) the `{"code","message"}` body every
/// other error has. hyper writes those heads itself with no body and no hook, so the
/// rewrite happens here, on the way out; nothing else written is touched.
struct ErrorBodies<S> {
    inner: S,
    /// Rewritten bytes not yet accepted by `inner`; sent before anything else.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> ErrorBodies<S> {
    fn new(inner: S) -> Self {
        ErrorBodies {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

/// The head hyper writes for a parse error, with an error body added; `None` for anything
/// else (every response of ours has a content type).
fn with_error_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (code, message) = match text.get(..13)? {
        "HTTP/1.1 400 " => (
            "INVALID_REQUEST",
            "the request could not be parsed as HTTP/1.1",
        ),
        "HTTP/1.1 414 " => ("URI_TOO_LONG", "the request target is too long"),
        "HTTP/1.1 431 " => ("HEADERS_TOO_LARGE", "the request headers are too large"),
        _ => return None,
    };
    let lower = text.to_ascii_lowercase();
    if !text.ends_with("\r\n\r\n")
        || lower.contains("\r\ncontent-type:")
        || !lower.contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    let start = lower.find("\r\ncontent-length: 0\r\n")?;
    let end = start + "\r\ncontent-length: 0\r\n".len();
    let mut out = String::with_capacity(text.len() + body.len() + 64);
    out.push_str(&text[..start]);
    out.push_str(&format!(
        "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    ));
    out.push_str(&text[end..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: tokio::io::AsyncWrite + Unpin> ErrorBodies<S> {
    /// Sends what a rewrite left pending; ready once all of it is out.
    fn poll_pending(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.sent < self.pending.len() {
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ErrorBodies<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ErrorBodies<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(rewritten) = with_error_body(buf) {
            self.pending = rewritten;
            self.sent = 0;
            // The head counts as written; the rewritten bytes go out first, now or on the
            // next write or flush (an error then surfaces there).
            let _ = self.poll_pending(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // One flat buffer per head, so a head is seen whole by `poll_write`.
    fn is_write_vectored(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod protocol_errors {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Ok200;

    #[async_trait::async_trait]
    impl Handler for Ok200 {
        async fn handle(&self, _: Request) -> Response {
            crate::http::response(200, Bytes::from_static(b"ok"), None)
        }
    }

    async fn answer(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before it has read everything we send.
        let _ = stream.write_all(raw).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Issue 20.4: requests hyper refuses before any handler runs still get the error body.
    #[tokio::test]
    async fn protocol_level_refusals_carry_the_error_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_http_until(
            Arc::new(Ok200),
            listener,
            std::future::pending(),
        ));
        let long_uri = format!(
            "GET /{} HTTP/1.1\r\nhost: x\r\n\r\n",
            "a".repeat(100 * 1024)
        );
        let big_header = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "b".repeat(200 * 1024)
        );
        let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
            (
                "control byte",
                b"GET / HTTP/1.1\r\nhost: x\r\nx-a: b\x01c\r\n\r\n".to_vec(),
                "400",
                "INVALID_REQUEST",
            ),
            (
                "bad length",
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: ten\r\n\r\n".to_vec(),
                "400",
                "INVALID_REQUEST",
            ),
            (
                "two lengths",
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"
                    .to_vec(),
                "400",
                "INVALID_REQUEST",
            ),
            (
                "space in target",
                b"GET /a b HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
                "400",
                "INVALID_REQUEST",
            ),
            ("long uri", long_uri.into_bytes(), "414", "URI_TOO_LONG"),
            (
                "big header",
                big_header.into_bytes(),
                "431",
                "HEADERS_TOO_LARGE",
            ),
        ];
        for (what, raw, status, code) in cases {
            let answer = answer(addr, &raw).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {answer}"
            );
            let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/json"),
                "{what}: {head}"
            );
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{what}: {head}"
            );
            let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
            assert_eq!(body["code"], code, "{what}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}"
            );
        }
        // A good request on the same server is untouched.
        let ok = answer(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("\r\n\r\nok"),
            "{ok}"
        );
        server.abort();
    }

    #[test]
    fn only_bodiless_parse_error_heads_are_rewritten() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(with_error_body(head).unwrap()).unwrap();
        assert!(out.contains("content-type: application/json"), "{out}");
        // Ours: already a body and a type.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(with_error_body(ours), None);
        assert_eq!(
            with_error_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            with_error_body(b"HTTP/1.1 400 Bad Request\r\ncontent-len"),
            None
        );
    }
}
