//! The server-side half of "watch only your part": KEP-5866's `shardSelector` query
//! parameter on a watch's list and watch requests. kube-rs has no field for it, so a watch's
//! client carries a [`ShardSelector`] cell and a tower layer appends the parameter to every
//! `GET` it sends. The owner of the cell changes it only while no request of that client is
//! in flight (between two runs of its watcher), so a list and the watches resuming from it
//! always carry the same selector.
//!
//! An API server without the feature (gate off, or older than 1.36) ignores the parameter;
//! the watches filter client-side as well, so behaviour is the same, only traffic differs.
//! Whether the server filtered shows in a list's `metadata.shardInfo` (built-in kinds only:
//! custom resources are filtered too but their lists carry no `shardInfo` in 1.36), which
//! [`server_filters`] asks once per scope change.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use kube::Client;
use parking_lot::RwLock;

use super::buckets::BucketSet;

/// The selector a watch's requests carry (none: unfiltered); cheap to clone.
#[derive(Clone, Default)]
pub struct ShardSelector {
    query: Arc<RwLock<Option<String>>>,
}

impl ShardSelector {
    /// A client built from `config` whose requests carry this selector; the plain `fallback`
    /// (filtering client-side only) when that client cannot be built.
    pub fn client(&self, config: &kube::Config, fallback: &Client, what: &str) -> Client {
        kube::client::ClientBuilder::try_from(config.clone())
            .map(|builder| builder.with_layer(self).build())
            .unwrap_or_else(|error| {
                tracing::warn!(%error, what, "no client for the shard selector: filtering client-side only");
                fallback.clone()
            })
    }

    /// From now on requests carry the selector of `buckets` (none for the empty set).
    pub fn set(&self, buckets: BucketSet) {
        *self.query.write() = buckets
            .selector()
            .map(|selector| format!("shardSelector={}", percent_encode(&selector)));
    }
}

impl<S> tower::Layer<S> for ShardSelector {
    type Service = WithShardSelector<S>;

    fn layer(&self, inner: S) -> WithShardSelector<S> {
        WithShardSelector {
            inner,
            selector: self.clone(),
        }
    }
}

/// The service [`ShardSelector`] wraps a client's stack in.
#[derive(Clone)]
pub struct WithShardSelector<S> {
    inner: S,
    selector: ShardSelector,
}

impl<S, B> tower::Service<http::Request<B>> for WithShardSelector<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.method() == http::Method::GET
            && let Some(query) = self.selector.query.read().as_deref()
            && let Some(uri) = with_query(request.uri(), query)
        {
            *request.uri_mut() = uri;
        }
        self.inner.call(request)
    }
}

/// `uri` with `parameter` (`name=value`, already encoded) appended to its query.
fn with_query(uri: &http::Uri, parameter: &str) -> Option<http::Uri> {
    let path = uri.path();
    let path_and_query = match uri.query() {
        Some(query) if !query.is_empty() => format!("{path}?{query}&{parameter}"),
        _ => format!("{path}?{parameter}"),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether the API server filters lists by `buckets`' selector: one list of at most one runner
/// Job with it, answered with `metadata.shardInfo` or not. `None` when it could not be asked
/// (or `buckets` is empty).
pub async fn server_filters(client: &Client, buckets: BucketSet) -> Option<bool> {
    let selector = buckets.selector()?;
    let path = format!(
        "/apis/batch/v1/jobs?limit=1&labelSelector={}&shardSelector={}",
        percent_encode(&crate::cache::child_selector()),
        percent_encode(&selector)
    );
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    let answer: serde_json::Value = client.request(request).await.ok()?;
    Some(!answer["metadata"]["shardInfo"].is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::buckets::Bucket;

    #[test]
    fn the_selector_is_appended_to_the_query_encoded() {
        let uri: http::Uri = "https://api/apis/batch/v1/jobs?labelSelector=app%3Dx&watch=true"
            .parse()
            .unwrap();
        let extended = with_query(&uri, "shardSelector=a%20b").unwrap();
        assert_eq!(
            extended.to_string(),
            "https://api/apis/batch/v1/jobs?labelSelector=app%3Dx&watch=true&shardSelector=a%20b"
        );
        let bare: http::Uri = "/api/v1/pods".parse().unwrap();
        assert_eq!(
            with_query(&bare, "x=1").unwrap().to_string(),
            "/api/v1/pods?x=1"
        );
        assert_eq!(
            percent_encode("shardRange(object.metadata.namespace, '0x00', '0x10') || x"),
            "shardRange%28object.metadata.namespace%2C%20%270x00%27%2C%20%270x10%27%29%20%7C%7C%20x"
        );
    }

    #[tokio::test]
    async fn a_client_sends_the_selector_it_holds_on_gets() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut lines = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = vec![0u8; 65536];
                let n = stream.read(&mut buffer).await.unwrap();
                let text = String::from_utf8_lossy(&buffer[..n]).to_string();
                lines.push(text.lines().next().unwrap_or_default().to_string());
                let body = r#"{"kind":"JobList","apiVersion":"batch/v1","metadata":{},"items":[]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            lines
        });
        let selector = ShardSelector::default();
        let config = kube::Config::new(url.parse().unwrap());
        let client = kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&selector)
            .build();
        let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = kube::Api::all(client);
        jobs.list(&Default::default()).await.unwrap();
        selector.set([Bucket(0), Bucket(1)].into_iter().collect());
        jobs.list(&Default::default()).await.unwrap();
        let lines = server.await.unwrap();
        assert!(!lines[0].contains("shardSelector"), "{}", lines[0]);
        assert!(
            lines[1].contains(&format!(
                "shardSelector={}",
                percent_encode(
                    "shardRange(object.metadata.namespace, '0x0000000000000000', '0x0200000000000000')"
                )
            )),
            "{}",
            lines[1]
        );
    }
}
