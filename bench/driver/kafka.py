"""Kafka's own load tools (ProducerPerformance, ConsumerPerformance, TopicCommand) and parsing their output."""

import os
import re
import subprocess

from procs import COMMANDS, log

PRODUCER_LINE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency"
    r"(?:, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th)?"
)


def _java(cls, args, timeout):
    libs = os.environ["KPROXY_KAFKA_LIBS"]
    cmd = ["java", "-Xmx512m", "-cp", f"{libs}/*", cls] + [str(a) for a in args]
    COMMANDS.append(cmd)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{cls} failed ({out.returncode}): {out.stderr[-1500:]}{out.stdout[-500:]}")
    return out.stdout


def create_topic(bootstrap, topic, partitions):
    _java(
        "org.apache.kafka.tools.TopicCommand",
        ["--bootstrap-server", bootstrap, "--create", "--if-not-exists", "--topic", topic,
         "--partitions", partitions, "--replication-factor", 1],
        timeout=120,
    )


def delete_topic(bootstrap, topic):
    try:
        _java("org.apache.kafka.tools.TopicCommand",
              ["--bootstrap-server", bootstrap, "--delete", "--topic", topic], timeout=120)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        log(f"could not delete {topic}: {e}")


def producer_perf(bootstrap, topic, records, size, acks, throughput=-1, timeout=600):
    """One ProducerPerformance run; latencies in ms as the tool prints them."""
    out = _java(
        "org.apache.kafka.tools.ProducerPerformance",
        ["--topic", topic, "--num-records", records, "--record-size", size, "--throughput", throughput,
         "--producer-props", f"bootstrap.servers={bootstrap}", f"acks={acks}", "client.id=kproxy-bench"],
        timeout=timeout,
    )
    matches = [m for m in (PRODUCER_LINE.search(line) for line in out.splitlines()) if m and m.group(6)]
    if not matches:
        raise RuntimeError(f"no summary line in ProducerPerformance output: {out[-800:]}")
    g = matches[-1].groups()
    return {
        "records": int(g[0]), "records_per_s": float(g[1]), "mb_per_s": float(g[2]), "avg_ms": float(g[3]),
        "max_ms": float(g[4]), "p50_ms": float(g[5]), "p95_ms": float(g[6]), "p99_ms": float(g[7]),
        "p999_ms": float(g[8]),
    }


def consumer_perf(bootstrap, topic, messages, group, timeout_ms=60000):
    """One ConsumerPerformance run from the start of `topic`."""
    out = _java(
        "org.apache.kafka.tools.ConsumerPerformance",
        ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", messages, "--group", group,
         "--timeout", timeout_ms],
        timeout=timeout_ms / 1000 + 120,
    )
    lines = [line for line in out.splitlines() if line.count(",") >= 9 and not line.startswith("start.time")]
    if not lines:
        raise RuntimeError(f"no result line in ConsumerPerformance output: {out[-800:]}")
    f = [x.strip() for x in lines[-1].split(",")]
    return {
        "mb": float(f[2]), "mb_per_s": float(f[3]), "records": int(float(f[4])), "records_per_s": float(f[5]),
        "rebalance_ms": float(f[6]), "fetch_ms": float(f[7]), "fetch_mb_per_s": float(f[8]),
    }
