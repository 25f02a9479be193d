"""The benchmark groups. Each runs interleaved rounds (direct, sidecar, direct, sidecar, ...) and adds rows."""

import itertools
import json
import os
import statistics
import subprocess
import threading
import time

import kafka
from procs import COMMANDS, RELEASE, Sampler, Sidecar, cpu_seconds, load, log, metric_sum, rss_kib

MIB = 1024 * 1024


class Results:
    def __init__(self):
        self.rows = []
        self.notes = []
        self.profile = []

    def add(self, group, case, target, rnd, metric, value, unit):
        self.rows.append({"group": group, "case": case, "target": target, "round": rnd, "metric": metric,
                          "value": value, "unit": unit})

    def note(self, text):
        log(text)
        self.notes.append(text)


class Plan:
    """Sizes of the runs: full for the published figures, quick for a smoke run of the whole suite."""

    def __init__(self, quick):
        self.quick = quick
        self.rounds = 1 if quick else int(os.environ.get("BENCH_ROUNDS", "3"))
        scale = 0.05 if quick else 1.0
        # Upper bounds; each is cut to about `perf_s` seconds of sending by a calibration run on the machine.
        self.perf_records = {100: int(1_000_000 * scale), 1024: int(200_000 * scale), 10240: int(20_000 * scale)}
        self.perf_s = 2.0 if quick else 6.0
        self.load_s = 1.5 if quick else 5.0
        self.warmup_s = 0.5 if quick else 1.0
        self.fixed_s = 2.0 if quick else 10.0
        self.starts = 5 if quick else 20
        self.reloads = 10 if quick else 100
        self.reload_load_s = 3.0 if quick else 8.0
        self.idle_counts = [1000, 10000]
        self.callgrind = (300, 1300) if quick else (1000, 5000)


def paired(results, group, case, target, rnd, report, fields):
    for metric, (key, unit) in fields.items():
        value = report
        for k in key.split("."):
            value = value[k]
        results.add(group, case, target, rnd, metric, value, unit)


# --- end to end with Kafka's tools against the real broker -------------------------------------------------------

def kafka_tools(results, plan, work, broker):
    run_id = str(int(time.time()))
    (work / "kafka").mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(work / "kafka", broker).start()
    try:
        sidecar.wait_ready()
        topics = {size: f"kproxy-bench-{run_id}-{size}" for size in plan.perf_records}
        for topic in topics.values():
            kafka.create_topic(broker, topic, 1)
        targets = {"direct": broker, "sidecar": sidecar.listen}
        counts = calibrate(plan, broker, topics)
        for rnd in range(plan.rounds):
            for size, records in counts.items():
                for acks in ("1", "all"):
                    for target, bootstrap in targets.items():
                        cpu0 = cpu_seconds(sidecar.pid)
                        r = kafka.producer_perf(bootstrap, topics[size], records, size, acks)
                        cpu = cpu_seconds(sidecar.pid) - cpu0
                        case = f"{size}B acks={acks}"
                        for metric in ("mb_per_s", "records_per_s", "avg_ms", "p50_ms", "p99_ms", "max_ms"):
                            unit = metric.rsplit("_", 1)[-1] if metric.endswith("ms") else metric.replace("_per_s", "/s")
                            results.add("producer", case, target, rnd, metric, r[metric], unit)
                        if target == "sidecar":
                            mb = records * size / MIB
                            results.add("producer", case, target, rnd, "sidecar_millicores_per_mb_s",
                                        1000 * cpu / mb, "millicores per MB/s")
                        log(f"producer {case} {target} round {rnd}: {r['mb_per_s']} MB/s p99 {r['p99_ms']} ms")
        # Fixed rate at half the direct maximum (1 KiB, acks=1), for the latency comparison.
        direct_max = statistics.median(
            row["value"] for row in results.rows
            if row["group"] == "producer" and row["case"] == "1024B acks=1" and row["target"] == "direct"
            and row["metric"] == "records_per_s")
        rate = max(1, int(direct_max / 2))
        records = max(rate, int(rate * plan.fixed_s))
        for rnd in range(plan.rounds):
            for target, bootstrap in targets.items():
                r = kafka.producer_perf(bootstrap, topics[1024], records, 1024, "1", throughput=rate)
                for metric in ("records_per_s", "avg_ms", "p50_ms", "p99_ms", "p999_ms", "max_ms"):
                    results.add("producer_fixed_rate", f"1024B acks=1 @ {rate} rec/s", target, rnd, metric, r[metric],
                                "ms" if metric.endswith("ms") else "records/s")
                log(f"producer fixed {rate}/s {target} round {rnd}: p99 {r['p99_ms']} ms")
        # Consumer: the 1 KiB topic holds every record produced above.
        messages = counts[1024]
        for rnd in range(plan.rounds):
            for target, bootstrap in targets.items():
                r = kafka.consumer_perf(bootstrap, topics[1024], messages, f"kproxy-bench-{run_id}-{target}-{rnd}")
                for metric in ("mb_per_s", "fetch_mb_per_s", "records_per_s"):
                    results.add("consumer", "1024B", target, rnd, metric, r[metric], metric.replace("_per_s", "/s"))
                log(f"consumer {target} round {rnd}: {r['mb_per_s']} MB/s")
        loadgen_latency(results, plan, broker, sidecar, f"kproxy-bench-{run_id}-loadgen")
        for topic in topics.values():
            kafka.delete_topic(broker, topic)
        kafka.delete_topic(broker, f"kproxy-bench-{run_id}-loadgen")
    finally:
        sidecar.stop()


def calibrate(plan, broker, topics):
    """Record counts that take about `plan.perf_s` seconds each on this machine, from two short direct runs per
    size (the first sizes the second, whose rate is less skewed by the producer's start), so the suite's length
    does not depend on how fast the machine is."""
    counts = {}
    for size, most in plan.perf_records.items():
        first = kafka.producer_perf(broker, topics[size], max(1000, most // 50), size, "1")
        probe = max(1000, min(most // 5, int(first["records_per_s"] * 2)))
        r = kafka.producer_perf(broker, topics[size], probe, size, "1")
        counts[size] = max(1000, min(most, int(r["records_per_s"] * plan.perf_s)))
        log(f"calibration {size} B: {r['records_per_s']:.0f} records/s direct -> {counts[size]} records per run")
    return counts


def loadgen_latency(results, plan, broker, sidecar, topic):
    """Microsecond latencies against the real broker (the Java tool reports whole milliseconds): the maximum
    rate first, then a fixed rate at half the direct maximum."""
    targets = {"direct": broker, "sidecar": sidecar.listen}
    common = ["--topic", topic, "--record-bytes", 1024, "--records-per-request", 1, "--acks", 1,
              "--connections", 4, "--warmup-s", plan.warmup_s]
    for rnd in range(plan.rounds):
        for target, bootstrap in targets.items():
            r = load(["produce", "--bootstrap", bootstrap, "--in-flight", 16, "--duration-s", plan.load_s] + common)
            paired(results, "loadgen_max", "1 KiB x1, 4 conns x 16 in flight", target, rnd, r, {
                "requests_per_s": ("requests_per_s", "req/s"), "p50_us": ("latency_us.p50", "µs"),
                "p99_us": ("latency_us.p99", "µs")})
    direct_max = statistics.median(row["value"] for row in results.rows if row["group"] == "loadgen_max"
                                   and row["target"] == "direct" and row["metric"] == "requests_per_s")
    rate = round(direct_max / 2)
    for rnd in range(plan.rounds):
        for target, bootstrap in targets.items():
            r = load(["produce", "--bootstrap", bootstrap, "--in-flight", 64, "--duration-s", plan.fixed_s,
                      "--rate", rate] + common)
            paired(results, "loadgen_fixed_rate", f"1 KiB x1 @ {rate} req/s", target, rnd, r, {
                "requests_per_s": ("requests_per_s", "req/s"), "p50_us": ("latency_us.p50", "µs"),
                "p99_us": ("latency_us.p99", "µs"), "p999_us": ("latency_us.p999", "µs"),
                "max_us": ("latency_us.max", "µs")})
            log(f"loadgen fixed {rate}/s {target} round {rnd}: p99 {r['latency_us']['p99']} µs")


# --- the proxy alone, against the benchmark responder ---------------------------------------------------------------

PROXY_CASES = {
    "100 B x1 (requests/s)": ["--record-bytes", 100, "--records-per-request", 1, "--connections", 4, "--in-flight", 32],
    "1 KiB x16 (MB/s)": ["--record-bytes", 1024, "--records-per-request", 16, "--connections", 4, "--in-flight", 16],
}


def proxy_alone(results, plan, work, upstream):
    (work / "alone").mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(work / "alone", upstream.addr).start()
    try:
        sidecar.wait_ready()
        for rnd in range(plan.rounds):
            for case, args in PROXY_CASES.items():
                for target, bootstrap in (("direct", upstream.addr), ("sidecar", sidecar.listen)):
                    cpu0 = cpu_seconds(sidecar.pid)
                    with Sampler(sidecar.pid, sidecar) as sample:
                        r = load(["produce", "--bootstrap", bootstrap, "--duration-s", plan.load_s,
                                  "--warmup-s", plan.warmup_s] + args)
                    cpu = cpu_seconds(sidecar.pid) - cpu0
                    paired(results, "proxy_alone", case, target, rnd, r, {
                        "requests_per_s": ("requests_per_s", "req/s"), "mb_per_s": ("mb_per_s", "MB/s"),
                        "p50_us": ("latency_us.p50", "µs"), "p99_us": ("latency_us.p99", "µs")})
                    if r["total_sent"] != r["total_responses"] or r["failed_connections"]:
                        results.note(f"proxy alone {case} {target}: {r['total_sent']} sent, "
                                     f"{r['total_responses']} answered, first failure {r['first_failure']}")
                    if target == "sidecar" and cpu > 0:
                        req_bytes = r["request_bytes"] / max(r["requests"], 1)
                        total_bytes = r["total_responses"] * req_bytes
                        payload_mb = r["total_responses"] * r["record_bytes"] * r["records_per_request"] / MIB
                        for metric, value, unit in (
                            ("requests_per_core_s", r["total_responses"] / cpu, "req per CPU-second"),
                            ("mb_per_core_s", payload_mb / cpu, "MB per CPU-second"),
                            ("cpu_s_per_gb", cpu / (total_bytes / 1e9), "CPU-s per GB forwarded"),
                            ("millicores_per_mb_s", 1000 * cpu / payload_mb, "millicores per MB/s"),
                            ("cores_used", cpu / (plan.load_s + plan.warmup_s), "cores"),
                            ("rss_under_load_kib", sample.rss_max, "KiB"),
                            ("buffer_pool_max_bytes", sample.pool_max, "bytes"),
                        ):
                            results.add("proxy_alone", case, target, rnd, metric, value, unit)
                    log(f"proxy alone {case} {target} round {rnd}: {r['requests_per_s']:.0f} req/s "
                        f"{r['mb_per_s']:.1f} MB/s, sidecar CPU {cpu:.2f} s")
    finally:
        sidecar.stop()


# --- memory, start-up, reload -----------------------------------------------------------------------------------

def memory(results, plan, work, upstream):
    (work / "memory").mkdir(parents=True, exist_ok=True)
    for rnd in range(plan.rounds):
        for n in plan.idle_counts:
            sidecar = Sidecar(work / "memory", upstream.addr).start()
            holder = None
            try:
                sidecar.wait_ready()
                time.sleep(0.5)
                idle = rss_kib(sidecar.pid)
                results.add("memory", "idle", "sidecar", rnd, "rss_kib", idle, "KiB")
                cmd = [str(RELEASE / "kproxy-bench-load"), "idle", "--bootstrap", sidecar.listen,
                       "--connections", n]
                COMMANDS.append(cmd)
                holder = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, text=True)
                report = json.loads(holder.stdout.readline())
                time.sleep(1.0)
                held = rss_kib(sidecar.pid)
                connected = max(report["connected"], 1)
                open_conns = metric_sum(sidecar.metrics(), "kproxy_client_connections")
                results.add("memory", f"{n} idle connections", "sidecar", rnd, "rss_kib", held, "KiB")
                results.add("memory", f"{n} idle connections", "sidecar", rnd, "kib_per_connection",
                            (held - idle) / connected, "KiB")
                if report["connected"] != n:
                    results.note(f"{n} idle connections: only {report['connected']} opened "
                                 f"({report['first_failure']})")
                log(f"memory round {rnd}: idle {idle} KiB, {n} conns ({int(open_conns)} seen by the sidecar) "
                    f"{held} KiB = {(held - idle) / connected:.1f} KiB each")
            finally:
                if holder:
                    holder.terminate()
                    holder.wait()
                sidecar.stop()


def startup(results, plan, work, bootstrap, label):
    (work / "startup").mkdir(parents=True, exist_ok=True)
    for i in range(plan.starts):
        sidecar = Sidecar(work / "startup", bootstrap).start()
        try:
            ready = sidecar.wait_ready()
            results.add("startup", f"to /readyz ({label})", "sidecar", i, "ready_ms", ready * 1000, "ms")
            results.add("startup", "rss at ready", "sidecar", i, "rss_kib", rss_kib(sidecar.pid), "KiB")
        finally:
            sidecar.stop()
    log(f"start-up: {plan.starts} starts done")


def wait_generation(sidecar, at_least, timeout):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if metric_sum(sidecar.metrics(), "kproxy_config_generation") >= at_least:
                return time.perf_counter()
        except (OSError, RuntimeError):
            pass
        time.sleep(0.0005)
    return None


def reload(results, plan, work, upstream):
    (work / "reload").mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(work / "reload", upstream.addr).start()
    try:
        sidecar.wait_ready()
        generation = metric_sum(sidecar.metrics(), "kproxy_config_generation")
        supported = True
        for i in range(plan.reloads):
            sidecar.write_config(generation=i + 1)
            swapped = time.perf_counter()
            seen = wait_generation(sidecar, generation + 1, timeout=5.0)
            if seen is None:
                results.note("reload: the config generation did not change within 5 s of a ..data swap; "
                             "reload figures not measured")
                supported = False
                break
            generation += 1
            results.add("reload", "..data swap to new generation on /metrics", "sidecar", i, "reload_ms",
                        (seen - swapped) * 1000, "ms")
        if not supported:
            return
        times = sorted(r["value"] for r in results.rows if r["group"] == "reload" and r["metric"] == "reload_ms")
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            results.add("reload", "percentiles over the reloads", "sidecar", 0, f"reload_ms_{name}",
                        times[min(len(times) - 1, int(q * len(times)))], "ms")
        counter = itertools.count(10_000)
        case = "100 B x1, 4 conns x 32 in flight"
        base = ["produce", "--bootstrap", sidecar.listen, "--duration-s", plan.reload_load_s, "--warmup-s",
                plan.warmup_s, "--timeline-ms", 100] + PROXY_CASES["100 B x1 (requests/s)"]
        for rnd in range(plan.rounds):
            for variant in ("no reloads", "reload every 250 ms"):
                stop = threading.Event()
                reload_times = []

                def reloader():
                    time.sleep(plan.warmup_s)
                    while not stop.wait(0.25):
                        sidecar.write_config(generation=next(counter))
                        reload_times.append(time.time() * 1000)

                thread = threading.Thread(target=reloader, daemon=True)
                if variant != "no reloads":
                    thread.start()
                r = load(base)
                stop.set()
                if thread.is_alive():
                    thread.join()
                results.add("reload_under_load", case, variant, rnd, "requests_per_s", r["requests_per_s"], "req/s")
                if r["total_sent"] != r["total_responses"] or r["failed_connections"] or r["errors"]:
                    results.note(f"reload under load ({variant}): {r['total_sent']} sent, {r['total_responses']} "
                                 f"answered, {r['errors']} errors, first failure {r['first_failure']}")
                dip = reload_dip(r["timeline"], reload_times, plan.warmup_s)
                if dip is not None:
                    results.add("reload_under_load", case, variant, rnd, "worst_bucket_near_reload_ratio", dip,
                                "ratio")
                log(f"reload under load {variant} round {rnd}: {r['requests_per_s']:.0f} req/s, {len(reload_times)} reloads")
    finally:
        sidecar.stop()


def reload_dip(timeline, reload_ms, warmup_s):
    """The worst 100 ms bucket right after a reload (or, with no reloads, anywhere after the warm-up) over the
    median bucket of the measured part of the run; the no-reload value is the noise floor to compare with."""
    if not timeline:
        return None
    buckets = timeline["responses"][:-1]
    start, width = timeline["start_unix_ms"], timeline["bucket_ms"]
    first = int(warmup_s * 1000 // width) + 1
    steady = buckets[first:]
    if not steady:
        return None
    median = statistics.median(steady)
    if not reload_ms:
        return min(steady) / median if median else None
    near = []
    for t in reload_ms:
        i = int((t - start) // width)
        near.extend(buckets[j] for j in (i, i + 1) if first <= j < len(buckets))
    return min(near) / median if near and median else None
