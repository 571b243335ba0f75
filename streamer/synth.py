"""A synthetic network-flow stream with injected attacks, for the demo and the tests.

SYNTHETIC DATA: generated here from simple distributions (log-normal sizes, Poisson arrivals,
role-specific ports); it resembles flow records in shape only. Real-data evaluation lives in
``streamer eval`` on the datasets under ``shared/datasets``.

Hosts have roles (workstation, server, database) with their own rates, ports and size profiles;
server load follows a slow daily-like wave. Three attacks can be injected:

* ``port_scan``: one workstation opens ~25 short, mostly refused connections per second to
  sequential ports of one target;
* ``ddos_burst``: a few hosts flood one server with tiny SYN flows;
* ``slow_exfiltration``: one workstation keeps its usual rate but now and then uploads megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Attack", "FlowStream", "generate_flows", "DEMO_SCHEMA", "demo_attacks", "regime_shift"]

# The schema the demo (and `streamer demo --write-config`) uses for these events.
DEMO_SCHEMA = {
    "entity_field": "src_host",
    "time_field": "ts",
    "numeric_fields": ["duration_ms", "bytes_out", "bytes_in", "packets", "dst_port"],
    "categorical_fields": ["protocol", "flag"],
    "hash_buckets": 4,
}

_ROLES = {
    # role: (flows per second, ports, log-mean bytes_out, log-mean bytes_in)
    "workstation": (0.8, [443, 443, 443, 80, 53, 22], 7.0, 9.0),
    "server": (2.5, [443, 443, 8080], 9.5, 7.0),
    "database": (1.5, [5432], 8.0, 10.0),
}


@dataclass(frozen=True)
class Attack:
    kind: str
    hosts: tuple[str, ...]
    start_ms: int
    end_ms: int


@dataclass
class FlowStream:
    """Events in time order and the attacks injected into them."""

    events: list[dict]
    attacks: list[Attack]
    hosts: list[str]

    def is_attack(self) -> np.ndarray:
        """Per event: whether an injected attack produced it."""
        return np.asarray([e.get("_attack", "") != "" for e in self.events])


def _host_name(i: int) -> str:
    return f"10.0.{i // 250}.{i % 250 + 1}"


def generate_flows(
    *,
    n_hosts: int = 60,
    duration_s: float = 1800.0,
    start_ms: int = 1_767_225_600_000,  # 2026-01-01T00:00:00Z
    attacks: list[Attack] | None = None,
    seed: int = 0,
) -> FlowStream:
    """Generate ``duration_s`` seconds of flows from ``n_hosts`` hosts, plus the given attacks.

    Attack events carry a private ``_attack`` field (the ground truth); the detector's schema never
    reads it, and :func:`strip_truth` removes it before events are published.
    """
    rng = np.random.default_rng(seed)
    roles = (["server"] * max(1, n_hosts // 6) + ["database"] * max(1, n_hosts // 12))
    roles += ["workstation"] * (n_hosts - len(roles))
    hosts = [_host_name(i) for i in range(n_hosts)]
    servers = [h for h, r in zip(hosts, roles) if r == "server"]
    events: list[dict] = []
    for host, role in zip(hosts, roles):
        rate, ports, lo_out, lo_in = _ROLES[role]
        rate *= rng.uniform(0.7, 1.3)
        n = rng.poisson(rate * duration_s * 1.3)
        t = np.sort(rng.uniform(0, duration_s, n))
        if role == "server":  # load follows a slow wave: thin arrivals by a 30-minute cycle
            keep = rng.uniform(size=n) < 0.75 + 0.25 * np.sin(2 * np.pi * t / 1800.0)
            t = t[keep]
        else:
            t = t[rng.uniform(size=n) < 1 / 1.3]
        n = len(t)
        port = rng.choice(ports, n)
        udp = port == 53
        out_b = np.exp(rng.normal(lo_out, 1.0, n)).astype(np.int64) + 40
        in_b = np.exp(rng.normal(lo_in, 1.2, n)).astype(np.int64) + 40
        in_b[udp] = rng.integers(60, 300, udp.sum())
        out_b[udp] = rng.integers(40, 120, udp.sum())
        dur = np.exp(rng.normal(4.0, 1.3, n)).astype(np.int64)
        flag = rng.choice(["SF", "S0", "REJ"], n, p=[0.97, 0.015, 0.015])
        pk = (out_b + in_b) // 900 + rng.integers(2, 8, n)
        for i in range(n):
            events.append({
                "ts": start_ms + int(t[i] * 1000), "src_host": host,
                "dst_host": servers[int(rng.integers(len(servers)))] if role == "workstation" else "203.0.113.7",
                "dst_port": int(port[i]), "protocol": "udp" if udp[i] else "tcp", "flag": str(flag[i]),
                "duration_ms": int(dur[i]), "bytes_out": int(out_b[i]), "bytes_in": int(in_b[i]),
                "packets": int(pk[i]),
            })
    for atk in attacks or []:
        events += _attack_events(atk, rng, servers)
    events.sort(key=lambda e: (e["ts"], e["src_host"]))
    return FlowStream(events, list(attacks or []), hosts)


def _attack_events(atk: Attack, rng: np.random.Generator, servers: list[str]) -> list[dict]:
    out: list[dict] = []
    span_s = (atk.end_ms - atk.start_ms) / 1000
    target = servers[0]
    for host in atk.hosts:
        if atk.kind == "port_scan":
            n = int(25 * span_s)
            ts = np.sort(rng.uniform(atk.start_ms, atk.end_ms, n)).astype(np.int64)
            for i, t in enumerate(ts):
                out.append({"ts": int(t), "src_host": host, "dst_host": target, "dst_port": 1 + i % 10000,
                            "protocol": "tcp", "flag": "REJ" if rng.uniform() < 0.7 else "S0",
                            "duration_ms": int(rng.integers(0, 3)), "bytes_out": 60, "bytes_in": int(rng.choice([0, 40])),
                            "packets": 1, "_attack": atk.kind})
        elif atk.kind == "ddos_burst":
            n = int(60 * span_s)
            ts = np.sort(rng.uniform(atk.start_ms, atk.end_ms, n)).astype(np.int64)
            for t in ts:
                out.append({"ts": int(t), "src_host": host, "dst_host": target, "dst_port": 80, "protocol": "tcp",
                            "flag": "S0", "duration_ms": 0, "bytes_out": int(rng.integers(40, 80)), "bytes_in": 0,
                            "packets": int(rng.integers(1, 3)), "_attack": atk.kind})
        elif atk.kind == "slow_exfiltration":
            n = int(span_s / 6)
            ts = np.sort(rng.uniform(atk.start_ms, atk.end_ms, n)).astype(np.int64)
            for t in ts:
                size = int(np.exp(rng.normal(15.0, 0.4)))  # ~3 MB uploads
                out.append({"ts": int(t), "src_host": host, "dst_host": "198.51.100.23", "dst_port": 443,
                            "protocol": "tcp", "flag": "SF", "duration_ms": int(rng.integers(20_000, 60_000)),
                            "bytes_out": size, "bytes_in": int(rng.integers(2_000, 8_000)),
                            "packets": size // 1400, "_attack": atk.kind})
        else:
            raise ValueError(f"unknown attack kind {atk.kind!r}")
    return out


def demo_attacks(hosts: list[str], test_start_ms: int) -> list[Attack]:
    """The three attacks of the demo, placed in the test part of the stream."""
    w = [h for h in hosts[-20:]]  # workstations sit at the end of the host list
    s = test_start_ms
    return [
        Attack("port_scan", (w[0],), s + 100_000, s + 140_000),
        Attack("ddos_burst", tuple(w[1:5]), s + 300_000, s + 330_000),
        Attack("slow_exfiltration", (w[5],), s + 420_000, s + 600_000),
    ]


def regime_shift(events: list[dict], hosts: list[str] | tuple[str, ...], start_ms: int, *,
                 bytes_in_factor: float = 8.0, duration_factor: float = 4.0) -> list[dict]:
    """A benign, lasting change of the normal regime (for the retrainer's drift demo and tests):
    from ``start_ms`` on, ``hosts`` run a backup client, so their flows download
    ``bytes_in_factor`` times more and last ``duration_factor`` times longer. Not an attack: the
    events carry no ground truth. Returns new event dicts; the input is not modified."""
    chosen = set(hosts)
    out = []
    for e in events:
        if e["ts"] >= start_ms and e["src_host"] in chosen and not e.get("_attack"):
            e = {**e, "bytes_in": int(e["bytes_in"] * bytes_in_factor),
                 "duration_ms": int(e["duration_ms"] * duration_factor)}
        out.append(e)
    return out


def strip_truth(event: dict) -> dict:
    """The event as published: without the private ground-truth field."""
    return {k: v for k, v in event.items() if k != "_attack"}
