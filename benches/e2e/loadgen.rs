//! End-to-end load generator (`make bench-e2e`; driven by `benches/run-e2e-bench.sh`).
//!
//! Creates N AgenticSessions across M managed namespaces on a real control plane and records,
//! per session, when it was created and when a watch first saw it `Creating`, `Running` and in
//! a terminal phase. Modes:
//!
//! - `operator`: spawns the operator binary (`--operator-bin`, arguments after `--`), waits
//!   until it is ready and every namespace has its ProjectSettings, then fires the burst. RSS and
//!   CPU of the operator are sampled from `/proc/<pid>` every 250 ms.
//! - `baseline`: no operator. A bare client (`--actor-kubeconfig`, its own identity) performs
//!   exactly the writes the operator performs per session — ServiceAccount, Role, RoleBinding,
//!   TokenRequest, Secret, Job, status (`Creating`), an Event, the identity annotation patch;
//!   then, when a watch on runner pods sees the pod running, the `Running` status and its
//!   Event — with the same concurrency as the operator's workers, no caches, no queue. The
//!   statuses are computed by the operator's own pure planner, so the bytes written match.
//! - `populate`: creates the namespaces and sessions and exits (a backlog for `startup`).
//! - `startup`: spawns the operator against an existing backlog; records the time to
//!   `/readyz`, then creates probe sessions while the backlog drains and records their latency.
//! - `scale`: the cluster that made the original operator run out of memory (ambient-code/platform
//!   #1299): managed namespaces (`--namespaces`) and unmanaged ones beside them, finished
//!   sessions given a terminal status (`--finished-sessions`), and sessions whose runners run
//!   (`--sessions`). Starts the operator, waits until every runner runs, stops it (SIGTERM) and
//!   starts it again, as an operator of that cluster would; records each start's peak RSS (the
//!   kernel's high-water mark), the restart's time to ready, API requests and the time to Running
//!   of a session created as the restart begins and of one created once it is ready.
//!
//! With `--kueue-quota N` (operator mode, the operator run with `--kueue`, Kueue running), every
//! namespace queues its runners in one ClusterQueue admitting N at once (see `kueue.rs`) and the
//! result adds each Workload's wait for admission.
//!
//! API requests of the operator (or of the bare client) are counted by the API server itself:
//! `apiserver_flowcontrol_dispatched_requests_total` of a FlowSchema that matches only that
//! identity (`--flow-schema`; the script creates it), read before and after the burst.
//!
//! The result is one JSON document (`--out`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentic_crds::{AgenticSession, AgenticSessionSpec, Phase, ProjectSettings, keys, names};
use agentic_operator::cache::projections::{RunnerJob, RunnerPod};
use agentic_operator::handlers::session::children::{
    JobInputs, RunnerSettings, build_job, build_role, build_role_binding, build_service,
    build_service_account, build_token_secret,
};
use agentic_operator::handlers::session::phases::{Observed, RunSpec, plan};
use agentic_operator::handlers::session::platform::PlatformView;
use agentic_operator::handlers::session::shape;
use agentic_operator::observability::events::{EventPublisher, Note, Reporter};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;

mod kueue;

const RUN_LABEL: &str = "bench-run";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Operator,
    Baseline,
    Populate,
    Startup,
    Scale,
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end load generator for the agentic operator")]
struct Args {
    /// What to run.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Admin kubeconfig: creates namespaces and sessions, watches, reads /metrics.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Sessions to create.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Managed namespaces to spread them over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Name prefix of namespaces and the run label.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Concurrent session creations.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Baseline: concurrent "reconciles" (match the operator's --max-concurrent-reconciles).
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Baseline: the bare client's kubeconfig (its own identity, so its requests are counted).
    #[arg(long)]
    actor_kubeconfig: Option<PathBuf>,
    /// FlowSchema whose dispatched requests are the counted API requests.
    #[arg(long)]
    flow_schema: Option<String>,
    /// `SIM_OUTCOME` of every runner.
    #[arg(long, default_value = "hang")]
    outcome: String,
    /// `SIM_RUN_FOR` of every runner.
    #[arg(long)]
    run_for: Option<String>,
    /// Stop when every session is Running (`running`) or has ended (`terminal`).
    #[arg(long, default_value = "running")]
    until: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Keep sampling the operator this long after the run (RSS once bursts' transient state,
    /// e.g. kube's 6-minute Event cache, has gone).
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// Baseline: runner CPU request written into Jobs (the operator gets the same by flag).
    #[arg(long, default_value = "1m")]
    runner_cpu_request: String,
    /// Baseline: runner memory request.
    #[arg(long, default_value = "1Mi")]
    runner_memory_request: String,
    /// Startup: probe sessions created after the operator is ready.
    #[arg(long, default_value_t = 5)]
    probes: usize,
    /// The operator binary (operator and startup modes).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Where the operator's log goes (`<path>.<i>` for replica i when there are several).
    #[arg(long, default_value = "/dev/null")]
    operator_log: PathBuf,
    /// Operator mode: replicas to start, each with `--pod-name <prefix>-replica-<i>` and ports
    /// of its own (the operator arguments say how they share the work, e.g. `--sharding`).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Operator mode with several replicas: kill -9 the first one this long after the burst
    /// began, and report how long its sessions stood still and how the others fared.
    #[arg(long)]
    kill_first_after_secs: Option<f64>,
    /// Scale: unmanaged namespaces beside the managed ones (not the operator's; no sessions).
    #[arg(long, default_value_t = 0)]
    unmanaged_namespaces: usize,
    /// Scale: sessions that already ended (created, then given a terminal status directly).
    #[arg(long, default_value_t = 0)]
    finished_sessions: usize,
    /// Scale: how long the restarted operator is followed after it is ready (its start-up
    /// backlog's reconciles, and the window its API requests are counted in).
    #[arg(long, default_value_t = 30)]
    restart_window_secs: u64,
    /// Operator mode: queue every namespace's runners in one Kueue ClusterQueue admitting this
    /// many at once (the operator must run with `--kueue`), and time each Workload's admission.
    #[arg(long)]
    kueue_quota: Option<usize>,
    /// With `--kueue-quota`: one ClusterQueue for all namespaces, or one per namespace with an
    /// equal share in a cohort.
    #[arg(long, value_enum, default_value = "shared")]
    kueue_layout: kueue::Layout,
    /// Result file (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Arguments for the operator binary.
    #[arg(last = true)]
    operator_args: Vec<String>,
}

/// When a session was created and first seen in each phase, in seconds since the burst began.
#[derive(Debug, Default, Clone)]
struct Timeline {
    created: Option<f64>,
    creating: Option<f64>,
    running: Option<f64>,
    terminal: Option<f64>,
    terminal_phase: Option<Phase>,
}

type Timelines = Arc<Mutex<BTreeMap<(String, String), Timeline>>>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let admin = client(&args.kubeconfig).await;
    let result = match args.mode {
        Mode::Operator | Mode::Baseline => burst(&args, admin).await,
        Mode::Populate => populate(&args, admin).await,
        Mode::Startup => startup(&args, admin).await,
        Mode::Scale => scale(&args, admin).await,
    };
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&result).expect("JSON"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", args.out.display()));
    eprintln!("[loadgen] wrote {}", args.out.display());
}

async fn client(path: &std::path::Path) -> Client {
    let file = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let mut config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    config.read_timeout = Some(Duration::from_secs(300));
    Client::try_from(config).expect("kube client")
}

/// `n<i>-<prefix>`: the index first, as names alike but for their last characters share a
/// shard bucket.
fn namespace_name(args: &Args, i: usize) -> String {
    format!("n{i}-{}", args.prefix)
}

fn session_name(i: usize) -> String {
    format!("s{i:05}")
}

async fn create_namespaces(args: &Args, admin: &Client) {
    let managed = [(
        keys::MANAGED_NAMESPACE_LABEL.to_string(),
        keys::MANAGED_NAMESPACE_VALUE.to_string(),
    )];
    for i in 0..args.namespaces {
        create_namespace(admin, namespace_name(args, i), Some(managed.clone().into())).await;
        // The runner's model credentials: without them sessions wait in Pending (SPEC §5.1).
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace_name(args, i));
        let credentials = Secret {
            metadata: ObjectMeta {
                name: Some(keys::RUNNER_SECRETS.into()),
                ..Default::default()
            },
            string_data: Some([("ANTHROPIC_API_KEY".to_string(), "bench".to_string())].into()),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &credentials).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating the runner credentials: {e}"),
        }
    }
}

fn bench_session(args: &Args, name: &str) -> AgenticSession {
    let mut spec = AgenticSessionSpec {
        initial_prompt: Some("benchmark".into()),
        // Hanging runners must outlive the run (the default deadline is 300 s).
        timeout: 3600,
        ..Default::default()
    };
    spec.environment_variables
        .insert("SIM_OUTCOME".into(), args.outcome.clone());
    if let Some(run_for) = &args.run_for {
        spec.environment_variables
            .insert("SIM_RUN_FOR".into(), run_for.clone());
    }
    let mut session = AgenticSession::new(name, spec);
    session.metadata.labels = Some([(RUN_LABEL.to_string(), args.prefix.clone())].into());
    session
}

/// Creates sessions `range` round-robin over the namespaces with `create_concurrency` in
/// flight; `on_created` gets each created object and its creation time.
async fn create_sessions<F>(
    args: &Args,
    admin: &Client,
    range: std::ops::Range<usize>,
    origin: Instant,
    timelines: &Timelines,
    on_created: F,
) where
    F: Fn(AgenticSession) + Clone,
{
    futures::stream::iter(range)
        .map(|i| {
            let namespace = namespace_name(args, i % args.namespaces);
            let name = session_name(i);
            let session = bench_session(args, &name);
            let api: Api<AgenticSession> = Api::namespaced(admin.clone(), &namespace);
            let timelines = Arc::clone(timelines);
            let on_created = on_created.clone();
            async move {
                let sent = origin.elapsed().as_secs_f64();
                timelines
                    .lock()
                    .entry((namespace.clone(), name.clone()))
                    .or_default()
                    .created = Some(sent);
                loop {
                    match api.create(&PostParams::default(), &session).await {
                        Ok(created) => {
                            on_created(created);
                            break;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => break,
                        Err(e) => {
                            eprintln!("[loadgen] creating {namespace}/{name}: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        })
        .buffer_unordered(args.create_concurrency)
        .collect::<()>()
        .await;
}

/// Watches this run's sessions, stamping each phase the first time it is seen.
fn watch_phases(admin: &Client, prefix: &str, origin: Instant, timelines: &Timelines) {
    let api: Api<AgenticSession> = Api::all(admin.clone());
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={prefix}"));
    let timelines = Arc::clone(timelines);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(event) = stream.next().await {
            let session = match event {
                Ok(Event::Apply(s) | Event::InitApply(s)) => s,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("[loadgen] session watch: {e}");
                    continue;
                }
            };
            let Some(phase) = session.status.as_ref().map(|s| s.phase) else {
                continue;
            };
            let now = origin.elapsed().as_secs_f64();
            let key = (session.namespace().unwrap_or_default(), session.name_any());
            let mut all = timelines.lock();
            let t = all.entry(key).or_default();
            match phase {
                Phase::Creating => {
                    t.creating.get_or_insert(now);
                }
                Phase::Running => {
                    t.creating.get_or_insert(now);
                    t.running.get_or_insert(now);
                }
                p if p.is_terminal() && t.terminal.is_none() => {
                    t.terminal = Some(now);
                    t.terminal_phase = Some(p);
                }
                _ => {}
            }
        }
    });
}

/// Samples a process's RSS (KiB) and CPU time (s) every 250 ms.
struct Sampler {
    samples: Arc<Mutex<Vec<(f64, u64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn clock_ticks() -> f64 {
    // CLK_TCK is 100 on every Linux this runs on; `getconf` confirms it when available.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The process's resident set high-water mark (KiB): its true peak, between samples too.
fn high_water_mark(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmHWM:")
}

fn read_proc(pid: u32, ticks: f64) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status_kib(&status, "VmRSS:")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((rss, (utime + stime) / ticks))
}

impl Sampler {
    fn start(pid: u32, origin: Instant) -> Self {
        let samples: Arc<Mutex<Vec<(f64, u64, f64)>>> = Arc::default();
        let out = Arc::clone(&samples);
        let ticks = clock_ticks();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                match read_proc(pid, ticks) {
                    Some((rss, cpu)) => out.lock().push((origin.elapsed().as_secs_f64(), rss, cpu)),
                    None => break,
                }
            }
        });
        Sampler { samples, task }
    }

    fn finish(self) -> serde_json::Value {
        self.task.abort();
        let samples = self.samples.lock().clone();
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let cpu = samples.last().map(|s| s.2).unwrap_or(0.0);
        json!({
            "peak_rss_mib": peak as f64 / 1024.0,
            "final_rss_mib": samples.last().map(|s| s.1 as f64 / 1024.0).unwrap_or(0.0),
            "cpu_seconds": cpu,
            "samples": samples.iter().map(|(t, rss, cpu)| json!([t, *rss as f64 / 1024.0, cpu])).collect::<Vec<_>>(),
        })
    }
}

/// Sum of `apiserver_flowcontrol_dispatched_requests_total` for `flow_schema`.
async fn dispatched(admin: &Client, flow_schema: &str) -> f64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = match admin.request_text(request).await {
        Ok(text) => text,
        Err(e) => {
            eprintln!("[loadgen] reading /metrics: {e}");
            return f64::NAN;
        }
    };
    let needle = format!("flow_schema=\"{flow_schema}\"");
    text.lines()
        .filter(|l| l.starts_with("apiserver_flowcontrol_dispatched_requests_total{"))
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The spawned operator process, killed on drop.
struct OperatorChild {
    child: Child,
    probe: String,
    /// Its `--pod-name` when there are several replicas.
    name: String,
}

/// The pod name of replica `index`.
fn replica_name(args: &Args, index: usize) -> String {
    format!("{}-replica-{index}", args.prefix)
}

impl OperatorChild {
    /// Replica `index` of `args.replicas`.
    fn spawn(args: &Args, index: usize) -> Self {
        let bin = args
            .operator_bin
            .as_ref()
            .expect("--operator-bin is required in this mode");
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let metrics = format!("127.0.0.1:{}", port());
        let probe = format!("127.0.0.1:{}", port());
        let name = replica_name(args, index);
        let log_path = if args.replicas > 1 && args.operator_log != Path::new("/dev/null") {
            PathBuf::from(format!("{}.{index}", args.operator_log.display()))
        } else {
            args.operator_log.clone()
        };
        let log = std::fs::File::create(&log_path).expect("operator log");
        let mut command = Command::new(bin);
        command
            .args(["--metrics-bind-address", &metrics])
            .args(["--health-probe-bind-address", &probe]);
        if args.replicas > 1 {
            command.args(["--pod-name", &name]);
        }
        let child = command
            .args(&args.operator_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting the operator");
        OperatorChild { child, probe, name }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&self.probe) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {}\r\n\r\n", self.probe).as_bytes())
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    }

    async fn wait_ready(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        while !self.ready() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the operator exited with {status} before it was ready");
            }
            assert!(
                started.elapsed() < limit,
                "operator not ready after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
}

impl Drop for OperatorChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_project_settings(args: &Args, admin: &Client) {
    for i in 0..args.namespaces {
        let api: Api<ProjectSettings> = Api::namespaced(admin.clone(), &namespace_name(args, i));
        let deadline = Instant::now() + Duration::from_secs(120);
        while api
            .get_opt(keys::PROJECT_SETTINGS_NAME)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            assert!(Instant::now() < deadline, "no ProjectSettings after 120 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn done(t: &Timeline, until_terminal: bool) -> bool {
    if until_terminal {
        t.terminal.is_some()
    } else {
        t.running.is_some() || t.terminal.is_some()
    }
}

async fn wait_all(args: &Args, timelines: &Timelines, expected: usize) -> bool {
    let until_terminal = args.until == "terminal";
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last_report = Instant::now();
    loop {
        let (finished, running, total) = {
            let all = timelines.lock();
            (
                all.values().filter(|t| done(t, until_terminal)).count(),
                all.values().filter(|t| t.running.is_some()).count(),
                all.len(),
            )
        };
        if finished >= expected && total >= expected {
            return true;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("[loadgen] {finished}/{expected} done ({running} seen Running)");
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            eprintln!("[loadgen] timed out with {finished}/{expected} done");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summarize(timelines: &BTreeMap<(String, String), Timeline>) -> serde_json::Value {
    let latencies = |pick: fn(&Timeline) -> Option<f64>| -> Vec<f64> {
        let mut v: Vec<f64> = timelines
            .values()
            .filter_map(|t| Some(pick(t)? - t.created?))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let pct = |v: &[f64], p: f64| -> Option<f64> {
        (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p).round() as usize])
    };
    let stats = |v: Vec<f64>| json!({"count": v.len(), "p50": pct(&v, 0.5), "p90": pct(&v, 0.9), "p99": pct(&v, 0.99), "max": v.last()});
    let first_created = timelines
        .values()
        .filter_map(|t| t.created)
        .fold(f64::INFINITY, f64::min);
    let last = |pick: fn(&Timeline) -> Option<f64>| {
        timelines.values().filter_map(pick).fold(f64::NAN, f64::max)
    };
    let all_running = last(|t| t.running);
    let n_running = timelines.values().filter(|t| t.running.is_some()).count();
    let all_terminal = last(|t| t.terminal);
    let n_terminal = timelines.values().filter(|t| t.terminal.is_some()).count();
    let mut terminal_phases: BTreeMap<String, usize> = BTreeMap::new();
    for t in timelines.values() {
        if let Some(p) = t.terminal_phase {
            *terminal_phases.entry(p.as_str().to_string()).or_default() += 1;
        }
    }
    json!({
        "sessions": timelines.len(),
        "reached_running": n_running,
        "last_created_s": last(|t| t.created),
        "all_running_s": all_running - first_created,
        "running_per_s": n_running as f64 / (all_running - first_created),
        "reached_terminal": n_terminal,
        "all_terminal_s": all_terminal - first_created,
        "terminal_per_s": n_terminal as f64 / (all_terminal - first_created),
        "to_creating": stats(latencies(|t| t.creating)),
        "to_running": stats(latencies(|t| t.running)),
        "to_terminal": stats(latencies(|t| t.terminal)),
        "terminal_phases": terminal_phases,
    })
}

fn per_session(timelines: &BTreeMap<(String, String), Timeline>) -> serde_json::Value {
    timelines
        .iter()
        .map(|((ns, name), t)| {
            json!([
                format!("{ns}/{name}"),
                t.created,
                t.creating,
                t.running,
                t.terminal,
                t.terminal_phase.map(|p| p.as_str())
            ])
        })
        .collect()
}

async fn burst(args: &Args, admin: Client) -> serde_json::Value {
    create_namespaces(args, &admin).await;
    let mut operators = Vec::new();
    let mut ready_after = None;
    if args.mode == Mode::Operator {
        operators = (0..args.replicas.max(1))
            .map(|i| OperatorChild::spawn(args, i))
            .collect::<Vec<_>>();
        let mut slowest = Duration::ZERO;
        for child in &mut operators {
            slowest = slowest.max(child.wait_ready(Duration::from_secs(120)).await);
        }
        ready_after = Some(slowest);
        wait_project_settings(args, &admin).await;
        if let Some(quota) = args.kueue_quota {
            let namespaces: Vec<String> = (0..args.namespaces)
                .map(|i| namespace_name(args, i))
                .collect();
            kueue::queue_every_namespace(&admin, &namespaces, quota, args.kueue_layout).await;
        }
    }
    let origin = Instant::now();
    let timelines: Timelines = Arc::default();
    watch_phases(&admin, &args.prefix, origin, &timelines);
    let admissions = args
        .kueue_quota
        .map(|_| kueue::Admissions::watch(&admin, origin));
    // Let the watch list (nothing yet) before the burst.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samplers: Vec<Sampler> = if operators.is_empty() {
        vec![Sampler::start(std::process::id(), origin)]
    } else {
        operators
            .iter()
            .map(|child| Sampler::start(child.pid(), origin))
            .collect()
    };
    // The failover scenario: the first replica dies mid-burst.
    let killed_at: Arc<Mutex<Option<f64>>> = Arc::default();
    if let (Some(after), Some(first)) = (args.kill_first_after_secs, operators.first()) {
        let (pid, killed_at) = (first.pid(), Arc::clone(&killed_at));
        tokio::spawn(async move {
            tokio::time::sleep_until((origin + Duration::from_secs_f64(after)).into()).await;
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            *killed_at.lock() = Some(origin.elapsed().as_secs_f64());
            eprintln!("[loadgen] killed the first replica (pid {pid})");
        });
    }
    let before = match &args.flow_schema {
        Some(fs) => dispatched(&admin, fs).await,
        None => f64::NAN,
    };
    let actor = if args.mode == Mode::Baseline {
        let path = args
            .actor_kubeconfig
            .as_ref()
            .expect("--actor-kubeconfig is required for the baseline");
        Some(Baseline::start(args, client(path).await))
    } else {
        None
    };
    let on_created = {
        let actor = actor.clone();
        move |session: AgenticSession| {
            if let Some(actor) = &actor {
                actor.clone().session_created(session);
            }
        }
    };
    create_sessions(
        args,
        &admin,
        0..args.sessions,
        origin,
        &timelines,
        on_created,
    )
    .await;
    let creates_done = origin.elapsed().as_secs_f64();
    eprintln!(
        "[loadgen] {} sessions created in {creates_done:.1}s",
        args.sessions
    );
    let complete = wait_all(args, &timelines, args.sessions).await;
    let elapsed = origin.elapsed().as_secs_f64();
    let after = match &args.flow_schema {
        Some(fs) => dispatched(&admin, fs).await,
        None => f64::NAN,
    };
    if args.settle_secs > 0 {
        eprintln!("[loadgen] settling for {}s", args.settle_secs);
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    }
    let mut processes: Vec<serde_json::Value> = samplers.into_iter().map(Sampler::finish).collect();
    let process = processes.remove(0);
    let names: Vec<String> = operators.iter().map(|o| o.name.clone()).collect();
    drop(operators);
    let snapshot = timelines.lock().clone();
    let failover = killed_at
        .lock()
        .map(|at| failover_report(args, &names, at, &snapshot));
    json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "sessions": args.sessions,
        "namespaces": args.namespaces,
        "concurrency": args.concurrency,
        "operator_args": args.operator_args,
        "operator_ready_s": ready_after.map(|d| d.as_secs_f64()),
        "complete": complete,
        "creates_done_s": creates_done,
        "elapsed_s": elapsed,
        "api_requests": after - before,
        "process": process,
        "replicas": args.replicas,
        "other_replicas": processes.iter().map(|p| json!({
            "peak_rss_mib": p["peak_rss_mib"],
            "final_rss_mib": p["final_rss_mib"],
            "cpu_seconds": p["cpu_seconds"],
        })).collect::<Vec<_>>(),
        "failover": failover,
        "kueue": admissions
            .zip(args.kueue_quota)
            .map(|(a, quota)| a.summary(quota, args.kueue_layout)),
        "summary": summarize(&snapshot),
        "per_session": per_session(&snapshot),
    })
}

/// The failover scenario's figures, from when each session was seen changing phase:
/// - `victim_stall_s`: from the kill until a session of a namespace the killed replica owned
///   next changed phase (its part taken over; changes within 1 s of the kill are writes the
///   dead replica made just before it, still on their way to the watch);
/// - `others_longest_gap_s`: the longest time without a phase change among the other
///   replicas' sessions from the kill to that takeover, or to their last change if they all
///   reached Running before it (a replica with nothing left to do is not stalled), beside
///   `others_longest_gap_before_s`, the same over a window as long just before the kill
///   (their normal pace).
fn failover_report(
    args: &Args,
    names: &[String],
    killed_at: f64,
    snapshot: &BTreeMap<(String, String), Timeline>,
) -> serde_json::Value {
    use agentic_operator::shard::{bucket_of, buckets::owner};
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let owned_by_victim =
        |namespace: &str| owner(bucket_of(namespace), &members) == Some(members[0]);
    let mut victim = Vec::new();
    let mut others = Vec::new();
    for ((namespace, _), t) in snapshot {
        let changes = [t.creating, t.running].into_iter().flatten();
        if owned_by_victim(namespace) {
            victim.extend(changes);
        } else {
            others.extend(changes);
        }
    }
    victim.sort_by(f64::total_cmp);
    others.sort_by(f64::total_cmp);
    let takeover = victim.iter().copied().find(|t| *t >= killed_at + 1.0);
    let longest_gap = |from: f64, to: f64| {
        let mut last = from;
        let mut gap: f64 = 0.0;
        for t in others.iter().copied().filter(|t| *t > from && *t <= to) {
            gap = gap.max(t - last);
            last = t;
        }
        gap.max(to - last)
    };
    // The other replicas' sessions changed phase for the last time at `done`.
    let done = others.last().copied().unwrap_or(killed_at).max(killed_at);
    let until = takeover.map(|t| t.min(done));
    let window = until.map_or(0.0, |t| t - killed_at);
    let victim_namespaces = (0..args.namespaces)
        .map(|i| namespace_name(args, i))
        .filter(|ns| owned_by_victim(ns))
        .count();
    json!({
        "killed_at_s": killed_at,
        "victim_namespaces": victim_namespaces,
        "victim_stall_s": takeover.map(|t| t - killed_at),
        "others_longest_gap_s": until.map(|t| longest_gap(killed_at, t)),
        "others_longest_gap_before_s": (window > 0.0 && killed_at > window)
            .then(|| longest_gap(killed_at - window, killed_at)),
    })
}

async fn populate(args: &Args, admin: Client) -> serde_json::Value {
    create_namespaces(args, &admin).await;
    let origin = Instant::now();
    let timelines: Timelines = Arc::default();
    create_sessions(args, &admin, 0..args.sessions, origin, &timelines, |_| {}).await;
    let took = origin.elapsed().as_secs_f64();
    eprintln!(
        "[loadgen] populated {} sessions in {took:.1}s",
        args.sessions
    );
    json!({"mode": "populate", "sessions": args.sessions, "namespaces": args.namespaces, "took_s": took})
}

async fn startup(args: &Args, admin: Client) -> serde_json::Value {
    let origin = Instant::now();
    let timelines: Timelines = Arc::default();
    watch_phases(&admin, &args.prefix, origin, &timelines);
    let mut child = OperatorChild::spawn(args, 0);
    let sampler = Sampler::start(child.pid(), origin);
    let ready = child
        .wait_ready(Duration::from_secs(300))
        .await
        .as_secs_f64();
    eprintln!("[loadgen] operator ready after {ready:.2}s");
    // Probe sessions, one every 2 s, while the backlog drains.
    let mut probes = Vec::new();
    for p in 0..args.probes {
        let index = args.sessions + p;
        let namespace = namespace_name(args, index % args.namespaces);
        let name = session_name(index);
        let api: Api<AgenticSession> = Api::namespaced(admin.clone(), &namespace);
        let sent = origin.elapsed().as_secs_f64();
        timelines
            .lock()
            .entry((namespace.clone(), name.clone()))
            .or_default()
            .created = Some(sent);
        api.create(&PostParams::default(), &bench_session(args, &name))
            .await
            .unwrap_or_else(|e| panic!("creating probe {name}: {e}"));
        probes.push((namespace, name));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let complete = wait_all(args, &timelines, args.sessions + args.probes).await;
    let process = sampler.finish();
    drop(child);
    let snapshot = timelines.lock().clone();
    let probe_latency: Vec<serde_json::Value> = probes
        .iter()
        .map(|key| {
            let t = snapshot.get(key).cloned().unwrap_or_default();
            json!({"session": format!("{}/{}", key.0, key.1),
                   "created_s": t.created,
                   "to_running_s": t.running.zip(t.created).map(|(r, c)| r - c)})
        })
        .collect();
    let backlog: BTreeMap<_, _> = snapshot
        .iter()
        .filter(|(k, _)| !probes.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let backlog_done = backlog
        .values()
        .filter_map(|t| t.running)
        .fold(f64::NAN, f64::max);
    json!({
        "mode": "startup",
        "backlog": args.sessions,
        "ready_s": ready,
        "probes": probe_latency,
        "backlog_all_running_s": backlog_done,
        "backlog_running": backlog.values().filter(|t| t.running.is_some()).count(),
        "complete": complete,
        "process": process,
    })
}

/// What the bench's namespaces offer runners: their model credentials only.
fn platform() -> PlatformView {
    PlatformView {
        runner_secret: true,
        ..Default::default()
    }
}

/// The bare client: the operator's writes for each session, with no operator.
#[derive(Clone)]
struct Baseline {
    client: Client,
    events: EventPublisher,
    permits: Arc<Semaphore>,
    runner: Arc<RunnerSettings>,
    states: Arc<dashmap::DashMap<(String, String), SharedState>>,
}

type SharedState = Arc<Mutex<ActorState>>;

#[derive(Default)]
struct ActorState {
    /// The session after the Creating writes, and its Job.
    created: Option<(AgenticSession, RunnerJob)>,
    /// A running pod seen for it.
    pod: Option<RunnerPod>,
    /// The Running write was started.
    claimed: bool,
}

impl Baseline {
    fn start(args: &Args, client: Client) -> Self {
        let reporter = Reporter {
            controller: "ambient-code-operator".into(),
            instance: "ambient-code-operator".into(),
        };
        let runner = RunnerSettings {
            image: "quay.io/ambient_code/vteam_claude_runner:latest".into(),
            backend_api_url: "http://backend-service.default.svc.cluster.local:8080/api".into(),
            cpu_request: args.runner_cpu_request.clone(),
            cpu_limit: "2".into(),
            memory_request: args.runner_memory_request.clone(),
            memory_limit: "8Gi".into(),
            workspace_size: None,
            workspace_storage_class: None,
            state_sync_image: "quay.io/ambient_code/vteam_state_sync:latest".into(),
            s3_endpoint: "https://s3.amazonaws.com".into(),
            s3_bucket: "ambient-sessions".into(),
            pod_fsgroup: None,
            state_uid: None,
            image_pull_policy: "Always".into(),
            vertex: None,
            mcp_config_file: None,
            backend_public_url: None,
        };
        let this = Baseline {
            events: EventPublisher::new(client.clone(), reporter),
            client,
            permits: Arc::new(Semaphore::new(args.concurrency)),
            runner: Arc::new(runner),
            states: Arc::default(),
        };
        this.clone().watch_pods();
        this
    }

    fn session_created(self, session: AgenticSession) {
        let key = (session.namespace().unwrap_or_default(), session.name_any());
        let state = Arc::clone(&self.states.entry(key).or_default());
        tokio::spawn(async move {
            let created = {
                let _permit = self.permits.acquire().await.expect("semaphore");
                retry(|| self.creating(&session)).await
            };
            let pod = {
                let mut s = state.lock();
                s.created = Some(created);
                match s.pod.clone() {
                    Some(pod) if !s.claimed => {
                        s.claimed = true;
                        Some(pod)
                    }
                    _ => None,
                }
            };
            if let Some(pod) = pod {
                self.running(&state, pod).await;
            }
        });
    }

    fn watch_pods(self) {
        let api: Api<RunnerPod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().labels(&format!("{}={}", keys::APP_LABEL, keys::RUNNER_APP));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
            while let Some(event) = stream.next().await {
                let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event else {
                    continue;
                };
                let running = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Running");
                let Some(session) = pod.labels().get(keys::SESSION_LABEL).cloned() else {
                    continue;
                };
                if !running {
                    continue;
                }
                let key = (pod.namespace().unwrap_or_default(), session);
                let state = Arc::clone(&self.states.entry(key).or_default());
                let go = {
                    let mut s = state.lock();
                    s.pod = Some(pod.clone());
                    if s.created.is_some() && !s.claimed {
                        s.claimed = true;
                        true
                    } else {
                        false
                    }
                };
                if go {
                    let this = self.clone();
                    tokio::spawn(async move { this.running(&state, pod).await });
                }
            }
        });
    }

    async fn running(&self, state: &Mutex<ActorState>, pod: RunnerPod) {
        let _permit = self.permits.acquire().await.expect("semaphore");
        let (mut session, job) = state.lock().created.clone().expect("created first");
        loop {
            let observed = self.observe(&session, Some(&job), vec![&pod]);
            let planned = plan(&observed);
            if planned.status.phase != Phase::Running {
                eprintln!(
                    "[baseline] {} planned {} (not Running)",
                    session.name_any(),
                    planned.status.phase
                );
                return;
            }
            match self.write_status(&session, &planned.status).await {
                Ok(_) => {
                    self.publish(&session, "Running", "Creating -> Running")
                        .await;
                    return;
                }
                Err(_) => {
                    // Conflict or transient error: re-read and try again.
                    let api: Api<AgenticSession> = Api::namespaced(
                        self.client.clone(),
                        &session.namespace().unwrap_or_default(),
                    );
                    if let Ok(fresh) = api.get(&session.name_any()).await {
                        session = fresh;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn observe<'a>(
        &self,
        session: &'a AgenticSession,
        job: Option<&'a RunnerJob>,
        pods: Vec<&'a RunnerPod>,
    ) -> Observed<'a> {
        Observed {
            session,
            job,
            pods,
            token_refreshed_at: job.map(|_| Timestamp::now()),
            now: Timestamp::now(),
            inactivity_timeout: Some(Duration::from_secs(86_400)),
            start_timeout: Duration::from_secs(600),
            // Reached as soon as created: its Pending clock starts now.
            pending_since: None,
            token_refresh_after: Duration::from_secs(45 * 60),
            enforce_timeout: false,
            status_schema: agentic_crds::StatusSchema::OURS,
            invalid_spec: None,
            platform: platform(),
            vertex: false,
            s3: platform().s3("https://s3.amazonaws.com", "ambient-sessions"),
            service_uid: Some("bench".into()),
            foreign_service: false,
            claimed_here: true,
            pod_refusal: None,
            sync: agentic_operator::handlers::session::phases::SyncView::Idle,
            queue: None,
            queue_timeout: None,
        }
    }

    /// Pending -> Creating, in the operator's order: status (the claim), Event, identity,
    /// Service, Job, annotations.
    async fn creating(
        &self,
        session: &AgenticSession,
    ) -> Result<(AgenticSession, RunnerJob), kube::Error> {
        let namespace = session.namespace().unwrap_or_default();
        let name = session.name_any();
        let planned = plan(&self.observe(session, None, Vec::new()));
        let c = &self.client;
        let written = self.write_status(session, &planned.status).await?;
        self.publish(session, "Creating", "Pending -> Creating")
            .await;
        create(
            &Api::<ServiceAccount>::namespaced(c.clone(), &namespace),
            &build_service_account(session),
        )
        .await?;
        create(
            &Api::<Role>::namespaced(c.clone(), &namespace),
            &build_role(session, false),
        )
        .await?;
        create(
            &Api::<RoleBinding>::namespaced(c.clone(), &namespace),
            &build_role_binding(session),
        )
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(c.clone(), &namespace);
        let issued = accounts
            .create_token_request(
                &names::service_account_name(&name),
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        audiences: None,
                        expiration_seconds: Some(3600),
                        bound_object_ref: None,
                    }),
                    ..Default::default()
                },
            )
            .await?;
        let token = issued.status.and_then(|s| s.token).unwrap_or_default();
        let secret = build_token_secret(session, &token, &"0".repeat(64), Timestamp::now());
        create(&Api::<Secret>::namespaced(c.clone(), &namespace), &secret).await?;
        let run = RunSpec {
            is_resume: false,
            // The operator's default: spec.timeout is advisory (no --enforce-session-timeout).
            deadline_seconds: None,
            started_at: planned
                .status
                .start_time
                .clone()
                .unwrap_or_else(|| Time(Timestamp::now())),
        };
        let inputs = JobInputs {
            shape: shape::shape(session, None, &self.runner.shape_defaults()),
            platform: platform(),
            vertex_model_id: None,
            project_mcp_servers: None,
            queue: None,
        };
        create(
            &Api::<Service>::namespaced(c.clone(), &namespace),
            &build_service(session, inputs.shape.port),
        )
        .await?;
        let job = create(
            &Api::<Job>::namespaced(c.clone(), &namespace),
            &build_job(session, &self.runner, &inputs, &run),
        )
        .await?;
        let patch = json!({"metadata": {"annotations": {
            keys::RUNNER_TOKEN_SECRET_ANNOTATION: names::token_secret_name(&name),
            keys::RUNNER_SA_ANNOTATION: names::service_account_name(&name),
        }}});
        let annotated = Api::<AgenticSession>::namespaced(c.clone(), &namespace)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or(written);
        Ok((annotated, job.into()))
    }

    async fn write_status(
        &self,
        session: &AgenticSession,
        status: &agentic_crds::AgenticSessionStatus,
    ) -> Result<AgenticSession, kube::Error> {
        let name = session.name_any();
        let namespace = session.namespace().unwrap_or_default();
        let mut update = AgenticSession::new(&name, session.spec.clone());
        update.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            resource_version: session.resource_version(),
            ..Default::default()
        };
        update.status = Some(status.clone());
        let params = PostParams {
            dry_run: false,
            field_manager: Some("ambient-code-operator".into()),
        };
        Api::<AgenticSession>::namespaced(self.client.clone(), &namespace)
            .replace_status(&name, &params, &update)
            .await
    }

    async fn publish(&self, session: &AgenticSession, reason: &str, note: &str) {
        let note = Note {
            warning: false,
            reason: reason.into(),
            message: note.into(),
        };
        if let Err(e) = self.events.publish(session, &note).await {
            eprintln!("[baseline] event: {e}");
        }
    }
}

/// Creates `object`; an existing one (AlreadyExists) is fetched instead.
async fn create<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams {
        dry_run: false,
        field_manager: Some("ambient-code-operator".into()),
    };
    match api.create(&params, object).await {
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&object.name_any()).await,
        other => other,
    }
}

async fn retry<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(5);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                eprintln!("[baseline] {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Names of the unmanaged namespaces of the scale mode.
fn unmanaged_namespace_name(args: &Args, i: usize) -> String {
    format!("u{i}-{}", args.prefix)
}

/// The terminal phase finished session `i` is given: most completed, some failed or stopped.
fn finished_phase(i: usize) -> Phase {
    match i % 10 {
        0 | 1 => Phase::Failed,
        2 => Phase::Stopped,
        _ => Phase::Completed,
    }
}

/// Creates the finished sessions `range` and writes each one's terminal status (as the
/// operator would have when its run ended, a day ago).
async fn create_finished_sessions(args: &Args, admin: &Client, range: std::ops::Range<usize>) {
    let scratch: Timelines = Arc::default();
    create_sessions(args, admin, range.clone(), Instant::now(), &scratch, |_| {}).await;
    let day_ago = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(24);
    futures::stream::iter(range)
        .map(|i| {
            let namespace = namespace_name(args, i % args.namespaces);
            let api: Api<AgenticSession> = Api::namespaced(admin.clone(), &namespace);
            let name = session_name(i);
            let phase = finished_phase(i);
            let status = json!({"status": {
                "phase": phase.as_str(),
                "startTime": Time(day_ago),
                "completionTime": Time(day_ago + k8s_openapi::jiff::SignedDuration::from_mins(20)),
                "message": format!("run {} (scale bench)", phase.as_str().to_lowercase()),
            }});
            async move {
                let (params, patch) = (PatchParams::default(), Patch::Merge(&status));
                retry(|| api.patch_status(&name, &params, &patch)).await;
            }
        })
        .buffer_unordered(args.create_concurrency)
        .collect::<()>()
        .await;
}

async fn create_unmanaged_namespaces(args: &Args, admin: &Client) {
    for i in 0..args.unmanaged_namespaces {
        create_namespace(admin, unmanaged_namespace_name(args, i), None).await;
    }
}

/// Creates namespace `name` with `labels` (one that exists already is left as it is).
async fn create_namespace(admin: &Client, name: String, labels: Option<BTreeMap<String, String>>) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name),
            labels,
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace: {e}"),
    }
}

/// Waits until every session of `keys` has been seen Running (false: `timeout_secs` passed).
async fn wait_running(timelines: &Timelines, keys: &[(String, String)], timeout_secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last_report = Instant::now();
    loop {
        let running = {
            let all = timelines.lock();
            keys.iter()
                .filter(|key| all.get(*key).is_some_and(|t| t.running.is_some()))
                .count()
        };
        if running == keys.len() {
            return true;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("[loadgen] {running}/{} Running", keys.len());
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            eprintln!("[loadgen] timed out with {running}/{} Running", keys.len());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One start of the operator in the scale mode: its process figures, with the peak taken from
/// the kernel's high-water mark.
fn start_figures(sampler: Sampler, pid: u32, ready_s: f64) -> serde_json::Value {
    let hwm = high_water_mark(pid);
    let mut process = sampler.finish();
    process["hwm_rss_mib"] = json!(hwm.map(|kib| kib as f64 / 1024.0));
    json!({"ready_s": ready_s, "process": process})
}

async fn scale(args: &Args, admin: Client) -> serde_json::Value {
    let flow = args
        .flow_schema
        .as_deref()
        .expect("--flow-schema is required in this mode");
    let built = Instant::now();
    create_namespaces(args, &admin).await;
    create_unmanaged_namespaces(args, &admin).await;
    let finished = args.sessions..args.sessions + args.finished_sessions;
    create_finished_sessions(args, &admin, finished).await;
    let origin = Instant::now();
    let timelines: Timelines = Arc::default();
    watch_phases(&admin, &args.prefix, origin, &timelines);
    create_sessions(args, &admin, 0..args.sessions, origin, &timelines, |_| {}).await;
    // The finished sessions carry the run label too: only these are waited for.
    let running_keys: Vec<(String, String)> = (0..args.sessions)
        .map(|i| (namespace_name(args, i % args.namespaces), session_name(i)))
        .collect();
    let built_s = built.elapsed().as_secs_f64();
    eprintln!(
        "[loadgen] built the cluster in {built_s:.1}s: {} + {} namespaces, {} finished and {} \
         running sessions",
        args.namespaces, args.unmanaged_namespaces, args.finished_sessions, args.sessions
    );

    // First start: every runner comes up; the operator settles.
    let first_started = Instant::now();
    let mut first = OperatorChild::spawn(args, 0);
    let sampler = Sampler::start(first.pid(), first_started);
    let ready = first
        .wait_ready(Duration::from_secs(300))
        .await
        .as_secs_f64();
    wait_project_settings(args, &admin).await;
    let running = wait_running(&timelines, &running_keys, args.timeout_secs).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut first_start = start_figures(sampler, first.pid(), ready);
    first_start["all_running"] = json!(running);
    first_start["all_running_s"] = json!(first_started.elapsed().as_secs_f64());
    eprintln!("[loadgen] first start: {first_start}");
    drop(first);

    // The restart, and a session created as it begins.
    let before = dispatched(&admin, flow).await;
    let restarted = Instant::now();
    let mut second = OperatorChild::spawn(args, 0);
    let sampler = Sampler::start(second.pid(), restarted);
    let probe_index = args.sessions + args.finished_sessions;
    let probe = (
        namespace_name(args, probe_index % args.namespaces),
        session_name(probe_index),
    );
    let probe_created = origin.elapsed().as_secs_f64();
    timelines.lock().entry(probe.clone()).or_default().created = Some(probe_created);
    Api::<AgenticSession>::namespaced(admin.clone(), &probe.0)
        .create(&PostParams::default(), &bench_session(args, &probe.1))
        .await
        .unwrap_or_else(|e| panic!("creating the probe session: {e}"));
    let ready = second
        .wait_ready(Duration::from_secs(300))
        .await
        .as_secs_f64();
    // A second session created once the restarted operator is ready, while its start-up
    // backlog is handled.
    let later = (
        namespace_name(args, (probe_index + 1) % args.namespaces),
        session_name(probe_index + 1),
    );
    let later_created = origin.elapsed().as_secs_f64();
    timelines.lock().entry(later.clone()).or_default().created = Some(later_created);
    Api::<AgenticSession>::namespaced(admin.clone(), &later.0)
        .create(&PostParams::default(), &bench_session(args, &later.1))
        .await
        .unwrap_or_else(|e| panic!("creating the second probe session: {e}"));
    let probe_deadline = Instant::now() + Duration::from_secs(120);
    let to_running = |key: &(String, String), created: f64| {
        timelines
            .lock()
            .get(key)
            .and_then(|t| t.running)
            .map(|running| running - created)
    };
    let (probe_running, later_running) = loop {
        let (first, second) = (
            to_running(&probe, probe_created),
            to_running(&later, later_created),
        );
        if (first.is_some() && second.is_some()) || Instant::now() > probe_deadline {
            break (first, second);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let window = Duration::from_secs(args.restart_window_secs);
    tokio::time::sleep(window.saturating_sub(restarted.elapsed())).await;
    let after = dispatched(&admin, flow).await;
    let mut restart = start_figures(sampler, second.pid(), ready);
    restart["probe_to_running_s"] = json!(probe_running);
    restart["after_ready_to_running_s"] = json!(later_running);
    restart["window_s"] = json!(restarted.elapsed().as_secs_f64());
    restart["api_requests"] = json!(after - before);
    eprintln!("[loadgen] restart: {restart}");
    drop(second);
    json!({
        "mode": "scale",
        "managed_namespaces": args.namespaces,
        "unmanaged_namespaces": args.unmanaged_namespaces,
        "finished_sessions": args.finished_sessions,
        "running_sessions": args.sessions,
        "built_s": built_s,
        "first_start": first_start,
        "restart": restart,
    })
}
