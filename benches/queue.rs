//! Work-queue benchmarks: every queue scenario of TARGETS.md, ours and kube-runtime's scheduler
//! (where it has an equivalent). client-go runs the same scenarios in `benches/go-workqueue`;
//! `benches/run-queue-bench.sh` runs both and writes `target/bench-report/queue.{json,md}`.
//!
//! Micro benchmarks go through criterion; whole-scenario figures (throughput under concurrency,
//! bytes per key, lateness percentiles, waits) are measured once per run and written as JSON to
//! `$QUEUE_BENCH_OUT` (default `target/bench-report/queue-rust.json`).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use agentic_queue::{
    BackoffPolicy, BucketConfig, ExponentialBackoffPolicy, NoopMetrics, Priority, QueueConfig,
    WorkQueue,
};
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

fn config() -> QueueConfig {
    QueueConfig {
        bucket: None,
        ..QueueConfig::default()
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

fn fair_queue() -> WorkQueue<Key> {
    WorkQueue::with_tenant(
        QueueConfig {
            fairness: true,
            ..config()
        },
        Arc::new(NoopMetrics),
        |k: &Key| k.split_once('/').map(|(ns, _)| ns),
    )
    .expect("config")
}

fn micro(c: &mut Criterion) {
    let rt = current_thread();
    let ks = keys(1024);
    let mut g = c.benchmark_group("queue");

    // add → get → done over 1024 keys, `iters` times.
    let serial = |q: &WorkQueue<Key>, iters: u64| {
        rt.block_on(async {
            let start = std::time::Instant::now();
            for i in 0..iters as usize {
                q.add(&ks[i & 1023]);
                let k = q.get().await.expect("ready");
                q.done(&k);
            }
            start.elapsed()
        })
    };
    g.bench_function("serial_add_get_done/ours", |b| {
        let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
        b.iter_custom(|iters| serial(&q, iters))
    });
    g.bench_function("serial_add_get_done_fair/ours", |b| {
        let q = rt.block_on(async { fair_queue() });
        b.iter_custom(|iters| serial(&q, iters))
    });
    g.bench_function("serial_add_get_done/kube_runtime", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (tx, rx) = futures::channel::mpsc::unbounded();
                let mut s = scheduler(rx);
                // Already due (in the past): DelayQueue hands it out on the next poll instead of
                // waiting for its next 1 ms tick, the scheduler's best case.
                let now = Instant::now() - Duration::from_secs(1);
                let start = std::time::Instant::now();
                for i in 0..iters as usize {
                    tx.unbounded_send(ScheduleRequest {
                        message: ks[i & 1023].clone(),
                        run_at: now,
                    })
                    .expect("send");
                    black_box(s.next().await);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("dedup_hit/ours", |b| {
        let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
        rt.block_on(async { q.add(&ks[0]) });
        let k = ks[0].clone();
        b.iter(|| q.add(black_box(&k)))
    });
    g.bench_function("dedup_hit/kube_runtime", |b| {
        rt.block_on(async {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let mut s = scheduler(rx);
            let far = Instant::now() + Duration::from_secs(3600);
            b.iter(|| {
                tx.unbounded_send(ScheduleRequest {
                    message: ks[0].clone(),
                    run_at: far,
                })
                .expect("send");
                black_box(s.next().now_or_never());
            })
        })
    });
    let many = keys(100_000);
    g.bench_function("add_after/ours", |b| {
        let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
        let mut i = 0usize;
        rt.block_on(async {
            b.iter(|| {
                i += 1;
                q.add_after(
                    &many[i % many.len()],
                    Duration::from_secs(3600) + Duration::from_nanos(i as u64),
                );
            })
        })
    });
    g.bench_function("add_after/kube_runtime", |b| {
        rt.block_on(async {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            let mut s = scheduler(rx);
            let far = Instant::now() + Duration::from_secs(3600);
            let mut i = 0usize;
            b.iter(|| {
                i += 1;
                let run_at = far + Duration::from_nanos(i as u64);
                tx.unbounded_send(ScheduleRequest {
                    message: many[i % many.len()].clone(),
                    run_at,
                })
                .expect("send");
                black_box(s.next().now_or_never());
            })
        })
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

/// Whole-scenario results: scenario → implementation → value.
#[derive(Default)]
struct Report(Vec<(String, String, f64, String)>);

impl Report {
    fn put(&mut self, scenario: &str, who: &str, value: f64, unit: &str) {
        println!("{scenario:<40} {who:<14} {value:>14.3} {unit}");
        self.0
            .push((scenario.into(), who.into(), value, unit.into()));
    }

    fn json(&self) -> String {
        let rows: Vec<String> = self
            .0
            .iter()
            .map(|(s, w, v, u)| format!("  {{\"scenario\": \"{s}\", \"who\": \"{w}\", \"value\": {v}, \"unit\": \"{u}\"}}"))
            .collect();
        format!("[\n{}\n]\n", rows.join(",\n"))
    }
}

fn drain_ours(workers: usize, ks: &[Key]) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let q = WorkQueue::new(config()).expect("config");
        for k in ks {
            q.add(k);
        }
        q.shutdown();
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
        ks.len() as f64 / start.elapsed().as_secs_f64()
    })
}

fn drain_kube(ks: &[Key]) -> f64 {
    current_thread().block_on(async {
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
        drop(tx);
        assert_eq!(n, ks.len());
        n as f64 / start.elapsed().as_secs_f64()
    })
}

/// 2 producer threads add flat out over 10k keys (high priority unless `low_backlog`), 2 workers
/// complete items for 1 s. Returns (completed/s, share of completions from the low backlog).
fn storm(ks: &[Key], low_backlog: &[Key]) -> (f64, f64) {
    let rt = two_threads();
    let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
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
    let producers: Vec<_> = (0..2)
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
    (
        n as f64,
        if n == 0 {
            0.0
        } else {
            low as f64 / n as f64 * 100.0
        },
    )
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

fn timers_ours(ks: &[Key]) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let q = WorkQueue::new(config()).expect("config");
        let start = Instant::now();
        let n = ks.len();
        let due: Arc<HashMap<Key, Instant>> = Arc::new(
            ks.iter()
                .enumerate()
                .map(|(j, k)| {
                    (
                        k.clone(),
                        start + Duration::from_millis(100) * j as u32 / n as u32,
                    )
                })
                .collect(),
        );
        for (j, k) in ks.iter().enumerate() {
            q.add_after(k, Duration::from_millis(100) * j as u32 / n as u32);
        }
        let late = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (q, due, late) = (q.clone(), due.clone(), late.clone());
                tokio::spawn(async move {
                    while let Some(k) = q.get().await {
                        let l = Instant::now()
                            .saturating_duration_since(due[&k])
                            .as_secs_f64()
                            * 1000.0;
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
        for t in tasks {
            t.await.expect("worker");
        }
        let v = std::mem::take(&mut *late.lock().expect("lock"));
        percentile(v, 99)
    })
}

fn timers_kube(ks: &[Key]) -> f64 {
    current_thread().block_on(async {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let start = Instant::now();
        let n = ks.len();
        let mut due = HashMap::new();
        for (j, k) in ks.iter().enumerate() {
            let run_at = start + Duration::from_millis(100) * j as u32 / n as u32;
            due.insert(k.clone(), run_at);
            tx.unbounded_send(ScheduleRequest {
                message: k.clone(),
                run_at,
            })
            .expect("send");
        }
        let mut s = scheduler(rx);
        let mut late = Vec::with_capacity(n);
        while late.len() < n {
            let Some(k) = s.next().await else { break };
            late.push(
                Instant::now()
                    .saturating_duration_since(due[&k])
                    .as_secs_f64()
                    * 1000.0,
            );
        }
        percentile(late, 99)
    })
}

/// 10k simultaneous failures, bucket 10 qps / burst 100, max delay 2 s: the longest wait seen.
fn failure_tail_ours(ks: &[Key], max: Duration) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let cfg = QueueConfig {
            bucket: Some(BucketConfig {
                qps: 10.0,
                burst: 100,
            }),
            max_delay: max,
            ..config()
        };
        let q = WorkQueue::new(cfg).expect("config");
        let mut added = HashMap::with_capacity(ks.len());
        for k in ks {
            added.insert(k.clone(), Instant::now());
            q.add_rate_limited(k);
        }
        // Wait of each key from its own add_rate_limited call to the worker's get.
        let mut worst = Duration::ZERO;
        for _ in 0..ks.len() {
            let k = q.get().await.expect("retry");
            worst = worst.max(added[&k].elapsed());
            q.forget(&k);
            q.done(&k);
        }
        worst.as_secs_f64()
    })
}

fn spurious_ours() -> f64 {
    current_thread().block_on(async {
        let q = WorkQueue::new(config()).expect("config");
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
/// every 100 µs:
/// p99 wait of the fresh keys (ms).
fn new_key_wait_ours(backlog: &[Key], fresh: &[Key]) -> f64 {
    let rt = two_threads();
    rt.block_on(async {
        let q = WorkQueue::new(config()).expect("config");
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

fn fairness_position_ours() -> f64 {
    current_thread().block_on(async {
        let q = fair_queue();
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

fn scenarios() -> Report {
    let mut r = Report::default();
    let k100 = keys(100_000);
    let k10 = keys(10_000);
    for w in [2, 4] {
        let ours = (0..3).map(|_| drain_ours(w, &k100)).fold(0.0, f64::max);
        r.put(&format!("drain_100k_{w}_workers"), "ours", ours, "items/s");
    }
    let kube = (0..3).map(|_| drain_kube(&k100)).fold(0.0, f64::max);
    r.put("drain_100k_2_workers", "kube_runtime", kube, "items/s");
    r.put("drain_100k_4_workers", "kube_runtime", kube, "items/s");

    let (storm_rate, _) = storm(&k10, &[]);
    r.put("add_storm_2_producers", "ours", storm_rate, "items/s");
    // Large enough that the low lane never runs dry during the 1 s storm.
    let backlog = keys(600_000).split_off(100_000);
    let (_, share) = storm(&k10, &backlog);
    r.put("low_priority_share_under_storm", "ours", share, "%");

    let rt = current_thread();
    let ready = bytes_per_key(
        || {
            let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
            for k in &k100 {
                q.add(k);
            }
            Box::new(q)
        },
        k100.len(),
    );
    r.put("memory_per_ready_key", "ours", ready, "B/key");
    let delayed = bytes_per_key(
        || {
            let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
            rt.block_on(async {
                for k in &k100 {
                    q.add_after(k, Duration::from_secs(3600));
                }
            });
            Box::new(q)
        },
        k100.len(),
    );
    r.put("memory_per_delayed_key", "ours", delayed, "B/key");
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
        "kube_runtime",
        kube_delayed,
        "B/key",
    );

    let q = rt.block_on(async { WorkQueue::new(config()).expect("config") });
    rt.block_on(async { q.add(&k10[0]) });
    let region = Region::new(GLOBAL);
    for _ in 0..1_000_000 {
        q.add(black_box(&k10[0]));
    }
    r.put(
        "dedup_hit_allocations",
        "ours",
        region.change().allocations as f64 / 1e6,
        "allocs/op",
    );

    r.put(
        "timers_10k_in_100ms_p99_lateness",
        "ours",
        timers_ours(&k10),
        "ms",
    );
    r.put(
        "timers_10k_in_100ms_p99_lateness",
        "kube_runtime",
        timers_kube(&k10),
        "ms",
    );

    let max = Duration::from_secs(2);
    r.put(
        "failures_10k_max_wait",
        "ours",
        failure_tail_ours(&k10, max),
        "s",
    );
    r.put(
        "failures_10k_configured_max_delay",
        "ours",
        max.as_secs_f64(),
        "s",
    );
    r.put(
        "spurious_100_events_next_backoff",
        "ours",
        spurious_ours(),
        "ms",
    );

    // Distinct names: fresh keys must not collide with the backlog.
    let fresh = keys(220_000).split_off(200_000);
    let backlog = keys(200_000).split_off(100_000);
    r.put(
        "new_key_p99_wait_during_100k_backlog",
        "ours",
        new_key_wait_ours(&backlog, &fresh),
        "ms",
    );
    r.put(
        "fairness_items_before_single_key",
        "ours",
        fairness_position_ours(),
        "items",
    );
    r
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `--list`, `--test`, or QUEUE_BENCH_MICRO_ONLY=1 (quick criterion-only runs): no scenarios.
    let micro_only = std::env::var_os("QUEUE_BENCH_MICRO_ONLY").is_some_and(|v| v == "1");
    if micro_only || std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let report = scenarios();
    let out = std::env::var("QUEUE_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench-report/queue-rust.json".into());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, report.json()) {
        eprintln!("cannot write {out}: {e}");
    }
}
