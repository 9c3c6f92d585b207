//! A stand-in for the runners' HTTP API (the real runner image cannot run here: kwok simulates
//! pods without containers). One loopback server for every session: the operator's
//! `--runner-base-url` points at `http://127.0.0.1:<port>/{namespace}/{session}`, so each call
//! arrives as `POST /<namespace>/<session>/<path>`. It records every call (with the
//! `X-Ambient-Session-Token` header and the JSON body) and answers as told per session:
//! success, a given status and body, a hang (never answers), or success after a delay.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// How the runner of one session answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 `{"status":"ok"}`.
    Answer,
    /// This status and body.
    Fail(u16, String),
    /// Never answers.
    Hang,
    /// Answers 200 after this long.
    Slow(Duration),
}

/// One call the fake runner received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The session's namespace.
    pub namespace: String,
    /// The session.
    pub session: String,
    /// The runner path, e.g. `/repos/add`.
    pub path: String,
    /// The `X-Ambient-Session-Token` header, if any.
    pub token: Option<String>,
    /// The JSON body.
    pub body: serde_json::Value,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    behaviours: HashMap<(String, String), Behaviour>,
}

/// The fake runner server; lives as long as the test binary.
#[derive(Clone)]
pub struct FakeRunner {
    /// Where it listens.
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeRunner {
    /// The test binary's one fake runner, started on first use.
    pub fn shared() -> &'static FakeRunner {
        static SHARED: std::sync::OnceLock<FakeRunner> = std::sync::OnceLock::new();
        SHARED.get_or_init(FakeRunner::start)
    }

    /// Starts the server on a free loopback port (on its own thread and runtime, so it outlives
    /// any one test's runtime).
    pub fn start() -> Self {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        std_listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = std_listener.local_addr().expect("its address");
        let state: Arc<Mutex<State>> = Arc::default();
        let serving = Arc::clone(&state);
        std::thread::Builder::new()
            .name("fake-runner".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("a listener");
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = Arc::clone(&serving);
                        tokio::spawn(async move {
                            let service =
                                service_fn(move |request| answer(Arc::clone(&state), request));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })
            .expect("the fake runner thread");
        FakeRunner { address, state }
    }

    /// The operator's `--runner-base-url` for this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/{{namespace}}/{{session}}", self.address)
    }

    /// How the runner of `namespace/session` answers from now on.
    pub fn behave(&self, namespace: &str, session: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .behaviours
            .insert((namespace.into(), session.into()), behaviour);
    }

    /// The calls received for `namespace/session`, in order.
    pub fn calls(&self, namespace: &str, session: &str) -> Vec<Call> {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|c| c.namespace == namespace && c.session == session)
            .cloned()
            .collect()
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let namespace = parts.next().unwrap_or_default().to_string();
    let session = parts.next().unwrap_or_default().to_string();
    let runner_path = format!("/{}", parts.next().unwrap_or_default());
    let token = request
        .headers()
        .get("X-Ambient-Session-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let behaviour = {
        let mut state = state.lock();
        state.calls.push(Call {
            namespace: namespace.clone(),
            session: session.clone(),
            path: runner_path,
            token,
            body,
        });
        state
            .behaviours
            .get(&(namespace, session))
            .cloned()
            .unwrap_or(Behaviour::Answer)
    };
    let (status, text) = match behaviour {
        Behaviour::Answer => (200, r#"{"status":"ok"}"#.to_string()),
        Behaviour::Fail(status, text) => (status, text),
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!("a hanging runner never answers")
        }
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            (200, r#"{"status":"ok"}"#.to_string())
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(response)
}
