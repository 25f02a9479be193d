"""The sidecar's cost per request, independent of machine noise: instructions (callgrind) and system calls
(strace), each as the difference between a short and a long run of the same shape."""

import re
import subprocess
from pathlib import Path

from procs import Sidecar, load, log
from suites import PROXY_CASES


def instructions(results, plan, work, upstream):
    """Instructions per request from callgrind: the difference between a short and a long run of the same
    shape, divided by the difference in requests, so start-up and shutdown cancel out."""
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
        results.note("valgrind is not installed: instruction counts skipped")
        return
    n1, n2 = plan.callgrind
    (work / "callgrind").mkdir(parents=True, exist_ok=True)
    for case, args in PROXY_CASES.items():
        totals = {}
        for n in (n1, n2):
            out = work / "callgrind" / f"callgrind.{abs(hash(case))}.{n}.out"
            sidecar = Sidecar(work / "callgrind", upstream.addr,
                              prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
            sidecar.start()
            try:
                sidecar.wait_ready(timeout=120)
                shape = without(args, "--connections", "--in-flight") + ["--connections", 1, "--in-flight", 8]
                load(["produce", "--bootstrap", sidecar.listen, "--requests", n] + shape, timeout=900)
            finally:
                sidecar.stop()
            totals[n] = callgrind_total(out)
            if n == n2 and case.startswith("100 B"):
                results.profile = callgrind_top(out)
        per_request = (totals[n2] - totals[n1]) / (n2 - n1)
        results.add("instructions", case, "sidecar", 0, "instructions_per_request", per_request, "instructions")
        log(f"callgrind {case}: {per_request:.0f} instructions per request")
    syscalls(results, plan, work, upstream)


def syscalls(results, plan, work, upstream):
    """System calls per request, the same difference method under `strace -f -c` (user-space instructions
    are only part of the cost; the rest is the kernel's)."""
    if subprocess.run(["which", "strace"], capture_output=True).returncode != 0:
        results.note("strace is not installed: system calls per request skipped")
        return
    n1, n2 = plan.callgrind
    for case, args in PROXY_CASES.items():
        counts = {}
        for n in (n1, n2):
            out = work / "callgrind" / f"strace.{abs(hash(case))}.{n}.out"
            sidecar = Sidecar(work / "callgrind", upstream.addr, prefix=["strace", "-f", "-c", "-o", str(out)])
            sidecar.start()
            try:
                sidecar.wait_ready(timeout=60)
                shape = without(args, "--connections", "--in-flight") + ["--connections", 1, "--in-flight", 8]
                load(["produce", "--bootstrap", sidecar.listen, "--requests", n] + shape, timeout=900)
            finally:
                sidecar.stop()
            counts[n] = strace_counts(out)
        per_request = {k: (counts[n2].get(k, 0) - counts[n1].get(k, 0)) / (n2 - n1) for k in counts[n2]}
        results.add("instructions", case, "sidecar", 0, "syscalls_per_request", per_request.pop("total", 0), "calls")
        top = sorted(per_request.items(), key=lambda kv: -kv[1])[:5]
        results.note(f"system calls per request ({case}): " + ", ".join(f"{k} {v:.2f}" for k, v in top))


def strace_counts(path):
    counts = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit():
            name = parts[-1]
            calls = parts[3]
            if calls.isdigit():
                counts[name] = int(calls)
    return counts


def without(args, *flags):
    """`args` (flag, value pairs) less the given flags."""
    pairs = zip(args[::2], args[1::2])
    return [x for flag, value in pairs if flag not in flags for x in (flag, value)]


def callgrind_total(path):
    for line in Path(path).read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_top(path, n=15):
    """The functions with the highest self cost: (instructions, percent, function) from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", str(path)], capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        where = re.sub(r"\s+\[[^\]]*\]$", "", m.group(3))
        function = where.split(":", 1)[1] if ":" in where else where
        rows.append((int(m.group(1).replace(",", "")), m.group(2), function))
    return rows[:n]
