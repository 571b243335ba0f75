"""Shared pieces of the benchmark scripts: synthetic flow events, Kafka set-up, worker processes,
resource accounting and report helpers.

The scripts in this folder are reports, not tests: nothing here passes or fails on seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Run from the project root as `.venv/bin/python benchmarks/<name>.py`: the package is installed in
# the venv (editable), but a plain checkout works too with the root on the path.
ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from streamer.synth import DEMO_SCHEMA, generate_flows  # noqa: E402

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, as the demo
DEFAULT_PORT = 29092  # not 19092 (tests) nor 9092 (demo)


# --------------------------------------------------------------------------------------------- CLI
def add_kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers", default=None, metavar="HOST:PORT",
                   help="use this Kafka cluster; default: start the project's local broker on --port and "
                        "stop it at the end")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the local broker started here")
    p.add_argument("--json", metavar="FILE", default=None, help="write the figures as JSON to FILE")


def parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n", "utf-8")
    print(f"\nwrote {path}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def machine_meta() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git": git_state(),
        "package": str(Path(sys.modules["streamer.synth"].__file__).parent),
    }


def git_state() -> dict[str, Any]:
    """The commit measured and the package files that differ from it (figures of a dirty tree are
    figures of that tree, not of the commit)."""
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = run("rev-parse", "--short", "HEAD")
    if not commit:  # an exported tree (git archive): say what it was exported from, if told
        return {"commit": os.environ.get("STREAMER_BENCH_COMMIT", "unknown (not a git checkout)"), "modified": []}
    return {"commit": commit,
            "modified": [ln[3:] for ln in run("status", "--porcelain", "--", "streamer").splitlines()]}


def say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------- Kafka
@contextlib.contextmanager
def kafka(args: argparse.Namespace) -> Iterator[str]:
    """The bootstrap address: the given cluster, or the local broker started (and stopped) here."""
    if args.bootstrap_servers:
        yield args.bootstrap_servers
        return
    from streamer.localbroker import start_local_broker, stop_local_broker

    say(f"starting the local Kafka broker on port {args.port} ...")
    addr = start_local_broker(args.port)
    try:
        yield addr
    finally:
        say(f"stopping the local Kafka broker on port {args.port}")
        stop_local_broker(args.port)


def local_broker_pid(port: int) -> int | None:
    """Pid of the local broker on ``port`` (to account its CPU), if this machine runs it."""
    try:
        from streamer.localbroker import broker_script

        f = broker_script().parent / "run" / f"broker-{port}.pid"
        pid = int(f.read_text().strip())
        os.kill(pid, 0)
        return pid
    except Exception:  # noqa: BLE001 - no local broker here: its CPU is simply not reported
        return None


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process so far (from /proc; any process of ours or not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime, stime


def proc_rss_mb(pid: int | str = "self") -> float:
    """Current resident set size, MB (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def self_peak_rss_mb() -> float:
    """Peak RSS of this process, MB. VmHWM, not ru_maxrss: Linux folds the pre-exec memory of a
    forked child into ru_maxrss, so a worker started by a parent holding TensorFlow would inherit
    the parent's peak; VmHWM belongs to the process's own address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def unique(prefix: str) -> str:
    return f"{prefix}.{time.strftime('%H%M%S')}.{uuid.uuid4().hex[:6]}"


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                        config=config or {})])[topic]
    fut.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # metadata propagates asynchronously
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} did not appear")


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Best effort: frees the broker's disk between phases (a 10M-event soak is gigabytes)."""
    from confluent_kafka.admin import AdminClient

    with contextlib.suppress(Exception):  # cleanup only
        futs = AdminClient({"bootstrap.servers": bootstrap}).delete_topics(list(topics), operation_timeout=30)
        for f in futs.values():
            with contextlib.suppress(Exception):
                f.result(timeout=30)


def bulk_producer(bootstrap: str, **extra: Any) -> tuple[Any, list[str]]:
    """A producer for pre-loading: big batches, lz4; delivery errors collected in the list."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "on_delivery": on_delivery,
        **extra,
    }
    return Producer(conf), errors


def produce_pairs(producer: Any, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    produce, poll = producer.produce, producer.poll
    for i, (k, v) in enumerate(zip(keys, values)):
        while True:
            try:
                produce(topic, value=v, key=k)
                break
            except BufferError:
                poll(0.05)  # local queue full: let deliveries drain
        if i % 5000 == 0:
            poll(0)


def preload(bootstrap: str, topic: str, gen: FlowGen, n: int, *, chunk: int = 100_000, label: str = "") -> float:
    """Generate ``n`` events chunk by chunk and produce them, keyed by entity; returns seconds."""
    producer, errors = bulk_producer(bootstrap)
    t0 = time.monotonic()
    done = 0
    last_print = t0
    for lo in range(0, n, chunk):
        keys, values = gen.chunk(lo, min(n, lo + chunk))
        produce_pairs(producer, topic, keys, values)
        done += len(values)
        now = time.monotonic()
        if now - last_print > 5:
            last_print = now
            say(f"  {label}produced {done:,}/{n:,} ({done / (now - t0):,.0f}/s)")
    left = producer.flush(300)
    if left or errors:
        raise RuntimeError(f"pre-load into {topic}: {left} unacknowledged, errors {errors[:3]}")
    return time.monotonic() - t0


def wait_group_stable(bootstrap: str, group: str, timeout_s: float = 120.0) -> float:
    """Seconds until consumer group ``group`` is Stable with partitions assigned."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(Exception):
            d = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
            if d.state == ConsumerGroupState.STABLE and any(m.assignment.topic_partitions for m in d.members):
                return time.monotonic() - t0
        time.sleep(0.2)
    raise RuntimeError(f"consumer group {group} not stable after {timeout_s:.0f}s")


class LagProbe:
    """Consumer lag of a group (high watermark minus committed offset, summed over partitions),
    read with a consumer that uses the group id but never joins the group."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def lag(self) -> tuple[int, int]:
        """(lag, sum of high watermarks)."""
        committed = self.consumer.committed(self.tps, timeout=10)
        lag = ends = 0
        for tp, c in zip(self.tps, committed):
            lo, hi = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            ends += hi
            lag += hi - (c.offset if c.offset >= 0 else lo)
        return lag, ends

    def close(self) -> None:
        self.consumer.close()


# -------------------------------------------------------------------------------- synthetic events
class FlowGen:
    """Network-flow-like JSON events, fast.

    The *pattern* comes from :func:`streamer.synth.generate_flows` (``base_hosts`` hosts with roles,
    log-normal sizes, role ports): every generated entity is a clone of one base host and its events
    are drawn from that host's events, so per-entity behaviour is as consistent as in the demo.
    Building ``n`` events is vectorized (numpy picks base events, entities and times); the JSON of
    the fields other than ``ts``/``src_host`` is serialized once per base event with orjson, so an
    event costs one bytes formatting.

    ``active``: when set, entities are drawn from a window of about ``active`` entities that sweeps
    the whole entity range once over ``total`` events (entities appear, live a while, go idle:
    churn, for the soak). Otherwise every event picks any entity (a stable population).
    """

    def __init__(self, entities: int, *, seed: int = 0, event_rate: float = 10_000.0, active: int | None = None,
                 total: int | None = None, base_hosts: int = 60, base_seconds: float = 600.0) -> None:
        base = generate_flows(n_hosts=base_hosts, duration_s=base_seconds, seed=seed)
        hosts = {h: i for i, h in enumerate(base.hosts)}
        self.entities = int(entities)
        self.seed = seed
        self.event_rate = float(event_rate)
        self.active = active
        self.total = total
        self.n_base_hosts = len(base.hosts)
        H = self.n_base_hosts
        # Per base event: its host index and the JSON of its other fields without the opening brace.
        self.host_of = np.asarray([hosts[e["src_host"]] for e in base.events], dtype=np.int64)
        self.tails = [orjson.dumps({k: v for k, v in e.items() if k not in ("ts", "src_host")})[1:]
                      for e in base.events]
        # Entities with index e clone base host e % H; host h has this many clones below ``entities``.
        self.n_clones = np.maximum(1, (self.entities - np.arange(H) + H - 1) // H)

    @staticmethod
    def entity_name(e: int) -> bytes:
        return b"10.%d.%d.%d" % ((e >> 16) & 255, (e >> 8) & 255, e & 255)

    def columns(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(event time ms, entity index, base event index) of events ``lo..hi``, deterministic."""
        rng = np.random.default_rng([self.seed, lo])
        n = hi - lo
        i = np.arange(lo, hi)
        base_idx = rng.integers(0, len(self.tails), n)  # picks hosts in proportion to their rates
        h = self.host_of[base_idx]
        nc = self.n_clones[h]
        if self.active and self.total:
            width = np.minimum(nc, max(1, self.active // self.n_base_hosts))
            start = (i * nc) // self.total
            clone = (start + (rng.random(n) * width).astype(np.int64)) % nc
        else:
            clone = (rng.random(n) * nc).astype(np.int64)
        ent = np.minimum(h + self.n_base_hosts * clone, self.entities - 1)
        ts = START_MS + (i * 1000.0 / self.event_rate).astype(np.int64)
        return ts, ent, base_idx

    def chunk(self, lo: int, hi: int) -> tuple[list[bytes], list[bytes]]:
        """(keys, values) of events ``lo..hi``: key = entity, value = the JSON event."""
        ts, ent, base_idx = self.columns(lo, hi)
        name, tails = self.entity_name, self.tails
        keys = [name(e) for e in ent.tolist()]
        values = [b'{"ts":%d,"src_host":"%b",%b' % (t, k, tails[j])
                  for t, k, j in zip(ts.tolist(), keys, base_idx.tolist())]
        return keys, values

    def records(self, n: int, topic: str = "train") -> list[Any]:
        """``n`` events as :class:`streamer.records.Record` (training without Kafka)."""
        from streamer.records import Record

        _, values = self.chunk(0, n)
        return [Record(v, topic, 0, i) for i, v in enumerate(values)]


def anomalous_event(entity: bytes, ts_ms: int, marker: int) -> bytes:
    """A flow no normal host makes: a huge UDP upload to an odd port, refused, in no time."""
    return (b'{"ts":%d,"src_host":"%b","dst_host":"198.51.100.66","dst_port":31337,"protocol":"udp",'
            b'"flag":"REJ","duration_ms":0,"bytes_out":4000000000,"bytes_in":0,"packets":3000000,'
            b'"bench_anomaly":%d}' % (ts_ms, entity, marker))


# ---------------------------------------------------------------------------------------- training
WINDOWS = {
    # What a user would configure for flow records: each flow scored on its own ...
    "record": {"window.kind": "record"},
    # ... or per host: 10 s tumbling windows with aggregates (the demo's choice) ...
    "time": {"window.kind": "time", "window.seconds": 10, "window.lateness_s": 2},
    # ... or the last 4 flows of a host, every 2 flows (per-entity state that must be evicted).
    "count": {"window.kind": "count", "window.size": 4, "window.slide": 2},
}


def train_flow_model(records: list[Any], *, window: dict[str, Any], model_dir: str | Path, epochs: int,
                     extra: dict[str, Any] | None = None) -> Path:
    """Train a small model with ``streamer.train.train_model`` (the code of ``streamer train``)."""
    from streamer.config import StreamerConfig, apply_overrides
    from streamer.train import train_model

    cfg = StreamerConfig()
    ov: dict[str, Any] = {f"schema.{k}": v for k, v in DEMO_SCHEMA.items()}
    ov.update(window)
    ov.update({"model.dir": str(model_dir), "model.name": "bench", "model.epochs": epochs,
               "model.patience": max(2, epochs // 4)})
    ov.update(extra or {})
    apply_overrides(cfg, ov)
    cfg.validate()
    return train_model(cfg, records, source="benchmarks: synthetic flows (streamer.synth pattern)",
                       show_progress=False)


def workdir(keep: bool = False) -> Path:
    d = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    if not keep:
        import atexit
        import shutil

        atexit.register(shutil.rmtree, d, True)
    return d


# ----------------------------------------------------------------------------------------- workers
class Worker:
    """A contender in its own process (``benchmarks/workers.py``): clean peak RSS per contender, no
    TensorFlow in the processes that do not need it, and the CPU of exactly that process."""

    def __init__(self, kind: str, spec: dict[str, Any], tmp: Path) -> None:
        self.kind = kind
        tag = uuid.uuid4().hex[:8]
        self.spec_path = tmp / f"{kind}-{tag}.spec.json"
        self.out_path = tmp / f"{kind}-{tag}.out.json"
        spec = {**spec, "ready_file": str(tmp / f"{kind}-{tag}.ready")}
        self.ready_path = Path(spec["ready_file"])
        self.spec_path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "workers.py"), kind, str(self.spec_path),
                                      str(self.out_path)], cwd=str(ROOT))

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until the worker has loaded its model and is about to consume."""
        t0 = time.monotonic()
        while not self.ready_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} worker exited with status {self.proc.returncode} before ready")
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"{self.kind} worker not ready after {timeout_s:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: the runner finishes its batch, flushes, commits and returns (as `streamer run`)."""
        self.proc.terminate()

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        # os.wait4 gives the rusage of exactly this child (CPU and peak RSS of the whole process,
        # start-up included); the worker reports its own figures for the measured loop.
        t0 = time.monotonic()
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                self.proc.kill()
                pid, status, ru = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0 or not self.out_path.exists():
            raise RuntimeError(f"{self.kind} worker failed (exit {self.proc.returncode})")
        out = json.loads(self.out_path.read_text())
        # CPU of the whole process, start-up (imports, model load, warm-up) included. Not its
        # ru_maxrss: that includes the parent's memory at fork (see self_peak_rss_mb).
        out["process_cpu_s_total"] = ru.ru_utime + ru.ru_stime
        return out


# ------------------------------------------------------------------------------------------ report
def fmt_int(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def fmt(x: float, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{nd}f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99, 99.9)) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {f"p{q:g}": float("nan") for q in qs} | {"max": float("nan"), "n": 0}
    out = {f"p{q:g}": float(np.percentile(a, q)) for q in qs}
    out["max"] = float(a.max())
    out["n"] = int(a.size)
    return out


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y over x (nan with fewer than 2 points)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.size < 2 or np.ptp(xa) == 0:
        return float("nan")
    return float(np.polyfit(xa, ya, 1)[0])
