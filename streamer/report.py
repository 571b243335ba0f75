"""Reports of ``streamer eval``: the terminal table and the PNG figures."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from streamer import metrics
from streamer.evaluate import DatasetResult

__all__ = ["table", "write_plots"]

_COLUMNS = [("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("best_f1", "best F1"), ("f1", "F1@alpha"),
            ("precision", "prec"), ("recall", "recall"), ("false_alarm_rate", "FAR"), ("event_recall", "ev.rec")]
_NAB = [("nab_standard", "NAB std"), ("nab_low_fp", "NAB lowFP"), ("nab_low_fn", "NAB lowFN"),
        # at the standard profile's threshold: labelled windows detected, detections outside them
        ("nab_windows_detected", "NAB win"), ("nab_false_positives", "NAB FP")]


def _fmt(v: Any, key: str = "", fig: dict[str, Any] | None = None) -> str:
    """Rates with 3 decimals; NAB scores (0 = null detector, 100 = perfect) with 1; counts whole
    (windows detected as ``found/all``)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v}/{fig['nab_windows']}" if key == "nab_windows_detected" and fig else str(v)
    return f"{v:.1f}" if key.startswith("nab_") or abs(v) >= 10 else f"{v:.3f}"


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One block per dataset, one row per detector, the best PR-AUC marked."""
    lines = []
    for ds, by_det in results.items():
        cols = _COLUMNS + ([c for c in _NAB if any(c[0] in f for f in by_det.values())])
        alpha = next(iter(by_det.values())).get("alpha")
        # alpha is a mean over series: print 0.01, not 0.010000000000000002
        shown = f"{alpha:g}" if isinstance(alpha, (int, float)) else alpha
        lines.append(f"\n{ds}  (alpha {shown}; no point adjustment)")
        lines.append(f"  {'detector':<12}" + "".join(f"{h:>10}" for _, h in cols))
        best = max(by_det, key=lambda d: by_det[d].get("pr_auc", float("-inf")) if not math.isnan(
            by_det[d].get("pr_auc", float("nan"))) else float("-inf"))
        for det, fig in by_det.items():
            mark = "*" if det == best else " "
            lines.append(f"{mark} {det:<12}" + "".join(f"{_fmt(fig.get(k), k, fig):>10}" for k, _ in cols))
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_plots(result: DatasetResult, out_dir: str | Path, *, max_timelines: int = 3) -> list[Path]:
    """Score timelines (labelled ranges shaded, alerts marked) for a few series, and ROC and PR
    curves per detector (pooled over series on comparable [0, 1] scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if not result.series:
        return written
    detectors = list(result.series[0].unit_scores)
    # Timelines: the series with the most labelled anomalies first (they are the informative ones).
    order = sorted(result.series, key=lambda s: -int(s.labels.sum()))[:max_timelines]
    for s in order:
        fig, axes = plt.subplots(len(detectors), 1, figsize=(12, 1.6 * len(detectors) + 0.6), sharex=True)
        axes = np.atleast_1d(axes)
        x = np.arange(len(s.labels))
        for ax, det in zip(axes, detectors):
            for lo, hi in metrics.ranges(s.labels):
                ax.axvspan(lo, hi, color="tab:red", alpha=0.15, lw=0)
            ax.plot(x, s.unit_scores[det], lw=0.6, color="tab:blue")
            hit = np.nonzero(s.alerts[det])[0]
            ax.plot(hit, s.unit_scores[det][hit], "|", color="black", ms=6)
            ax.set_ylabel(det, rotation=0, ha="right", fontsize=8)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=7)
        axes[0].set_title(f"{result.name} / {s.name}: score (blue), labelled anomalies (red), alerts (|)",
                          fontsize=9)
        axes[-1].set_xlabel("test row")
        fig.tight_layout()
        path = out / f"{_safe(result.name)}_{_safe(s.name)}_timeline.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    y = np.concatenate([s.labels for s in result.series])
    fig_roc, ax_roc = plt.subplots(figsize=(5, 5))
    fig_pr, ax_pr = plt.subplots(figsize=(5, 5))
    for det in detectors:
        sc = np.concatenate([s.unit_scores[det] for s in result.series])
        fpr, tpr, prec, rec = metrics.curves(y, sc)
        ax_roc.plot(fpr, tpr, lw=1, label=f"{det} ({metrics.roc_auc(y, sc):.3f})")
        ax_pr.plot(rec, prec, lw=1, label=f"{det} ({metrics.pr_auc(y, sc):.3f})")
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{result.name}: ROC (pooled)")
    ax_pr.axhline(y.mean(), ls=":", color="grey", lw=0.8)
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"{result.name}: precision-recall (pooled)")
    for ax, fig, tag in ((ax_roc, fig_roc, "roc"), (ax_pr, fig_pr, "pr")):
        ax.legend(fontsize=7, loc="lower right" if tag == "roc" else "upper right")
        fig.tight_layout()
        path = out / f"{_safe(result.name)}_{tag}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
