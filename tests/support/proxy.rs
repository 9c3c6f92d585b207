//! A TCP proxy on loopback between one operator process and the API server, which a test can
//! tell to stop forwarding ([`Mode::Freeze`]: a half-open network, every connection stays open
//! and nothing passes either way) or to drop every connection ([`Mode::Refuse`]: the API server
//! unreachable). It counts what it forwards, so a test can prove a process sent nothing.
//!
//! The API server's certificate names 127.0.0.1, so a copy of the admin kubeconfig whose server
//! is `https://127.0.0.1:<proxy port>` ([`ApiProxy::kubeconfig`]) works unchanged through it.
//! It runs on its own thread and runtime: a test blocking its own runtime never stalls it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ClusterInfo;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward in both directions.
    Forward,
    /// Forward nothing, keep every connection open (new ones are accepted and held too).
    /// Connections frozen this way are closed at the next change of mode: they never forward
    /// again, as after a partition that outlasted TCP's retransmissions.
    Freeze,
    /// Close every connection, and each new one as soon as it is accepted.
    Refuse,
}

/// What went through the proxy towards the API server so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Connections forwarded to the API server.
    pub connections: u64,
    /// Bytes forwarded from the client to the API server.
    pub bytes_sent: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
}

/// A running proxy; dropping it closes every connection.
pub struct ApiProxy {
    /// `127.0.0.1:<port>` it listens on.
    pub address: SocketAddr,
    upstream: String,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl ApiProxy {
    /// Starts forwarding to the API server of `cluster`.
    pub fn start(cluster: &ClusterInfo) -> Self {
        let upstream = api_server_address(cluster);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the proxy's address");
        let (mode, _) = watch::channel(Mode::Forward);
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let proxy = ApiProxy {
            address,
            upstream: upstream.clone(),
            mode,
            counters: Arc::clone(&counters),
            stop: stop.clone(),
        };
        let modes = proxy.mode.clone();
        std::thread::Builder::new()
            .name("api-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    loop {
                        let accepted = tokio::select! {
                            _ = stop.cancelled() => break,
                            accepted = listener.accept() => accepted,
                        };
                        let Ok((client, _)) = accepted else { continue };
                        tokio::spawn(serve(
                            client,
                            upstream.clone(),
                            modes.subscribe(),
                            Arc::clone(&counters),
                        ));
                    }
                });
            })
            .expect("spawning the proxy thread");
        proxy
    }

    /// Switches every connection, present and future, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// What has been forwarded to the API server so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            connections: self.counters.connections.load(Ordering::SeqCst),
            bytes_sent: self.counters.bytes_sent.load(Ordering::SeqCst),
        }
    }

    /// Writes a copy of the operator's kubeconfig (its ServiceAccount, so its requests are
    /// audited as the operator's) whose server is this proxy, named after `name`, and returns
    /// its path.
    pub fn kubeconfig(&self, cluster: &ClusterInfo, name: &str) -> PathBuf {
        let operator = super::rbac::operator_kubeconfig(cluster);
        let text = std::fs::read_to_string(&operator)
            .unwrap_or_else(|e| panic!("reading {}: {e}", operator.display()));
        let rewritten = text.replace(
            &format!("https://{}", self.upstream),
            &format!("https://{}", self.address),
        );
        assert_ne!(
            rewritten, text,
            "no server {} in the kubeconfig",
            self.upstream
        );
        let path = cluster
            .state_dir
            .join(format!("kubeconfig-proxy-{name}-{}", std::process::id()));
        std::fs::write(&path, rewritten)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.mode.send_replace(Mode::Refuse);
    }
}

/// `host:port` of the API server in the cluster's admin kubeconfig.
fn api_server_address(cluster: &ClusterInfo) -> String {
    let text = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", cluster.kubeconfig.display()));
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("a YAML kubeconfig");
    let server = config["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("a server in the kubeconfig");
    server
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("server {server} is not https://host:port"))
        .trim_end_matches('/')
        .to_string()
}

/// One client connection, for as long as the mode lets it live.
async fn serve(
    client: TcpStream,
    upstream: String,
    mut mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    let mut client = client;
    let current = *mode.borrow_and_update();
    match current {
        Mode::Refuse => return,
        Mode::Freeze => {
            let _ = mode.changed().await;
            return;
        }
        Mode::Forward => {}
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    counters.connections.fetch_add(1, Ordering::SeqCst);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let pumps = async {
        tokio::join!(
            pump(
                &mut client_read,
                &mut server_write,
                Some(&counters.bytes_sent)
            ),
            pump(&mut server_read, &mut client_write, None),
        )
    };
    let mut pumps = std::pin::pin!(pumps);
    loop {
        tokio::select! {
            _ = &mut pumps => return,
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                let current = *mode.borrow_and_update();
                match current {
                    Mode::Forward => {}
                    Mode::Refuse => return,
                    Mode::Freeze => break,
                }
            }
        }
    }
    // Frozen: the pumps are no longer polled; both sockets stay open until the next change.
    let _ = mode.changed().await;
}

/// Copies `from` to `to` until either side closes, counting bytes into `count`.
async fn pump<R, W>(from: &mut R, to: &mut W, count: Option<&AtomicU64>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Some(count) = count {
            count.fetch_add(read as u64, Ordering::SeqCst);
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
