"""Run folders -> the methods a report compares, grouped by task, with what each one cost.

A method is one finished run (``results.json`` + ``samples.jsonl``). Its label is built from the settings that
differ between the runs of its task, so "few_shot(k=4, selector=knn)" and "zero_shot + lora adapter" read as
what they are. All methods of a task must have evaluated the same examples; otherwise the report refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.runs import RESULTS, SAMPLES, Run, read_run, read_run_card


@dataclass(frozen=True)
class Cost:
    """What one method cost. ``seconds_per_1k`` is ``None`` when the run's seconds do not measure its work
    (answers read from the response cache); ``excluded`` then says why."""

    seconds_per_1k: float | None
    excluded: str | None
    prompt_tokens_per_prediction: float | None
    generated_tokens_per_prediction: float | None
    peak_rss_mib: float | None
    train_s: float | None = None
    trainable_parameters: int | None = None
    labelled_examples: int | None = None
    tuning_method: str | None = None
    loss_history: tuple[tuple[float, float], ...] = ()

    @property
    def tuned(self) -> bool:
        return self.tuning_method is not None


@dataclass
class Method:
    """One run as a contender in the report."""

    run: Run
    label: str = ""
    cost: Cost = field(init=False)

    def __post_init__(self) -> None:
        self.cost = run_cost(self.run)

    @property
    def results(self) -> dict[str, Any]:
        return self.run.results

    @property
    def samples(self) -> list[dict[str, Any]]:
        return self.run.samples

    @property
    def task(self) -> str:
        return self.results["task"]["name"]

    @property
    def config(self) -> dict[str, Any]:
        return self.results["config"]

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def parse_failure_rate(self) -> float:
        return sum(not r.get("parse_ok", True) for r in self.samples) / max(1, self.n)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders named directly, or found anywhere under a folder (a grid's output), in a stable order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file() and path.name == RESULTS:
            path = path.parent
        if (path / RESULTS).is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(p.parent for p in path.rglob(RESULTS) if (p.parent / SAMPLES).is_file())
            if not inside:
                raise UserError(f"{path} holds no finished run (no {RESULTS} with {SAMPLES} under it); give run "
                                "folders written by taskfit eval")
            found.extend(inside)
        else:
            raise UserError(f"{path} not found; give run folders written by taskfit eval (or a folder holding them)")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def collect(paths: Iterable[str | Path]) -> dict[str, list[Method]]:
    """The methods of every task among ``paths``, labelled, each task's methods checked to share their examples."""
    by_task: dict[str, list[Method]] = {}
    for folder in find_runs(paths):
        method = Method(read_run(folder))
        by_task.setdefault(method.task, []).append(method)
    for methods in by_task.values():
        check_same_examples(methods)
        for method, label in zip(methods, labels_for(methods)):
            method.label = label
    return by_task


def check_same_examples(methods: Sequence[Method]) -> None:
    """Refuse methods of one task that evaluated different examples (index, input and gold must all match)."""
    first = methods[0]
    keys = [_example_key(r) for r in first.samples]
    for other in methods[1:]:
        theirs = [_example_key(r) for r in other.samples]
        if theirs != keys:
            only_first = len(set(keys) - set(theirs))
            only_other = len(set(theirs) - set(keys))
            raise UserError(
                f"{first.run.folder} and {other.run.folder} evaluated different examples of task {first.task} "
                f"({len(keys)} vs {len(theirs)} rows; {only_first} only in the first, {only_other} only in the "
                "second); a report compares runs on the same examples: rerun them with the same --split / --limit / "
                "--sample / --seed, or leave one out")


def _example_key(record: dict[str, Any]) -> tuple[Any, str, str]:
    return record["index"], str(record.get("input")), str(record.get("gold"))


def labels_for(methods: Sequence[Method]) -> list[str]:
    """A short, unique label per method: only the settings that differ between the task's runs (strategy and its
    options, mode, model, backend where one model ran on two, quantization), a tuned model as its tuning method and
    folder name, then the run folder's name if two labels still collide."""
    parts = [_label_parts(m) for m in methods]
    varying = {key for key in ("strategy", "mode", "model", "quantize") if len({p[key] for p in parts}) > 1}
    by_model: dict[str, set[str]] = {}
    for p in parts:
        by_model.setdefault(p["model"], set()).add(p["backend"])
    if any(len(backends) > 1 for backends in by_model.values()):
        varying.add("backend")
    labels = []
    for p in parts:
        keys = [k for k in ("strategy", "mode", "model", "backend", "quantize") if k in varying and p[k]]
        if p["tuned"]:
            keys = [k for k in keys if k != "model"]
        words = [p[k] for k in keys] + ([p["tuned"]] if p["tuned"] else [])
        labels.append(" ".join(words) or p["strategy"])
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} [{methods[i].run.folder.name}]"
    return labels


def _label_parts(method: Method) -> dict[str, str]:
    cfg = method.config
    args = ", ".join(f"{k}={v}" for k, v in sorted((cfg.get("strategy_args") or {}).items()))
    model = str(cfg.get("model", ""))
    tuned = ""
    if method.cost.tuned:
        trained = cfg.get("adapter") or model.split(":", 1)[-1]
        tuned = f"{method.cost.tuning_method} ({Path(str(trained)).name})"
    if ":" in model:  # hf:/gguf:/head: paths: the folder or file name says enough
        kind, _, where = model.partition(":")
        model = f"{kind}:{Path(where).name}"
    return {"strategy": cfg["strategy"] + (f"({args})" if args else ""), "mode": str(cfg.get("mode")),
            "model": model, "backend": str(cfg.get("backend")),
            "quantize": "" if cfg.get("quantize", "none") == "none" else f"{cfg['quantize']}",
            "tuned": tuned}


def run_cost(run: Run) -> Cost:
    """A run's cost from results.json's ``cost`` block (runs older than it: ``timings`` and ``backend_stats``)."""
    res = run.results
    n = max(1, len(run.samples))
    cost = res.get("cost") or {}
    stats = res.get("backend_stats") or {}
    timings = res.get("timings") or {}
    eval_s = cost.get("eval_s_this_session", timings.get("eval_s"))
    resumed = cost.get("rows_resumed", timings.get("resumed_after", 0)) or 0
    cached = cost.get("requests_cached", stats.get("cache_hits", 0)) or 0
    computed_rows = n - resumed
    excluded = None
    if cached:
        computed = cost.get("requests_computed", stats.get("cache_misses"))
        excluded = f"{cached} of {cached + (computed or 0)} answers read from the response cache"
    elif computed_rows <= 0 or eval_s is None:
        excluded = "every row was resumed from an earlier session"
    seconds = None if excluded else 1000 * eval_s / computed_rows
    prompt_tokens = cost.get("input_tokens_computed", stats.get("input_tokens", stats.get("prompt_tokens")))
    generated = cost.get("generated_tokens", sum(int(r.get("generated_tokens") or 0) for r in run.samples))
    training = _training(res, run.folder)
    return Cost(
        seconds_per_1k=seconds,
        excluded=excluded,
        prompt_tokens_per_prediction=None if excluded or prompt_tokens is None else prompt_tokens / computed_rows,
        generated_tokens_per_prediction=generated / n,
        peak_rss_mib=cost.get("peak_rss_mib"),
        **training,
    )


def _training(results: dict[str, Any], folder: Path) -> dict[str, Any]:
    block = (results.get("cost") or {}).get("training")
    if not block:
        return {}
    recorded = Path(block["run_card"])  # relative to where the run was started: try there, then above the run folder
    card = next((c for c in (read_run_card(base / recorded.parent) for base in (Path("."), *folder.resolve().parents))
                 if c is not None), None) or {}
    history = tuple((float(h["step"]), float(h["loss"])) for h in card.get("loss_history", []))
    return {"train_s": block.get("train_s"), "trainable_parameters": block.get("trainable_parameters"),
            "labelled_examples": block.get("labelled_examples"), "tuning_method": card.get("method", "tuned"),
            "loss_history": history}
