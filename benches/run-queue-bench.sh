#!/usr/bin/env bash
# Runs the work-queue benchmarks side by side: ours and kube-runtime's scheduler (criterion +
# whole-scenario figures in benches/queue.rs) and client-go's util/workqueue (go test -bench in
# benches/go-workqueue), then merges them into target/bench-report/queue.json and queue.md.
# Self-contained: needs cargo, go (GOTOOLCHAIN=local) and python3. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/target/bench-report"
mkdir -p "$out"
rm -f "$out/queue-rust.json" "$out/queue.json" "$out/queue.md"  # never report a stale run

echo "== client-go util/workqueue" >&2
(cd benches/go-workqueue && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
  go test -run '^$' -bench . -benchtime 1s -count 1 .) | tee "$out/queue-go.txt"

echo "== ours + kube-runtime" >&2
QUEUE_BENCH_OUT="$out/queue-rust.json" cargo bench --bench queue -- \
  --warm-up-time 0.5 --measurement-time 2 --noplot 2>&1 | tee "$out/queue-rust.txt"

python3 - "$root" <<'PY'
import json, re, sys, pathlib
root = pathlib.Path(sys.argv[1])
out = root / "target/bench-report"
rows = {}  # scenario -> {"unit":..., "better": "lower"|"higher", impl: value}

def put(scenario, who, value, unit, better):
    r = rows.setdefault(scenario, {"unit": unit, "better": better})
    r[who] = value

# criterion micro benchmarks (mean, ns)
crit = root / "target/criterion/queue"
micro = {"serial_add_get_done": "ns/item", "serial_add_get_done_fair": "ns/item",
         "dedup_hit": "ns/op", "add_after": "ns/op"}
for scen, unit in micro.items():
    for who in ("ours", "kube_runtime"):
        # criterion names the directory "<function>_<parameter>" ("/" flattened)
        est = crit / f"{scen}_{who}" / "new/estimates.json"
        if est.exists():
            put(scen, who, json.loads(est.read_text())["mean"]["point_estimate"], unit, "lower")

higher = {"items/s", "%"}
for r in json.loads((out / "queue-rust.json").read_text()):
    put(r["scenario"], r["who"], r["value"], r["unit"], "higher" if r["unit"] in higher else "lower")

# go test -bench: Benchmark<Name>-N  iters  x ns/op  [v unit]...
go_map = {
    "SerialAddGetDone": ("serial_add_get_done", "ns/item"),
    "DedupHit": ("dedup_hit", "ns/op"),
    "Drain100k2Workers": ("drain_100k_2_workers", "items/s"),
    "Drain100k4Workers": ("drain_100k_4_workers", "items/s"),
    "AddStorm": ("add_storm_2_producers", "items/s"),
    "MemoryPerReadyKey": ("memory_per_ready_key", "B/key"),
    "MemoryPerDelayedKey": ("memory_per_delayed_key", "B/key"),
    "AddAfter": ("add_after", "ns/op"),
    "TimerLateness": ("timers_10k_in_100ms_p99_lateness", "ms_p99"),
    "FailureTail": ("failures_10k_max_wait", "s_max_wait"),
    "SpuriousEvents": ("spurious_100_events_next_backoff", "ms_next_backoff"),
    "NewKeyWaitDuringBacklog": ("new_key_p99_wait_during_100k_backlog", "ms_p99"),
    "FairnessSingleKeyPosition": ("fairness_items_before_single_key", "items_before"),
}
for line in (out / "queue-go.txt").read_text().splitlines():
    m = re.match(r"Benchmark(\w+?)(-\d+)?\s+\d+\s+(.*)", line)
    if not m or m.group(1) not in go_map:
        continue
    scen, unit = go_map[m.group(1)]
    fields = m.group(3).split()
    vals = {fields[i + 1]: float(fields[i]) for i in range(0, len(fields) - 1, 2)}
    if m.group(1) == "DedupHit":
        put("dedup_hit_allocations", "client_go", vals.get("allocs/op", 0.0), "allocs/op", "lower")
    if unit in vals:
        put(scen, "client_go", vals[unit], rows.get(scen, {}).get("unit", unit),
            "higher" if unit == "items/s" else "lower")

report = []
for scen, r in rows.items():
    entry = {"scenario": scen, "unit": r["unit"], "better": r["better"]}
    for who in ("ours", "client_go", "kube_runtime"):
        if who in r:
            entry[who] = round(r[who], 4)
    o, g = r.get("ours"), r.get("client_go")
    if o is not None and g is not None and o > 0 and g > 0:
        entry["speedup_vs_client_go"] = round(g / o if r["better"] == "lower" else o / g, 3)
    report.append(entry)
(out / "queue.json").write_text(json.dumps(report, indent=2) + "\n")

def fmt(v):
    return "" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}")
md = ["| scenario | unit | ours | client-go | kube-runtime | vs client-go |", "|---|---|---:|---:|---:|---:|"]
for e in report:
    sp = e.get("speedup_vs_client_go")
    md.append(f"| {e['scenario']} | {e['unit']} ({e['better']} is better) | {fmt(e.get('ours'))} | "
              f"{fmt(e.get('client_go'))} | {fmt(e.get('kube_runtime'))} | {'' if sp is None else f'{sp:.2f}x'} |")
(out / "queue.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "wrote $out/queue.json and $out/queue.md" >&2
