"""The results table printed after a run, shaped like lm-evaluation-harness's markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-style markdown table with columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


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
