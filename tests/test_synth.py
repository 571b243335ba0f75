"""streamer.synth: the synthetic flow stream and its injected attacks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streamer.synth import DEMO_SCHEMA, Attack, demo_attacks, generate_flows, strip_truth

S = 1_767_225_600_000


def small(seed=0, attacks=None, **kw):
    return generate_flows(n_hosts=kw.pop("n_hosts", 12), duration_s=kw.pop("duration_s", 60), start_ms=S,
                          attacks=attacks, seed=seed, **kw)


def test_deterministic_for_a_seed():
    atk = [Attack("port_scan", ("10.0.0.12",), S + 10_000, S + 12_000)]
    a, b = small(5, atk), small(5, atk)
    assert a.events == b.events and a.hosts == b.hosts and a.attacks == b.attacks
    assert small(6, atk).events != a.events


def test_events_shape_and_order():
    st = small(1)
    assert st.hosts == [f"10.0.0.{i}" for i in range(1, 13)]
    assert st.attacks == []
    assert len(st.events) > 100
    ts = [e["ts"] for e in st.events]
    assert ts == sorted(ts) and S <= ts[0] and ts[-1] < S + 60_000
    fields = {"ts", "src_host", *DEMO_SCHEMA["numeric_fields"], *DEMO_SCHEMA["categorical_fields"]}
    for e in st.events:
        assert fields <= set(e) and "_attack" not in e
        assert e["src_host"] in st.hosts
        assert all(isinstance(e[f], int) and e[f] >= 0 for f in DEMO_SCHEMA["numeric_fields"])
        assert e["protocol"] in ("tcp", "udp") and e["flag"] in ("SF", "S0", "REJ")
        assert (e["protocol"] == "udp") == (e["dst_port"] == 53)
    assert not st.is_attack().any()


def test_host_names_beyond_250():
    st = generate_flows(n_hosts=252, duration_s=1, seed=0)
    assert st.hosts[249:] == ["10.0.0.250", "10.0.1.1", "10.0.1.2"]


def test_attack_events_flagged():
    atk = [Attack("port_scan", ("10.0.0.12",), S + 10_000, S + 12_000),
           Attack("ddos_burst", ("10.0.0.10", "10.0.0.11"), S + 20_000, S + 21_000),
           Attack("slow_exfiltration", ("10.0.0.9",), S + 30_000, S + 42_000)]
    st = small(2, atk)
    flags = st.is_attack()
    assert flags.dtype == bool and len(flags) == len(st.events)
    attack_events = [e for e in st.events if "_attack" in e]
    assert flags.sum() == len(attack_events)
    per = Counter((e["_attack"], e["src_host"]) for e in attack_events)
    # 25 scan flows per second, 60 flood flows per second per host, one upload per 6 seconds
    assert per == {("port_scan", "10.0.0.12"): 50, ("ddos_burst", "10.0.0.10"): 60,
                   ("ddos_burst", "10.0.0.11"): 60, ("slow_exfiltration", "10.0.0.9"): 2}
    for a in atk:
        mine = [e for e in attack_events if e["_attack"] == a.kind]
        assert all(a.start_ms <= e["ts"] < a.end_ms and e["src_host"] in a.hosts for e in mine)
    scan = [e for e in attack_events if e["_attack"] == "port_scan"]
    assert all(e["flag"] in ("REJ", "S0") and e["bytes_out"] == 60 for e in scan)
    assert len({e["dst_port"] for e in scan}) == 50  # sequential ports
    exfil = [e for e in attack_events if e["_attack"] == "slow_exfiltration"]
    assert all(e["bytes_out"] > 200_000 for e in exfil)


def test_unknown_attack_kind():
    with pytest.raises(ValueError, match="unknown attack kind 'teleport'"):
        small(0, [Attack("teleport", ("10.0.0.1",), S, S + 1000)])


def test_strip_truth():
    st = small(3, [Attack("port_scan", ("10.0.0.12",), S + 1000, S + 2000)])
    e = next(e for e in st.events if "_attack" in e)
    clean = strip_truth(e)
    assert "_attack" not in clean and e["_attack"] == "port_scan"  # the original is not modified
    assert clean == {k: v for k, v in e.items() if k != "_attack"}
    normal = next(e for e in st.events if "_attack" not in e)
    assert strip_truth(normal) == normal and strip_truth(normal) is not normal


def test_demo_attacks_placement():
    hosts = [f"h{i}" for i in range(60)]
    atk = demo_attacks(hosts, 1000)
    assert [a.kind for a in atk] == ["port_scan", "ddos_burst", "slow_exfiltration"]
    assert atk[0].hosts == ("h40",) and atk[1].hosts == ("h41", "h42", "h43", "h44") and atk[2].hosts == ("h45",)
    assert [(a.start_ms, a.end_ms) for a in atk] == [(101_000, 141_000), (301_000, 331_000), (421_000, 601_000)]


def test_roles_differ():
    st = generate_flows(n_hosts=24, duration_s=300, seed=4)
    by_host = Counter(e["src_host"] for e in st.events)
    ports = {h: {e["dst_port"] for e in st.events if e["src_host"] == h} for h in st.hosts}
    # the first n/6 hosts are servers (busier, ports 443/8080), then n/12 databases (5432)
    assert ports["10.0.0.1"] <= {443, 8080} and ports["10.0.0.5"] == {5432}
    assert np.mean([by_host[h] for h in st.hosts[:4]]) > 2 * np.mean([by_host[h] for h in st.hosts[6:]])
