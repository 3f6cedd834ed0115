"""One evaluation run: examples -> an answerer (a strategy on a backend, or a trained head) -> records -> metrics.

The run folder (:mod:`taskfit.runs`) is opened before any model loads, so another run there is refused at once and
a complete run needs no model; records are appended chunk by chunk, so an error later never loses computed work.
Outputs: ``samples.jsonl`` (one record per example, in data order) and ``results.json`` (config, task, model,
package versions, git hash, metrics with CIs, counts, timings).
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

from tqdm.auto import tqdm

from taskfit import __version__
from taskfit.api import Example
from taskfit.data.sampling import sample_indices
from taskfit.errors import UserError
from taskfit.evaluation.answerers import Answerer, HeadAnswerer, StrategyAnswerer
from taskfit.metrics import compute_metrics
from taskfit.models.base import Backend
from taskfit.models.cache import CachedBackend, ResponseCache, default_cache_path
from taskfit.models.catalog import HEAD_PREFIX, HEAD_TASK_TYPES
from taskfit.models.registry import load_backend, load_head
from taskfit.prompting.strategies import StrategyContext, make_strategy
from taskfit.runs import RUN_CARD, RunFolder, fingerprint, peak_rss_mib, read_run_card
from taskfit.settings import RunConfig, command_line, operational_keys
from taskfit.tasks.task import Task, load_task

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "transformers", "numpy", "scipy", "scikit-learn", "pydantic")


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
    started = time.perf_counter()
    task = load_task(config.task)
    task.override_prompt(config.prompt.model_dump(exclude_unset=True))
    if config.mode is None:  # the task type's default: generate where there are no candidates to score
        config = config.model_copy(update={"mode": task.space.modes[0]})
    head = config.model.startswith(HEAD_PREFIX)
    if head:
        _check_head_run(config, task)
    # All rows are loaded and validated before the model loads: a bad row fails fast and costs nothing.
    examples = select_examples(task, config)
    if not examples:
        raise UserError(f"task {task.name!r} split {config.split or task.config.eval_split!r} has no rows")
    eval_split = config.split or task.config.eval_split
    task.space.check_mode(config.mode)
    task.prepare_answers(examples, eval_split, config.data_dir, config.kb)
    out_dir = config.output or default_output(config)
    folder = RunFolder.open(out_dir, run_fingerprint(config, task, examples), [ex.index for ex in examples])
    if folder.complete and (previous := folder.read_results()) is not None:
        log.info("%s is complete (%d examples); nothing to do", out_dir, len(folder.done))
        return previous

    load_start = time.perf_counter()
    if head:
        answerer: Answerer = _head_answerer(config, task, progress)
    else:
        answerer = _strategy_answerer(config, task, backend or _load_backend(config), eval_split, progress)
    load_s = time.perf_counter() - load_start
    resumed = len(folder.done)
    prepare_start = time.perf_counter()
    if not folder.complete:
        examples = answerer.prepare(examples)
    prepare_s = time.perf_counter() - prepare_start
    eval_start = time.perf_counter()
    records = _run_chunks(answerer, examples, task, folder, answerer.chunk_size(config.batch_size), progress)
    eval_s = time.perf_counter() - eval_start

    timings = {
        "load_model_s": round(load_s, 3),
        "prepare_s": round(prepare_s, 3),
        "eval_s": round(eval_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "examples_per_s": round((len(records) - resumed) / eval_s, 3) if eval_s > 0 else None,
        "resumed_after": resumed,
    }
    stats = answerer.stats()
    results = write_results(config, task, records, answerer.describe(), timings, folder,
                            cost=run_cost(config, records, stats, eval_s, resumed),
                            strategy_info=answerer.info, pool=answerer.pool,
                            **({"knowledge_base": task.space.kb_info} if getattr(task.space, "kb_info", None) else {}),
                            backend_stats=stats)
    if hits := stats.get("cache_hits", 0):
        log.info("%d of %d model requests were answered from the response cache (--no-cache to recompute)",
                 hits, hits + stats.get("cache_misses", 0))
    return results


def _load_backend(config: RunConfig) -> Backend:
    """The configured backend, behind the response cache unless ``--no-cache`` (opened first: a bad cache path is
    refused before the model loads)."""
    cache = ResponseCache(config.cache_path or default_cache_path()) if config.cache else None
    backend = load_backend(config.backend, config.model, config.adapter, **config.backend_options())
    if config.mode == "loglikelihood" and not getattr(backend, "supports_loglikelihood", True):
        raise UserError(backend.loglikelihood_refusal())
    return CachedBackend(backend, cache) if cache is not None else backend


def _strategy_answerer(config: RunConfig, task: Task, backend: Backend, eval_split: str,
                       progress: bool) -> StrategyAnswerer:
    """The configured strategy on ``backend``, with its demonstration pool loaded when it uses one."""
    context = StrategyContext(task=task, mode=config.mode, render=backend.render, seed=config.seed,
                              max_tokens=config.max_tokens, progress=progress,
                              json_schema=bool(getattr(backend, "supports_json_schema", False)),
                              data_dir=config.data_dir)
    strategy = make_strategy(config.strategy, context, config.strategy_args)
    if not strategy.opts.uses_pool():
        return StrategyAnswerer(strategy, backend)
    pool_split = config.pool_split or task.config.pool_split
    context.pool = task.examples(pool_split, config.data_dir, getattr(strategy.opts, "pool_limit", None))
    if pool_split == eval_split:
        log.warning("demonstrations come from the evaluated split %r; an example never sees itself, "
                    "but results are optimistic", pool_split)
    return StrategyAnswerer(strategy, backend, pool={"split": pool_split, "rows": len(context.pool),
                                                     "evaluated_split": pool_split == eval_split})


def _check_head_run(config: RunConfig, task: Task) -> None:
    """What a head run refuses before reading any data."""
    if config.strategy != "zero_shot":
        raise UserError(f"a head model answers directly; --strategy {config.strategy} needs a language model")
    if config.adapter or config.quantize != "none":
        raise UserError("--adapter and --quantize apply to language models, not to --model head:<folder>")
    if task.space.type not in HEAD_TASK_TYPES:
        raise UserError(f"a head answers classification or regression tasks; {task.name!r} is {task.space.type} "
                        "(use a language model for it)")


def _head_answerer(config: RunConfig, task: Task, progress: bool) -> HeadAnswerer:
    predictor = load_head(config.model[len(HEAD_PREFIX):], threads=config.threads)
    predictor.check(task.name, task.space.type, task.label_values, tuple(task.config.score_range))
    return HeadAnswerer(predictor, config.batch_size, progress)


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
    counts["truncated_inputs"] = sum("truncated" in r for r in records)
    results = {
        "taskfit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": json.loads(config.model_dump_json()),
        "command": command_line("eval", RunConfig, config.model_dump() | {"output": str(folder.path)}),
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


def run_cost(config: RunConfig, records: list[dict[str, Any]], stats: dict[str, Any], eval_s: float,
             resumed: int) -> dict[str, Any]:
    """What this run cost, for comparing ways of answering (``taskfit report``): tokens generated by the model for
    the records (cached answers included: what the method needs), the requests computed and answered from the cache
    (``eval_s`` covers this session's computed requests only, so it understates a run with cached or resumed
    rows), the process's peak memory, and, for a tuned model, the training run card's cost."""
    generated = sum(int(r.get("generated_tokens") or 0) + int(r.get("reasoning_tokens") or 0) for r in records)
    cost: dict[str, Any] = {
        "generated_tokens": generated,
        "input_tokens_computed": stats.get("input_tokens", stats.get("prompt_tokens")),
        "requests_computed": stats.get("cache_misses", stats.get("requests")),
        "requests_cached": stats.get("cache_hits", 0),
        "rows_resumed": resumed,
        "eval_s_this_session": round(eval_s, 3),
        "peak_rss_mib": peak_rss_mib(),
    }
    trained = _trained_folder(config)
    card = read_run_card(trained) if trained is not None else None
    if card is not None:
        cost["training"] = {"run_card": str(Path(trained) / RUN_CARD), "train_s": card.get("train_s"),
                            "trainable_parameters": card.get("trainable_parameters"),
                            "labelled_examples": (card.get("data") or {}).get("n"), "steps": card.get("steps")}
    return cost


def _trained_folder(config: RunConfig) -> Path | None:
    """The folder `taskfit tune` wrote for the evaluated model, if it is one: ``--adapter``, ``head:`` or ``hf:``."""
    if config.adapter is not None:
        return Path(config.adapter)
    for prefix in (HEAD_PREFIX, "hf:"):
        if config.model.startswith(prefix):
            return Path(config.model[len(prefix):])
    return None


def select_examples(task: Task, config: RunConfig) -> list[Example]:
    """The examples a run evaluates: all rows, the first ``limit``, or a seeded random sample of ``limit`` rows
    kept in data order (many files are sorted by label, so the first rows can be a single class)."""
    if config.sample == "first" or config.limit is None:
        return task.examples(config.split, config.data_dir, config.limit)
    everything = task.examples(config.split, config.data_dir)
    return [everything[i] for i in sample_indices(len(everything), config.limit, config.seed)]


# How a run reaches its model, not what it computes (fields marked operational in the settings): a run may resume
# with another folder path, server address, key, concurrency, retry policy or cache setting.
OPERATIONAL_KEYS = operational_keys(RunConfig)


def run_fingerprint(config: RunConfig, task: Task, examples: list[Example]) -> str:
    """What must match for a run folder to be resumed: taskfit's version, the config (operational keys aside),
    the task and the examples."""
    settings = json.loads(config.model_dump_json(exclude=OPERATIONAL_KEYS))
    items = [[ex.index, ex.fields, ex.gold] for ex in examples]
    return fingerprint(__version__, settings, json.loads(task.config.model_dump_json()), items)


def _run_chunks(answerer: Answerer, examples: list[Example], task: Task, folder: RunFolder, chunk: int,
                progress: bool) -> list[dict[str, Any]]:
    """Answer the chunks not yet on disk, appending each finished chunk to the run folder.

    A chunk cut by a crash is recomputed from its start (the same batches as an uninterrupted run), and only
    its records missing from disk are appended.
    """
    start = folder.restart_point(chunk)
    with tqdm(total=len(examples), initial=start, desc=f"{task.name} {answerer.name}", unit="ex",
              disable=not progress) as bar:
        for begin in range(start, len(examples), chunk):
            part = examples[begin : begin + chunk]
            folder.append([task.sample_record(example, outcome)
                           for example, outcome in zip(part, answerer.answer(part))], begin)
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
