"""Proxies side by side, each pinned alone to one core, against the benchmark responder: requests per proxy
core-second, latency, and the proxy's system calls and context switches per request.

Layout on a 2-core machine: the proxy under test gets core 0 to itself (`taskset -c 0`); the responder and the
load generator share core 1. A proxy that saturates its core shows its ceiling; one that does not is limited
by the other core, which the report shows as cores_used < 1.

Run directly for a quick comparison of two sidecar builds (the "before" and "after" of a change):

    python3 bench/driver/pinned.py --sidecar /tmp/before/kproxy-sidecar --sidecar target/release/kproxy-sidecar
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import COMMANDS, RELEASE, Sidecar, Upstream, cpu_seconds, load, log, rss_kib

# The reference shapes: 4 connections x 16 in flight.
CASES = {
    "100 B x1": ["--record-bytes", 100, "--records-per-request", 1, "--connections", 4, "--in-flight", 16],
    "1 KiB x16": ["--record-bytes", 1024, "--records-per-request", 16, "--connections", 4, "--in-flight", 16],
}

PROXY_CORE = "0"
OTHER_CORE = "1"


def ctx_switches(pid):
    """Voluntary and involuntary context switches summed over every thread of a process."""
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def io_calls(pid):
    """read-like and write-like system calls (/proc/<pid>/io syscr + syscw)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        return int(fields["syscr"]) + int(fields["syscw"])
    except (OSError, KeyError, ValueError):
        return 0


def readings(pid):
    return {"cpu": cpu_seconds(pid), "ctx": ctx_switches(pid), "io": io_calls(pid)}


def measure(results, label, pid, bootstrap, rnd, duration_s, warmup_s, case_filter=None):
    """Runs every case through `bootstrap` with the load generator on the other core; adds rows per case."""
    out = {}
    for case, args in CASES.items():
        if case_filter and case not in case_filter:
            continue
        before = readings(pid)
        r = load(["--threads", 1, "produce", "--bootstrap", bootstrap, "--duration-s", duration_s,
                  "--warmup-s", warmup_s] + args, taskset=OTHER_CORE)
        after = readings(pid)
        n = max(r["total_responses"], 1)
        cpu = after["cpu"] - before["cpu"]
        row = {
            "requests_per_s": r["requests_per_s"],
            "mb_per_s": r["mb_per_s"],
            "p50_us": r["latency_us"]["p50"],
            "p99_us": r["latency_us"]["p99"],
            "requests_per_core_s": n / cpu if cpu > 0 else 0,
            "mb_per_core_s": n * r["record_bytes"] * r["records_per_request"] / 2**20 / cpu if cpu > 0 else 0,
            "cpu_us_per_request": 1e6 * cpu / n,
            "cores_used": cpu / (duration_s + warmup_s),
            "ctx_switches_per_request": (after["ctx"] - before["ctx"]) / n,
            "io_syscalls_per_request": (after["io"] - before["io"]) / n,
            "rss_kib": rss_kib(pid),
        }
        if r["total_sent"] != r["total_responses"] or r["failed_connections"]:
            row["note"] = f"{r['total_sent']} sent, {r['total_responses']} answered: {r['first_failure']}"
        out[case] = row
        if results is not None:
            for metric, value in row.items():
                if metric != "note":
                    results.add("pinned", case, label, rnd, metric, value, "")
        log(f"pinned {label} {case} round {rnd}: {row['requests_per_s']:.0f} req/s, "
            f"{row['requests_per_core_s']:.0f} req per core-s, {row['cpu_us_per_request']:.2f} µs CPU/req, "
            f"{row['ctx_switches_per_request']:.3f} ctx/req, {row['io_syscalls_per_request']:.3f} r/w calls/req, "
            f"cores {row['cores_used']:.2f}")
    return out


def strace_per_request(sidecar_binary, upstream, workdir, n1=20_000, n2=60_000, case="100 B x1"):
    """System calls per request under `strace -f -c`: the difference between a short and a long run of the same
    shape over the difference in requests (start-up and shutdown cancel out)."""
    from costs import strace_counts
    counts = {}
    for n in (n1, n2):
        out = Path(workdir) / f"strace.{Path(sidecar_binary).parent.name}.{n}.out"
        s = Sidecar(workdir, upstream.addr, prefix=["taskset", "-c", PROXY_CORE, "strace", "-f", "-c", "-o", str(out)],
                    binary=sidecar_binary)
        s.start()
        try:
            s.wait_ready(timeout=60)
            load(["produce", "--bootstrap", s.listen, "--requests", n] + CASES[case], taskset=OTHER_CORE)
        finally:
            s.stop()
        counts[n] = strace_counts(out)
    return {k: (counts[n2].get(k, 0) - counts[n1].get(k, 0)) / (n2 - n1) for k in counts[n2]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sidecar", action="append", help="sidecar binaries to compare (default: target/release)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--strace", action="store_true", help="also count system calls per request with strace -c")
    args = ap.parse_args()
    binaries = args.sidecar or [str(RELEASE / "kproxy-sidecar")]
    work = Path(tempfile.mkdtemp(prefix="kproxy-pinned-"))
    upstream = Upstream(taskset=OTHER_CORE).start()
    summary = {}
    try:
        for rnd in range(args.rounds):
            for i, binary in enumerate(binaries):
                d = work / f"s{i}"
                d.mkdir(exist_ok=True)
                s = Sidecar(d, upstream.addr, prefix=["taskset", "-c", PROXY_CORE], binary=binary).start()
                try:
                    s.wait_ready()
                    rows = measure(None, binary, s.pid, s.listen, rnd, args.duration_s, args.warmup_s)
                finally:
                    s.stop()
                for case, row in rows.items():
                    summary.setdefault(binary, {}).setdefault(case, []).append(row)
        if args.strace:
            for binary in binaries:
                calls = strace_per_request(binary, upstream, work)
                total = calls.pop("total", 0)
                top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
                summary.setdefault(binary, {})["strace 100 B x1"] = [{"total": total, **dict(top)}]
                log(f"strace {binary}: {total:.2f} syscalls/request: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    finally:
        upstream.stop()
    med = {}
    for binary, cases in summary.items():
        for case, rows in cases.items():
            keys = [k for k in rows[0] if k != "note"]
            med.setdefault(binary, {})[case] = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in keys}
    print(json.dumps(med, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
