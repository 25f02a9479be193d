"""kproxy's benchmark suite (run by scripts/bench.sh = `make bench`): direct vs through the sidecar.

Expects release binaries in target/release and the environment of `.cache/env.sh` (KPROXY_KAFKA_EAST,
KPROXY_KAFKA_LIBS). BENCH_QUICK=1 runs one short round of everything; BENCH_ONLY=group,group runs a subset and
keeps the other groups' figures from the previous results.json (BENCH_MERGE=0: write only this run's).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import costs
import merge
import operator_scale
import peers
import report
import suites
from procs import COMMANDS, ROOT, Upstream, log, reachable

# Kafka's tools first: the longest group and the headline figures; the rest are short.
GROUPS = ["kafka", "side_by_side", "proxy_alone", "memory_budget", "memory", "startup", "reload", "instructions",
          "operator_scale"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""))
    ap.add_argument("--out", default=str(ROOT / "benchmarks"))
    ap.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite BENCHMARKS.md and the chart from <out>/results.json without running anything")
    args = ap.parse_args()
    if args.report_only:
        return rewrite_report(Path(args.out), Path(args.markdown))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 25000:
        log(f"open-file limit is {hard}: 10,000 idle connections need about 2 x 10,000 descriptors")

    plan = suites.Plan(args.quick)
    only = [g for g in args.only.split(",") if g] or GROUPS
    results = suites.Results()
    work = Path(tempfile.mkdtemp(prefix="kproxy-bench-"))
    broker = os.environ.get("KPROXY_KAFKA_EAST")
    started = time.time()
    upstream = Upstream().start()
    try:
        budget = float(os.environ.get("BENCH_BUDGET_S", "1200"))
        for group in only:
            t0 = time.time()
            if t0 - started > budget:
                results.note(f"{group} skipped: the suite passed its time budget of {budget:.0f} s (BENCH_BUDGET_S)")
                continue
            log(f"== {group}")
            try:
                if group == "kafka":
                    if not broker or not os.environ.get("KPROXY_KAFKA_LIBS"):
                        results.note("KPROXY_KAFKA_EAST / KPROXY_KAFKA_LIBS not set: Kafka tool figures skipped")
                        continue
                    if not reachable(broker, 120):
                        results.note(f"kafka failed: the broker {broker} did not accept connections for 120 s")
                        continue
                    suites.kafka_tools(results, plan, work, broker)
                elif group == "side_by_side":
                    peers.side_by_side(results, plan, work)
                elif group == "memory_budget":
                    peers.memory_budget(results, plan, work)
                elif group == "proxy_alone":
                    suites.proxy_alone(results, plan, work, upstream)
                elif group == "memory":
                    suites.memory(results, plan, work, upstream)
                elif group == "startup":
                    if broker and reachable(broker, 30):
                        suites.startup(results, plan, work, broker, "real broker")
                    else:
                        suites.startup(results, plan, work, upstream.addr, "benchmark responder")
                elif group == "reload":
                    suites.reload(results, plan, work, upstream)
                elif group == "instructions":
                    costs.instructions(results, plan, work, upstream)
                elif group == "operator_scale":
                    operator_scale.run(results, plan, work)
                else:
                    raise SystemExit(f"unknown group {group}; known: {', '.join(GROUPS)}")
            except Exception as e:  # one broken group must not lose the others' figures
                results.note(f"{group} failed: {type(e).__name__}: {e}")
            log(f"== {group} took {time.time() - t0:.0f} s")
    finally:
        upstream.stop()
    plan_desc = {"mode": "quick" if plan.quick else "full", "rounds": plan.rounds, "groups": only,
                 "seconds": round(time.time() - started), "commit": commit()}
    rows, notes, profile, commands = results.rows, results.notes, results.profile, COMMANDS
    old = merge.earlier(Path(args.out)) if set(only) != set(GROUPS) and os.environ.get("BENCH_MERGE") != "0" else None
    info = report.machine()
    plan_desc["runs"] = [{"groups": only, "date_utc": info["date_utc"], "commit": plan_desc["commit"]}]
    if old and not plan.quick:
        rows, notes, profile, commands = merge.fold(old, rows, notes, profile, commands, only)
        plan_desc["runs"] += merge.earlier_runs(old, only)
        # What this run could not tell (no Kafka here, say) is what the earlier run's figures ran with.
        info = {k: old["machine"].get(k, v) if v == "unknown" else v for k, v in info.items()}
    tgt = report.write(Path(args.out), ROOT, work, rows, notes, profile, commands, plan_desc, Path(args.markdown),
                       info=info)
    for t in tgt:
        log(f"{'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['measured']}")
    log(f"wrote {args.markdown} and {args.out}/ in {time.time() - started:.0f} s (work files: {work})")
    if os.environ.get("BENCH_KEEP_WORK") != "1":
        shutil.rmtree(work, ignore_errors=True)
    failed = [n for n in results.notes if " failed: " in n]
    return 1 if failed else 0


def commit():
    """The measured commit, marked when the sidecar or the benchmark code differ from it."""
    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True)
    head = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    dirty = git("diff", "--quiet", "HEAD", "--", "sidecar", "bench", "Cargo.toml", "Cargo.lock").returncode != 0
    return f"{head} with uncommitted changes" if dirty else head


def rewrite_report(out, markdown):
    data = json.loads((out / "results.json").read_text())
    profile = [(p["instructions"], p["percent"], p["function"]) for p in data.get("profile", [])]
    report.write(out, ROOT, data.get("work", "$WORK"), data["rows"], data["notes"], profile, data.get("commands", []),
                 data["plan"], markdown, info=data["machine"])
    log(f"rewrote {markdown} from {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
