"""The results table printed after a run, shaped like lm-evaluation-harness's markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.tables import markdown_table

__all__ = ["markdown_table", "results_table"]


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per metric of each results.json-shaped dict."""
    headers = ["task", "strategy", "mode", "metric", "value", "95% CI", "n", "parse fail", "seconds"]
    rows = []
    for res in results:
        cfg, counts = res["config"], res["counts"]
        task = res.get("task", {}).get("name", cfg["task"])  # the task's name, also for a task given as a path
        for name, metric in res["metrics"].items():
            ci = "" if metric["ci_low"] is None else f"[{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]"
            fails = f"{counts['parse_failures']} ({counts['parse_failure_rate']:.1%})"
            rows.append(
                [task, cfg["strategy"], cfg["mode"], name, metric["value"], ci, counts["n"], fails,
                 f"{res['timings']['eval_s']:.1f}"]
            )
    return markdown_table(headers, rows)
