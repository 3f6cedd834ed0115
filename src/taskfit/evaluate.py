"""One evaluation run: examples -> strategy -> batched backend calls -> parsed answers -> metrics -> files.

Outputs in the run folder:
- ``samples.jsonl``: one line per example in data order, appended chunk by chunk as examples finish, so
  an error later in the run never loses what was computed;
- ``results.json``: config, task, model, package versions, git hash, metrics with CIs, counts, timings.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from taskfit import __version__
from taskfit.api import Example
from taskfit.config import RunConfig
from taskfit.errors import UserError
from taskfit.metrics import compute_metrics
from taskfit.models.base import Backend
from taskfit.prompting.driver import drive
from taskfit.prompting.strategies import StrategyContext, make_strategy, outcome_record
from taskfit.runs import RunFolder, fingerprint
from taskfit.tasks.task import Task, load_task

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "transformers", "numpy", "scipy", "scikit-learn", "pydantic")
HEAD_PREFIX = "head:"  # --model head:<folder>: a specialist classifier from `taskfit tune --method head`


def default_output(config: RunConfig) -> Path:
    """``runs/<task>/<strategy>-<mode>-<UTC time>``: a new folder per run, never overwriting one."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / Path(config.task).stem / f"{config.strategy}-{config.mode}-{stamp}"


def evaluate(config: RunConfig, backend: Backend | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ``config`` end to end and return the results dict also written to ``results.json``.

    Without ``backend`` the model is loaded from the config (behind the response cache unless
    ``config.cache`` is off); a ``backend`` passed in is used as it is (wrap it in
    :class:`~taskfit.models.cache.CachedBackend` to cache it).
    """
    if config.model.startswith(HEAD_PREFIX):
        from taskfit.tuning.head import evaluate_head

        return evaluate_head(config, progress)
    started = time.perf_counter()
    task = load_task(config.task)
    task.override_prompt(config.prompt.model_dump(exclude_unset=True))
    # All rows are loaded and validated before the model loads: a bad row fails fast and costs nothing.
    examples = select_examples(task, config)
    if not examples:
        raise UserError(f"task {task.name!r} split {config.split or task.config.eval_split!r} has no rows")
    eval_split = config.split or task.config.eval_split
    task.space.check_mode(config.mode)
    task.prepare_answers(examples, eval_split, config.data_dir, config.kb)
    out_dir = config.output or default_output(config)
    # The folder is checked before the model loads: another run there is refused at once, and a complete run
    # needs no model at all.
    folder = RunFolder.open(out_dir, run_fingerprint(config, task, examples), [ex.index for ex in examples])
    if folder.complete and (previous := folder.read_results()) is not None:
        log.info("%s is complete (%d examples); nothing to do", out_dir, len(folder.done))
        return previous
    load_start = time.perf_counter()
    if backend is None:
        from taskfit.models import load_backend

        backend = load_backend(config.backend, config.model, **config.backend_options())
        if config.mode == "loglikelihood" and not getattr(backend, "supports_loglikelihood", True):
            raise UserError(backend.loglikelihood_refusal())
        if config.cache:
            from taskfit.models.cache import CachedBackend, ResponseCache, default_cache_path

            backend = CachedBackend(backend, ResponseCache(config.cache_path or default_cache_path()))
    load_s = time.perf_counter() - load_start
    chunk = max(4 * config.batch_size, 32)

    context = StrategyContext(task=task, mode=config.mode, render=backend.render, seed=config.seed,
                              max_tokens=config.max_tokens, progress=progress,
                              json_schema=bool(getattr(backend, "supports_json_schema", False)))
    strategy = make_strategy(config.strategy, context, config.strategy_args)
    if strategy.uses_pool():
        pool_split = config.pool_split or task.config.pool_split
        context.pool = task.examples(pool_split, config.data_dir, getattr(strategy.opts, "pool_limit", None))
        if pool_split == eval_split:
            log.warning("demonstrations come from the evaluated split %r; an example never sees itself, "
                        "but results are optimistic", pool_split)
    resumed = len(folder.done)
    prepare_start = time.perf_counter()
    if not folder.complete:
        strategy.prepare(examples, backend)
    prepare_s = time.perf_counter() - prepare_start
    eval_start = time.perf_counter()
    records = _run_chunks(strategy, examples, backend, task, folder, chunk, progress)
    eval_s = time.perf_counter() - eval_start

    timings = {
        "load_model_s": round(load_s, 3),
        "prepare_s": round(prepare_s, 3),
        "eval_s": round(eval_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "examples_per_s": round((len(records) - resumed) / eval_s, 3) if eval_s > 0 else None,
        "resumed_after": resumed,
    }
    results = write_results(config, task, records, backend.describe(), timings, folder,
                            strategy_info=strategy.info,
                            **({"knowledge_base": task.space.kb_info} if getattr(task.space, "kb_info", None) else {}),
                            backend_stats=dict(getattr(backend, "stats", {})))
    hits = results["backend_stats"].get("cache_hits", 0)
    if hits:
        log.info("%d of %d model requests were answered from the response cache (--no-cache to recompute)",
                 hits, hits + results["backend_stats"].get("cache_misses", 0))
    return results


def write_results(config: RunConfig, task: Task, records: list[dict[str, Any]], model: dict[str, Any],
                  timings: dict[str, Any], folder: RunFolder, **extra: Any) -> dict[str, Any]:
    """Metrics with CIs and counts from the sample records, written with the run's config, task, model, versions
    and timings to ``results.json`` (every way of answering a task reports through here)."""
    metrics = compute_metrics(task.config.metrics, records, task.label_values,
                              n_resamples=config.bootstrap_samples, seed=config.seed)
    failures = sum(not r["parse_ok"] for r in records)
    counts = {"n": len(records), "parse_failures": failures, "parse_failure_rate": failures / len(records)}
    if all("correct" in r for r in records):
        counts["correct"] = sum(bool(r["correct"]) for r in records)
    results = {
        "taskfit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": json.loads(config.model_dump_json()),
        "task": json.loads(task.config.model_dump_json()),
        "model": model,
        "versions": _versions(),
        "git_hash": _git_hash(),
        "metrics": {name: value.as_dict() for name, value in metrics.items()},
        "counts": counts,
        "timings": timings,
        **extra,
        "output_dir": str(folder.path),
    }
    folder.write_results(results)
    return results


def select_examples(task: Task, config: RunConfig) -> list[Example]:
    """The examples a run evaluates: all rows, the first ``limit``, or a seeded random sample of ``limit`` rows
    kept in data order (many files are sorted by label, so the first rows can be a single class)."""
    if config.sample == "first" or config.limit is None:
        return task.examples(config.split, config.data_dir, config.limit)
    everything = task.examples(config.split, config.data_dir)
    if config.limit >= len(everything):
        return everything
    chosen = np.random.default_rng([config.seed, 0x5A]).choice(len(everything), config.limit, replace=False)
    return [everything[i] for i in sorted(chosen)]


# How a run reaches its model, not what it computes: a run may resume with another server address, key,
# concurrency, retry policy or cache setting.
OPERATIONAL_KEYS = {"output", "base_url", "api_key", "concurrency", "request_timeout", "max_retries", "cache",
                    "cache_path"}


def run_fingerprint(config: RunConfig, task: Task, examples: list[Example]) -> str:
    """What must match for a run folder to be resumed: taskfit's version, the config (operational keys aside),
    the task and the examples."""
    settings = json.loads(config.model_dump_json(exclude=OPERATIONAL_KEYS))
    items = [[ex.index, ex.fields, ex.gold] for ex in examples]
    return fingerprint(__version__, settings, json.loads(task.config.model_dump_json()), items)


def _run_chunks(strategy, examples: list[Example], backend, task: Task, folder: RunFolder, chunk: int,
                progress: bool) -> list[dict[str, Any]]:
    """Drive the strategy over the chunks not yet on disk, appending each finished chunk to the run folder.

    A chunk cut by a crash is recomputed from its start (the same batches as an uninterrupted run), and only
    its records missing from disk are appended.
    """
    start = folder.restart_point(chunk)
    with tqdm(total=len(examples), initial=start, desc=f"{task.name} {strategy.name}", unit="ex",
              disable=not progress) as bar:
        for begin in range(start, len(examples), chunk):
            part = examples[begin : begin + chunk]
            records = [outcome_record(task, example, outcome)
                       for example, outcome in zip(part, drive(strategy, part, backend))]
            folder.append(records, begin)
            bar.update(len(part))
    return list(folder.done)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "taskfit": __version__}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _git_hash() -> str | None:
    """The commit of the taskfit source tree, when it is a git checkout (with '+dirty' for local edits)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
