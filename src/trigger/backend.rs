//! The one call `session-trigger` makes to the platform's backend: a follow-up prompt for a
//! running session, `POST <backend>/projects/<ns>/agentic-sessions/<session>/agui/run`, through
//! the backend's AG-UI proxy (which persists the run's events and shows them in the UI).
//!
//! One plain HTTP/1.1 connection per call (hyper's connection API over a tokio socket): nothing
//! to pool for a process that makes one request, no TLS (the backend's Service speaks plain
//! HTTP), and the host name is resolved by the C library, which a static binary in an empty
//! image does from `/etc/resolv.conf` and `/etc/hosts`.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// How long the whole call may take (the original's client timeout).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The longest part of the backend's answer kept in an error message.
const MAX_ANSWER_IN_MESSAGE: usize = 2048;

/// Why the backend did not take the prompt.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The URL cannot be requested.
    #[error("cannot request {url}: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// No connection to the backend.
    #[error("cannot connect to the backend at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("POST {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The protocol error.
        #[source]
        source: hyper::Error,
    },
    /// No answer within [`TIMEOUT`].
    #[error("POST {url}: no answer within {TIMEOUT:?}")]
    Timeout {
        /// The URL.
        url: String,
    },
    /// The backend answered with an error status.
    #[error("POST {url}: the backend answered {status}: {body}")]
    Refused {
        /// The URL.
        url: String,
        /// The HTTP status (400 or more).
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
}

/// The AG-UI `RunAgentInput` carrying `prompt` as a user message, as the original sends it:
/// `{threadId: <session>, runId: "scheduled-<unix>", messages: [{id, role: "user", content}]}`.
pub fn run_input(session: &str, prompt: &str, now: Timestamp) -> Value {
    json!({
        "threadId": session,
        "runId": format!("scheduled-{}", now.as_second()),
        "messages": [{
            "id": format!("scheduled-msg-{}", now.as_nanosecond()),
            "role": "user",
            "content": prompt,
        }],
    })
}

/// POSTs `body` as JSON to `url` with `Authorization: Bearer <token>`; `Ok` with the status
/// when it is below 400.
pub async fn post_json(url: &str, token: &str, body: &Value) -> Result<u16, BackendError> {
    tokio::time::timeout(TIMEOUT, exchange(url, token, body))
        .await
        .unwrap_or_else(|_| Err(BackendError::Timeout { url: url.into() }))
}

async fn exchange(url: &str, token: &str, body: &Value) -> Result<u16, BackendError> {
    let bad = |message: &str| BackendError::BadUrl {
        url: url.into(),
        message: message.into(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();

    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|source| BackendError::Connect {
            url: url.into(),
            source,
        })?;
    let http = |source| BackendError::Http {
        url: url.into(),
        source,
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http)?;
    let connection = tokio::spawn(connection);
    let request = Request::post(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| bad(&e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let answer = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    connection.abort();
    if status >= 400 {
        let mut body = String::from_utf8_lossy(&answer).trim().to_string();
        if body.len() > MAX_ANSWER_IN_MESSAGE {
            let mut cut = MAX_ANSWER_IN_MESSAGE;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        return Err(BackendError::Refused {
            url: url.into(),
            status,
            body,
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_input_has_the_originals_shape() {
        let now: Timestamp = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
        assert_eq!(
            run_input("nightly-1767323045", "Summarise the day", now),
            json!({
                "threadId": "nightly-1767323045",
                "runId": "scheduled-1767323045",
                "messages": [{
                    "id": "scheduled-msg-1767323045123456789",
                    "role": "user",
                    "content": "Summarise the day",
                }],
            })
        );
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_a_connect_error_naming_the_url() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/api/run");
        let error = post_json(&url, "t", &json!({})).await.unwrap_err();
        assert!(matches!(error, BackendError::Connect { .. }), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
    }
}
