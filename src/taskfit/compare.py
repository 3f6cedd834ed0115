"""Compare two finished runs example by example (``taskfit compare-results a b``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.metrics.paired import paired_compare
from taskfit.runs import read_run


def _label(results: dict[str, Any]) -> str:
    cfg = results["config"]
    args = ",".join(f"{k}={v}" for k, v in sorted(cfg.get("strategy_args", {}).items()))
    options = f"({args})" if args else ""
    return f"{cfg['task']} {cfg['strategy']}{options} {cfg['mode']} [{results.get('output_dir', '')}]"


def compare_runs(a: str | Path, b: str | Path, n_resamples: int = 2000, seed: int = 0,
                 intersect: bool = False) -> dict[str, Any]:
    """Paired comparison of runs A and B on the same examples (matched by index and input). Runs on different
    example sets are refused unless ``intersect``, which compares the shared ones and says how many were dropped."""
    run_a, run_b = read_run(a), read_run(b)
    if run_a.folder.resolve() == run_b.folder.resolve():
        raise UserError(f"A and B are the same run ({run_a.folder}); give two different run folders")
    res_a, samples_a, res_b, samples_b = run_a.results, run_a.samples, run_b.results, run_b.samples
    if res_a["task"]["name"] != res_b["task"]["name"]:
        raise UserError(f"the runs are on different tasks ({res_a['task']['name']} vs {res_b['task']['name']})")
    by_index = {s["index"]: s for s in samples_b}
    pairs = []
    for s in samples_a:
        other = by_index.get(s["index"])
        if other is None:
            continue
        if other["input"] != s["input"] or other["gold"] != s["gold"] or other.get("choices") != s.get("choices"):
            raise UserError(f"example {s['index']} differs between the runs (different data or split); "
                            "compare runs on the same examples")
        pairs.append((s, other))
    a_only, b_only = len(samples_a) - len(pairs), len(samples_b) - len(pairs)
    if (a_only or b_only) and not intersect:
        raise UserError(f"the runs evaluated different examples: {a_only} only in A, {b_only} only in B, "
                        f"{len(pairs)} in both; pass --intersect to compare the {len(pairs)} shared ones (the "
                        "others are left out), or rerun both with the same --split / --limit / --sample / --seed")
    if len(pairs) < 2:
        raise UserError("the runs share fewer than 2 examples; compare runs on the same split")
    labels = [label["value"] for label in res_a["task"].get("labels", [])]
    metrics = [m for m in res_a["task"]["metrics"] if m in res_b["task"]["metrics"]]
    comparisons = paired_compare(metrics, [p[0] for p in pairs], [p[1] for p in pairs], labels,
                                 n_resamples=n_resamples, seed=seed)
    return {"a": {"label": _label(res_a)}, "b": {"label": _label(res_b)}, "n": len(pairs),
            "dropped": {"a_only": a_only, "b_only": b_only},
            "comparisons": [c.as_dict() for c in comparisons]}
