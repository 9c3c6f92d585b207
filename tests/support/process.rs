//! The real `agentic-operator` binary run as a child process, for tests that need what an
//! in-process operator cannot give: signals, `kill -9`, exit statuses, several replicas.
//!
//! Each child logs (JSON lines) to `<cluster state dir>/logs/operator-<name>.log`,
//! whose path is printed when a test fails. Its PID is recorded in
//! `<cluster state dir>/pids/operator-<pid>.pid` while it runs, so `cluster/down.sh` can stop
//! children a crashed test left behind; dropping an [`OperatorProcess`] kills the child.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::ClusterInfo;
use super::operator::install_crds;

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One operator replica running as a child process.
pub struct OperatorProcess {
    /// The replica's identity (`POD_NAME`, the Lease holder identity).
    pub name: String,
    /// `127.0.0.1:<port>` serving `/metrics`.
    pub metrics_address: String,
    /// `127.0.0.1:<port>` serving `/healthz` and `/readyz`.
    pub probe_address: String,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    child: Child,
    pid_file: PathBuf,
    exit: Option<ExitStatus>,
}

impl OperatorProcess {
    /// Installs the CRDs (idempotent) and starts the operator binary as replica `name`, as the
    /// operator's ServiceAccount in its namespace (`ambient-code`), with loopback admin ports,
    /// and `args`/`env` on top. Make `name` unique
    /// (e.g. with the test's PID): it is the Lease identity, and a Lease still held by a killed
    /// replica of the same name would be taken as this one's own.
    pub fn start(cluster: &ClusterInfo, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        // As its own ServiceAccount under the shipped RBAC (deploy/), so its requests are in the
        // audit log like a real deployment's.
        let kubeconfig = super::rbac::operator_kubeconfig(cluster);
        Self::start_with_kubeconfig(cluster, &kubeconfig, name, args, env)
    }

    /// [`start`](Self::start), talking to the API server through `kubeconfig` (e.g. one whose
    /// server is a [`super::proxy::ApiProxy`]).
    pub fn start_with_kubeconfig(
        cluster: &ClusterInfo,
        kubeconfig: &std::path::Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        install_crds(cluster);
        let metrics_address = format!("127.0.0.1:{}", free_port());
        let probe_address = format!("127.0.0.1:{}", free_port());
        let logs = cluster.state_dir.join("logs");
        let pids = cluster.state_dir.join("pids");
        std::fs::create_dir_all(&logs).expect("creating the log directory");
        std::fs::create_dir_all(&pids).expect("creating the pid directory");
        let log_path = logs.join(format!("operator-{name}.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let stderr = log.try_clone().expect("duplicating the log file handle");
        // In its own namespace: the leader Lease lives there.
        let child = Command::new(env!("CARGO_BIN_EXE_agentic-operator"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-bind-address", &metrics_address])
            .args(["--health-probe-bind-address", &probe_address])
            .args(["--namespace", super::rbac::NAMESPACE])
            .args(args)
            .env("POD_NAME", name)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .expect("starting the operator binary");
        let pid_file = pids.join(format!("operator-{}.pid", child.id()));
        std::fs::write(&pid_file, format!("{}\n", child.id()))
            .unwrap_or_else(|e| panic!("writing {}: {e}", pid_file.display()));
        OperatorProcess {
            name: name.to_string(),
            metrics_address,
            probe_address,
            log_path,
            child,
            pid_file,
            exit: None,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200 (caches synced); panics if the process exits first.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "operator {} exited with {status} before it was ready; log: {}",
                    self.name,
                    self.log_path.display()
                );
            }
            if http_get(&self.probe_address, "/readyz").0 == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "operator {} not ready after {limit:?}; log: {}",
                self.name,
                self.log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM (a graceful shutdown; a second one exits at once).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reaping the operator");
        self.exited(status);
        status
    }

    /// Waits for the process to exit; panics after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "operator {} still running {limit:?} after being asked to stop; log: {}",
                self.name,
                self.log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited(status);
        }
        self.exit
    }

    fn exited(&mut self, status: ExitStatus) {
        self.exit = Some(status);
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// The current `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(&self.metrics_address, "/metrics");
        assert_eq!(
            status,
            200,
            "GET /metrics on operator {}; log: {}",
            self.name,
            self.log_path.display()
        );
        body
    }

    /// The log lines, each parsed as JSON (non-JSON lines, e.g. a panic message, are skipped).
    pub fn log_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The log records whose `message` is exactly `message`.
    pub fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        self.log_records()
            .into_iter()
            .filter(|r| r["message"] == message)
            .collect()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited(status);
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
        if std::thread::panicking() {
            eprintln!(
                "operator {} (pid {}) logged to {}",
                self.name,
                self.pid(),
                self.log_path.display()
            );
        }
    }
}

/// Sums the samples of `metric` (exact name) whose labels include every `name="value"` pair of
/// `labels`; 0 when there is none.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, label_text) = match series.split_once('{') {
                Some((name, rest)) => (name, rest),
                None => (series, ""),
            };
            let matches = name == metric
                && labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A plain HTTP/1.0 `GET` on a loopback address: (status, body); status 0 when unreachable.
/// HTTP/1.0 keeps the answer un-chunked, so no client library is needed.
pub fn http_get(address: &str, path_and_query: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Percent-encodes a query-string value (everything but RFC 3986 unreserved characters).
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
