"""The operator at scale (group operator_scale): kproxy-bench-operator against the test environment's real
kube-apiserver. N policies applied at once, the release operator started cold (controller and webhook in one
process, as the chart runs it) until all are Ready; its RSS; admission reviews sent to its webhook over TLS as the
API server sends them; then the namespace grown to M policies and a second cold start for the RSS with M."""

import json
import os
import subprocess
from pathlib import Path

from procs import COMMANDS, RELEASE, ROOT, log

GROUP = "operator_scale"
# Goals: cold start with 1,000 policies, RSS with 10,000, review p99 with 1,000 in the namespace.
READY_GOAL_S = 30.0
RSS_GOAL_MIB = 100.0
REVIEW_P99_GOAL_MS = 10.0


def sizes(plan):
    """Policies for the first cold start and the larger one; BENCH_OPERATOR_SIZES=N,M overrides them."""
    override = os.environ.get("BENCH_OPERATOR_SIZES")
    if override:
        first, large = (int(n) for n in override.split(","))
        return first, large
    return (200, 1000) if plan.quick else (1000, 10_000)


def run(results, plan, work):
    if not os.environ.get("KUBECONFIG"):
        results.note(f"{GROUP} skipped: no KUBECONFIG (the test environment's kube-apiserver is not running)")
        return
    policies, large = sizes(plan)
    if os.environ.get("BENCH_OPERATOR_SIZES"):
        results.note(f"{GROUP}: sizes {policies:,} and {large:,} from BENCH_OPERATOR_SIZES")
    crd = ROOT / "crds" / "kafkaproxypolicies.yaml"
    subprocess.run(["kubectl", "apply", "--server-side", "--force-conflicts", "--field-manager", "kproxy-bench",
                    "-f", str(crd)], check=True, capture_output=True, timeout=60)
    subprocess.run(["kubectl", "wait", "--for", "condition=established", "--timeout=60s",
                    "crd/kafkaproxypolicies.kproxy.dev"], check=True, capture_output=True, timeout=90)
    logs = work / GROUP
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [str(RELEASE / "kproxy-bench-operator"), "--operator", str(RELEASE / "kproxy-operator"),
           "--log-dir", str(logs), "--policies", str(policies), "--rss-policies", str(large),
           "--reviews", "500" if plan.quick else "2000"]
    pid_file = Path(os.environ.get("KPROXY_ENV_DIR", "")) / "kube" / "kube-apiserver.pid"
    if pid_file.is_file():
        cmd += ["--apiserver-pid", pid_file.read_text().strip()]
    COMMANDS.append(cmd)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    for line in out.stderr.splitlines():
        log(f"  {line}")
    if out.returncode != 0:
        raise RuntimeError(f"kproxy-bench-operator exited {out.returncode}: {out.stderr.strip()[-500:]}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    record(results, figures)
    if "large" in figures:
        record(results, figures["large"])


def record(results, f):
    case = f"{f['policies']:,} policies"

    def add(metric, value, unit):
        if value is not None:
            results.add(GROUP, case, "operator", 0, metric, value, unit)

    add("cold_start_ready_s", f["cold_start_ready_s"], "s")
    add("rss_mib", f["rss"]["rss_kib"] / 1024, "MiB")
    add("peak_rss_mib", f["rss"]["peak_kib"] / 1024, "MiB")
    for q in ("p50", "p99", "p999", "max"):
        add(f"review_{q}_ms", f["review_us"][q] / 1000, "ms")
    add("reviews", f["review_us"]["n"], "count")
    for who, seconds in f.get("cpu_s", {}).items():
        add(f"{who}_cpu_s_until_ready", seconds, "s")
    for result, n in sorted(f.get("reconciles", {}).items()):
        add(f"reconciles_{result}", n, "count")
    for kind, n in sorted(f.get("writes", {}).items()):
        add(f"api_writes_{kind}", n, "count")
    if "apply_s" in f:
        add("policies_created_s", f["apply_s"], "s")


def count(case):
    """The number of policies a case is named after ("1,000 policies")."""
    return int(case.split()[0].replace(",", ""))


def targets(summary, add):
    """Adds the three goals to the Targets table, each from the case it is stated for (or the one measured)."""
    def figure(metric, want):
        found = [(c, s["median"]) for (g, c, m, _), s in summary.items() if g == GROUP and m == metric]
        if not found:
            return None
        return next(((c, v) for c, v in found if c == want), min(found, key=lambda cv: count(cv[0])))

    ready = figure("cold_start_ready_s", "1,000 policies")
    if ready:
        add(f"1,000 policies applied at once all Ready < {READY_GOAL_S:.0f} s from the operator's cold start",
            f"{ready[1]:.1f} s ({ready[0]})", ready[1] < READY_GOAL_S,
            "kproxy-bench-operator: policies created before the release operator starts; spawn to the last Ready")
    rss = [(c, v) for (g, c, m, _), s in summary.items() if g == GROUP and m == "rss_mib" for v in [s["median"]]]
    if rss:
        case, value = max(rss, key=lambda cv: count(cv[0]))
        short = "" if count(case) >= 10_000 else "; 10,000 not measured"
        add(f"operator RSS with 10,000 policies < {RSS_GOAL_MIB:.0f} MiB", f"{value:.1f} MiB ({case}{short})",
            value < RSS_GOAL_MIB and not short,
            "VmRSS of the operator (controller + webhook) once every policy is Ready")
    p99 = figure("review_p99_ms", "1,000 policies")
    if p99:
        add(f"webhook review p99 < {REVIEW_P99_GOAL_MS:.0f} ms with 1,000 policies in the namespace",
            f"{p99[1]:.2f} ms ({p99[0]})", p99[1] < REVIEW_P99_GOAL_MS,
            "AdmissionReview POSTs over TLS on one kept-alive connection, answer fully read, each injected")


SECTION = [
    "## The operator at scale",
    "",
    "`kproxy-bench-operator` against the test environment's real kube-apiserver (shared with other work on the",
    "machine), in a namespace of its own that is deleted afterwards. The policies are created first (32 requests in",
    "flight), then the release operator starts cold, limited to that namespace, serving its webhook as the chart runs",
    "it; \"cold_start_ready_s\" is from its spawn until the last policy shows `Ready=True` for its generation (a",
    "watch). RSS is VmRSS (and VmHWM, the peak) from `/proc` once reconciles stop. Reviews: 100 untimed, then the",
    "timed ones, each a Pod CREATE AdmissionReview posted over TLS on one kept-alive HTTP/1.1 connection (as the",
    "API server does), timed until the whole answer is read; every answer must carry the injection patch. The",
    "larger case adds policies to the same namespace and starts a second operator cold. Reconcile counts are the",
    "operator's own `kproxy_operator_reconciles_total` at the end of each start, and its API writes by object",
    "(`kproxy_operator_api_writes_total`: ConfigMap applies, status writes, Events, access Role applies); CPU",
    "seconds of kube-apiserver and of the operator from the spawn to the last Ready come from `/proc/<pid>/stat`.",
    "",
]


def section(summary, single_table):
    return SECTION + [single_table(summary, GROUP, target="operator"), ""]
