"""One evaluation run: examples -> strategy -> batched backend calls -> parsed answers -> metrics -> files.

Outputs in the run folder:
- ``samples.jsonl``: one line per example in data order, appended chunk by chunk as examples finish, so
  an error later in the run never loses what was computed;
- ``results.json``: config, task, model, package versions, git hash, metrics with CIs, counts, timings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
from taskfit.config import RunConfig
from taskfit.errors import UserError
from taskfit.metrics import compute_metrics
from taskfit.models.base import Backend
from taskfit.prompting.driver import drive
from taskfit.prompting.strategies import StrategyContext, make_strategy, outcome_record
from taskfit.tasks.task import Example, Task, load_task

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
    task.space.setup(examples, data_dir=config.data_dir, split=eval_split, kb=config.kb,
                     load_split=lambda split: task.rows(split, config.data_dir)[:2])
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
    out_dir = config.output or default_output(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunk = max(4 * config.batch_size, 32)
    done = _resume_point(out_dir, _fingerprint(config, task, examples), chunk, [ex.index for ex in examples])

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
    prepare_start = time.perf_counter()
    strategy.prepare(examples, backend)
    prepare_s = time.perf_counter() - prepare_start
    eval_start = time.perf_counter()
    records = _run_chunks(strategy, examples, backend, task, out_dir / "samples.jsonl", chunk, done, progress)
    eval_s = time.perf_counter() - eval_start

    timings = {
        "load_model_s": round(load_s, 3),
        "prepare_s": round(prepare_s, 3),
        "eval_s": round(eval_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "examples_per_s": round((len(records) - len(done)) / eval_s, 3) if eval_s > 0 else None,
        "resumed_after": len(done),
    }
    results = write_results(config, task, records, backend.describe(), timings, out_dir,
                            strategy_info=strategy.info,
                            **({"knowledge_base": task.space.kb_info} if getattr(task.space, "kb_info", None) else {}),
                            backend_stats=dict(getattr(backend, "stats", {})))
    hits = results["backend_stats"].get("cache_hits", 0)
    if hits:
        log.info("%d of %d model requests were answered from the response cache (--no-cache to recompute)",
                 hits, hits + results["backend_stats"].get("cache_misses", 0))
    return results


def write_results(config: RunConfig, task: Task, records: list[dict[str, Any]], model: dict[str, Any],
                  timings: dict[str, Any], out_dir: Path, **extra: Any) -> dict[str, Any]:
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
        "output_dir": str(out_dir),
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s and %s", out_dir / "results.json", out_dir / "samples.jsonl")
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


def _fingerprint(config: RunConfig, task: Task, examples: list[Example]) -> str:
    """What must match for a run folder to be resumed: taskfit's version, the config (operational keys aside),
    the task and the examples."""
    settings = json.loads(config.model_dump_json(exclude=OPERATIONAL_KEYS))
    items = [[ex.index, ex.fields, ex.gold] for ex in examples]
    blob = json.dumps([__version__, settings, json.loads(task.config.model_dump_json()), items], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _resume_point(out_dir: Path, fingerprint: str, chunk: int, indices: list[int]) -> list[dict[str, Any]]:
    """Records already done by an earlier, interrupted run of the same configuration in ``out_dir``.

    Only whole chunks are kept (a chunk cut by a crash is redone), so the resumed run sends the backend
    exactly the batches an uninterrupted run would, and samples.jsonl comes out byte-identical.
    """
    marker, samples = out_dir / "run.json", out_dir / "samples.jsonl"
    if samples.exists():
        if not marker.is_file():
            raise UserError(f"{out_dir} already holds samples.jsonl from another run; choose another --output")
        previous = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
        if previous != fingerprint:
            raise UserError(f"{out_dir} holds a run with a different configuration, task or data; "
                            "choose another --output (or delete the folder to start over)")
    marker.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")
    if not samples.exists():
        return []
    done: list[dict[str, Any]] = []
    sizes: list[int] = []
    for line in samples.read_text(encoding="utf-8").split("\n"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by the crash, and everything after it, is redone
        if len(done) >= len(indices) or record.get("index") != indices[len(done)]:
            break
        done.append(record)
        sizes.append(len(line.encode("utf-8")) + 1)
    keep = len(done) // chunk * chunk
    # Cut the file after the last whole chunk in place (never rewrite it: a crash now must lose nothing).
    os.truncate(samples, sum(sizes[:keep]))
    if keep:
        log.info("resuming %s: %d examples already done", out_dir, keep)
    return done[:keep]


def _run_chunks(strategy, examples: list[Example], backend, task: Task, path: Path, chunk: int,
                done: list[dict[str, Any]], progress: bool) -> list[dict[str, Any]]:
    """Drive the strategy over chunks of examples after ``done``, appending each finished chunk to ``path``.

    The file already holds exactly ``done``; each chunk is appended, flushed and fsynced in one piece, so a
    kill at any moment leaves whole chunks plus at most one cut line.
    """
    records = list(done)
    with path.open("a", encoding="utf-8") as handle, tqdm(
        total=len(examples), initial=len(done), desc=f"{task.name} {strategy.name}", unit="ex",
        disable=not progress,
    ) as bar:
        for start in range(len(done), len(examples), chunk):
            part = examples[start : start + chunk]
            lines = []
            for example, outcome in zip(part, drive(strategy, part, backend)):
                record = outcome_record(task, example, outcome)
                records.append(record)
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(part))
    return records


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
