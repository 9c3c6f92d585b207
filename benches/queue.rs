//! Work-queue benchmarks: every queue scenario of TARGETS.md, ours and kube-runtime's scheduler
//! (where it has an equivalent). client-go runs the same scenarios in `benches/go-workqueue`.
//!
//! `benches/run-queue-bench.sh` (`make bench-queue`) runs N rounds; each round runs client-go's
//! benchmarks once, then this binary once with `QUEUE_BENCH_ROUND` set, which measures every
//! scenario once per configuration and appends one JSON line per figure to `QUEUE_BENCH_OUT`.
//! The script then reports, per scenario and configuration, the median and range over the rounds
//! of each side, and the ratio of the medians.
//!
//! Two configurations, on both sides:
//! * **prod**: the queue exactly as the operator builds it (`engine::queued::queue_config` with
//!   the default flags: 5 ms·2ⁿ backoff up to 5 min, a 10 qps / burst 100 bucket; the
//!   Prometheus-backed `WorkqueueMetrics`);
//! * **bare**: no metrics recorder, no bucket.
//!
//! Timing follows Go's `testing.B` on both sides: micro benchmarks (serial, dedup, add_after)
//! grow their iteration count until one timed run lasts at least 1 s and report its ns/op; the
//! scenarios do a fixed amount of work per run. kube-runtime's scheduler has no metrics and no
//! limit, so it appears in the bare rows only.
//!
//! Without `QUEUE_BENCH_ROUND`, `cargo bench --bench queue` runs criterion over the micro
//! benchmarks, for quick exploration.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use agentic_operator::config::{Args, Config};
use agentic_operator::engine::queued::{WorkqueueMetrics, queue_config};
use agentic_operator::observability::metrics::Metrics;
use agentic_queue::{
    BackoffPolicy, ExponentialBackoffPolicy, NoopMetrics, Priority, QueueConfig, WorkQueue,
};
use clap::Parser as _;
use criterion::{Criterion, criterion_group};
use futures::{FutureExt as _, StreamExt as _};
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

type Key = Arc<str>;

/// Keys shaped like the operator's ("namespace/name"), built before anything is measured.
fn keys(n: usize) -> Vec<Key> {
    (0..n)
        .map(|i| Arc::from(format!("ns-{}/session-{i}", i % 100)))
        .collect()
}

fn tenant(k: &Key) -> Option<&str> {
    k.split_once('/').map(|(ns, _)| ns)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Prod,
    Bare,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Prod => "prod",
            Setup::Bare => "bare",
        }
    }
}

/// Builds the queues of both configurations.
struct Queues {
    operator: QueueConfig,
    metrics: Metrics,
}

impl Queues {
    /// The operator's queue configuration from its default flags, and its metrics registry.
    fn new() -> Self {
        let args = Args::try_parse_from(["agentic-operator"]).expect("default flags");
        let config = Config::from_args(args).expect("default config");
        Self {
            operator: queue_config(&config),
            metrics: Metrics::new().expect("metrics"),
        }
    }

    /// prod: as `engine::queued::run` builds it (with `fair`ness switched on if asked);
    /// bare: no metrics, no bucket.
    fn build(&self, setup: Setup, fair: bool) -> WorkQueue<Key> {
        let (config, metrics): (_, Arc<dyn agentic_queue::QueueMetrics>) = match setup {
            Setup::Prod => (
                self.operator.clone(),
                Arc::new(WorkqueueMetrics::new(&self.metrics)),
            ),
            Setup::Bare => (
                QueueConfig {
                    bucket: None,
                    ..QueueConfig::default()
                },
                Arc::new(NoopMetrics),
            ),
        };
        let config = QueueConfig {
            fairness: fair,
            ..config
        };
        WorkQueue::with_tenant(config, metrics, tenant).expect("config")
    }

    /// Builds inside `rt` (the queue reads tokio's clock when built).
    fn build_in(&self, rt: &tokio::runtime::Runtime, setup: Setup, fair: bool) -> WorkQueue<Key> {
        let _guard = rt.enter();
        self.build(setup, fair)
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn two_threads() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `testing.B`'s iteration count: `run(n)` times `n` iterations; n grows (1, then predicted from
/// the previous run, +20 %, at most ×100) until a run lasts 1 s. Returns ns per iteration.
fn per_op_ns(mut run: impl FnMut(u64) -> Duration) -> f64 {
    let goal = Duration::from_secs(1);
    let mut n = 1u64;
    loop {
        let took = run(n);
        if took >= goal || n >= 1_000_000_000 {
            return took.as_nanos() as f64 / n as f64;
        }
        let prev = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mut next =
            u64::try_from(goal.as_nanos() * u128::from(n) / u128::from(prev)).unwrap_or(u64::MAX);
        next = next.saturating_add(next / 5);
        n = next.min(n * 100).max(n + 1).min(1_000_000_000);
    }
}

/// `n` serial add → get → done over 1024 keys.
fn serial_loop(rt: &tokio::runtime::Runtime, q: &WorkQueue<Key>, ks: &[Key], n: u64) -> Duration {
    rt.block_on(async {
        let start = std::time::Instant::now();
        for i in 0..n as usize {
            q.add(&ks[i & 1023]);
            let k = q.get().await.expect("ready");
            q.done(&k);
        }
        start.elapsed()
    })
}

/// `n` adds, already due, through kube-runtime's scheduler and out again.
fn serial_loop_kube(rt: &tokio::runtime::Runtime, ks: &[Key], n: u64) -> Duration {
    rt.block_on(async {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut s = scheduler(rx);
        // Already due (in the past): DelayQueue hands it out on the next poll instead of
        // waiting for its next 1 ms tick, the scheduler's best case.
        let now = Instant::now() - Duration::from_secs(1);
        let start = std::time::Instant::now();
        for i in 0..n as usize {
            tx.unbounded_send(ScheduleRequest {
                message: ks[i & 1023].clone(),
                run_at: now,
            })
            .expect("send");
            black_box(s.next().await);
        }
        start.elapsed()
    })
}

/// `n` add_after calls on keys that already wait for an earlier deadline (the early return).
fn add_after_delayed_loop(
    rt: &tokio::runtime::Runtime,
    q: &WorkQueue<Key>,
    ks: &[Key],
    counter: &mut u64,
    n: u64,
) -> Duration {
    let _guard = rt.enter();
    let start = std::time::Instant::now();
    for _ in 0..n {
        *counter += 1;
        let i = *counter;
        q.add_after(
            &ks[i as usize % ks.len()],
            Duration::from_secs(3600) + Duration::from_nanos(i),
        );
    }
    start.elapsed()
}

/// `n` add_after calls of keys the queue does not hold (a new timer each); a new queue every
/// `ks.len()` keys, built and dropped off the clock.
fn add_after_fresh_loop(
    rt: &tokio::runtime::Runtime,
    build: &dyn Fn() -> WorkQueue<Key>,
    ks: &[Key],
    n: u64,
) -> Duration {
    let _guard = rt.enter();
    let mut took = Duration::ZERO;
    let mut done = 0u64;
    while done < n {
        let q = build();
        let batch = (n - done).min(ks.len() as u64);
        let start = std::time::Instant::now();
        for (i, k) in ks.iter().take(batch as usize).enumerate() {
            q.add_after(
                k,
                Duration::from_secs(3600) + Duration::from_nanos(i as u64),
            );
        }
        took += start.elapsed();
        done += batch;
        drop(q);
    }
    took
}

/// kube-runtime: `n` schedule requests for far-away deadlines; `fresh` uses a new scheduler
/// every `ks.len()` keys (off the clock), otherwise every key is already scheduled earlier.
fn add_after_loop_kube(rt: &tokio::runtime::Runtime, ks: &[Key], fresh: bool, n: u64) -> Duration {
    rt.block_on(async {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut took = Duration::ZERO;
        let mut done = 0u64;
        while done < n {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let mut s = scheduler(rx);
            if !fresh {
                for k in ks {
                    tx.unbounded_send(ScheduleRequest {
                        message: k.clone(),
                        run_at: far,
                    })
                    .expect("send");
                }
                assert!(s.next().now_or_never().is_none());
            }
            let batch = if fresh {
                (n - done).min(ks.len() as u64)
            } else {
                n - done
            };
            let start = std::time::Instant::now();
            for i in 0..batch as usize {
                tx.unbounded_send(ScheduleRequest {
                    message: ks[i % ks.len()].clone(),
                    run_at: far + Duration::from_nanos(i as u64 + 1),
                })
                .expect("send");
                black_box(s.next().now_or_never());
            }
            took += start.elapsed();
            done += batch;
        }
        took
    })
}

fn micro(c: &mut Criterion) {
    let queues = Queues::new();
    let rt = current_thread();
    let ks = keys(1024);
    let many = keys(100_000);
    let mut g = c.benchmark_group("queue");
    for setup in [Setup::Prod, Setup::Bare] {
        let q = queues.build_in(&rt, setup, false);
        g.bench_function(format!("serial_add_get_done/{}", setup.name()), |b| {
            b.iter_custom(|n| serial_loop(&rt, &q, &ks, n))
        });
        g.bench_function(format!("dedup_hit/{}", setup.name()), |b| {
            let _guard = rt.enter();
            q.add(&ks[0]);
            b.iter(|| q.add(black_box(&ks[0])))
        });
        let delayed = queues.build_in(&rt, setup, false);
        let mut counter = 0;
        add_after_delayed_loop(&rt, &delayed, &many, &mut counter, many.len() as u64);
        g.bench_function(format!("add_after_delayed/{}", setup.name()), |b| {
            b.iter_custom(|n| add_after_delayed_loop(&rt, &delayed, &many, &mut counter, n))
        });
        g.bench_function(format!("add_after_fresh/{}", setup.name()), |b| {
            b.iter_custom(|n| {
                add_after_fresh_loop(&rt, &|| queues.build_in(&rt, setup, false), &many, n)
            })
        });
    }
    g.bench_function("serial_add_get_done/kube_runtime", |b| {
        b.iter_custom(|n| serial_loop_kube(&rt, &ks, n))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = micro
}

/// The figures of one round, appended as JSON lines.
struct Rows {
    round: u32,
    lines: Vec<String>,
}

impl Rows {
    fn put(&mut self, scenario: &str, setup: Setup, who: &str, value: f64, unit: &str) {
        println!(
            "{scenario:<40} {:<5} {who:<13} {value:>16.3} {unit}",
            setup.name()
        );
        self.lines.push(format!(
            "{{\"round\": {}, \"scenario\": \"{scenario}\", \"config\": \"{}\", \"who\": \"{who}\", \"value\": {value}, \"unit\": \"{unit}\"}}",
            self.round,
            setup.name()
        ));
    }
}

/// Drains of 100k queued keys per run; the rate over the summed drain time.
const DRAIN_REPEATS: usize = 10;

fn drain_ours(queues: &Queues, setup: Setup, workers: usize, ks: &[Key]) -> f64 {
    let rt = two_threads();
    let mut total = Duration::ZERO;
    for _ in 0..DRAIN_REPEATS {
        let q = queues.build_in(&rt, setup, false);
        for k in ks {
            q.add(k);
        }
        q.shutdown();
        total += rt.block_on(async {
            let start = std::time::Instant::now();
            let tasks: Vec<_> = (0..workers)
                .map(|_| {
                    let q = q.clone();
                    tokio::spawn(async move {
                        while let Some(k) = q.get().await {
                            q.done(&k);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("worker");
            }
            start.elapsed()
        });
    }
    (ks.len() * DRAIN_REPEATS) as f64 / total.as_secs_f64()
}

fn drain_kube(ks: &[Key]) -> f64 {
    let rt = current_thread();
    let mut total = Duration::ZERO;
    for _ in 0..DRAIN_REPEATS {
        total += rt.block_on(async {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let now = Instant::now() - Duration::from_secs(1);
            for k in ks {
                tx.unbounded_send(ScheduleRequest {
                    message: k.clone(),
                    run_at: now,
                })
                .expect("send");
            }
            // Keep `tx` open: the scheduler ends as soon as its request stream does.
            let start = std::time::Instant::now();
            let n = scheduler(rx).take(ks.len()).count().await;
            let took = start.elapsed();
            drop(tx);
            assert_eq!(n, ks.len());
            took
        });
    }
    (ks.len() * DRAIN_REPEATS) as f64 / total.as_secs_f64()
}

/// `producers` threads add flat out over 10k keys (high priority), 2 workers complete items for
/// 1 s while a low-priority backlog waits. Returns (completed/s, share of completions from the
/// backlog).
fn storm(
    queues: &Queues,
    setup: Setup,
    producers: usize,
    ks: &[Key],
    low_backlog: &[Key],
) -> (f64, f64) {
    let rt = two_threads();
    let q = queues.build_in(&rt, setup, false);
    for k in low_backlog {
        q.add_with(k, Priority::Low);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let low_done = Arc::new(AtomicU64::new(0));
    let is_low: Arc<std::collections::HashSet<Key>> =
        Arc::new(low_backlog.iter().cloned().collect());
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (q, done, low_done, is_low) =
                (q.clone(), done.clone(), low_done.clone(), is_low.clone());
            rt.spawn(async move {
                while let Some(k) = q.get().await {
                    done.fetch_add(1, Ordering::Relaxed);
                    if is_low.contains(&k) {
                        low_done.fetch_add(1, Ordering::Relaxed);
                    }
                    q.done(&k);
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..producers)
        .map(|p| {
            let (q, stop, ks) = (q.clone(), stop.clone(), ks.to_vec());
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let _guard = handle.enter();
                let mut j = p;
                while !stop.load(Ordering::Relaxed) {
                    q.add(&ks[j % ks.len()]);
                    j += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let n = done.load(Ordering::Relaxed);
    let low = low_done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().expect("producer");
    }
    rt.block_on(async {
        q.shutdown_with_drain(Duration::ZERO).await;
        for w in workers {
            w.await.expect("worker");
        }
    });
    let share = if n == 0 {
        0.0
    } else {
        low as f64 / n as f64 * 100.0
    };
    (n as f64, share)
}

/// More producer threads than cores: twice the cores (client-go's side: twice GOMAXPROCS).
fn many_producers() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn bytes_per_key(f: impl FnOnce() -> Box<dyn std::any::Any>, n: usize) -> f64 {
    let region = Region::new(GLOBAL);
    let kept = f();
    let stats = region.change();
    drop(kept);
    // stats_alloc already folds realloc growth into bytes_allocated / bytes_deallocated.
    (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64) / n as f64
}

fn percentile(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() * p / 100).copied().unwrap_or(f64::NAN)
}

/// The index `i` of a key made by [`keys`] (`ns-…/session-{i}`).
fn key_index(k: &Key) -> usize {
    k.rsplit_once('-')
        .and_then(|(_, i)| i.parse().ok())
        .expect("a key from keys()")
}

/// 10k keys due uniformly within 100 ms, added while 2 workers already wait: p99 of
/// (get − due), ms, where a key's due time is its add_after call plus its delay (same in the
/// Go mirror).
fn timers_ours(queues: &Queues, setup: Setup, ks: &[Key]) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let q = queues.build(setup, false);
        let n = ks.len();
        let base = Instant::now();
        let delay = move |j: usize| Duration::from_millis(100) * j as u32 / n as u32;
        // Nanoseconds from `base` to each key's add_after call.
        let added: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let late = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (q, added, late) = (q.clone(), added.clone(), late.clone());
                tokio::spawn(async move {
                    while let Some(k) = q.get().await {
                        let now = Instant::now();
                        let j = key_index(&k);
                        let due = base
                            + Duration::from_nanos(added[j].load(Ordering::Acquire))
                            + delay(j);
                        let l = now.saturating_duration_since(due).as_secs_f64() * 1000.0;
                        q.done(&k);
                        let mut late = late.lock().expect("lock");
                        late.push(l);
                        if late.len() == n {
                            q.shutdown();
                        }
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        for (j, k) in ks.iter().enumerate() {
            let at = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            added[j].store(at, Ordering::Release);
            q.add_after(k, delay(j));
        }
        for t in tasks {
            t.await.expect("worker");
        }
        let v = std::mem::take(&mut *late.lock().expect("lock"));
        percentile(v, 99)
    })
}

/// CPU time of this process so far: the sum of its threads' run times
/// (`/proc/self/task/*/schedstat`, nanoseconds).
fn process_cpu() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    Duration::from_nanos(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// 2 workers wait in get while 10k keys are delayed by an hour and, with `stream`, a key is
/// re-added with a 10 ms delay every 10 ms (100 timers a second): the CPU the process uses
/// over 1 s, in % of one core (same in the Go mirror).
fn idle_cpu_ours(queues: &Queues, setup: Setup, ks: &[Key], stream: bool) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let q = queues.build(setup, false);
        for k in ks {
            q.add_after(k, Duration::from_secs(3600));
        }
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    while let Some(k) = q.get().await {
                        q.done(&k);
                    }
                })
            })
            .collect();
        let hot = keys(200_000).split_off(199_900);
        let producer = stream.then(|| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for k in hot.iter().cycle() {
                    tick.tick().await;
                    q.add_after(k, Duration::from_millis(10));
                }
            })
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (cpu, wall) = (process_cpu(), std::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = (process_cpu() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
        if let Some(p) = producer {
            p.abort();
        }
        q.shutdown_with_drain(Duration::ZERO).await;
        for w in workers {
            w.await.expect("worker");
        }
        used * 100.0
    })
}

/// kube-runtime: the same 10k deadlines, sent from another thread while the stream is consumed.
fn timers_kube(ks: &[Key]) -> f64 {
    two_threads().block_on(async {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let n = ks.len();
        let due: Arc<std::sync::Mutex<HashMap<Key, Instant>>> = Arc::default();
        let producer = {
            let (ks, due) = (ks.to_vec(), due.clone());
            tokio::spawn(async move {
                for (j, k) in ks.into_iter().enumerate() {
                    let run_at = Instant::now() + Duration::from_millis(100) * j as u32 / n as u32;
                    due.lock().expect("lock").insert(k.clone(), run_at);
                    tx.unbounded_send(ScheduleRequest { message: k, run_at })
                        .expect("send");
                }
                tx
            })
        };
        let mut s = scheduler(rx);
        let mut late = Vec::with_capacity(n);
        while late.len() < n {
            let Some(k) = s.next().await else { break };
            let now = Instant::now();
            let at = due.lock().expect("lock")[&k];
            late.push(now.saturating_duration_since(at).as_secs_f64() * 1000.0);
        }
        drop(producer.await.expect("producer"));
        percentile(late, 99)
    })
}

/// 10k simultaneous failures (`add_rate_limited` of 10k keys at once), then a worker takes each
/// retry as soon as the queue hands it out, on paused tokio time (the queue and its bucket run
/// on tokio's clock, which jumps to the next timer whenever the runtime is idle: ~16 minutes of
/// waiting take milliseconds). Returns (wait of the last retry in s, most retries handed out
/// within any 1 s) and panics if the handouts ever exceeded the configured bucket.
///
/// Run last in a round: once any runtime paused the clock, tokio's `Instant::now` stays slower
/// for the whole process.
fn failures_ours(queues: &Queues, setup: Setup, ks: &[Key]) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let bucket = match setup {
        Setup::Prod => queues.operator.bucket,
        Setup::Bare => None,
    };
    let handed = rt.block_on(async {
        let q = queues.build(setup, false);
        let start = Instant::now();
        for k in ks {
            q.add_rate_limited(k);
        }
        let mut handed = Vec::with_capacity(ks.len());
        for _ in 0..ks.len() {
            let k = q.get().await.expect("retry");
            handed.push(start.elapsed());
            q.forget(&k);
            q.done(&k);
        }
        handed
    });
    if let Some(b) = bucket {
        // Token-bucket conformance of the handouts: full at the start, one token per 1/qps.
        let period = Duration::from_secs_f64(1.0 / b.qps).as_nanos();
        let cap = period * u128::from(b.burst);
        let (mut credit, mut prev) = (cap, 0u128);
        for (i, t) in handed.iter().enumerate() {
            let t = t.as_nanos();
            credit = (credit + (t - prev)).min(cap);
            prev = t;
            assert!(
                credit >= period,
                "retry {i} at {t} ns exceeded the bucket ({} qps, burst {})",
                b.qps,
                b.burst
            );
            credit -= period;
        }
    }
    let mut peak = 0;
    let mut lo = 0;
    for hi in 0..handed.len() {
        while handed[hi] - handed[lo] >= Duration::from_secs(1) {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    let tail = handed.last().map_or(0.0, Duration::as_secs_f64);
    (tail, peak as f64)
}

/// A key fails; 100 events for it arrive during its backoff, each one processed and failing
/// again: the backoff the key then gets (ms).
fn spurious_ours(queues: &Queues, setup: Setup) -> f64 {
    let rt = current_thread();
    rt.block_on(async {
        let q = queues.build(setup, false);
        let k: Key = Arc::from("ns-0/session-0");
        q.add_rate_limited(&k);
        for _ in 0..100 {
            q.add(&k);
            let got = q.get().await.expect("event");
            q.add_rate_limited(&got);
            q.done(&got);
        }
        let policy =
            ExponentialBackoffPolicy::new(Duration::from_millis(5), Duration::from_secs(1000), 0.0);
        policy.delay(q.num_requeues(&k)).as_secs_f64() * 1000.0
    })
}

/// 100k low-priority keys (2 µs of work each) drain with 2 workers while a fresh key arrives
/// every 100 µs: p99 wait of the fresh keys (ms).
fn new_key_wait_ours(queues: &Queues, setup: Setup, backlog: &[Key], fresh: &[Key]) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let q = queues.build(setup, false);
        for k in backlog {
            q.add_with(k, Priority::Low);
        }
        let added: Arc<std::sync::Mutex<HashMap<Key, Instant>>> = Arc::default();
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let left = Arc::new(AtomicU64::new(backlog.len() as u64));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (q, added, waits, left) =
                    (q.clone(), added.clone(), waits.clone(), left.clone());
                tokio::spawn(async move {
                    while let Some(k) = q.get().await {
                        // 2 µs of "reconcile" per item (same in the Go mirror), so the drain
                        // lasts long enough (~100 ms) to sample a few hundred fresh keys.
                        let work = std::time::Instant::now();
                        while work.elapsed() < Duration::from_micros(2) {
                            std::hint::spin_loop();
                        }
                        let t = added.lock().expect("lock").get(&k).copied();
                        match t {
                            Some(t) => waits
                                .lock()
                                .expect("lock")
                                .push(t.elapsed().as_secs_f64() * 1000.0),
                            None => {
                                if left.fetch_sub(1, Ordering::Relaxed) == 1 {
                                    q.shutdown();
                                }
                            }
                        }
                        q.done(&k);
                    }
                })
            })
            .collect();
        let mut tick = tokio::time::interval(Duration::from_micros(100));
        for k in fresh {
            if left.load(Ordering::Relaxed) == 0 {
                break;
            }
            tick.tick().await;
            added
                .lock()
                .expect("lock")
                .insert(k.clone(), Instant::now());
            q.add(k);
        }
        for t in tasks {
            t.await.expect("worker");
        }
        let v = std::mem::take(&mut *waits.lock().expect("lock"));
        percentile(v, 99)
    })
}

/// Tenant A has 10k queued keys, then tenant B adds one (fairness on): items handed out first.
fn fairness_position_ours(queues: &Queues, setup: Setup) -> f64 {
    let rt = current_thread();
    rt.block_on(async {
        let q = queues.build(setup, true);
        let big: Vec<Key> = (0..10_000)
            .map(|i| Arc::from(format!("ns-a/session-{i}")))
            .collect();
        for k in &big {
            q.add(k);
        }
        let only: Key = Arc::from("ns-b/only");
        q.add(&only);
        let mut pos = 0;
        loop {
            let k = q.get().await.expect("ready");
            q.done(&k);
            if k == only {
                return f64::from(pos);
            }
            pos += 1;
        }
    })
}

/// One round: every scenario once per configuration, prod and bare interleaved.
fn round(r: &mut Rows) {
    use Setup::{Bare, Prod};
    let queues = Queues::new();
    let k100 = keys(100_000);
    let k10 = keys(10_000);
    let ks = keys(1024);
    let rt = current_thread();

    for s in [Prod, Bare] {
        let q = queues.build_in(&rt, s, false);
        let v = per_op_ns(|n| serial_loop(&rt, &q, &ks, n));
        r.put("serial_add_get_done", s, "ours", v, "ns/item");
        let q = queues.build_in(&rt, s, true);
        let v = per_op_ns(|n| serial_loop(&rt, &q, &ks, n));
        r.put("serial_add_get_done_fair", s, "ours", v, "ns/item");
    }
    let v = per_op_ns(|n| serial_loop_kube(&rt, &ks, n));
    r.put("serial_add_get_done", Bare, "kube_runtime", v, "ns/item");

    for s in [Prod, Bare] {
        let q = queues.build_in(&rt, s, false);
        let _guard = rt.enter();
        q.add(&ks[0]);
        let v = per_op_ns(|n| {
            let start = std::time::Instant::now();
            for _ in 0..n {
                q.add(black_box(&ks[0]));
            }
            start.elapsed()
        });
        r.put("dedup_hit", s, "ours", v, "ns/op");
        let region = Region::new(GLOBAL);
        for _ in 0..1_000_000 {
            q.add(black_box(&ks[0]));
        }
        let allocs = region.change().allocations as f64 / 1e6;
        r.put("dedup_hit_allocations", s, "ours", allocs, "allocs/op");
    }
    let v = per_op_ns(|n| {
        rt.block_on(async {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let mut s = scheduler(rx);
            let far = Instant::now() + Duration::from_secs(3600);
            let start = std::time::Instant::now();
            for _ in 0..n {
                tx.unbounded_send(ScheduleRequest {
                    message: ks[0].clone(),
                    run_at: far,
                })
                .expect("send");
                black_box(s.next().now_or_never());
            }
            start.elapsed()
        })
    });
    r.put("dedup_hit", Bare, "kube_runtime", v, "ns/op");

    for s in [Prod, Bare] {
        let q = queues.build_in(&rt, s, false);
        let mut counter = 0;
        add_after_delayed_loop(&rt, &q, &k100, &mut counter, k100.len() as u64);
        let v = per_op_ns(|n| add_after_delayed_loop(&rt, &q, &k100, &mut counter, n));
        r.put("add_after_already_delayed", s, "ours", v, "ns/op");
        drop(q);
        let v =
            per_op_ns(|n| add_after_fresh_loop(&rt, &|| queues.build_in(&rt, s, false), &k100, n));
        r.put("add_after_fresh_timer", s, "ours", v, "ns/op");
    }
    let v = per_op_ns(|n| add_after_loop_kube(&rt, &k100, false, n));
    r.put(
        "add_after_already_delayed",
        Bare,
        "kube_runtime",
        v,
        "ns/op",
    );
    let v = per_op_ns(|n| add_after_loop_kube(&rt, &k100, true, n));
    r.put("add_after_fresh_timer", Bare, "kube_runtime", v, "ns/op");

    for w in [2, 4] {
        for s in [Prod, Bare] {
            let v = drain_ours(&queues, s, w, &k100);
            r.put(&format!("drain_100k_{w}_workers"), s, "ours", v, "items/s");
        }
    }
    // One consumer: the scheduler is a stream, it has no workers.
    let v = drain_kube(&k100);
    r.put("drain_100k_2_workers", Bare, "kube_runtime", v, "items/s");
    r.put("drain_100k_4_workers", Bare, "kube_runtime", v, "items/s");

    // Large enough that the low lane never runs dry during the 1 s storm.
    let backlog = keys(600_000).split_off(100_000);
    for s in [Prod, Bare] {
        let (rate, _) = storm(&queues, s, 2, &k10, &[]);
        r.put("add_storm_2_producers", s, "ours", rate, "items/s");
        let (rate, _) = storm(&queues, s, many_producers(), &k10, &[]);
        r.put("add_storm_producers_2x_cores", s, "ours", rate, "items/s");
        let (_, share) = storm(&queues, s, 2, &k10, &backlog);
        r.put("low_priority_share_under_storm", s, "ours", share, "%");
    }
    drop(backlog);

    for s in [Prod, Bare] {
        let ready = bytes_per_key(
            || {
                let q = queues.build_in(&rt, s, false);
                for k in &k100 {
                    q.add(k);
                }
                Box::new(q)
            },
            k100.len(),
        );
        r.put("memory_per_ready_key", s, "ours", ready, "B/key");
        let delayed = bytes_per_key(
            || {
                let q = queues.build_in(&rt, s, false);
                let _guard = rt.enter();
                for k in &k100 {
                    q.add_after(k, Duration::from_secs(3600));
                }
                Box::new(q)
            },
            k100.len(),
        );
        r.put("memory_per_delayed_key", s, "ours", delayed, "B/key");
    }
    let kube_delayed = bytes_per_key(
        || {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let mut s = Box::pin(scheduler(rx));
            rt.block_on(async {
                let far = Instant::now() + Duration::from_secs(3600);
                for k in &k100 {
                    tx.unbounded_send(ScheduleRequest {
                        message: k.clone(),
                        run_at: far,
                    })
                    .expect("send");
                }
                assert!(s.next().now_or_never().is_none());
            });
            Box::new((tx, s))
        },
        k100.len(),
    );
    r.put(
        "memory_per_delayed_key",
        Bare,
        "kube_runtime",
        kube_delayed,
        "B/key",
    );

    for s in [Prod, Bare] {
        let v = timers_ours(&queues, s, &k10);
        r.put("timers_10k_in_100ms_p99_lateness", s, "ours", v, "ms");
    }
    let v = timers_kube(&k10);
    r.put(
        "timers_10k_in_100ms_p99_lateness",
        Bare,
        "kube_runtime",
        v,
        "ms",
    );

    for s in [Prod, Bare] {
        let v = idle_cpu_ours(&queues, s, &k10, false);
        r.put("idle_cpu_10k_delayed_keys", s, "ours", v, "% of a core");
        let v = idle_cpu_ours(&queues, s, &k10, true);
        r.put("idle_cpu_100_timers_per_s", s, "ours", v, "% of a core");
    }

    for s in [Prod, Bare] {
        r.put(
            "spurious_100_events_next_backoff",
            s,
            "ours",
            spurious_ours(&queues, s),
            "ms",
        );
        // Distinct names: fresh keys must not collide with the backlog.
        let fresh = keys(220_000).split_off(200_000);
        let backlog = keys(200_000).split_off(100_000);
        let v = new_key_wait_ours(&queues, s, &backlog, &fresh);
        r.put("new_key_p99_wait_during_100k_backlog", s, "ours", v, "ms");
        let v = fairness_position_ours(&queues, s);
        r.put("fairness_items_before_single_key", s, "ours", v, "items");
    }

    // Last: pauses tokio's clock (see `failures_ours`).
    for s in [Prod, Bare] {
        let (tail, peak) = failures_ours(&queues, s, &k10);
        r.put("failures_10k_last_retry_wait", s, "ours", tail, "s");
        r.put(
            "failures_10k_peak_retries_in_1s",
            s,
            "ours",
            peak,
            "retries",
        );
    }
}

fn main() {
    if let Ok(n) = std::env::var("QUEUE_BENCH_DRAIN") {
        // Exploration: only the drains, n times per configuration and worker count.
        let queues = Queues::new();
        let k100 = keys(100_000);
        for _ in 0..n.parse::<usize>().unwrap_or(3) {
            for s in [Setup::Prod, Setup::Bare] {
                for w in [2, 4] {
                    let rate = drain_ours(&queues, s, w, &k100);
                    println!("drain {} {w} workers {rate:.0} items/s", s.name());
                }
            }
        }
        return;
    }
    if let Ok(n) = std::env::var("QUEUE_BENCH_STORM") {
        // Exploration: only the add storm, n times per configuration, items/s printed.
        let queues = Queues::new();
        let k10 = keys(10_000);
        let only = std::env::var("QUEUE_BENCH_SETUP").ok();
        for s in [Setup::Prod, Setup::Bare] {
            if only.as_deref().is_some_and(|o| o != s.name()) {
                continue;
            }
            for _ in 0..n.parse::<usize>().unwrap_or(3) {
                for producers in [2, many_producers()] {
                    let (rate, _) = storm(&queues, s, producers, &k10, &[]);
                    println!(
                        "add_storm {} {producers} producers {rate:.0} items/s",
                        s.name()
                    );
                }
            }
        }
        return;
    }
    let Some(round_no) = std::env::var("QUEUE_BENCH_ROUND")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        // Exploration: criterion over the micro benchmarks (`--list` / `--test` included).
        benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    };
    let mut rows = Rows {
        round: round_no,
        lines: Vec::new(),
    };
    round(&mut rows);
    let out = std::env::var("QUEUE_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench-report/queue-rust.jsonl".into());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .unwrap_or_else(|e| panic!("cannot open {out}: {e}"));
    for line in rows.lines {
        writeln!(file, "{line}").unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
    }
}
