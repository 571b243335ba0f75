"""The terminal table of ``streamer eval`` (streamer.report.table)."""

from __future__ import annotations

from streamer.report import table


def test_table_marks_the_best_pr_auc_and_formats_each_kind_of_figure():
    figs = {"nab": {
        "streamer": {"alpha": 0.010000000000000002, "roc_auc": 0.5531, "pr_auc": 0.2004, "nab_standard": 53.12,
                     "nab_low_fp": 41.49, "nab_low_fn": 60.38, "nab_windows_detected": 81, "nab_windows": 116,
                     "nab_false_positives": 251, "event_recall": float("nan")},
        "knn": {"alpha": 0.01, "roc_auc": 0.56, "pr_auc": 0.181, "nab_standard": 3.8},
    }}
    lines = table(figs).splitlines()
    assert lines[1] == "nab  (alpha 0.01; no point adjustment)"
    head = lines[2].split()
    assert head[-4:] == ["NAB", "win", "NAB", "FP"]
    ours, knn = lines[3], lines[4]
    assert ours.startswith("* streamer") and knn.startswith("  knn")
    cells = ours.split()
    # rates with 3 decimals, NAB scores with 1, windows found of all, counts whole, missing as -
    assert cells[2:4] == ["0.553", "0.200"] and cells[-5:] == ["53.1", "41.5", "60.4", "81/116", "251"]
    assert "-" in cells and knn.split()[-5:] == ["3.8", "-", "-", "-", "-"]
