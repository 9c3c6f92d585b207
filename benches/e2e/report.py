#!/usr/bin/env python3
"""Turns the load generator's results (benches/run-e2e-bench.sh) into e2e.json, e2e.md and plots.

Usage: report.py RUNS_DIR OUT_DIR
"""
import glob
import json
import os
import subprocess
import sys

runs_dir, out = sys.argv[1], sys.argv[2]
MODES = ["baseline", "queue", "legacy", "sharded", "failover"]
TARGET_RATIO = 0.8
TARGET_RSS_MIB = 100
# The legacy engine against the queue engine of the same run (TARGETS.md).
LEGACY_FACTOR = 1.5
# Sharded replicas: peak RSS of each against the single queue-engine replica (issue 16).
SHARDED_RSS_FACTOR = 0.45


def load(path):
    with open(path) as f:
        return json.load(f)


# Queueing with Kueue (issue 27): runners that end, followed until every session has ended;
# finishing is the same work without Kueue.
QUEUE_MODES = ["finishing", "kueue", "kueue-per-project"]
# Kueue's own scheduler performance test (its repository): 15,000 workloads in ~351 s.
KUEUE_BASELINE_PER_S = 15000 / 351

results = {}
queueing = {}
for path in sorted(glob.glob(os.path.join(runs_dir, "*.json"))):
    name = os.path.basename(path)[:-5]
    mode, _, n = name.rpartition("-")
    if mode in MODES:
        results.setdefault(int(n), {})[mode] = load(path)
    elif mode in QUEUE_MODES:
        queueing.setdefault(int(n), {})[mode] = load(path)

# Start-up runs by engine: startup-<engine>-<n>.json (startup-<n>.json: the queue engine, as
# written before both engines were measured).
startups = {}
for path in sorted(glob.glob(os.path.join(runs_dir, "startup-*.json"))):
    parts = os.path.basename(path)[:-5].split("-")
    engine = parts[1] if len(parts) == 3 else "queue"
    startups[engine] = load(path)
startup = startups.get("queue")

# The #1299 cluster (E2E_SCALE=1, make bench-scale): scale-<engine>.json.
scales = {}
for path in sorted(glob.glob(os.path.join(runs_dir, "scale-*.json"))):
    scales[os.path.basename(path)[:-5].split("-", 1)[1]] = load(path)
# Restart peak on that cluster: 1/8 of the 512 MiB limit that killed the original (issue 26).
TARGET_RESTART_RSS_MIB = 64


def fmt(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:  # NaN
        return "–"
    return f"{x:.{digits}f}"


report = {"runs": {}, "startup": None, "startup_by_engine": {}, "scale": scales, "targets": {}}
for engine, run in scales.items():
    peak = run["restart"]["process"].get("hwm_rss_mib")
    report["targets"][f"memory-restart-1299-{engine}"] = {
        "peak_rss_mib": peak, "target_mib": TARGET_RESTART_RSS_MIB,
        "met": peak is not None and peak <= TARGET_RESTART_RSS_MIB}
    first = run["first_start"]["process"].get("hwm_rss_mib")
    report["targets"][f"memory-first-start-1299-{engine}"] = {
        "peak_rss_mib": first, "target_mib": TARGET_RESTART_RSS_MIB,
        "met": first is not None and first <= TARGET_RESTART_RSS_MIB}
    ready = run["restart"]["ready_s"]
    report["targets"][f"restart-ready-1299-{engine}"] = {"ready_s": ready, "target_s": 2, "met": ready < 2}
    later = run["restart"].get("after_ready_to_running_s")
    report["targets"][f"restart-new-session-1299-{engine}"] = {
        "to_running_s": later, "target_s": 1, "met": later is not None and later < 1}
rows = []
for n in sorted(results):
    by_mode = results[n]
    base = by_mode.get("baseline", {}).get("summary", {}).get("running_per_s")
    for mode in MODES:
        r = by_mode.get(mode)
        if not r:
            continue
        s = r["summary"]
        rate = s.get("running_per_s")
        ratio = rate / base if (rate and base) else None
        proc = r.get("process", {})
        # Several replicas: the largest peak of any of them (RSS is per replica).
        peaks = [proc.get("peak_rss_mib") or 0] + [p.get("peak_rss_mib") or 0 for p in r.get("other_replicas", [])]
        cpu = [proc.get("cpu_seconds") or 0] + [p.get("cpu_seconds") or 0 for p in r.get("other_replicas", [])]
        entry = {
            "sessions": n,
            "mode": mode,
            "complete": r.get("complete"),
            "reached_running": s.get("reached_running"),
            "all_running_s": s.get("all_running_s"),
            "running_per_s": rate,
            "ratio_vs_baseline": ratio,
            "creates_done_s": r.get("creates_done_s"),
            "to_creating": s.get("to_creating"),
            "to_running": s.get("to_running"),
            "replicas": r.get("replicas", 1),
            "peak_rss_mib": max(peaks) if proc else None,
            "final_rss_mib": proc.get("final_rss_mib"),
            "cpu_seconds": sum(cpu) if proc else None,
            "failover": r.get("failover"),
            "api_requests": r.get("api_requests"),
            "api_requests_per_session": (r.get("api_requests") or 0) / n if r.get("api_requests") == r.get("api_requests") else None,
            "operator_ready_s": r.get("operator_ready_s"),
        }
        report["runs"][f"{mode}-{n}"] = entry
        rows.append(entry)

report["queueing"] = {}
queue_rows = []
for n in sorted(queueing):
    plain = queueing[n].get("finishing", {}).get("summary", {}).get("terminal_per_s")
    for mode in QUEUE_MODES:
        r = queueing[n].get(mode)
        if not r:
            continue
        s, proc = r["summary"], r.get("process", {})
        rate = s.get("terminal_per_s")
        requests = r.get("api_requests")
        entry = {
            "sessions": n,
            "mode": mode,
            "complete": r.get("complete"),
            "all_ended_s": s.get("all_terminal_s"),
            "sessions_per_s": rate,
            "ratio_vs_finishing": rate / plain if (rate and plain) else None,
            "to_terminal": s.get("to_terminal"),
            "terminal_phases": s.get("terminal_phases"),
            "kueue": r.get("kueue"),
            "peak_rss_mib": proc.get("peak_rss_mib"),
            "cpu_seconds": proc.get("cpu_seconds"),
            "api_requests": requests,
            "api_requests_per_session": requests / n if isinstance(requests, (int, float)) and requests == requests else None,
        }
        report["queueing"][f"{mode}-{n}"] = entry
        queue_rows.append(entry)

for engine, run in startups.items():
    entry = {k: v for k, v in run.items() if k != "process"}
    entry["peak_rss_mib"] = run["process"]["peak_rss_mib"]
    entry["cpu_seconds"] = run["process"]["cpu_seconds"]
    report["startup_by_engine"][engine] = entry
report["startup"] = report["startup_by_engine"].get("queue")

# Targets.
for entry in rows:
    if entry["mode"] == "queue" and entry["ratio_vs_baseline"] is not None:
        report["targets"][f"throughput-{entry['sessions']}"] = {
            "ratio": entry["ratio_vs_baseline"], "target": TARGET_RATIO,
            "met": entry["ratio_vs_baseline"] >= TARGET_RATIO}
rss_runs = [e for e in rows if e["mode"] == "queue" and e["peak_rss_mib"]]
if startup:
    # The target is the memory with every session of the backlog Running (each with its
    # children cached); a run that ended before that did not measure it.
    drained = startup.get("backlog_running") == startup["backlog"]
    report["targets"]["memory-startup"] = {
        "sessions": startup["backlog"], "running": startup.get("backlog_running"),
        "peak_rss_mib": startup["process"]["peak_rss_mib"], "target_mib": TARGET_RSS_MIB,
        "met": (startup["process"]["peak_rss_mib"] <= TARGET_RSS_MIB) if drained else None}
for e in rss_runs:
    report["targets"][f"memory-{e['sessions']}"] = {
        "peak_rss_mib": e["peak_rss_mib"], "target_mib": TARGET_RSS_MIB,
        "met": e["peak_rss_mib"] <= TARGET_RSS_MIB}

# The legacy engine: all Running, no collapse (its rate at the largest size at least its rate at
# the smallest), API requests per session and peak RSS within LEGACY_FACTOR of the queue's.
legacy = {e["sessions"]: e for e in rows if e["mode"] == "legacy"}
queue = {e["sessions"]: e for e in rows if e["mode"] == "queue"}
for n, e in sorted(legacy.items()):
    report["targets"][f"legacy-all-running-{n}"] = {
        "reached_running": e["reached_running"], "sessions": n, "met": bool(e["complete"])}
    q = queue.get(n)
    if not q:
        continue
    if e["api_requests_per_session"] and q["api_requests_per_session"]:
        factor = e["api_requests_per_session"] / q["api_requests_per_session"]
        report["targets"][f"legacy-requests-{n}"] = {
            "legacy": e["api_requests_per_session"], "queue": q["api_requests_per_session"],
            "factor": factor, "target": LEGACY_FACTOR, "met": factor <= LEGACY_FACTOR}
    if e["peak_rss_mib"] and q["peak_rss_mib"]:
        factor = e["peak_rss_mib"] / q["peak_rss_mib"]
        report["targets"][f"legacy-rss-{n}"] = {
            "legacy_mib": e["peak_rss_mib"], "queue_mib": q["peak_rss_mib"],
            "factor": factor, "target": LEGACY_FACTOR, "met": factor <= LEGACY_FACTOR}
if len(legacy) >= 2:
    small, large = min(legacy), max(legacy)
    rate_small, rate_large = legacy[small]["running_per_s"], legacy[large]["running_per_s"]
    if rate_small and rate_large:
        report["targets"][f"legacy-no-collapse-{large}-vs-{small}"] = {
            f"rate_{small}": rate_small, f"rate_{large}": rate_large,
            "met": bool(legacy[large]["complete"]) and rate_large >= rate_small}

# Sharding: rate against the single queue-engine replica of the same size, peak RSS per replica
# (target <= SHARDED_RSS_FACTOR x), API requests per session unchanged (within 10 %).
for e in rows:
    if e["mode"] != "sharded":
        continue
    n, q = e["sessions"], queue.get(e["sessions"])
    if not q:
        continue
    if e["running_per_s"] and q["running_per_s"]:
        report["targets"][f"sharded-rate-{n}"] = {
            "sharded": e["running_per_s"], "queue": q["running_per_s"],
            "factor": e["running_per_s"] / q["running_per_s"], "met": e["running_per_s"] >= q["running_per_s"]}
    if e["peak_rss_mib"] and q["peak_rss_mib"]:
        factor = e["peak_rss_mib"] / q["peak_rss_mib"]
        report["targets"][f"sharded-rss-per-replica-{n}"] = {
            "sharded_mib": e["peak_rss_mib"], "queue_mib": q["peak_rss_mib"],
            "factor": factor, "target": SHARDED_RSS_FACTOR, "met": factor <= SHARDED_RSS_FACTOR}
    if e["api_requests_per_session"] and q["api_requests_per_session"]:
        factor = e["api_requests_per_session"] / q["api_requests_per_session"]
        report["targets"][f"sharded-requests-{n}"] = {
            "sharded": e["api_requests_per_session"], "queue": q["api_requests_per_session"],
            "factor": factor, "met": factor <= 1.1}

with open(os.path.join(out, "e2e.json"), "w") as f:
    json.dump(report, f, indent=2)

# Plots: latency to Creating / Running against creation time, per size, one series per mode.
plots = []
for n in sorted(results):
    data_files = []
    for mode in MODES:
        r = results[n].get(mode)
        if not r:
            continue
        path = os.path.join(runs_dir, f"plot-{mode}-{n}.dat")
        with open(path, "w") as f:
            for name, created, creating, running, terminal, phase in r["per_session"]:
                if created is None:
                    continue
                c = creating - created if creating is not None else float("nan")
                ru = running - created if running is not None else float("nan")
                f.write(f"{created:.3f} {c:.3f} {ru:.3f}\n")
        data_files.append((mode, path))
    png = f"e2e-latency-{n}.png"
    series = []
    for mode, path in data_files:
        series.append(f"'{path}' using 1:3 with points pt 7 ps 0.3 title '{mode}: to Running'")
        series.append(f"'{path}' using 1:2 with points pt 6 ps 0.3 title '{mode}: to Creating'")
    script = f"""
set terminal pngcairo size 1000,600
set output '{os.path.join(out, png)}'
set title 'Phase latency of {n} sessions created at once'
set xlabel 'session created at (s since the burst began)'
set ylabel 'latency (s)'
set key left top
set datafile missing 'nan'
plot {', '.join(series)}
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)
    plots.append(png)

    # Sessions Creating / Running over time (the throughput curve).
    curves = []
    for mode in MODES:
        r = results[n].get(mode)
        if not r:
            continue
        for column, phase in ((2, "Creating"), (3, "Running")):
            times = sorted(row[column] for row in r["per_session"] if row[column] is not None)
            path = os.path.join(runs_dir, f"curve-{mode}-{n}-{phase}.dat")
            with open(path, "w") as f:
                for i, t in enumerate(times, 1):
                    f.write(f"{t:.3f} {i}\n")
            curves.append(f"'{path}' using 1:2 with lines title '{mode}: {phase}'")
    png = f"e2e-progress-{n}.png"
    script = f"""
set terminal pngcairo size 1000,600
set output '{os.path.join(out, png)}'
set title 'Sessions reaching Creating / Running over time, {n} created at once'
set xlabel 's since the burst began'
set ylabel 'sessions'
set key left top
plot {', '.join(curves)}
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)
    plots.append(png)

    # Operator RSS over time.
    rss_series = []
    for mode in ("queue", "legacy"):
        r = results[n].get(mode)
        if not r:
            continue
        path = os.path.join(runs_dir, f"rss-{mode}-{n}.dat")
        with open(path, "w") as f:
            for t, rss, cpu in r["process"]["samples"]:
                f.write(f"{t:.3f} {rss:.2f} {cpu:.3f}\n")
        rss_series.append(f"'{path}' using 1:2 with lines title '{mode} RSS (MiB)'")
    if rss_series:
        png = f"e2e-rss-{n}.png"
        script = f"""
set terminal pngcairo size 1000,400
set output '{os.path.join(out, png)}'
set title 'Operator RSS, {n} sessions'
set xlabel 's'
set ylabel 'MiB'
plot {', '.join(rss_series)}
"""
        subprocess.run(["gnuplot"], input=script.encode(), check=True)
        plots.append(png)

# Markdown.
namespace_counts = sorted({r.get("namespaces") for by_mode in results.values() for r in by_mode.values()} - {None})
namespace_text = "/".join(str(c) for c in namespace_counts) or "10"
lines = [
    "# End-to-end bench (make bench-e2e)",
    "",
    "Each row is one run on a fresh local control plane (etcd, kube-apiserver, controller-manager,",
    "scheduler, kwok with 3 fake nodes) on this machine. N sessions are created at once (32 in",
    f"flight) across {namespace_text} managed namespaces; runners hang so Running is observable. The baseline is a",
    "bare client doing the operator's API writes per session (ServiceAccount, Role, RoleBinding,",
    "TokenRequest, Secret, Job, status Creating + Event, annotation patch; status Running + Event",
    "when the pod runs) with 10 concurrent reconciles and no operator. *rate* = sessions that",
    "reached Running / time from the first create to the last Running; *ratio* = rate / baseline",
    "rate (target ≥ 0.80). API requests are the API server's own count for the actor's identity",
    "(FlowSchema dispatch counter); RSS and CPU are the operator process's (for the baseline, the",
    "load generator process, which includes creating the sessions).",
    "*sharded*: replicas with `--sharding` (namespaces hashed into buckets shared among them); RSS",
    "is the largest peak of any replica, CPU their sum. *failover*: the same, one replica killed",
    "with -9 mid-burst (figures below the table).",
    "",
    "| sessions | engine | all Running (s) | rate (/s) | ratio | p50 / p99 to Running (s) | peak RSS (MiB) | CPU (s) | API requests (per session) |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
]
for e in rows:
    tr = e["to_running"] or {}
    reqs = e["api_requests"]
    per = e["api_requests_per_session"]
    lines.append(
        f"| {e['sessions']} | {e['mode']}{'' if e['complete'] else ' (incomplete)'} | {fmt(e['all_running_s'])} | "
        f"{fmt(e['running_per_s'])} | {fmt(e['ratio_vs_baseline'], 2)} | "
        f"{fmt(tr.get('p50'))} / {fmt(tr.get('p99'))} | {fmt(e['peak_rss_mib'])} | "
        f"{fmt(e['cpu_seconds'])} | {fmt(reqs, 0)} ({fmt(per)}) |")
for e in rows:
    f = e.get("failover")
    if not f:
        continue
    lines += [
        "",
        f"## Failover, {e['sessions']} sessions, {e['replicas']} sharded replicas",
        "",
        f"- the first replica killed (-9) at {fmt(f.get('killed_at_s'))} s; it owned "
        f"{f.get('victim_namespaces')} of the namespaces",
        f"- its sessions stood still for **{fmt(f.get('victim_stall_s'))} s** (until another replica "
        "took its buckets over: the member Lease's expiry, then the handover)",
        f"- the other replicas' longest time without a phase change meanwhile: "
        f"**{fmt(f.get('others_longest_gap_s'), 2)} s** (just before the kill, over as long a window: "
        f"{fmt(f.get('others_longest_gap_before_s'), 2)} s)",
    ]
for engine, run in sorted(startups.items(), key=lambda kv: MODES.index(kv[0]) if kv[0] in MODES else 9):
    complete = "" if run.get("complete") else " (the run ended before the backlog drained)"
    lines += [
        "",
        f"## Start-up with {run['backlog']} existing sessions, {engine} engine (never reconciled: a real backlog)",
        "",
        f"- ready (`/readyz` 200, every cache synced) after **{fmt(run['ready_s'], 2)} s**",
        f"- backlog: {run['backlog_running']}/{run['backlog']} Running, the last after "
        f"{fmt(run['backlog_all_running_s'])} s{complete}",
        f"- peak RSS {fmt(run['process']['peak_rss_mib'])} MiB, CPU {fmt(run['process']['cpu_seconds'])} s",
        "- new sessions created after ready, while the backlog drains (time to Running):",
    ]
    for p in run["probes"]:
        lines.append(f"  - {p['session']} created at {fmt(p['created_s'])} s: {fmt(p['to_running_s'], 2)} s")
if queue_rows:
    lines += [
        "",
        "## Queueing with Kueue",
        "",
        "Runners succeed 1 s after they start; each run is followed until every session has ended.",
        "*kueue*: the cluster runs Kueue, the operator `--kueue`, every namespace's runners queue in",
        "one ClusterQueue admitting *quota* at once (BestEffortFIFO); *kueue-per-project*: a",
        "ClusterQueue per namespace with an equal share of *quota*, all in one cohort; *finishing*:",
        "the same work without Kueue. *admission*: from when a watch first saw a session's Workload to when it",
        "first saw it `Admitted` (the wait for quota included); *admitted/s*: admissions from the",
        f"first Workload to the last admission (Kueue's own scheduler perf test: {KUEUE_BASELINE_PER_S:.0f}/s).",
        "",
        "| sessions | mode | all ended (s) | sessions/s | vs finishing | p50 / p99 to end (s) | quota | admission p50 / p99 (s) | admitted/s | evicted | peak RSS (MiB) | CPU (s) | API requests (per session) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in queue_rows:
        t, k = e["to_terminal"] or {}, e["kueue"] or {}
        a = k.get("admission_s") or {}
        lines.append(
            f"| {e['sessions']} | {e['mode']}{'' if e['complete'] else ' (incomplete)'} | "
            f"{fmt(e['all_ended_s'])} | {fmt(e['sessions_per_s'])} | {fmt(e['ratio_vs_finishing'], 2)} | "
            f"{fmt(t.get('p50'))} / {fmt(t.get('p99'))} | {k.get('quota', '–')} | "
            f"{fmt(a.get('p50'), 2)} / {fmt(a.get('p99'), 2)} | {fmt(k.get('admitted_per_s'))} | "
            f"{k.get('evicted', '–')} | {fmt(e['peak_rss_mib'])} | {fmt(e['cpu_seconds'])} | "
            f"{fmt(e['api_requests'], 0)} ({fmt(e['api_requests_per_session'])}) |")
if scales:
    any_run = next(iter(scales.values()))
    lines += [
        "",
        "## The cluster that made the original run out of memory (ambient-code/platform #1299)",
        "",
        f"{any_run['managed_namespaces']} managed and {any_run['unmanaged_namespaces']} other namespaces, "
        f"{any_run['finished_sessions']} finished sessions (terminal status), {any_run['running_sessions']} "
        "sessions whose runners run. The operator starts, every runner comes up, it is stopped (SIGTERM) "
        "and started again. Peaks are the kernel's high-water mark (`VmHWM`); *steady* is the RSS at "
        "the end of the restart's window; the restart's API requests are counted over that window "
        "(from the restart to its end), which include the two new sessions: one created as the "
        "restart begins (it is in the restarted operator's first list, behind the start-up "
        "backlog), one created once the operator is ready (a fresh event).",
        "",
        "| engine | first start: peak (MiB) | restart: peak (MiB) | restart: steady (MiB) | ready (s) | new session to Running: created once ready / as the restart began (s) | API requests (window s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, run in sorted(scales.items()):
        first, again = run["first_start"], run["restart"]
        lines.append(
            f"| {engine} | {fmt(first['process'].get('hwm_rss_mib'))} | "
            f"{fmt(again['process'].get('hwm_rss_mib'))} | {fmt(again['process']['final_rss_mib'])} | "
            f"{fmt(again['ready_s'], 2)} | {fmt(again.get('after_ready_to_running_s'), 2)} / "
            f"{fmt(again.get('probe_to_running_s'), 2)} | "
            f"{fmt(again.get('api_requests'), 0)} ({fmt(again.get('window_s'), 0)}) |")
lines += ["", "## Targets", ""]
for k, v in report["targets"].items():
    verdict = "NOT MEASURED" if v["met"] is None else ("met" if v["met"] else "MISSED")
    lines.append(f"- {k}: {verdict} ({json.dumps({a: b for a, b in v.items() if a != 'met'})})")
lines += [""] + [f"![{p}]({p})" for p in plots]
with open(os.path.join(out, "e2e.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
