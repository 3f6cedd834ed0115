"""``taskfit fit TASK --budget 60m``: plan a sensible grid for a task and a time budget, price it with a short
probe, run what fits, and write the report whose first section says what was chosen and why.

The plan follows the task: zero-shot always; kNN few-shot when the task has a demonstration pool apart from the
evaluated split; chain of thought for reasoning tasks (number answers); a LoRA tune when there are at least
``LORA_MIN_ROWS`` labelled rows; the specialist head for classification and regression. Every evaluation runs on
the same seeded rows, so the report's paired tests apply.

Costs: each prompting candidate is probed on ``PROBE_ROWS`` rows (fixed seconds = model load + preparation such
as embedding the demonstration pool; seconds per row from the probe's eval time). Training is probed too: a few
real optimizer steps of the LoRA tune (``PROBE_TRAIN_STEPS``) and one epoch of the head on ``HEAD_PROBE_ROWS`` rows,
timed on this machine and thrown away. When the plan does not fit, it shrinks in a fixed order — evaluation rows down
to ``MIN_EVAL_ROWS``, LoRA's training rows down to ``LORA_MIN_ROWS``, then the most expensive optional method goes —
and when it leaves time over, LoRA trains on more rows (up to the whole training split) until the plan fills the
budget less the reserve; every step is written down.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.evaluation import evaluate
from taskfit.grid import Cell, CellSkipped, run_cells, run_in_process
from taskfit.report import render
from taskfit.runs import collection_folder
from taskfit.settings import RunConfig, TuneConfig
from taskfit.tasks.task import Task, load_task
from taskfit.tuning import tune
from taskfit.tuning.common import tune_evaluated_as

log = logging.getLogger(__name__)

PROBE_ROWS = 32  # fewer rows overstate the seconds per row (a batch's fixed cost)
PROBE_TRAIN_STEPS = 4  # LoRA optimizer steps timed after a first one (of batch 8)
HEAD_PROBE_ROWS = 96  # rows of one head epoch timed (against a third of them)
MIN_EVAL_ROWS = 100
MAX_EVAL_ROWS = 1000
LORA_MIN_ROWS = 500
LORA_MAX_ROWS = 2000
HEAD_MAX_ROWS = 10000
POOL_LIMIT = 5000  # kNN demonstrations are chosen from at most this many pool rows (embedding them is a fixed cost)
REFERENCE_ZERO_SHOT_S = 0.21  # s per SST-2 row, zero-shot, on the machine of benchmarks/results/sst2_methods.md
HEAD_EPOCHS = 3
TUNED_LOAD_S = 30.0  # loading a base model and merging an adapter before its evaluation
RESERVE = 0.08  # of the budget kept for loading tuned models, writing the report and estimate error


def parse_budget(text: str) -> float:
    """'60m', '1h', '90s', '1h30m' or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise UserError(f"--budget {text!r}: give a time such as 60m, 1h, 1h30m or 900s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 60:
        raise UserError(f"--budget {text!r}: give at least a minute")
    return total


@dataclass
class Candidate:
    """A way to answer the task, with its price: fixed seconds + seconds per evaluated row (+ training)."""

    name: str
    why: str
    eval_settings: dict[str, Any]
    fixed_s: float = 0.0
    per_row_s: float = 0.0
    tune_settings: dict[str, Any] | None = None
    train_rows: int = 0
    train_per_row_s: float = 0.0
    optional: bool = True
    train_available: int = 0  # labelled rows the tune could use at most

    def cost(self, eval_rows: int) -> float:
        return self.fixed_s + self.per_row_s * eval_rows + self.train_rows * self.train_per_row_s


@dataclass
class FitPlan:
    task: str
    budget_s: float
    eval_rows: int
    candidates: list[Candidate]
    decisions: list[str] = field(default_factory=list)

    def total(self) -> float:
        return sum(c.cost(self.eval_rows) for c in self.candidates)


def propose(task: Task, data_dir: Path | None, model: str,
            split: str | None = None) -> tuple[list[Candidate], list[str], int, int]:
    """The candidate methods for this task (unpriced), the reasons, and the eval and training row counts. Nothing
    learns from the evaluated split: with no other split, only the methods that need no labelled rows remain."""
    cfg = task.config
    eval_split = split or cfg.eval_split
    eval_rows = len(task.examples(eval_split, data_dir))
    try:
        train_rows = len(task.examples(cfg.pool_split, data_dir)) if cfg.pool_split != eval_split else 0
    except UserError:
        train_rows = 0
    base = {"task": cfg.name, "data_dir": data_dir, "model": model, "split": eval_split}
    out = [Candidate("zero-shot", "always: the baseline every other way must beat", {**base, "strategy": "zero_shot"},
                     optional=False)]
    notes = [f"{cfg.name}: a {cfg.type} task; {eval_rows} rows in its evaluated split ({eval_split}), "
             f"{train_rows} labelled rows in its training split ({cfg.pool_split})."]
    if train_rows >= 8:
        out.append(Candidate("kNN few-shot", f"the task has {train_rows} labelled rows to draw demonstrations from",
                             {**base, "strategy": "few_shot",
                              "strategy_args": {"selector": "knn", "k": 4, "pool_limit": min(train_rows, POOL_LIMIT)}}))
    if cfg.type == "number":
        out.append(Candidate("chain of thought", "a reasoning task (number answers): reasoning before the answer helps",
                             {**base, "strategy": "cot", "mode": "generate"}))
    if train_rows >= LORA_MIN_ROWS:
        out.append(Candidate("LoRA", f"{train_rows} ≥ {LORA_MIN_ROWS} labelled rows: enough to tune an adapter",
                             {**base, "strategy": "zero_shot"},
                             tune_settings={"method": "lora", "task": cfg.name, "data_dir": data_dir, "model": model,
                                            "epochs": 1, "batch_size": 8},
                             train_rows=min(train_rows, LORA_MAX_ROWS), train_available=train_rows))
    elif train_rows:
        notes.append(f"No LoRA tune: {train_rows} labelled rows is under {LORA_MIN_ROWS}.")
    if cfg.type in ("classification", "regression") and train_rows >= 50:
        out.append(Candidate("specialist head", f"a {cfg.type} task: a small encoder + head is the cheap specialist",
                             {"task": cfg.name, "data_dir": data_dir, "split": eval_split, "strategy": "zero_shot"},
                             tune_settings={"stage": "head", "method": "head", "task": cfg.name, "data_dir": data_dir,
                                            "epochs": HEAD_EPOCHS},
                             train_rows=min(train_rows, HEAD_MAX_ROWS), train_available=train_rows))
    return out, notes, eval_rows, train_rows


def probe(candidates: list[Candidate], folder: Path, seed: int, eval_rows: int) -> float:
    """Price the prompting candidates on ``PROBE_ROWS`` seeded rows (no cache: real seconds); returns this machine's
    speed against the reference (probe zero-shot seconds per row / the reference's)."""
    speed = 1.0
    for c in candidates:
        if c.tune_settings is not None:
            continue
        config = RunConfig.model_validate({**c.eval_settings, "limit": min(PROBE_ROWS, eval_rows), "sample": "random",
                                           "seed": seed, "cache": False,
                                           "output": str(folder / "probe" / _slug(c.name))})
        results = evaluate(config, progress=False)
        t = results["timings"]
        rows = max(1, results["counts"]["n"] - t.get("resumed_after", 0))
        c.per_row_s = t["eval_s"] / rows
        c.fixed_s = t["load_model_s"] + t["prepare_s"]
        log.info("probe %s: %.2f s per row, %.1f s fixed", c.name, c.per_row_s, c.fixed_s)
        if c.name == "zero-shot":
            speed = max(c.per_row_s / REFERENCE_ZERO_SHOT_S, 0.1)
    zero = candidates[0]
    for c in candidates:
        if c.tune_settings is None:
            continue
        c.train_per_row_s = probe_training(c, folder / "probe" / _slug(c.name), seed)
        if c.tune_settings.get("method") == "head":
            c.per_row_s, c.fixed_s = 0.02 * speed, 15.0
        else:
            c.per_row_s, c.fixed_s = zero.per_row_s, zero.fixed_s + TUNED_LOAD_S  # zero-shot speed + merge
        log.info("probe %s training: %.3f s per row", c.name, c.train_per_row_s)
    return speed


def probe_training(c: Candidate, folder: Path, seed: int) -> float:
    """Seconds per training row of a tuned candidate on this machine, timed on real steps and thrown away: the
    difference between a short and a longer run (1 vs 1 + ``PROBE_TRAIN_STEPS`` LoRA steps; one head epoch on
    ``HEAD_PROBE_ROWS`` / 3 vs ``HEAD_PROBE_ROWS`` rows), so the first step's warm-up is not counted per row."""
    settings = {**c.tune_settings, "seed": seed, "progress": False, "save_steps": 10**6}

    def timed(name: str, **extra: Any) -> float:
        config = TuneConfig.model_validate({**settings, "output": str(folder / name), **extra})
        return float(tune(config).card["train_s"])

    if settings.get("method") == "head":
        large = min(HEAD_PROBE_ROWS, c.train_available or HEAD_PROBE_ROWS)  # a small split: what it has
        small = max(1, large // 3)
        short, long = timed("short", limit=small, epochs=1), timed("long", limit=large, epochs=1)
        return max(long - short, long / 2) / (large - small) * HEAD_EPOCHS
    batch = settings.get("batch_size", 8)
    short = timed("short", limit=batch, max_steps=1)
    long = timed("long", limit=batch * (1 + PROBE_TRAIN_STEPS), max_steps=1 + PROBE_TRAIN_STEPS)
    return max(long - short, long / 2) / (batch * PROBE_TRAIN_STEPS)


def fit_to_budget(plan: FitPlan) -> None:
    """Shrink the plan until it fits the budget (less the reserve), writing down every step."""
    limit = plan.budget_s * (1 - RESERVE)
    lora = next((c for c in plan.candidates if c.name == "LoRA"), None)
    while plan.total() > limit:
        over = plan.total() - limit
        per_eval_row = sum(c.per_row_s for c in plan.candidates)
        if plan.eval_rows > MIN_EVAL_ROWS:
            fewer = max(MIN_EVAL_ROWS, plan.eval_rows - int(over / per_eval_row) - 1)
            plan.decisions.append(f"Evaluation rows {plan.eval_rows} -> {fewer} (every method on the same rows).")
            plan.eval_rows = fewer
            continue
        if lora is not None and lora in plan.candidates and lora.train_rows > LORA_MIN_ROWS:
            fewer = max(LORA_MIN_ROWS, lora.train_rows - int(over / lora.train_per_row_s) - 1)
            plan.decisions.append(f"LoRA training rows {lora.train_rows} -> {fewer}.")
            lora.train_rows = fewer
            continue
        optional = [c for c in plan.candidates if c.optional]
        if not optional:
            fewer = max(PROBE_ROWS, plan.eval_rows - int(over / per_eval_row) - 1)
            if fewer == plan.eval_rows:
                plan.decisions.append("Even zero-shot alone does not fit; it runs on the fewest rows.")
                return
            plan.decisions.append(f"Evaluation rows {plan.eval_rows} -> {fewer}: only zero-shot is left.")
            plan.eval_rows = fewer
            continue
        dearest = max(optional, key=lambda c: c.cost(plan.eval_rows))
        plan.candidates.remove(dearest)
        plan.decisions.append(f"Dropped {dearest.name}: about {dearest.cost(plan.eval_rows) / 60:.0f} min, the "
                              "dearest optional method, did not fit.")
    if lora is not None and lora in plan.candidates and lora.train_per_row_s > 0:
        more = min(lora.train_available - lora.train_rows, int((limit - plan.total()) / lora.train_per_row_s))
        if more > 0:
            plan.decisions.append(f"LoRA training rows {lora.train_rows} -> {lora.train_rows + more}: the budget "
                                  "has room for more training data.")
            lora.train_rows += more


def cells_for(plan: FitPlan, output: Path, seed: int) -> list[Cell]:
    cells: list[Cell] = []
    for c in plan.candidates:
        # no response cache: the probe's rows would come back from it, and a cached run has no honest cost
        settings = {**c.eval_settings, "limit": plan.eval_rows, "sample": "random", "seed": seed, "cache": False}
        after = None
        if c.tune_settings is not None:
            tuned = output / "tuned" / _slug(c.name)
            tune = {**c.tune_settings, "limit": c.train_rows, "seed": seed, "output": str(tuned)}
            cells.append(Cell("tune", f"tuned/{_slug(c.name)}", tune, TuneConfig.model_validate(tune)))
            after = cells[-1].name
            settings = {**settings, **tune_evaluated_as(cells[-1].config)}
        name = f"{plan.task}/{_slug(c.name)}"
        settings["output"] = str(output / name)
        cells.append(Cell("eval", name, settings, RunConfig.model_validate(settings), after=after))
    return cells


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def deadline_runner(deadline: float, estimates: dict[str, float],
                    inner: Callable[[Cell], None]) -> Callable[[Cell], None]:
    """Run a cell only if its estimate still fits before ``deadline`` (estimates can be wrong; the budget holds)."""

    def run(cell: Cell) -> None:
        left = deadline - time.monotonic()
        if estimates.get(cell.name, 0.0) > left:
            raise CellSkipped(f"about {estimates[cell.name] / 60:.1f} min to run, {left / 60:.1f} min of budget left")
        inner(cell)

    return run


def fit(task_name: str, budget_s: float, data_dir: Path | None, output: Path, model: str, seed: int,
        split: str | None = None) -> render.Report:
    started = time.monotonic()
    deadline = started + budget_s
    collection_folder(output)
    task = load_task(task_name)
    candidates, notes, eval_rows, _ = propose(task, data_dir, model, split)
    speed = probe(candidates, output, seed, eval_rows)
    plan = FitPlan(task.name, budget_s, min(eval_rows, MAX_EVAL_ROWS), candidates)
    if eval_rows > MAX_EVAL_ROWS:
        plan.decisions.append(f"Evaluation rows capped at {MAX_EVAL_ROWS} of {eval_rows} (a seeded sample).")
    spent = time.monotonic() - started
    plan.budget_s = budget_s - spent
    fit_to_budget(plan)
    cells = cells_for(plan, output, seed)
    estimates = _cell_estimates(plan, cells)
    run_cells(cells, 1, deadline_runner(deadline, estimates, run_in_process))
    preface = notes + [
        f"Budget {budget_s / 60:.0f} min; probing {len(candidates)} methods on {PROBE_ROWS} rows took "
        f"{spent / 60:.1f} min; this machine ran zero-shot at {speed:.2f}x the reference machine's seconds.",
        *(f"Chose {c.name}: {c.why}; estimated {c.cost(plan.eval_rows) / 60:.1f} min." for c in plan.candidates),
        *plan.decisions,
        *(f"{cell.name}: {cell.status}{' (' + cell.note + ')' if cell.note else ''}, {cell.seconds / 60:.1f} min."
          for cell in cells),
    ]
    done = [cell.folder for cell in cells if cell.kind == "eval" and cell.status == "done"]
    if not done:
        raise UserError("no method finished within the budget; give a larger --budget")
    report = render.build(done)
    report.preface = preface
    render.write(report, output / "report.html", output / "report.md")
    return report


def _cell_estimates(plan: FitPlan, cells: list[Cell]) -> dict[str, float]:
    by_name = {_slug(c.name): c for c in plan.candidates}
    out = {}
    for cell in cells:
        c = by_name[cell.name.rsplit("/", 1)[-1]]
        out[cell.name] = (c.train_rows * c.train_per_row_s if cell.kind == "tune"
                          else c.fixed_s + c.per_row_s * plan.eval_rows)
    return out
