//! Support for the fault tests (`tests/faults.rs`): a burst of sessions that must all end in
//! their expected phase, a Job ledger watching the whole run, and the faults themselves
//! (API server restart, etcd compaction, a concurrent writer).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase};
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::ClusterInfo;
use super::operator::session;

/// A burst of sessions in one namespace, named `<prefix>-<i>`.
pub struct Burst {
    /// Namespace.
    pub namespace: String,
    /// Session names.
    pub names: Vec<String>,
}

/// `SIM_RUN_FOR` of burst runners: long enough for a fault to hit sessions while Running.
pub const RUN_FOR: &str = "3s";

impl Burst {
    /// Creates `count` sessions whose runners succeed after [`RUN_FOR`], with `annotations`.
    pub async fn create(
        client: &Client,
        namespace: &str,
        prefix: &str,
        range: std::ops::Range<usize>,
        annotations: &[(&str, &str)],
    ) -> Self {
        let api: Api<AgenticSession> = Api::namespaced(client.clone(), namespace);
        let mut names = Vec::new();
        for i in range {
            let name = format!("{prefix}-{i}");
            let mut s = session(&name, &[("SIM_RUN_FOR", RUN_FOR)]);
            if !annotations.is_empty() {
                s.metadata.annotations = Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
            }
            // The API server may be restarting: retry until it takes the create.
            let mut attempts = 0;
            loop {
                match api.create(&PostParams::default(), &s).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(status)) if status.code == 409 => break,
                    Err(e) => {
                        attempts += 1;
                        assert!(attempts < 300, "creating session {name}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            names.push(name);
        }
        Burst {
            namespace: namespace.to_string(),
            names,
        }
    }

    /// Adds another burst's sessions to this one.
    pub fn extend(&mut self, other: Burst) {
        self.names.extend(other.names);
    }

    /// Waits until every session is `expected` (failing early on another terminal phase);
    /// returns the phase counts seen at the end.
    pub async fn wait_all(&self, client: &Client, expected: Phase, limit: Duration) {
        let api: Api<AgenticSession> = Api::namespaced(client.clone(), &self.namespace);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut phases: BTreeMap<String, Phase> = BTreeMap::new();
            if let Ok(list) = api.list(&Default::default()).await {
                for s in list.items {
                    let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
                    phases.insert(s.name_any(), phase);
                }
                let mut missing = Vec::new();
                let mut wrong = Vec::new();
                let mut pending = 0;
                for name in &self.names {
                    match phases.get(name) {
                        None => missing.push(name.clone()),
                        Some(p) if *p == expected => {}
                        Some(p) if p.is_terminal() => wrong.push(format!("{name}: {p}")),
                        Some(_) => pending += 1,
                    }
                }
                assert!(missing.is_empty(), "sessions lost: {missing:?}");
                assert!(
                    wrong.is_empty(),
                    "sessions in the wrong final phase: {wrong:?}"
                );
                if pending == 0 {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    let summary: BTreeMap<String, usize> =
                        phases.values().fold(BTreeMap::new(), |mut m, p| {
                            *m.entry(p.to_string()).or_default() += 1;
                            m
                        });
                    panic!(
                        "{pending} of {} sessions not {expected} after {limit:?}: {summary:?}",
                        self.names.len()
                    );
                }
            } else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot list sessions after {limit:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until at least `count` sessions have left Pending (the operator is mid-burst).
    pub async fn wait_started(&self, client: &Client, count: usize, limit: Duration) {
        let api: Api<AgenticSession> = Api::namespaced(client.clone(), &self.namespace);
        super::wait_until("sessions to start", limit, || {
            let api = api.clone();
            async move {
                let list = api.list(&Default::default()).await.ok()?;
                let started = list
                    .items
                    .iter()
                    .filter(|s| {
                        s.status
                            .as_ref()
                            .is_some_and(|st| st.phase != Phase::Pending)
                    })
                    .count();
                (started >= count).then_some(())
            }
        })
        .await;
    }
}

/// Restarts the API server with `cluster/restart-apiserver.sh` (`signal`: TERM or KILL) and
/// waits until it is ready again.
pub fn restart_apiserver(cluster: &ClusterInfo, signal: &str) {
    run_restart_script(cluster, Some(signal), None);
}

/// Runs `cluster/restart-apiserver.sh` on `cluster` (optionally with a signal, and with
/// `CLUSTER_SHARDED_LIST_AND_WATCH` set) and asserts it succeeded.
fn run_restart_script(cluster: &ClusterInfo, signal: Option<&str>, sharded_list: Option<&str>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/restart-apiserver.sh");
    let mut command = Command::new(script);
    command.arg(&cluster.state_dir).args(signal);
    if let Some(value) = sharded_list {
        command.env("CLUSTER_SHARDED_LIST_AND_WATCH", value);
    }
    let output = command.output().expect("running restart-apiserver.sh");
    assert!(
        output.status.success(),
        "restart-apiserver.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Restarts the API server with its `ShardedListAndWatch` feature gate `on` or off (see
/// `cluster/restart-apiserver.sh`), unless it already runs that way; waits until it is ready.
pub fn restart_apiserver_with_sharded_list(cluster: &ClusterInfo, on: bool) {
    let env = std::fs::read_to_string(cluster.state_dir.join("cluster.env")).unwrap_or_default();
    let value = if on { "true" } else { "false" };
    if env
        .lines()
        .any(|l| l == format!("SHARDED_LIST_AND_WATCH={value}"))
    {
        return;
    }
    run_restart_script(cluster, None, Some(value));
}

/// Patches a [`ConcurrentWriter`] has in flight at once.
const WRITER_IN_FLIGHT: usize = 8;

/// Keeps bumping the resourceVersion of every session of a burst, one round of patches every
/// `pause` (a label: not a change the operator reacts to, but it voids every status write
/// prepared from an older copy) until stopped. Counts the writes it made.
pub struct ConcurrentWriter {
    stop: Arc<AtomicBool>,
    /// Writes made so far.
    pub writes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ConcurrentWriter {
    /// Starts writing.
    pub fn start(client: &Client, namespace: &str, names: Vec<String>, pause: Duration) -> Self {
        let api: Api<AgenticSession> = Api::namespaced(client.clone(), namespace);
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let (stopping, counting) = (Arc::clone(&stop), Arc::clone(&writes));
        let task = tokio::spawn(async move {
            let mut round = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                round += 1;
                let patch = serde_json::json!({"metadata": {"labels": {"fault-test/round": round.to_string()}}});
                let patches = names.iter().cloned().map(|name| {
                    let api = api.clone();
                    let patch = patch.clone();
                    async move {
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .is_ok()
                    }
                });
                // A few at a time: with a scaled-up burst (FAULT_SESSIONS=1000) a round of
                // all at once starves the operator of the API server.
                let done: Vec<bool> = futures::stream::iter(patches)
                    .buffer_unordered(WRITER_IN_FLIGHT)
                    .collect()
                    .await;
                counting.fetch_add(
                    done.iter().filter(|ok| **ok).count() as u64,
                    Ordering::Relaxed,
                );
                tokio::time::sleep(pause).await;
            }
        });
        ConcurrentWriter { stop, writes, task }
    }

    /// Stops writing and waits for the writer to finish its round.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.writes.load(Ordering::Relaxed)
    }
}
