//! A stand-in for the platform's backend, an external service the operator's `session-trigger`
//! calls: an HTTP server on loopback, on a thread of its own, that records every request
//! (method, path, headers, body) and answers with the status and body it was last told
//! (200 `{}` to begin with). Stopped when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::Value;

/// One request the fake backend received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-cased (the last value of a repeated header).
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Debug)]
struct State {
    requests: Vec<RecordedRequest>,
    status: u16,
    body: String,
}

/// The running fake backend.
pub struct FakeBackend {
    /// Where it listens (`127.0.0.1:<port>`).
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeBackend {
    /// Starts serving on a free loopback port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the listener's address");
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            status: 200,
            body: "{}".into(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("fake-backend".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake backend's runtime");
                runtime.block_on(serve(listener, shared, stopped));
            })
            .expect("spawning the fake backend");
        FakeBackend {
            address,
            state,
            stop: Some(stop),
        }
    }

    /// The API base URL to give as `BACKEND_API_URL`: `http://<address>/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.address)
    }

    /// From now on, answer every request with `status` and `body`.
    pub fn answer_with(&self, status: u16, body: &str) {
        let mut state = self.state.lock().expect("the fake backend's state");
        state.status = status;
        state.body = body.into();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .lock()
            .expect("the fake backend's state")
            .requests
            .clone()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, hyper::Error>(answer(request, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let (status, text) = {
        let mut state = state.lock().expect("the fake backend's state");
        state.requests.push(RecordedRequest {
            method,
            path,
            headers,
            body,
        });
        (state.status, state.body.clone())
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).expect("a valid status for the fake backend");
    response
}
