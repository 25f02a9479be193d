"""Turns the rows into BENCHMARKS.md, benchmarks/results.json, benchmarks/results.csv and the chart."""

import csv
import json
import os
import platform
import shlex
import statistics
import subprocess
import time

import chart
import operator_scale


def machine():
    def first(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    libs = os.environ.get("KPROXY_KAFKA_LIBS", "")
    kafka = next((n[len("kafka_2.13-"):-4] for n in sorted(os.listdir(libs)) if n.startswith("kafka_2.13-")), "unknown") \
        if os.path.isdir(libs) else "unknown"
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(), "rustc": first(["rustc", "--version"]), "java": first(["java", "-version"]),
        "kafka": kafka, "valgrind": first(["valgrind", "--version"]), "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def summarize(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["group"], r["case"], r["metric"], r["target"]), []).append(r["value"])
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} for k, v in groups.items()}


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if a >= 0.1 or a == 0 else f"{v:.3g}"


def cell(s):
    if s is None:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def cases(summary, group):
    seen = []
    for (g, c, _, _) in summary:
        if g == group and c not in seen:
            seen.append(c)
    return seen


NOT_MEASURED = "_Not measured in this run._"


def compare_table(summary, group, metrics, a="direct", b="sidecar"):
    lines = [f"| case | figure | {a} | {b} | {b} / {a} |", "| --- | --- | --- | --- | --- |"]
    for c in cases(summary, group):
        for metric, label in metrics:
            sa, sb = summary.get((group, c, metric, a)), summary.get((group, c, metric, b))
            if sa is None and sb is None:
                continue
            ratio = f"{sb['median'] / sa['median']:.3f}" if sa and sb and sa["median"] else "–"
            lines.append(f"| {c} | {label} | {cell(sa)} | {cell(sb)} | {ratio} |")
    return "\n".join(lines) if len(lines) > 2 else NOT_MEASURED


def single_table(summary, group, target="sidecar", metrics=None):
    lines = ["| case | figure | median (min–max) | rounds |", "| --- | --- | --- | --- |"]
    for (g, c, m, t), s in summary.items():
        if g == group and t == target and (metrics is None or m in metrics):
            lines.append(f"| {c} | {m} | {cell(s)} | {s['n']} |")
    return "\n".join(lines) if len(lines) > 2 else NOT_MEASURED


def med(summary, group, case, metric, target):
    s = summary.get((group, case, metric, target))
    return s["median"] if s else None


def targets(summary):
    out = []

    def add(goal, measured, met, how):
        out.append({"target": goal, "measured": measured, "met": met, "how": how})

    ratios = []
    for c in cases(summary, "producer"):
        d, s = med(summary, "producer", c, "mb_per_s", "direct"), med(summary, "producer", c, "mb_per_s", "sidecar")
        if d and s:
            ratios.append((s / d, c))
    if ratios:
        worst = min(ratios)
        one_k = next((r for r, c in ratios if c == "1024B acks=1"), None)
        add("throughput through the sidecar ≥ 97% of direct",
            f"worst {worst[0]:.1%} ({worst[1]}); 1 KiB acks=1: {one_k:.1%}" if one_k else f"worst {worst[0]:.1%}",
            worst[0] >= 0.97, "ProducerPerformance MB/s, median over rounds, every record size and acks")
    fixed = cases(summary, "loadgen_fixed_rate")
    if fixed:
        c = fixed[0]
        d, s = med(summary, "loadgen_fixed_rate", c, "p99_us", "direct"), med(summary, "loadgen_fixed_rate", c,
                                                                                "p99_us", "sidecar")
        if d is not None and s is not None:
            added = (s - d) / 1000
            add("added p99 latency ≤ 0.3 ms at half the direct maximum rate",
                f"{added:+.3f} ms (p99 {d / 1000:.3f} → {s / 1000:.3f} ms)", added <= 0.3,
                f"kproxy-bench-load against the real broker, {c}")
    mc = med(summary, "proxy_alone", "1 KiB x16 (MB/s)", "millicores_per_mb_s", "sidecar")
    if mc is not None:
        e2e = med(summary, "producer", "1024B acks=1", "sidecar_millicores_per_mb_s", "sidecar")
        extra = f"; with the real broker (1 KiB acks=1): {e2e:.2f}" if e2e is not None else ""
        add("≤ 2 millicores per MB/s of produce", f"{mc:.2f}{extra}", mc <= 2.0,
            "sidecar CPU time from /proc/<pid>/stat over MB of record payload, proxy alone, 16 KiB requests")
    per_conn = [(n, med(summary, "memory", f"{n} idle connections", "kib_per_connection", "sidecar"))
                for n in (1000, 10000)]
    per_conn = [(n, v) for n, v in per_conn if v is not None]
    if per_conn:
        worst = max(v for _, v in per_conn)
        add("≤ 16 KiB resident memory per idle client connection",
            ", ".join(f"{v:.1f} KiB at {n:,}" for n, v in per_conn), worst <= 16.0,
            "RSS delta / connections, each connection after an ApiVersions exchange")
    per_core = med(summary, "pinned", "100 B x1", "requests_per_core_s", "kproxy")
    if per_core is not None:
        add("≥ 180,000 requests per sidecar core-second (100 B x1, 4 conns x 16 in flight)", f"{per_core:,.0f}",
            per_core >= 180_000, "kproxy-bench-load against the benchmark responder, the sidecar alone on one core")
        peer = med(summary, "pinned", "100 B x1", "requests_per_core_s", "Kroxylicious")
        if peer:
            add("≥ 2x Kroxylicious per core in the same run (100 B x1)", f"{per_core / peer:.2f}x ({peer:,.0f})",
                per_core >= 2 * peer, "requests per proxy core-second, each proxy alone on core 0, same load")
    mb_core = med(summary, "pinned", "1 KiB x16", "mb_per_core_s", "kproxy")
    if mb_core is not None:
        add("1 KiB x16: MB/s per sidecar core ≥ 1.5x the 600 MB/s before the core rework", f"{mb_core:,.0f} MB/s",
            mb_core >= 900, "payload MB per sidecar CPU-second, the sidecar alone on one core")
    peaks = [(c, med(summary, "memory_budget", c, "peak_rss_kib", "sidecar")) for c in cases(summary, "memory_budget")]
    peaks = [(c, v) for c, v in peaks if v is not None]
    if peaks:
        worst = max(peaks, key=lambda cv: cv[1])
        add("peak RSS under hostile-but-valid load ≤ a 256 MiB budget + 64 MiB", f"worst {worst[1] / 1024:,.0f} MiB "
            f"({worst[0]})", worst[1] <= (256 + 64) * 1024, "RSS sampled every 50 ms, sidecar --memory-budget-bytes 256 MiB")
    start = summary.get(("startup", next(iter(cases(summary, "startup")), ""), "ready_ms", "sidecar"))
    if start:
        add("ready in < 50 ms from process start", f"median {start['median']:.1f} ms (max {start['max']:.1f} ms)",
            start["median"] < 50, "spawn to the first 200 from /readyz")
    c = next(iter(cases(summary, "reload_under_load")), None)
    if c:
        base = summary.get(("reload_under_load", c, "requests_per_s", "no reloads"))
        rel = summary.get(("reload_under_load", c, "requests_per_s", "reload every 250 ms"))
        if base and rel:
            ratio = rel["median"] / base["median"]
            add("a reload under load costs no measurable throughput",
                f"{ratio:.1%} of the throughput without reloads (no-reload spread "
                f"{base['min'] / base['median']:.1%}–{base['max'] / base['median']:.1%})",
                ratio >= 0.98 or rel["median"] >= base["min"], "requests/s with a reload every 250 ms vs none")
    operator_scale.targets(summary, add)
    return out


def command_shape(cmd):
    """What makes a command a different kind of run: the tool, its class or mode, and its pacing."""
    tool = os.path.basename(str(cmd[0]))
    if tool == "java":
        cls = str(cmd[4]).rsplit(".", 1)[-1]
        return (tool, cls, "--throughput" in cmd and str(cmd[cmd.index("--throughput") + 1]) != "-1")
    if tool in ("valgrind", "strace"):
        return (tool,)
    mode = str(cmd[1]) if len(cmd) > 1 and not str(cmd[1]).startswith("-") else ""
    return (tool, mode, "--rate" in cmd, "--requests" in cmd)


def commands_section(commands, root, work):
    shapes, seen = [], set()
    for cmd in commands:
        key = command_shape(cmd)
        if key in seen:
            continue
        seen.add(key)
        text = " ".join(shlex.quote(str(c)) for c in cmd)
        shapes.append(text.replace(f"{work}/", "$WORK/").replace(f"{root}/", ""))
    return "\n".join(f"    {s}" for s in shapes)


def write(out_dir, root, work, rows, notes, profile, commands, plan_desc, md_path, info=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    info = info or machine()
    tgt = targets(summary)
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["group", "case", "target", "round", "metric", "value", "unit"])
        w.writeheader()
        w.writerows(rows)
    (out_dir / "results.json").write_text(json.dumps({
        "machine": info, "plan": plan_desc, "targets": tgt, "notes": notes,
        "summary": [{"group": g, "case": c, "metric": m, "target": t, **s} for (g, c, m, t), s in summary.items()],
        "rows": rows, "profile": [{"instructions": i, "percent": p, "function": f} for i, p, f in profile],
        "work": str(work), "commands": [[str(c) for c in cmd] for cmd in commands],
    }, indent=1) + "\n")

    tp, p99 = {}, {}
    for c in cases(summary, "producer"):
        for t in ("direct", "sidecar"):
            label = c.replace("B acks=", " B acks=")
            for metric, dest in (("mb_per_s", tp), ("p99_ms", p99)):
                s = summary.get(("producer", c, metric, t))
                if s:
                    dest[(label, t)] = (s["median"], s["min"], s["max"])
    chart_labels = list(dict.fromkeys(label for (label, _) in tp))
    chart.write(out_dir / "producer.svg", chart_labels, tp, p99)

    md = [
        "# kproxy benchmarks",
        "",
        "What the sidecar costs, measured side by side with going direct, in the same run and on the same machine.",
        f"Generated by `make bench` ({plan_desc['mode']}: {plan_desc['rounds']} interleaved round(s) per figure) "
        f"on {info['date_utc']} in {plan_desc['seconds'] // 60} min {plan_desc['seconds'] % 60} s"
        f"{' (commit ' + plan_desc['commit'] + ')' if plan_desc.get('commit') else ''}. "
        "Raw numbers: [benchmarks/results.csv](benchmarks/results.csv), [benchmarks/results.json](benchmarks/results.json).",
        "",
    ] + ([
        "The figures come from more than one run: " + "; ".join(
            f"{', '.join(r['groups'])} on {r['date_utc']}" + (f" (commit {r['commit']})" if r.get("commit") else "")
            for r in plan_desc["runs"]) + ".",
        "",
    ] if len(plan_desc.get("runs", [])) > 1 else []) + ([
        "**This is a quick smoke run (one short round of each figure): it shows that the suite runs, not what",
        "kproxy costs. Run `make bench` on a quiet machine for the figures to publish.**",
        "",
    ] if plan_desc["mode"] == "quick" else []) + [
        "Figures are the median over rounds with the spread (min–max) in brackets. Rounds interleave direct and",
        "sidecar runs so drift on a shared machine hits both. MB = 2^20 bytes of record payload, as Kafka's tools",
        "count. Targets are goals for the benchmark, never test assertions.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
    ] + [f"| {k} | {v} |" for k, v in info.items()] + [
        "",
        "## Targets",
        "",
        "| target | measured | met | how |",
        "| --- | --- | --- | --- |",
    ] + [f"| {t['target']} | {t['measured']} | {'met' if t['met'] else '**missed**'} | {t['how']} |" for t in tgt] + [
        "",
        "## Producer, Kafka's ProducerPerformance against the real broker",
        "",
        "![throughput and p99 by record size, direct vs sidecar](benchmarks/producer.svg)",
        "",
        compare_table(summary, "producer", [("mb_per_s", "MB/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                                            ("max_ms", "max ms")]),
        "",
        "Sidecar CPU while forwarding these runs (millicores per MB/s of payload, the broker on the same cores):",
        "",
        single_table(summary, "producer", metrics={"sidecar_millicores_per_mb_s"}),
        "",
        "### Fixed rate at half the direct maximum",
        "",
        "ProducerPerformance reports whole milliseconds, so the same comparison is also made with",
        "`kproxy-bench-load` (microsecond HDR histogram, one 1 KiB record per request, 4 connections) against the",
        "real broker: first its maximum rate, then half of the direct maximum.",
        "",
        compare_table(summary, "producer_fixed_rate", [("records_per_s", "records/s"), ("p50_ms", "p50 ms"),
                                                       ("p99_ms", "p99 ms"), ("p999_ms", "p99.9 ms"),
                                                       ("max_ms", "max ms")]),
        "",
        compare_table(summary, "loadgen_max", [("requests_per_s", "requests/s"), ("p50_us", "p50 µs"),
                                               ("p99_us", "p99 µs")]),
        "",
        compare_table(summary, "loadgen_fixed_rate", [("requests_per_s", "requests/s"), ("p50_us", "p50 µs"),
                                                      ("p99_us", "p99 µs"), ("p999_us", "p99.9 µs"),
                                                      ("max_us", "max µs")]),
        "",
        "## Consumer, Kafka's ConsumerPerformance against the real broker",
        "",
        compare_table(summary, "consumer", [("mb_per_s", "MB/s"), ("fetch_mb_per_s", "fetch MB/s"),
                                            ("records_per_s", "records/s")]),
        "",
        "## The proxy core, side by side with Kroxylicious",
        "",
        "kproxy and Kroxylicious 0.12.0 (Java 17, Netty; a pass-through virtual cluster with no filters, started by",
        "`bench/kroxylicious/src/Launcher.java`) in turn, each pinned alone to core 0 with `taskset`, against the",
        "same benchmark responder and the same load (both on core 1): 4 connections x 16 requests in flight. CPU per",
        "request is the proxy's own (utime + stime from `/proc/<pid>/stat`); context switches are summed over the",
        "proxy's threads (`/proc/<pid>/task/*/status`). Kroxylicious gets a 5 s warm-up run before each measured one",
        "(its JIT).",
        "",
        compare_table(summary, "pinned", [("requests_per_s", "requests/s"), ("mb_per_s", "MB/s"),
                                          ("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
                                          ("requests_per_core_s", "requests per core-s"),
                                          ("mb_per_core_s", "MB per core-s"),
                                          ("cpu_us_per_request", "CPU µs per request"),
                                          ("ctx_switches_per_request", "context switches per request"),
                                          ("cores_used", "cores used"), ("rss_kib", "RSS KiB")],
                      a="Kroxylicious", b="kproxy"),
        "",
    ]
    before_after = root / "benchmarks" / "core-before-after.md"
    if before_after.exists():
        md += [before_after.read_text().rstrip(), ""]
    md += [
        "## Memory budget under hostile-but-valid load",
        "",
        "The sidecar started with `--memory-budget-bytes` 256 MiB against the benchmark responder: (a) one client",
        "pipelining 99 MiB produce requests (100 MiB scaled to stay under `--max-frame-bytes`, 100 MiB by default),",
        "(b) eight consumers fetching with max_bytes 50 MiB from a responder",
        "that answers up to 50 MiB, (c) 10,000 idle connections, (d) eight clients with 32 pipelined 4 MiB produce",
        "requests each while the responder is stopped (SIGSTOP) for 3 s, then resumed. RSS sampled every 50 ms;",
        "`paused_s` is `kproxy_client_paused_seconds_total` (client time spent not read because the budget had no",
        "room); `answered_ratio` is responses over requests sent (1 = nothing lost).",
        "",
        single_table(summary, "memory_budget"),
        "",
        "## The proxy alone",
        "",
        "Against `kproxy-bench-upstream`, a minimal Kafka responder used only by benchmarks (it answers",
        "ApiVersions, Metadata, Produce and Fetch and stores nothing), so no JVM competes for the cores and the",
        "figure is the sidecar's own ceiling. \"direct\" is the load generator against the responder itself.",
        "Per-core figures divide by the sidecar's own CPU time (utime + stime from `/proc/<pid>/stat`); CPU",
        "seconds per GB and millicores per MB/s are the same ratio in different units.",
        "",
        compare_table(summary, "proxy_alone", [("requests_per_s", "requests/s"), ("mb_per_s", "MB/s"),
                                               ("p50_us", "p50 µs"), ("p99_us", "p99 µs")]),
        "",
        single_table(summary, "proxy_alone", metrics={
            "requests_per_core_s", "mb_per_core_s", "cpu_s_per_gb", "millicores_per_mb_s", "cores_used",
            "rss_under_load_kib", "buffer_pool_max_bytes"}),
        "",
        "### Instructions per request (callgrind)",
        "",
        "The sidecar under `valgrind --tool=callgrind` forwarding a fixed number of requests (one connection, 8 in",
        "flight); the difference between a short and a long run over the difference in requests, so start-up and",
        "shutdown cancel out. Repeatable on a noisy machine. System calls per request come from the same two",
        "runs under `strace -f -c` (the kernel's share of the cost, which callgrind does not see).",
        "",
        single_table(summary, "instructions"),
        "",
    ]
    if profile:
        md += ["Where the instructions go (self cost, 100 B requests, long run):", "",
               "| instructions | % | function |", "| --- | --- | --- |"]
        md += [f"| {i:,} | {p} | `{f[:110]}` |" for i, p, f in profile]
        md.append("")
    md += [
        "## Memory",
        "",
        "Resident memory of a fresh sidecar, idle and then holding N idle client connections (each opened and",
        "past its ApiVersions exchange). Under load and the buffer pool's high-water mark are in the proxy-alone",
        "table above (`rss_under_load_kib`, `buffer_pool_max_bytes`, sampled every 200 ms).",
        "",
        single_table(summary, "memory"),
        "",
        "## Start-up",
        "",
        single_table(summary, "startup"),
        "",
        "## Reload",
        "",
        "A kubelet-style `..data` symlink swap of the mounted config directory, timed until `/metrics` shows the",
        "next `kproxy_config_generation`; and requests/s through the sidecar with a reload every 250 ms versus none",
        "(the worst 100 ms bucket right after a reload over the run's median bucket).",
        "",
        single_table(summary, "reload"),
        "",
        compare_table(summary, "reload_under_load", [("requests_per_s", "requests/s"),
                                                      ("worst_bucket_near_reload_ratio", "worst bucket / median")],
                      a="no reloads", b="reload every 250 ms"),
        "",
    ]
    md += operator_scale.section(summary, single_table)
    # Figures measured elsewhere (the e2e tests on the test node), kept across regenerations.
    extra = root / "benchmarks" / "propagation.md"
    if extra.exists():
        md += [extra.read_text().rstrip(), ""]
    if notes:
        md += ["## Notes from this run", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Commands", "", "`make bench` (= `scripts/bench.sh`; `BENCH_QUICK=1` for one short round) ran these,",
           "and more of the same shapes with other sizes and targets:", "", commands_section(commands, root, work), "",
           "`$WORK` is a temporary directory; ports are picked free at run time."]
    md_path.write_text("\n".join(md))
    return tgt
