//! Shared pieces of the runtime_* suites: the spawned echo-function process (killed on drop)
//! and in-test fakes of the Lambda and SCF runtime APIs. A spawned binary rather than an
//! in-process runtime because lambda_runtime reads its configuration from the process
//! environment, which a test cannot set safely.

#![allow(dead_code)] // each suite uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use tokio::sync::mpsc;

/// How long any single wait in these suites may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The echo-function process. Its output is echoed to the test's stderr (shown on failure)
/// and kept for assertions; the process is killed when this is dropped.
pub struct EchoFunction {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl EchoFunction {
    /// Starts the binary with `env` on top of an environment cleared of every variable that
    /// selects a platform, so the test alone decides the mode.
    pub fn spawn(env: &[(&str, &str)]) -> EchoFunction {
        let mut command = Command::new(env!("CARGO_BIN_EXE_echo-function"));
        for name in [
            "AWS_LAMBDA_RUNTIME_API",
            "SCF_RUNTIME_API",
            "SCF_RUNTIME_API_PORT",
            "PORT",
        ] {
            command.env_remove(name);
        }
        command
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("echo-function starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout piped")),
            Box::new(child.stderr.take().expect("stderr piped")),
        ];
        for stream in streams {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[echo-function] {line}");
                    output.lock().unwrap().push(line);
                }
            });
        }
        EchoFunction { child, output }
    }

    /// Waits for an output line satisfying `pred` and returns it.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.output.lock().unwrap().iter().find(|l| pred(l)) {
                return line.clone();
            }
            assert!(
                start.elapsed() < WAIT,
                "no matching output line within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status.code();
            }
            assert!(
                start.elapsed() < WAIT,
                "process did not exit within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM (what SCF and containers send on scale-in) to this process only.
    #[cfg(unix)]
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for EchoFunction {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the function posted back to a fake runtime API.
#[derive(Debug, Clone)]
pub struct Posted {
    /// `response` or `error` (`init-error` for Lambda's init error endpoint).
    pub kind: &'static str,
    /// Lambda: the id in the URL path. SCF posts carry none.
    pub request_id: Option<String>,
    pub body: Bytes,
}

impl Posted {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "posted body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Queued {
    id: String,
    body: String,
    /// This event's own deadline (unix ms), instead of the runtime's.
    deadline_ms: Option<u64>,
}

struct FakeState {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>,
    posted: mpsc::UnboundedSender<Posted>,
    /// Every call the function made, in order: `ready`, `next`, `response`, `error`.
    calls: Mutex<Vec<&'static str>>,
    /// Lambda deadline header value / SCF `time_limit_in_ms`.
    limit_ms: u64,
}

/// A fake runtime API (Lambda's or SCF's) on 127.0.0.1:<ephemeral>.
pub struct FakeRuntime {
    pub addr: SocketAddr,
    events: mpsc::UnboundedSender<Queued>,
    posted: mpsc::UnboundedReceiver<Posted>,
    state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeRuntime {
    /// Lambda Runtime API 2018-06-01; `deadline_ms` is sent as `lambda-runtime-deadline-ms`.
    pub async fn lambda(deadline_ms: u64) -> FakeRuntime {
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(lambda_next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|s: State<Arc<FakeState>>, p: Path<String>, b: Bytes| {
                    lambda_post(s, p, b, "response")
                }),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|s: State<Arc<FakeState>>, p: Path<String>, b: Bytes| {
                    lambda_post(s, p, b, "error")
                }),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(|State(s): State<Arc<FakeState>>, b: Bytes| async move {
                    record(&s, "init-error", None, b)
                }),
            );
        FakeRuntime::start(router, deadline_ms).await
    }

    /// SCF custom-runtime API; `time_limit_ms` is sent as `time_limit_in_ms`.
    pub async fn scf(time_limit_ms: u64) -> FakeRuntime {
        let router = Router::new()
            .route(
                "/runtime/init/ready",
                post(|State(s): State<Arc<FakeState>>, b: Bytes| async move {
                    assert!(!b.is_empty(), "SCF rejects an empty init/ready body");
                    s.calls.lock().unwrap().push("ready");
                    StatusCode::OK
                }),
            )
            .route("/runtime/invocation/next", get(scf_next))
            .route(
                "/runtime/invocation/response",
                post(|State(s): State<Arc<FakeState>>, b: Bytes| async move {
                    record(&s, "response", None, b)
                }),
            )
            .route(
                "/runtime/invocation/error",
                post(|State(s): State<Arc<FakeState>>, b: Bytes| async move {
                    record(&s, "error", None, b)
                }),
            );
        FakeRuntime::start(router, time_limit_ms).await
    }

    async fn start(router: Router<Arc<FakeState>>, limit_ms: u64) -> FakeRuntime {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (posted_tx, posted) = mpsc::unbounded_channel();
        let state = Arc::new(FakeState {
            events: tokio::sync::Mutex::new(events_rx),
            posted: posted_tx,
            calls: Mutex::new(Vec::new()),
            limit_ms,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router.with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRuntime {
            addr,
            events,
            posted,
            state,
            server,
        }
    }

    /// Queues an event for the function's next poll.
    pub fn push(&self, id: &str, body: impl Into<String>) {
        let _ = self.events.send(Queued {
            id: id.to_string(),
            body: body.into(),
            deadline_ms: None,
        });
    }

    /// Queues an event whose invocation must end by `deadline_ms` (unix ms, Lambda only).
    pub fn push_with_deadline(&self, id: &str, body: impl Into<String>, deadline_ms: u64) {
        let _ = self.events.send(Queued {
            id: id.to_string(),
            body: body.into(),
            deadline_ms: Some(deadline_ms),
        });
    }

    /// The next thing the function posted back.
    pub async fn posted(&mut self) -> Posted {
        tokio::time::timeout(WAIT, self.posted.recv())
            .await
            .expect("the function posted a result in time")
            .expect("fake runtime alive")
    }

    pub fn calls(&self) -> Vec<&'static str> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn record(state: &FakeState, kind: &'static str, id: Option<String>, body: Bytes) -> StatusCode {
    state.calls.lock().unwrap().push(kind);
    let _ = state.posted.send(Posted {
        kind,
        request_id: id,
        body,
    });
    StatusCode::ACCEPTED
}

async fn next_event(state: &FakeState) -> Option<Queued> {
    state.calls.lock().unwrap().push("next");
    // Long poll, as the real APIs do: hold the request until an event is queued.
    state.events.lock().await.recv().await
}

async fn lambda_next(State(state): State<Arc<FakeState>>) -> (StatusCode, HeaderMap, String) {
    let Some(event) = next_event(&state).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            String::new(),
        );
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    set("lambda-runtime-aws-request-id", event.id);
    set(
        "lambda-runtime-deadline-ms",
        event.deadline_ms.unwrap_or(state.limit_ms).to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:ap-east-1:123456789012:function:echo".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into(),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, event.body)
}

async fn lambda_post(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    body: Bytes,
    kind: &'static str,
) -> StatusCode {
    record(&state, kind, Some(id), body)
}

async fn scf_next(State(state): State<Arc<FakeState>>) -> (StatusCode, HeaderMap, String) {
    let Some(event) = next_event(&state).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            String::new(),
        );
    };
    let mut headers = HeaderMap::new();
    headers.insert("request_id", HeaderValue::from_str(&event.id).unwrap());
    headers.insert("memory_limit_in_mb", HeaderValue::from_static("128"));
    headers.insert(
        "time_limit_in_ms",
        HeaderValue::from_str(&state.limit_ms.to_string()).unwrap(),
    );
    (StatusCode::OK, headers, event.body)
}
