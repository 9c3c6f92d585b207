#!/usr/bin/env bash
# Runs the work-queue benchmarks like for like: QUEUE_BENCH_ROUNDS rounds (default 5), each
# running client-go's util/workqueue (benches/go-workqueue) once and ours + kube-runtime's
# scheduler (benches/queue.rs) once, alternating which side goes first. Every scenario runs in
# the production configuration and the bare one on both sides. Writes
# target/bench-report/queue.json and queue.md: per scenario and configuration, each side's
# median and min–max over the rounds, and speedup_vs_client_go from the medians.
# Self-contained: needs cargo, go (GOTOOLCHAIN=local) and python3. About 1 minute per round.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/target/bench-report"
rounds=${QUEUE_BENCH_ROUNDS:-5}
mkdir -p "$out"
# Never report a stale run.
rm -f "$out"/queue-go-*.txt "$out/queue-rust.jsonl" "$out/queue-rust.txt" "$out/queue-load.txt" \
  "$out/queue.json" "$out/queue.md" "$out/queue-go.txt"

echo "== building both sides" >&2
# Every round runs these two binaries, built once: an edit during the run cannot mix versions.
rust_bin=$(cargo bench --bench queue --locked --no-run --message-format=json-render-diagnostics |
  python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "queue" and m.get("executable"):
        print(m["executable"])')
[[ -x "$rust_bin" ]] || { echo "no bench binary" >&2; exit 1; }
(cd benches/go-workqueue && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
  go test -c -o "$out/workqueue.test" .)

go_round() {
  local r=$1
  # Micro benchmarks: testing.B's own iteration count; scenarios: a fixed amount of work.
  "$out/workqueue.test" -test.run '^$' -test.benchtime 1s -test.count 1 \
    -test.bench '^Benchmark(SerialAddGetDone|DedupHit|AddAfter)' | tee "$out/queue-go-$r.txt"
  "$out/workqueue.test" -test.run '^$' -test.benchtime 1x -test.count 1 \
    -test.bench '^Benchmark(Drain|AddStorm|Memory|TimerLateness|IdleCPU|FailureTail|SpuriousEvents|NewKeyWait|Fairness)' \
    | tee -a "$out/queue-go-$r.txt"
}

rust_round() {
  local r=$1
  QUEUE_BENCH_ROUND=$r QUEUE_BENCH_OUT="$out/queue-rust.jsonl" "$rust_bin" --bench 2>&1 |
    tee -a "$out/queue-rust.txt"
}

for r in $(seq 1 "$rounds"); do
  echo "== round $r/$rounds (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  echo "$r start $(cat /proc/loadavg)" >> "$out/queue-load.txt"
  if (( r % 2 )); then go_round "$r"; rust_round "$r"; else rust_round "$r"; go_round "$r"; fi
  echo "$r end $(cat /proc/loadavg)" >> "$out/queue-load.txt"
done

python3 - "$root" "$rounds" <<'PY'
import json, re, statistics, subprocess, sys, pathlib, os, platform
root, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
out = root / "target/bench-report"
# (scenario, config) -> {"unit":..., who: [values by round]}
data = {}

def put(scenario, config, who, value, unit):
    r = data.setdefault((scenario, config), {"unit": unit})
    r.setdefault(who, []).append(value)

for line in (out / "queue-rust.jsonl").read_text().splitlines():
    r = json.loads(line)
    put(r["scenario"], r["config"], r["who"], r["value"], r["unit"])

# go test -bench: Benchmark<Name>/<config>-N  iters  x ns/op  [v unit]...
go_map = {
    "SerialAddGetDone": [("ns/item", "serial_add_get_done")],
    "DedupHit": [("ns/op", "dedup_hit"), ("allocs/op", "dedup_hit_allocations")],
    "AddAfterDelayed": [("ns/op", "add_after_already_delayed")],
    "AddAfterFresh": [("ns/op", "add_after_fresh_timer")],
    "Drain100k2Workers": [("items/s", "drain_100k_2_workers")],
    "Drain100k4Workers": [("items/s", "drain_100k_4_workers")],
    "AddStorm": [("items/s", "add_storm_2_producers")],
    "AddStormManyProducers": [("items/s", "add_storm_producers_2x_cores")],
    "MemoryPerReadyKey": [("B/key", "memory_per_ready_key")],
    "MemoryPerDelayedKey": [("B/key", "memory_per_delayed_key")],
    "TimerLateness": [("ms_p99", "timers_10k_in_100ms_p99_lateness")],
    "IdleCPUDelayed": [("pct_core", "idle_cpu_10k_delayed_keys")],
    "IdleCPUTimerStream": [("pct_core", "idle_cpu_100_timers_per_s")],
    "FailureTail": [("s_tail", "failures_10k_last_retry_wait"),
                    ("retries_peak_1s", "failures_10k_peak_retries_in_1s")],
    "SpuriousEvents": [("ms_next_backoff", "spurious_100_events_next_backoff")],
    "NewKeyWaitDuringBacklog": [("ms_p99", "new_key_p99_wait_during_100k_backlog")],
    "FairnessSingleKeyPosition": [("items_before", "fairness_items_before_single_key")],
}
for r in range(1, rounds + 1):
    for line in (out / f"queue-go-{r}.txt").read_text().splitlines():
        m = re.match(r"Benchmark(\w+?)/(prod|bare)(-\d+)?\s+\d+\s+(.*)", line)
        if not m or m.group(1) not in go_map:
            continue
        fields = m.group(4).split()
        vals = {fields[i + 1]: float(fields[i]) for i in range(0, len(fields) - 1, 2)}
        for unit, scen in go_map[m.group(1)]:
            if unit in vals:
                put(scen, m.group(2), "client_go", vals[unit], data.get((scen, m.group(2)), {}).get("unit", unit))

higher = {"items/s", "%"}
# Rows whose figure is a property to match, not a speed: no speedup.
neither = {"failures_10k_last_retry_wait", "failures_10k_peak_retries_in_1s"}

def stats(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": len(v), "values": v}

rows = []
order = []
for (scen, config) in data:
    if scen not in order:
        order.append(scen)
for scen in order:
    for config in ("prod", "bare"):
        r = data.get((scen, config))
        if r is None:
            continue
        better = "neither" if scen in neither else ("higher" if r["unit"] in higher else "lower")
        row = {"scenario": scen, "config": config, "unit": r["unit"], "better": better}
        for who in ("ours", "client_go", "kube_runtime"):
            if who in r:
                row[who] = stats(r[who])
        o, g = row.get("ours"), row.get("client_go")
        sp = None
        if o and g and better != "neither" and o["median"] > 0 and g["median"] > 0:
            if o["runs"] != g["runs"]:
                sys.exit(f"{scen}/{config}: {o['runs']} runs of ours vs {g['runs']} of client-go")
            sp = g["median"] / o["median"] if better == "lower" else o["median"] / g["median"]
            sp = round(sp, 3)
        row["speedup_vs_client_go"] = sp
        rows.append(row)

def git(*a):
    try:
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
load = [l.split() for l in (out / "queue-load.txt").read_text().splitlines()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
meta = {
    "rounds": rounds,
    "method": "each round runs every scenario once per side and configuration (client-go and ours "
              "alternate first); micro benchmarks time one run of testing.B's iteration count "
              "(>= 1 s), scenarios a fixed amount of work; median and min-max over the rounds; "
              "speedup_vs_client_go is the ratio of the medians",
    "configs": {"prod": "as deployed: ours = engine::queued::queue_config (default flags) + "
                         "WorkqueueMetrics (Prometheus); client-go = rate-limiting queue with "
                         "DefaultTypedControllerRateLimiter + a Prometheus metrics provider "
                         "(controller-runtime's)",
                "bare": "no metrics, no bucket (client-go: NewTyped / a delaying queue)"},
    "loadavg": [{"round": int(l[0]), "at": l[1], "load1": float(l[2]), "load5": float(l[3]),
                 "load15": float(l[4])} for l in load],
    "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
    "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
}
(out / "queue.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

def fmt(v):
    if v is None:
        return ""
    a = abs(v)
    return f"{v:,.0f}" if a >= 1000 else (f"{v:.3g}" if a >= 0.01 or a == 0 else f"{v:.2g}")

def cell(s):
    if not s:
        return ""
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"

by = {(r["scenario"], r["config"]): r for r in rows}
md = [f"Medians of {rounds} rounds (min–max); load average (1 min) "
      f"{min(float(l[2]) for l in load):.2f}–{max(float(l[2]) for l in load):.2f} during the run.", "",
      "| scenario | unit | ours prod | client-go prod | prod × | ours bare | client-go bare | bare × | kube-runtime |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
for scen in order:
    p, b = by.get((scen, "prod"), {}), by.get((scen, "bare"), {})
    unit = (p or b).get("unit", "")
    better = (p or b).get("better", "")
    x = lambda r: "" if r.get("speedup_vs_client_go") is None else f"{r['speedup_vs_client_go']:.2f}×"
    md.append(f"| {scen} | {unit} ({better} is better) | {cell(p.get('ours'))} | {cell(p.get('client_go'))} | {x(p)} | "
              f"{cell(b.get('ours'))} | {cell(b.get('client_go'))} | {x(b)} | {cell(b.get('kube_runtime'))} |")
md += ["", "Load average (1, 5, 15 min) at the start and end of each round:", ""]
md += [f"- round {l[0]} {l[1]}: {l[2]} {l[3]} {l[4]}" for l in load]
(out / "queue.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "wrote $out/queue.json and $out/queue.md" >&2
