"""The proxy core side by side with Kroxylicious, and the memory budget under hostile-but-valid load.

side_by_side: kproxy and Kroxylicious 0.12 (pass-through virtual cluster, no filters), each pinned alone to core 0,
against the same benchmark responder and load generator (both on core 1), interleaved per round: requests/s,
p50/p99, the proxy's own CPU per request, context switches per request.

memory_budget: the sidecar started with a 256 MiB budget under (a) one client pipelining 100 MiB produce requests,
(b) eight consumers catching up with fetch max_bytes 50 MiB, (c) 10,000 idle connections, (d) eight clients
pipelining 4 MiB produce requests (32 in flight each) at a responder stopped with SIGSTOP for 3 s, then resumed:
peak RSS, time clients spent paused, whether every request was answered.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pinned
from procs import COMMANDS, RELEASE, ROOT, Sampler, Sidecar, free_port, load, log, metric_sum, reachable, rss_kib

KROXYLICIOUS_VERSION = "0.12.0"
BUDGET = 256 << 20
MIB = 1 << 20


class Responder:
    """kproxy-bench-upstream with its own options, optionally pinned."""

    def __init__(self, taskset=None, extra=()):
        self.taskset, self.extra, self.proc, self.addr = taskset, list(extra), None, None

    def start(self):
        cmd = [str(RELEASE / "kproxy-bench-upstream"), "--listen", "127.0.0.1:0", "--threads", "1"] + self.extra
        if self.taskset is not None:
            cmd = ["taskset", "-c", str(self.taskset)] + cmd
        COMMANDS.append(cmd)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addr = json.loads(self.proc.stdout.readline())["listening"]
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=15)


# --- Kroxylicious -------------------------------------------------------------------------------------------------

def kroxylicious_classpath():
    """Kroxylicious' jars from Maven Central and the launcher, built once into .cache/kroxylicious."""
    cache = ROOT / ".cache" / "kroxylicious" / KROXYLICIOUS_VERSION
    lib, classes = cache / "lib", cache / "classes"
    src = ROOT / "bench" / "kroxylicious"
    if not (lib / f"kroxylicious-runtime-{KROXYLICIOUS_VERSION}.jar").exists():
        cmd = ["mvn", "-q", "-B", "-f", str(src / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={lib}"]
        COMMANDS.append(cmd)
        subprocess.run(cmd, check=True, timeout=900)
    if not (classes / "Launcher.class").exists():
        classes.mkdir(parents=True, exist_ok=True)
        cmd = ["javac", "-cp", f"{lib}/*", "-d", str(classes), str(src / "src" / "Launcher.java")]
        COMMANDS.append(cmd)
        subprocess.run(cmd, check=True, timeout=300)
    return f"{classes}:{lib}/*"


class Kroxylicious:
    """Kroxylicious on one core: a pass-through virtual cluster, one port per broker node id (the responder is
    node 0, on the bootstrap port + 1)."""

    def __init__(self, workdir, bootstrap, classpath, core):
        self.workdir, self.bootstrap, self.classpath, self.core = Path(workdir), bootstrap, classpath, core
        port = free_port()
        while not all(_free(p) for p in (port, port + 1)):
            port = free_port()
        self.listen = f"127.0.0.1:{port}"
        self.proc = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "kroxylicious.yaml"
        config.write_text(
            "virtualClusters:\n"
            "  - name: bench\n"
            f"    targetCluster:\n      bootstrapServers: {self.bootstrap}\n"
            "    gateways:\n"
            "      - name: default\n"
            "        portIdentifiesNode:\n"
            f"          bootstrapAddress: {self.listen}\n"
            "          nodeIdRanges:\n"
            "            - name: brokers\n"
            "              start: 0\n"
            "              end: 0\n")
        # A heap like a sidecar's; Netty's epoll transport as the project ships it.
        cmd = ["taskset", "-c", str(self.core), "java", "-Xms256m", "-Xmx512m", "-cp", self.classpath, "Launcher",
               str(config)]
        COMMANDS.append(cmd)
        log_file = open(self.workdir / "kroxylicious.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        if not reachable(self.listen, 60):
            raise RuntimeError(f"Kroxylicious did not listen on {self.listen}; log in {self.workdir}")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free(port):
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def side_by_side(results, plan, work):
    """kproxy and Kroxylicious, each alone on core 0, same responder and load on core 1."""
    try:
        classpath = kroxylicious_classpath()
    except (OSError, subprocess.SubprocessError) as e:
        results.note(f"Kroxylicious could not be fetched or built ({e}); side-by-side figures are kproxy's alone")
        classpath = None
    responder = Responder(taskset=pinned.OTHER_CORE).start()
    duration, warmup = (1.5, 0.5) if plan.quick else (5.0, 2.0)
    try:
        for rnd in range(plan.rounds):
            proxies = [("kproxy", None)] + ([("Kroxylicious", classpath)] if classpath else [])
            for name, cp in proxies:
                d = work / "peers" / f"{name}-{rnd}"
                if cp is None:
                    proxy = Sidecar(d, responder.addr, prefix=["taskset", "-c", pinned.PROXY_CORE]).start()
                    proxy.wait_ready()
                else:
                    proxy = Kroxylicious(d, responder.addr, cp, pinned.PROXY_CORE).start()
                    # The JVM compiles its hot paths during the first seconds: a warm-up run before measuring.
                    load(["produce", "--bootstrap", proxy.listen, "--duration-s", 5, "--warmup-s", 0]
                         + pinned.CASES["100 B x1"], taskset=pinned.OTHER_CORE)
                try:
                    pinned.measure(results, name, proxy.pid, proxy.listen, rnd, duration, warmup)
                finally:
                    proxy.stop()
    finally:
        responder.stop()


# --- memory budget --------------------------------------------------------------------------------------------------

def _budget_sidecar(work, name, bootstrap, extra=()):
    s = Sidecar(work / "memory_budget" / name, bootstrap,
                extra=["--memory-budget-bytes", str(BUDGET)] + list(extra)).start()
    s.wait_ready()
    return s


def _record(results, case, rnd, sidecar, sample, rows):
    m = sidecar.metrics()
    rows = dict(rows)
    rows["peak_rss_kib"] = sample.rss_max
    rows["paused_s"] = metric_sum(m, "kproxy_client_paused_seconds_total")
    rows["budget_kib"] = BUDGET // 1024
    for metric, value in rows.items():
        results.add("memory_budget", case, "sidecar", rnd, metric, value, "")
    log(f"memory budget {case} round {rnd}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in rows.items()))


def memory_budget(results, plan, work):
    rounds = 1 if plan.quick else min(plan.rounds, 2)
    seconds = 2.0 if plan.quick else 6.0
    for rnd in range(rounds):
        # (a) One client pipelining ~100 MiB produce requests (99 records of 1 MiB: the frame stays under the
        # sidecar's 100 MiB --max-frame-bytes), 4 in flight.
        responder = Responder().start()
        sidecar = _budget_sidecar(work, f"a-{rnd}", responder.addr)
        try:
            with Sampler(sidecar.pid, every=0.05) as sample:
                r = load(["produce", "--bootstrap", sidecar.listen, "--record-bytes", MIB, "--records-per-request",
                          99, "--connections", 1, "--in-flight", 4, "--duration-s", seconds, "--warmup-s", 0])
            _record(results, "(a) 1 client x 4 in flight x 99 MiB produce", rnd, sidecar, sample, {
                "answered_ratio": r["total_responses"] / max(r["total_sent"], 1),
                "mb_per_s": r["mb_per_s"], "failed_connections": r["failed_connections"]})
        finally:
            sidecar.stop()
            responder.stop()
        # (b) Eight consumers catching up, fetch max_bytes 50 MiB, the responder answering up to 50 x 1 MiB.
        responder = Responder(extra=["--fetch-records", "1", "--fetch-record-bytes", str(MIB),
                                     "--fetch-batches", "50"]).start()
        sidecar = _budget_sidecar(work, f"b-{rnd}", responder.addr)
        try:
            with Sampler(sidecar.pid, every=0.05) as sample:
                r = load(["fetch", "--bootstrap", sidecar.listen, "--connections", 8, "--max-bytes", 50 * MIB,
                          "--duration-s", seconds])
            lowered = metric_sum(sidecar.metrics(), "kproxy_fetch_max_bytes_lowered_total")
            _record(results, "(b) 8 consumers, fetch max_bytes 50 MiB", rnd, sidecar, sample, {
                "fetches": r["fetches"], "fetches_lowered": lowered, "mb_per_s": r["mb_per_s"],
                "failed_connections": r["failed_connections"]})
        finally:
            sidecar.stop()
            responder.stop()
        # (c) 10,000 idle connections.
        responder = Responder().start()
        sidecar = _budget_sidecar(work, f"c-{rnd}", responder.addr)
        holder = None
        try:
            with Sampler(sidecar.pid, every=0.2) as sample:
                cmd = [str(RELEASE / "kproxy-bench-load"), "idle", "--bootstrap", sidecar.listen, "--connections",
                       "10000"]
                COMMANDS.append(cmd)
                holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
                report = json.loads(holder.stdout.readline())
                time.sleep(1.0)
            _record(results, "(c) 10,000 idle connections", rnd, sidecar, sample, {
                "connected": report["connected"],
                "open": metric_sum(sidecar.metrics(), "kproxy_client_connections")})
        finally:
            if holder:
                holder.terminate()
                holder.wait()
            sidecar.stop()
            responder.stop()
        # (d) Eight clients x 32 in flight x 4 MiB produce at a responder hung (SIGSTOP) for 3 s, then resumed.
        responder = Responder().start()
        sidecar = _budget_sidecar(work, f"d-{rnd}", responder.addr)
        try:
            with Sampler(sidecar.pid, every=0.05) as sample:
                cmd = [str(RELEASE / "kproxy-bench-load"), "produce", "--bootstrap", sidecar.listen,
                       "--record-bytes", str(MIB), "--records-per-request", "4", "--connections", "8",
                       "--in-flight", "32", "--duration-s", str(seconds + 3), "--warmup-s", "0"]
                COMMANDS.append(cmd)
                runner = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(1.0)
                os.kill(responder.proc.pid, signal.SIGSTOP)
                hung_rss = 0
                for _ in range(30):
                    time.sleep(0.1)
                    hung_rss = max(hung_rss, rss_kib(sidecar.pid))
                os.kill(responder.proc.pid, signal.SIGCONT)
                out, _ = runner.communicate(timeout=300)
            r = json.loads(out.strip().splitlines()[-1])
            after = rss_kib(sidecar.pid)
            _record(results, "(d) 8 clients x 32 x 4 MiB, upstream hung 3 s", rnd, sidecar, sample, {
                "rss_while_hung_kib": hung_rss, "rss_after_kib": after,
                "answered_ratio": r["total_responses"] / max(r["total_sent"], 1),
                "failed_connections": r["failed_connections"]})
        finally:
            sidecar.stop()
            responder.stop()
