"""Processes the benchmark drives: the sidecar, the benchmark responder, the load generator; /proc readings."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# Every command the suite runs, in order, for the report's "commands" section (deduplicated by shape later).
COMMANDS = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(addr, timeout):
    """Whether a TCP connection to `addr` succeeds within `timeout` seconds (retrying every 0.5 s)."""
    host, port = addr.rsplit(":", 1)
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            if time.time() >= deadline:
                return False
            time.sleep(0.5)


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def http_get(addr, path, timeout=2.0):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def parse_metrics(text):
    """Prometheus text to {name: {labels_string: value}}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            key, value = line.rsplit(" ", 1)
            value = float(value)
        except ValueError:
            continue
        name, _, labels = key.partition("{")
        out.setdefault(name, {})[labels.rstrip("}")] = value
    return out


def metric_sum(metrics, name):
    return sum(metrics.get(name, {}).values())


def pool_bytes(metrics):
    """The buffer pool's footprint: its own high-water gauge when it exports one, else idle + in use."""
    states = metrics.get("kproxy_buffer_pool_bytes", {})
    high = [v for labels, v in states.items() if "high" in labels]
    return max(high) if high else sum(states.values())


def stop(proc, timeout=15):
    """SIGTERM, then SIGKILL if it does not exit in time. Only ever our own child."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def project(config_dir, text, seq):
    """Publishes config.yaml the way kubelet updates a mounted ConfigMap: new folder, atomic ..data swap."""
    config_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"..{time.time_ns()}_{seq}"
    payload = config_dir / stamp
    payload.mkdir()
    (payload / "config.yaml").write_text(text)
    old = os.readlink(config_dir / "..data") if (config_dir / "..data").is_symlink() else None
    tmp = config_dir / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(stamp, tmp)
    os.rename(tmp, config_dir / "..data")
    link = config_dir / "config.yaml"
    if not link.is_symlink():
        os.symlink("..data/config.yaml", link)
    if old:
        subprocess.run(["rm", "-rf", str(config_dir / old)], check=False)


def sidecar_config(bootstrap, generation=0):
    return (
        f"policy: bench/kproxy\ngeneration: {generation}\n"
        f"clusters:\n  - name: bench\n    bootstrapServers: [\"{bootstrap}\"]\n"
    )


class Sidecar:
    """One kproxy-sidecar process with a kubelet-style config directory."""

    def __init__(self, workdir, bootstrap, prefix=(), extra=(), binary=None):
        self.workdir = Path(workdir)
        self.binary = str(binary or RELEASE / "kproxy-sidecar")
        self.config_dir = self.workdir / "config"
        self.bootstrap = bootstrap
        self.prefix = list(prefix)
        self.extra = list(extra)
        self.listen = f"127.0.0.1:{free_port()}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.proc = None
        self.seq = 0
        self.spawned_at = None

    def write_config(self, generation=0):
        self.seq += 1
        project(self.config_dir, sidecar_config(self.bootstrap, generation), self.seq)

    def start(self):
        if not (self.config_dir / "..data").exists():
            self.write_config()
        cmd = self.prefix + [
            self.binary,
            "--config", str(self.config_dir),
            "--listen", self.listen,
            "--admin", self.admin,
            "--max-connections", "20000",
            "--shutdown-grace-secs", "2",
        ] + self.extra
        COMMANDS.append(cmd)
        logf = open(self.workdir / f"sidecar-{self.listen.rsplit(':', 1)[1]}.log", "w")
        env = dict(os.environ, RUST_LOG=os.environ.get("BENCH_SIDECAR_LOG", "warn"))
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        return self

    def wait_ready(self, timeout=30.0):
        """Seconds from spawn to the first 200 on /readyz."""
        deadline = time.perf_counter() + timeout
        host, port = self.admin.rsplit(":", 1)
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}; log in {self.workdir}")
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.perf_counter() - self.spawned_at
            except OSError:
                pass
            time.sleep(0.0005)
        raise RuntimeError(f"sidecar not ready after {timeout}s; log in {self.workdir}")

    def metrics(self):
        status, body = http_get(self.admin, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_metrics(body)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if "strace" in self.prefix and self.proc.poll() is None:
            # SIGTERM to strace detaches it without its summary; the traced sidecar gets it instead, and strace
            # writes the summary when it exits.
            for child in children(self.proc.pid):
                os.kill(child, signal.SIGTERM)
        stop(self.proc)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class Upstream:
    """kproxy-bench-upstream, the benchmark-only Kafka responder."""

    def __init__(self, threads=1, taskset=None):
        self.threads = threads
        self.taskset = taskset
        self.proc = None
        self.addr = None

    def start(self):
        cmd = [str(RELEASE / "kproxy-bench-upstream"), "--listen", "127.0.0.1:0", "--threads", str(self.threads)]
        if self.taskset is not None:
            cmd = ["taskset", "-c", str(self.taskset)] + cmd
        COMMANDS.append(cmd)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.addr = json.loads(line)["listening"]
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        stop(self.proc)


def load(args, timeout=600, taskset=None):
    """Runs kproxy-bench-load to completion and returns its JSON report (pinned to the `taskset` cores if given)."""
    cmd = [str(RELEASE / "kproxy-bench-load")] + [str(a) for a in args]
    if taskset is not None:
        cmd = ["taskset", "-c", str(taskset)] + cmd
    COMMANDS.append(cmd)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Sampler:
    """Samples a process's RSS and (optionally) the sidecar's buffer-pool gauge while a run is going."""

    def __init__(self, pid, sidecar=None, every=0.2):
        self.pid, self.sidecar, self.every = pid, sidecar, every
        self.rss_max = 0
        self.pool_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.rss_max = max(self.rss_max, rss_kib(self.pid))
                if self.sidecar is not None:
                    m = self.sidecar.metrics()
                    self.pool_max = max(self.pool_max, pool_bytes(m))
            except (OSError, RuntimeError, ValueError):
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
