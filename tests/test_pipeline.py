"""streamer.pipeline (with streamer.detector): records in, alerts and dead letters out."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import orjson
import pytest
from conftest import flow_records

from streamer.artifact import load_artifact_dir
from streamer.pipeline import Pipeline
from streamer.records import Record, WindowBatch
from streamer.synth import strip_truth

pytestmark = pytest.mark.slow

SCAN, EXFIL = "10.0.0.19", "10.0.0.18"
BATCH = 700


@pytest.fixture(scope="module")
def model(trained_model):
    return load_artifact_dir(trained_model["path"])


def chunks(records: list[Record], size: int = BATCH) -> list[list[Record]]:
    return [records[lo:lo + size] for lo in range(0, len(records), size)]


def run(pipe: Pipeline, records: list[Record] | None = None, *, batches: list[list[Record]] | None = None) -> dict:
    """Feed records in consumer-sized batches, then flush; collect everything."""
    results = [pipe.process(b) for b in (batches if batches is not None else chunks(records))]
    results.append(pipe.flush())
    scored = [r for r in results if r.scored is not None]
    n_feat = len(pipe.windower.feature_names)
    return {
        "alerts": [a for r in results for a in r.alerts],
        "dead": [d for r in results for d in r.dead],
        "windows": WindowBatch.concat([r.windows for r in scored], n_feat),
        "score": np.concatenate([r.scored.score for r in scored]),
        "p": np.concatenate([r.scored.p_value for r in scored]),
        "alert_flags": np.concatenate([r.scored.alert for r in scored]),
    }


@pytest.fixture(scope="module")
def clean_run(model, trained_model, flows):
    return run(Pipeline(model, trained_model["cfg"].detector), flow_records(flows["test"]))


def test_alerts_on_the_attack_hosts_and_few_others(clean_run, flows):
    by_entity = Counter(a["entity"] for a in clean_run["alerts"])
    assert by_entity[SCAN] >= 1 and by_entity[EXFIL] >= 1
    normal_windows = int(np.isin(clean_run["windows"].entity, [SCAN, EXFIL], invert=True).sum())
    others = sum(n for e, n in by_entity.items() if e not in (SCAN, EXFIL))
    assert normal_windows > 300
    assert others <= max(3, 0.03 * normal_windows), by_entity
    # the scan alerts lie on the scan
    scan = next(a for a in flows["attacks"] if a.kind == "port_scan")
    for a in clean_run["alerts"]:
        if a["entity"] == SCAN:
            assert a["window_start_ms"] < scan.end_ms and a["window_end_ms"] > scan.start_ms


def test_alert_records_are_consistent(clean_run, model, trained_model):
    alpha = trained_model["cfg"].detector.alpha
    assert int(clean_run["alert_flags"].sum()) == len(clean_run["alerts"])
    for a in clean_run["alerts"]:
        assert a["p_value"] < alpha and a["alpha"] == alpha
        assert a["score"] > a["threshold"] - 1e-6
        assert a["model_version"] == model.version
        assert a["source"]["topic"] == "t" and a["source"]["offset_start"] <= a["source"]["offset_end"]
        assert 1 <= len(a["top_features"]) <= trained_model["cfg"].detector.top_features
    assert len({a["alert_id"] for a in clean_run["alerts"]}) == len(clean_run["alerts"])


def test_every_test_event_is_windowed_once(clean_run, flows):
    assert clean_run["dead"] == []
    assert int(clean_run["windows"].n_events.sum()) == len(flows["test"])


def test_alert_ids_deterministic_across_fresh_pipelines(model, trained_model, flows, clean_run):
    again = run(Pipeline(model, trained_model["cfg"].detector), flow_records(flows["test"]))
    assert [a["alert_id"] for a in again["alerts"]] == [a["alert_id"] for a in clean_run["alerts"]]
    assert [a["score"] for a in again["alerts"]] == [a["score"] for a in clean_run["alerts"]]


def test_bad_records_become_dead_letters_and_do_not_stop_the_batch(model, trained_model, flows, clean_run):
    good = flow_records(flows["test"])
    first = strip_truth(flows["test"][0])
    bad_values = [b"not json", b"", b"[1, 2]", orjson.dumps({**first, "bytes_out": "many"}),
                  orjson.dumps({k: v for k, v in first.items() if k != "src_host"}),
                  orjson.dumps({**first, "ts": 1e30}), b"\xff\xfe{}"]
    # The same batches of good records as the clean run, with bad records mixed into them (offsets of
    # their own, so that the good windows keep theirs).
    batches = chunks(good)
    for j, value in enumerate(bad_values):
        batches[j].insert(100 + 37 * j, Record(value, "t", 0, 10_000_000 + j))
    late = Record(orjson.dumps({**first, "src_host": "10.0.0.3"}), "t", 0, 10_000_100)
    batches[-1].insert(5, late)  # its window closed minutes ago
    out = run(Pipeline(model, trained_model["cfg"].detector), batches=batches)
    reasons = Counter(d.reason for d in out["dead"])
    assert reasons == {"not_json": 1, "empty": 1, "not_object": 1, "wrong_type": 1, "missing_field": 1,
                       "out_of_range": 1, "unknown_encoding": 1, "late_event": 1}
    assert {d.record.offset for d in out["dead"]} == set(range(10_000_000, 10_000_007)) | {10_000_100}
    late_dl = next(d for d in out["dead"] if d.reason == "late_event")
    assert late_dl.record is late
    # the good events were windowed and scored exactly as without the bad ones
    assert [a["alert_id"] for a in out["alerts"]] == [a["alert_id"] for a in clean_run["alerts"]]
    assert int(out["windows"].n_events.sum()) == len(good)


def test_counters(model, trained_model, flows):
    pipe = Pipeline(model, trained_model["cfg"].detector)
    records = flow_records(flows["test"][:1500]) + [Record(b"x", "t", 0, 99_999)]
    out = run(pipe, records)
    c = pipe.counters
    assert (c.records, c.events) == (1501, 1500)
    assert c.windows == len(out["windows"]) and c.alerts == len(out["alerts"])
    assert c.dead == {"not_json": 1}


def test_anomalous_windows_are_not_admitted(model, trained_model, flows):
    pipe = Pipeline(model, trained_model["cfg"].detector)
    res = pipe.detector.reservoir
    seeded = len(model.reservoir_seed)
    assert res.admitted == seeded == len(res)
    out = run(pipe, flow_records(flows["test"]))
    admit_p = trained_model["cfg"].detector.admit_p
    judged_normal = int((out["p"] >= admit_p).sum())
    assert res.admitted - seeded == judged_normal
    assert judged_normal < len(out["p"])  # some windows were kept out ...
    assert not (out["alert_flags"] & (out["p"] >= admit_p)).any()  # ... every alerting one among them


def test_nothing_admitted_when_admit_p_is_unreachable(model, trained_model, flows):
    cfg = dataclasses.replace(trained_model["cfg"].detector, admit_p=1.01)
    pipe = Pipeline(model, cfg)
    before = pipe.detector.reservoir.data.copy()
    run(pipe, flow_records(flows["test"][:2000]))
    assert pipe.detector.reservoir.admitted == len(model.reservoir_seed)
    np.testing.assert_array_equal(pipe.detector.reservoir.data, before)


def test_held_offsets_flush_and_drop(model, trained_model, flows):
    events = flows["test"][:1000]
    pipe = Pipeline(model, trained_model["cfg"].detector)
    r = pipe.process(flow_records(events))
    # the events still in open windows: their (entity, 10 s window) did not close in this batch
    closed = set(zip(r.windows.entity.tolist(), r.windows.start_ms.tolist()))
    open_offsets = [i for i, e in enumerate(events) if (e["src_host"], e["ts"] // 10_000 * 10_000) not in closed]
    assert 0 < len(open_offsets) < 1000
    assert pipe.held_offsets() == {("t", 0): min(open_offsets)}
    f = pipe.flush()
    assert pipe.held_offsets() == {}
    assert int(f.windows.n_events.sum()) == len(open_offsets)
    assert int(r.windows.n_events.sum() + f.windows.n_events.sum()) == 1000
    # a revoked partition's open windows are forgotten, not emitted
    other = Pipeline(model, trained_model["cfg"].detector)
    other.process(flow_records(events))
    other.drop_partitions({("t", 0)})
    assert other.held_offsets() == {} and len(other.flush().windows) == 0


def test_empty_batch(model, trained_model):
    r = Pipeline(model, trained_model["cfg"].detector).process([])
    assert (r.alerts, r.dead, r.scored, len(r.windows), r.n_records) == ([], [], None, 0, 0)


def test_pipeline_refuses_a_model_of_other_features(trained_model):
    other = load_artifact_dir(trained_model["path"])
    other.config.window.aggregates = ["mean"]
    with pytest.raises(ValueError, match="other window features"):
        Pipeline(other, trained_model["cfg"].detector)


def scored_columns(model, cfg, flows, extra):
    """Run the test flows through a pipeline with ``cfg``: the pipeline, its results and, over all
    scored windows, p-values, the ``extra`` tail probability, significance, alert flags, entities."""
    pipe = Pipeline(model, cfg)
    results = [pipe.process(b) for b in chunks(flow_records(flows["test"]))] + [pipe.flush()]
    scored = [r for r in results if r.scored is not None]
    cols = [np.concatenate([getattr(r.scored, k) for r in scored]) for k in ("p_value", extra, "significance", "alert")]
    return pipe, results, (*cols, np.concatenate([r.windows.entity for r in scored]))


@pytest.mark.parametrize("rule", ["geometric", "both"])
def test_entity_baseline_alerts_are_a_subset_and_carry_their_tail_probability(model, trained_model, flows, clean_run,
                                                                               rule):
    cfg = dataclasses.replace(trained_model["cfg"].detector, entity_baseline=200, entity_baseline_rule=rule)
    pipe, results, (p, q, sig, flags, entities) = scored_columns(model, cfg, flows, "entity_p")
    np.testing.assert_array_equal(p, clean_run["p"])  # the calibrated p-values are unchanged
    expect = np.maximum(p, q) if rule == "both" else np.maximum(p, np.sqrt(p * q))
    np.testing.assert_allclose(sig, expect)
    np.testing.assert_array_equal(flags, sig < cfg.alpha)
    assert flags.sum() <= clean_run["alert_flags"].sum() and not (flags & ~clean_run["alert_flags"]).any()
    alerts = [a for r in results for a in r.alerts]
    assert len(alerts) == flags.sum() and all(a["significance"] < cfg.alpha for a in alerts)
    assert all(a["p_value"] <= a["significance"] and 0 <= a["entity_p_value"] <= 1 for a in alerts)
    if rule == "both":
        assert all(a["entity_p_value"] < cfg.alpha for a in alerts)
    assert len(pipe.detector.baseline) == len(set(entities))


def test_detector_takes_the_baseline_span_and_the_p_tail_from_config(model, trained_model):
    base = trained_model["cfg"].detector
    det = Pipeline(model, dataclasses.replace(base, entity_baseline=200, entity_baseline_short=3)).detector
    assert det.baseline.b_short == pytest.approx(2 / 4) and det.baseline.b_long == pytest.approx(2 / 201)
    assert det.calibrator.tail_beta > 0 and det.calibrator.min_p == 0.0
    plain = Pipeline(model, dataclasses.replace(base, p_tail=False)).detector
    assert plain.baseline is None and plain.calibrator.min_p == pytest.approx(1 / (plain.calibrator.n + 1))
    far = np.array([plain.calibrator.sorted[-1] * 10])
    assert det.calibrator.p_values(far)[0] < plain.calibrator.p_values(far)[0]


def test_input_baseline_joins_the_decision_and_the_alert_record(model, trained_model, flows, clean_run):
    cfg = dataclasses.replace(trained_model["cfg"].detector, input_baseline=100)
    pipe, results, (p, q_in, sig, flags, entities) = scored_columns(model, cfg, flows, "input_p")
    np.testing.assert_array_equal(p, clean_run["p"])  # the calibrated p-values are unchanged
    assert ((q_in > 0) & (q_in <= 1)).all() and (q_in < 1).any()
    np.testing.assert_allclose(sig, np.sqrt(p * q_in))
    np.testing.assert_array_equal(flags, sig < cfg.alpha)
    alerts = [a for r in results for a in r.alerts]
    assert len(alerts) == flags.sum() > 0
    assert all(a["significance"] < cfg.alpha and "input_p_value" in a and "entity_p_value" not in a for a in alerts)
    assert len(pipe.detector.input_baseline) == len(set(entities))


def test_range_view_breaks_alert_whatever_the_model_says(model, trained_model, flows, clean_run):
    """A tolerance of 0.001: nearly every new extreme of an entity's raw features breaks its range
    (some on clean flows); a break alerts at the floor significance, the ranking and the other
    alerts unchanged."""
    from streamer.detector import RANGE_BREAK_SIGNIFICANCE

    cfg = dataclasses.replace(trained_model["cfg"].detector, range_tolerance=0.001)
    pipe, results, (p, brk, sig, flags, entities) = scored_columns(model, cfg, flows, "range_break")
    np.testing.assert_array_equal(p, clean_run["p"])
    np.testing.assert_array_equal(sig, clean_run["p"])  # the ranking is the p-value's, as without the view
    assert brk.dtype == bool and 0 < brk.sum() < len(brk)
    np.testing.assert_array_equal(flags, brk | clean_run["alert_flags"])
    sig_alert = np.concatenate([r.scored.alert_significance for r in results if r.scored is not None])
    np.testing.assert_array_equal(sig_alert, np.where(brk, RANGE_BREAK_SIGNIFICANCE, p))
    alerts = [a for r in results for a in r.alerts]
    assert len(alerts) == flags.sum() and sum(a["range_break"] for a in alerts) == brk.sum()
    assert all(a["significance"] == RANGE_BREAK_SIGNIFICANCE for a in alerts if a["range_break"])
    assert len(pipe.detector.range) == len(set(entities))
    # a model written before the view existed has no training range
    scoring = {k: v for k, v in model.scoring.items() if k not in ("input_min", "input_max")}
    old = dataclasses.replace(model, scoring=scoring)
    with pytest.raises(ValueError, match="retrain it to use detector.range_tolerance"):
        Pipeline(old, cfg)
    # a warm-up of w x the training windows: no entity's breaks count before its (w x n)-th window
    n = model.scoring["input_range_n"]
    assert n == model.card["data"]["windows"]
    warm = dataclasses.replace(cfg, range_warmup=0.01)
    _, _, (_, brk_w, _, _, ent_w) = scored_columns(model, warm, flows, "range_break")
    rank = np.array([np.sum(ent_w[:i] == e) for i, e in enumerate(ent_w)])  # each window's index in its entity
    np.testing.assert_array_equal(brk_w, brk & (rank >= int(np.ceil(0.01 * n))))
    assert 0 < brk_w.sum() < brk.sum()  # some breaks were young, some not
    # a model written before the count was recorded can run the view, not its warm-up
    older = dataclasses.replace(model, scoring={k: v for k, v in model.scoring.items() if k != "input_range_n"})
    Pipeline(older, cfg)
    with pytest.raises(ValueError, match="retrain it to use detector.range_warmup"):
        Pipeline(older, warm)


def test_seasonal_baseline_joins_the_input_decision_by_window_time(model, trained_model, flows, clean_run):
    base = trained_model["cfg"].detector
    cfg = dataclasses.replace(base, input_baseline=100, seasonal_period_s=60.0, seasonal_buckets=6)
    pipe, results, (p, q_both, sig, flags, entities) = scored_columns(model, cfg, flows, "input_p")
    np.testing.assert_array_equal(p, clean_run["p"])
    # the input baseline alone, to take apart what the seasonal one added
    _, _, (_, q_in, _, _, _) = scored_columns(model, dataclasses.replace(base, input_baseline=100), flows, "input_p")
    assert ((q_both > 0) & (q_both <= 1)).all()
    assert (q_both <= np.minimum(1.0, 2 * q_in) + 1e-12).all() and (q_both != np.minimum(1.0, 2 * q_in)).any()
    np.testing.assert_allclose(sig, np.sqrt(p * q_both))
    np.testing.assert_array_equal(flags, sig < cfg.alpha)
    # a spread per entity, a mean per entity and phase of the minute the windows' event times fell in
    assert len(pipe.detector.seasonal) == len(set(entities))
    assert len(set(entities)) < len(pipe.detector.seasonal._means.slot) <= 6 * len(set(entities))


def swap_halfway(model, cfg, batches: list[list[Record]], swap: bool, check) -> tuple[Pipeline, list]:
    """Run ``batches`` through a pipeline; with ``swap``, hot-swap halfway to the same weights as a
    new version ``v2`` (what its model-independent state says must then not change). Calls
    ``check(before, after)`` halfway with the detector of the first half and the one that replaced
    it (None without a swap). Returns the pipeline and the second half's non-empty scorings."""
    pipe = Pipeline(model, cfg)
    half = len(batches) // 2
    for b in batches[:half]:
        pipe.process(b)
    before = pipe.detector
    if swap:
        pipe.swap_model(dataclasses.replace(model, version="v2"))
    check(before, pipe.detector if swap else None)
    rest = [pipe.process(b) for b in batches[half:]] + [pipe.flush()]
    return pipe, [r.scored for r in rest if r.scored is not None]


def test_hot_swap_keeps_the_raw_value_baselines_and_open_incidents(model, trained_model, flows):
    cfg = dataclasses.replace(trained_model["cfg"].detector, entity_baseline=200, input_baseline=100,
                              seasonal_period_s=60.0, seasonal_buckets=6, alert_cooldown=20, range_tolerance=0.05)
    batches = chunks(flow_records(flows["test"]))

    def check(before, d) -> None:
        if d is None:
            return
        assert d is not before and d.version == "v2"
        assert d.input_baseline is before.input_baseline and d.seasonal is before.seasonal
        assert d.range is before.range and len(d.range) > 0
        assert d.cooldown is before.cooldown and len(d.cooldown) > 0
        # the entity baseline judges the model's own score: it restarts from the new calibration
        assert d.baseline is not before.baseline and len(d.baseline) == 0 < len(before.baseline)

    _, kept = swap_halfway(model, cfg, batches, False, check)
    pipe, swapped = swap_halfway(model, cfg, batches, True, check)
    kept, swapped = (np.concatenate([sc.input_p for sc in r]) for r in (kept, swapped))
    assert pipe.model_version == "v2" and len(swapped) > 100
    np.testing.assert_array_equal(swapped, kept)


def test_hot_swap_keeps_the_change_view_and_its_memory(tmp_path, flows):
    """A model of count windows of 2 events with the change view and a change memory: a hot swap
    to a new version keeps both (what they say after the swap is what they say without it)."""
    from conftest import make_config

    from streamer.train import train_model

    cfg = make_config(tmp_path, **{"window.kind": "count", "window.size": 2, "window.slide": 1,
                                   "detector.change_horizon": 100, "detector.change_memory_s": 60.0})
    art = load_artifact_dir(train_model(cfg, flow_records(flows["train"][:4000]), source="test flows",
                                        show_progress=False))
    batches = chunks(flow_records(flows["test"][:6000]))

    def check(before, d) -> None:
        assert before.change is not None and before.change_memory is not None and len(before.change_memory) > 0
        if d is not None:
            assert d.change is before.change and d.change_memory is before.change_memory

    kept, swapped = (np.concatenate([sc.change_p for sc in swap_halfway(art, cfg.detector, batches, swap, check)[1]])
                     for swap in (False, True))
    assert len(kept) > 100 and (kept < 1).any()
    np.testing.assert_array_equal(swapped, kept)


def test_transition_view_alerts_on_steps_an_entity_never_made_and_survives_a_hot_swap(tmp_path, flows, model,
                                                                                         trained_model):
    """A model of count windows of 2 events with the transition view (4 levels): a window making a
    step between levels its entity never made alerts at the floor significance, the ranking and
    the model's own alerts unchanged; a warm-up of w x the training windows silences an entity's
    earlier ones; a hot swap keeps what the view learned; record windows have no steps."""
    from conftest import make_config

    from streamer.detector import RANGE_BREAK_SIGNIFICANCE
    from streamer.train import train_model

    cfg = make_config(tmp_path, **{"window.kind": "count", "window.size": 2, "window.slide": 1})
    art = load_artifact_dir(train_model(cfg, flow_records(flows["train"][:4000]), source="test flows",
                                        show_progress=False))
    batches = chunks(flow_records(flows["test"][:6000]))

    def columns(det_cfg):
        pipe = Pipeline(art, det_cfg)
        results = [pipe.process(b) for b in batches] + [pipe.flush()]
        sc = [r.scored for r in results if r.scored is not None]
        cols = {k: np.concatenate([getattr(x, k) for x in sc])
                for k in ("p_value", "significance", "alert", "alert_significance")}
        cols["new"] = np.concatenate([x.new_transition for x in sc]) if sc[0].new_transition is not None else None
        cols["entity"] = np.concatenate([r.windows.entity for r in results if r.scored is not None])
        return pipe, [a for r in results for a in r.alerts], cols

    _, _, plain = columns(cfg.detector)
    assert plain["new"] is None
    on = dataclasses.replace(cfg.detector, transition_levels=4)
    pipe, alerts, got = columns(on)
    new = got["new"]
    np.testing.assert_array_equal(got["p_value"], plain["p_value"])
    np.testing.assert_array_equal(got["significance"], plain["significance"])  # the ranking is unchanged
    assert new.dtype == bool and 0 < new.sum() < len(new)
    np.testing.assert_array_equal(got["alert_significance"],
                                  np.where(new, RANGE_BREAK_SIGNIFICANCE, plain["alert_significance"]))
    np.testing.assert_array_equal(got["alert"], new | plain["alert"])
    assert len(alerts) == got["alert"].sum() and sum(a["new_transition"] for a in alerts) == new.sum()
    assert all(a["significance"] == RANGE_BREAK_SIGNIFICANCE for a in alerts if a["new_transition"])
    assert len(pipe.detector.transition) == len(set(got["entity"]))
    # a warm-up of w x the training windows: no entity's new steps count before its (w x n)-th window
    n = art.scoring["input_range_n"]
    _, _, warm = columns(dataclasses.replace(on, transition_warmup=0.01))
    rank = np.array([np.sum(warm["entity"][:i] == e) for i, e in enumerate(warm["entity"])])
    np.testing.assert_array_equal(warm["new"], new & (rank >= int(np.ceil(0.01 * n))))
    assert 0 < warm["new"].sum() < new.sum()

    def check(before, d) -> None:
        assert before.transition is not None and len(before.transition) > 0
        if d is not None:
            assert d.transition is before.transition

    kept, swapped = (np.concatenate([sc.new_transition for sc in swap_halfway(art, on, batches, swap, check)[1]])
                     for swap in (False, True))
    assert len(kept) > 100 and kept.any()
    np.testing.assert_array_equal(swapped, kept)
    # record windows (the shared flow model): no event before a window's new one
    with pytest.raises(ValueError, match="detector.transition_levels needs count windows"):
        Pipeline(model, dataclasses.replace(trained_model["cfg"].detector, transition_levels=4))
    # a model written before the training range was recorded cannot run it
    old = dataclasses.replace(art, scoring={k: v for k, v in art.scoring.items()
                                            if k not in ("input_min", "input_max")})
    with pytest.raises(ValueError, match="retrain it to use detector.transition_levels"):
        Pipeline(old, on)


def test_an_ensemble_model_trains_loads_and_detects(tmp_path, flows, trained_model):
    """``model.members=2``: one artifact holding two autoencoders; the reservoir and the
    calibration live in their joint latent space; the pipeline alerts on both attack hosts, and a
    detector running a single autoencoder hot-swaps to it between two batches."""
    import json

    from conftest import make_config

    from streamer.train import train_model

    cfg = make_config(tmp_path, **{"model.members": 2})
    path = train_model(cfg, flow_records(flows["train"]), source="test flows", show_progress=False)
    card = json.loads((path / "card.json").read_text())
    assert card["training"]["members"] == 2
    art = load_artifact_dir(path)
    assert art.embedder.members == 2 and art.embedder.latent_dim == 2 * cfg.model.latent_dim
    assert art.reservoir_seed.shape[1] == 2 * cfg.model.latent_dim
    assert np.isfinite(art.calibration).all()
    records = flow_records(flows["test"])
    out = run(Pipeline(art, cfg.detector), records)
    by_entity = Counter(a["entity"] for a in out["alerts"])
    assert by_entity[SCAN] >= 1 and by_entity[EXFIL] >= 1, by_entity
    others = sum(n for e, n in by_entity.items() if e not in (SCAN, EXFIL))
    assert others <= max(3, 0.03 * len(out["windows"])), by_entity
    # a hot swap from one autoencoder to the ensemble (another latent width) mid-stream
    single = Pipeline(load_artifact_dir(trained_model["path"]), cfg.detector)
    batches = chunks(records)
    single.process(batches[0])
    single.swap_model(art)
    assert single.model_version == art.version and single.detector.reservoir.dim == 2 * cfg.model.latent_dim
    rest = run(single, batches=batches[1:])
    assert len(rest["windows"]) > 0 and np.isfinite(rest["score"]).all()


def test_recon_top_model_scores_its_largest_feature_errors(tmp_path, flows, model):
    """``detector.recon_top=3``: training scales and calibrates the reconstruction error as the mean of
    each window's 3 largest feature errors, the artifact carries it, and the detector scores that
    way; a model trained before the option (no ``recon_top`` in its scoring) averages every feature."""
    from conftest import make_config

    from streamer.score import recon_error
    from streamer.train import train_model

    cfg = make_config(tmp_path, **{"detector.recon_top": 3})
    art = load_artifact_dir(train_model(cfg, flow_records(flows["train"]), source="test flows",
                                        show_progress=False))
    assert art.scoring["recon_top"] == 3 and np.isfinite(art.calibration).all()
    pipe = Pipeline(art, cfg.detector)
    assert pipe.detector.recon_top == 3
    out = pipe.process(flow_records(flows["test"][:2000]))
    sc = out.scored
    assert sc.sq_err.shape[1] > 3
    np.testing.assert_allclose(sc.recon, recon_error(sc.sq_err, top=3))
    assert (sc.recon >= sc.sq_err.mean(axis=1) - 1e-12).all()
    # an older artifact's scoring has no recon_top: every feature
    old = dataclasses.replace(model, scoring={k: v for k, v in model.scoring.items() if k != "recon_top"})
    det = Pipeline(old, cfg.detector).detector
    assert det.recon_top == 0


def test_input_baseline_prior_from_the_model_or_its_card(model):
    from streamer.detector import input_prior

    mean, var = input_prior(model)
    np.testing.assert_allclose(mean, model.card["data"]["feature_mean"], atol=1e-6)
    np.testing.assert_allclose(np.sqrt(var), model.card["data"]["feature_std"], atol=1e-6)
    # a model written before the input baseline existed: the card's rounded figures
    old = dataclasses.replace(model, scoring={k: v for k, v in model.scoring.items() if not k.startswith("input_")})
    np.testing.assert_allclose(input_prior(old)[0], model.card["data"]["feature_mean"])
    bare = dataclasses.replace(old, card={})
    with pytest.raises(ValueError, match="retrain it to use detector.input_baseline"):
        input_prior(bare)


def test_input_baseline_judges_each_event_once_in_count_windows():
    from types import SimpleNamespace

    from streamer.window import new_event_columns

    def cols(kind, size=4, slide=1):
        names = [f"{f}@-{lag}" for lag in range(size - 1, -1, -1) for f in ("a", "b")]
        return new_event_columns(names, SimpleNamespace(kind=kind, size=size, slide=slide))

    np.testing.assert_array_equal(cols("count"), [6, 7])  # a@-0, b@-0
    np.testing.assert_array_equal(cols("count", slide=2), [4, 5, 6, 7])
    np.testing.assert_array_equal(cols("count", slide=9), np.arange(8))  # tumbling: all
    np.testing.assert_array_equal(cols("time"), np.arange(8))


def test_change_view_pairs_each_new_event_with_the_one_before():
    from types import SimpleNamespace

    from streamer.window import change_columns

    def pairs(kind, size=3, slide=1):
        names = [f"{f}@-{lag}" for lag in range(size - 1, -1, -1) for f in ("a", "b")]
        new, prev = change_columns(names, SimpleNamespace(kind=kind, size=size, slide=slide))
        return [(names[i], names[j]) for i, j in zip(new, prev)]

    assert pairs("count") == [("a@-0", "a@-1"), ("b@-0", "b@-1")]
    assert pairs("count", slide=2) == [("a@-1", "a@-2"), ("b@-1", "b@-2"), ("a@-0", "a@-1"), ("b@-0", "b@-1")]
    assert pairs("count", slide=3) == [("a@-1", "a@-2"), ("b@-1", "b@-2"), ("a@-0", "a@-1"), ("b@-0", "b@-1")]
    assert pairs("count", size=1) == [] and pairs("time") == [] and pairs("record") == []


def test_alert_cooldown_groups_alerts_into_incidents(model, trained_model, flows, clean_run):
    cfg = dataclasses.replace(trained_model["cfg"].detector, alert_cooldown=50)
    pipe, results, (p, repeat, sig, flags, entities) = scored_columns(model, cfg, flows, "repeat")
    np.testing.assert_array_equal(sig, clean_run["p"])  # what is significant is unchanged
    # alerts: the significant windows that do not repeat their entity's open incident
    np.testing.assert_array_equal(flags, (sig < cfg.alpha) & ~repeat)
    assert 0 < flags.sum() < clean_run["alert_flags"].sum()
    alerts = [a for r in results for a in r.alerts]
    assert len(alerts) == flags.sum()
    assert len(pipe.detector.cooldown) == len(set(entities))


def test_view_incidents_own_keeps_range_breaks_out_of_the_cooldowns_incidents(model, trained_model, flows, clean_run):
    """``detector.view_incidents own``: a range break (floor significance) alerts unless its entity
    had a break among its previous ``alert_cooldown`` windows; every window enters the cooldown with
    its significance without the view, and a repeated break is judged as any other window, so a
    break no longer silences the model's own later alerts ("shared", the default, groups them all
    as one incident). A hot swap keeps both groupings."""
    from streamer.detector import RANGE_BREAK_SIGNIFICANCE

    k = 50
    # a training range narrowed to 90% of its width: ordinary windows break it too
    lo, hi = (np.asarray(model.scoring[key]) for key in ("input_min", "input_max"))
    narrow = dataclasses.replace(model, scoring={**model.scoring, "input_max": (lo + 0.9 * (hi - lo)).tolist()})
    shared = dataclasses.replace(trained_model["cfg"].detector, alert_cooldown=k, range_tolerance=0.001)
    own = dataclasses.replace(shared, view_incidents="own")
    _, _, (p, brk, _, alert_shared, _) = scored_columns(narrow, shared, flows, "range_break")
    pipe, results, (p_own, brk_own, _, alert, entities) = scored_columns(narrow, own, flows, "range_break")
    repeat, sig_alert = (np.concatenate([getattr(r.scored, key) for r in results if r.scored is not None])
                         for key in ("repeat", "alert_significance"))
    np.testing.assert_array_equal(p_own, clean_run["p"])
    np.testing.assert_array_equal(brk_own, brk)
    assert 0 < brk.sum() < len(brk)
    # by hand, per entity in stream order: a break alerts when none of its previous k windows was a
    # break; any other window repeats when one of its previous k windows had a p-value at most its own
    view_alert, model_repeat = np.zeros(len(p), dtype=bool), np.zeros(len(p), dtype=bool)
    for e in set(entities):
        idx = np.flatnonzero(entities == e)
        for j, i in enumerate(idx):
            prev = idx[max(0, j - k):j]
            view_alert[i] = brk[i] and not brk[prev].any()
            model_repeat[i] = bool((p[prev] <= p[i]).any())
    np.testing.assert_array_equal(sig_alert, np.where(view_alert, RANGE_BREAK_SIGNIFICANCE, p))
    np.testing.assert_array_equal(repeat, model_repeat & ~view_alert)
    np.testing.assert_array_equal(alert, view_alert | ((p < own.alpha) & ~model_repeat))
    # the model's alerts an earlier break silenced under "shared" now alert
    assert (alert & ~alert_shared & (p < own.alpha)).any()
    assert len([a for r in results for a in r.alerts]) == alert.sum()
    assert len(pipe.detector.view_cooldown) == len(set(entities))
    # without the cooldown, or with "shared", there is no second grouping
    assert Pipeline(narrow, dataclasses.replace(own, alert_cooldown=0)).detector.view_cooldown is None
    assert Pipeline(narrow, shared).detector.view_cooldown is None

    def check(before, d) -> None:
        if d is not None:
            assert d.view_cooldown is before.view_cooldown and d.cooldown is before.cooldown

    kept, swapped = (np.concatenate([sc.repeat for sc in swap_halfway(narrow, own, chunks(flow_records(flows["test"])),
                                                                     swap, check)[1]])
                     for swap in (False, True))
    assert len(kept) > 100 and kept.any()
    np.testing.assert_array_equal(swapped, kept)


def test_incident_gap_alerts_once_per_run_of_significant_windows(model, trained_model, flows, clean_run):
    gap = 20
    cfg = dataclasses.replace(trained_model["cfg"].detector, incident_gap=gap)
    pipe, results, (p, repeat, sig, flags, entities) = scored_columns(model, cfg, flows, "repeat")
    np.testing.assert_array_equal(sig, clean_run["p"])
    significant = sig < cfg.alpha
    np.testing.assert_array_equal(flags, significant & ~repeat)
    assert 0 < flags.sum() < significant.sum()
    # per entity (windows in stream order): an alert only where none of its previous `gap` windows
    # was significant, and every significant window after such a stretch alerts
    for e in set(entities):
        mine = entities == e
        s, f = significant[mine], flags[mine]
        quiet = np.array([not s[max(0, i - gap):i].any() for i in range(len(s))], dtype=bool)
        np.testing.assert_array_equal(f, s & quiet)
    assert len([a for r in results for a in r.alerts]) == flags.sum()
