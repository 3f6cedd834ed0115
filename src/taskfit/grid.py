"""``taskfit grid PLAN.yaml``: tasks x models x strategies, plus tuning jobs whose output is then evaluated.

Every cell is an ordinary run: an eval cell is a ``RunConfig`` written to its own run folder under the plan's
``output`` (so a complete cell is skipped and a cut one resumes, exactly as ``taskfit eval`` does), a tune cell a
``TuneConfig`` whose folder holds the adapter (skipped when its run card exists, resumed from its last checkpoint
otherwise). Every cell is also one ``taskfit`` command (``--print-commands``), so a scheduler can run a large grid
across machines and ``taskfit report`` collects the folders. All cells share the response cache.

A plan::

    output: runs/grid-seed
    defaults: {data_dir: ../shared/data, limit: 100, sample: random}   # any `taskfit eval` key, for every cell
    tasks: [sst2, truthfulqa_mc1, {task: squad, limit: 50}]
    models: [smollm2-135m-instruct, {model: smollm2-135m-instruct, backend: llamacpp}]
    strategies:
      - zero_shot
      - {strategy: few_shot, strategy_args: {selector: knn, k: 4}}
      - {strategy: cot, mode: generate}
    tune:
      - {name: lora-sst2, method: lora, task: sst2, limit: 1000, epochs: 1, evaluate: [zero_shot]}
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from taskfit.errors import ServerError, UserError
from taskfit.evaluation import evaluate
from taskfit.report.table import markdown_table
from taskfit.runs import RESULTS, RUN_CARD, write_json
from taskfit.settings import RunConfig, TuneConfig, command_line
from taskfit.strict import StrictModel, read_yaml, validate
from taskfit.tasks.task import load_task
from taskfit.tuning import tune
from taskfit.tuning.common import tune_evaluated_as

log = logging.getLogger(__name__)

Entry = str | dict[str, Any]


class CellSkipped(UserError):
    """A runner's decision not to run a cell (``taskfit fit``: its estimate no longer fits the time left)."""


class TuneJob(StrictModel):
    """A tuning job of a plan: ``taskfit tune`` settings, a name, and the strategies its output is evaluated with."""

    name: str | None = Field(None, description="folder name of the tuned model (default: method-task)")
    evaluate: list[Entry] = Field(default_factory=lambda: ["zero_shot"],
                                  description="strategies the tuned model is evaluated with, on the job's task")
    settings: dict[str, Any] = Field(default_factory=dict, description="the tune keys (method, task, limit ...)")


class CellResources(StrictModel):
    """What one cell asks of a Ray cluster (``--executor ray``): CPUs (also its torch threads) and GPUs."""

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)


class Plan(StrictModel):
    output: Path = Field(Path("runs/grid"), description="folder for every cell's run folder")
    defaults: dict[str, Any] = Field(default_factory=dict, description="eval keys every eval cell shares")
    tasks: list[Entry] = Field(default_factory=list, description="task names, or mappings with per-task keys")
    models: list[Entry] = Field(default_factory=lambda: ["smollm2-135m-instruct"],
                                description="model names, or mappings (model, backend, adapter, server keys)")
    strategies: list[Entry] = Field(default_factory=lambda: ["zero_shot"],
                                    description="strategy names, or mappings (strategy, strategy_args, mode ...)")
    tune: list[TuneJob] = Field(default_factory=list, description="tuning jobs, evaluated afterwards")
    resources: dict[str, CellResources] = Field(
        default_factory=lambda: {"eval": CellResources(num_cpus=1), "tune": CellResources(num_cpus=2)},
        description="--executor ray: what each eval and each tune cell asks of the cluster (num_cpus, num_gpus)")


@dataclass
class Cell:
    """One run of the grid: its folder (relative to the plan's output) and its settings."""

    kind: str  # "eval" or "tune"
    name: str
    settings: dict[str, Any]
    config: RunConfig | TuneConfig
    after: str | None = None  # the tune cell an eval cell needs first
    status: str = "pending"
    seconds: float = 0.0
    note: str = ""
    value: dict[str, Any] = field(default_factory=dict)
    node: str | None = None  # where it ran (--executor ray)

    @property
    def command(self) -> str:
        if self.kind == "tune":
            return command_line("tune", TuneConfig, self.config.model_dump())
        return command_line("eval", RunConfig, self.config.model_dump())

    @property
    def folder(self) -> Path:
        return Path(self.config.output)

    def complete(self) -> bool:
        marker = RUN_CARD if self.kind == "tune" else RESULTS
        return (self.folder / marker).is_file()


def load_plan(path: str | Path) -> Plan:
    plan = validate(Plan, _with_tune_settings(read_yaml(path)), str(path))
    if not plan.tasks and not plan.tune:
        raise UserError(f"{path}: the plan has no tasks and no tune jobs; list at least one under `tasks:`")
    return plan


def _with_tune_settings(data: Any) -> Any:
    """Tune jobs are written flat (``{method: lora, task: sst2, evaluate: [...]}``); the plan model nests them."""
    if isinstance(data, dict) and isinstance(data.get("tune"), list):
        data = dict(data)
        data["tune"] = [{"name": j.get("name"), "evaluate": j.get("evaluate", ["zero_shot"]),
                         "settings": {k: v for k, v in j.items() if k not in ("name", "evaluate")}}
                        if isinstance(j, dict) else j for j in data["tune"]]
    return data


def _entry(entry: Entry, key: str) -> dict[str, Any]:
    return {key: entry} if isinstance(entry, str) else dict(entry)


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, "", {}))
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "default"


def _strategy_slug(settings: dict[str, Any]) -> str:
    args = settings.get("strategy_args") or {}
    return _slug(settings.get("strategy", "zero_shot"), *(f"{k}={v}" for k, v in sorted(args.items())),
                 settings.get("mode"))


def _model_slug(settings: dict[str, Any]) -> str:
    model = str(settings.get("model", "smollm2-135m-instruct"))
    backend = settings.get("backend")
    if backend is None and model.startswith("gguf:"):
        backend = "llamacpp"
    return _slug(Path(model.split(":", 1)[-1]).name if ":" in model else model,
                 backend if backend not in (None, "hf") else None,
                 settings.get("quantize") if settings.get("quantize") != "none" else None)


def cells(plan: Plan, plan_path: str | Path = "plan") -> list[Cell]:
    """Every cell of the plan, tune cells first, each config validated now (a bad key fails before any work)."""
    out: list[Cell] = []
    for job in plan.tune:
        settings = dict(job.settings)
        if not settings.get("task"):
            raise UserError(f"{plan_path}: a tune job needs `task:` (the grid evaluates the tuned model on it)")
        name = _slug(job.name or f"{settings.get('method', 'lora')}-{settings['task']}")
        for key in ("data_dir", "seed"):
            if key in plan.defaults and key not in settings:
                settings[key] = plan.defaults[key]
        settings["output"] = str(plan.output / "tuned" / name)
        tune = Cell("tune", f"tuned/{name}", settings, _build(TuneConfig, settings, f"{plan_path}: tune job {name}"))
        out.append(tune)
        trained = tune_evaluated_as(tune.config)
        for strategy in job.evaluate:
            settings_eval = {**plan.defaults, "task": settings["task"], **trained, **_entry(strategy, "strategy")}
            out.append(_eval_cell(plan, settings_eval, f"tuned-{name}", plan_path, after=tune.name))
    for task in plan.tasks:
        for model in plan.models:
            for strategy in plan.strategies:
                model_settings = _entry(model, "model")
                if str(model_settings.get("model", "")).startswith("gguf:"):
                    model_settings.setdefault("backend", "llamacpp")
                settings = {**plan.defaults, **_entry(task, "task"), **model_settings, **_entry(strategy, "strategy")}
                out.append(_eval_cell(plan, settings, _model_slug(model_settings), plan_path))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"{plan_path}: two cells would share the folder {twice[0]}; give the entries distinct "
                        "settings (or a tune job a distinct name)")
    return out


def _eval_cell(plan: Plan, settings: dict[str, Any], model_slug: str, plan_path: str | Path,
               after: str | None = None) -> Cell:
    task_name = Path(str(settings["task"])).stem
    name = f"{_slug(task_name)}/{model_slug}/{_strategy_slug(settings)}"
    settings = {**settings, "output": str(plan.output / name)}
    return Cell("eval", name, settings, _build(RunConfig, settings, f"{plan_path}: cell {name}"), after=after)


def _build(model_cls: type[RunConfig] | type[TuneConfig], settings: dict[str, Any], where: str):
    try:
        return validate(model_cls, settings, where)  # a bad key: one line naming the cell and the key
    except UserError as exc:
        message = str(exc)
        raise UserError(message if message.startswith(where) else f"{where}: {message}") from None


# ------------------------------------------------------------------------------------------------- running

def dry_run(cells: Sequence[Cell]) -> str:
    """``taskfit grid --dry-run``: each cell, the rows it would run, a rough time prior and whether it will fail on
    its data; nothing runs."""
    rows, total, problems = [], 0.0, 0
    for cell in cells:
        todo, seconds = estimate(cell)
        trouble = problem(cell)
        problems += trouble is not None
        total += seconds or 0
        rows.append([cell.kind, cell.name, "complete" if todo == 0 else ("?" if todo is None else todo),
                     "-" if seconds is None else f"{seconds / 60:.1f}", trouble or ""])
    out = markdown_table(["kind", "cell", "rows to run", "estimated minutes", "will fail"], rows) + "\n"
    if problems:
        out += f"{problems} cells will fail on their data as planned (see 'will fail')\n"
    return out + (f"{len(cells)} cells, about {total / 60:.0f} minutes on a 2-core CPU with the embedded model (a "
                  "rough prior; nothing was run)\n")


def problem(cell: Cell) -> str | None:
    """What would make an eval cell fail on its data, found without a model: a missing evaluated or pool split."""
    if cell.kind != "eval":
        return None
    cfg = cell.config
    try:
        task = load_task(cfg.task)
        task.examples(cfg.split or task.config.eval_split, cfg.data_dir, 1)
        if cfg.strategy_options().uses_pool():
            task.examples(cfg.pool_split or task.config.pool_split, cfg.data_dir, 1)
    except (UserError, OSError) as exc:
        return str(exc)
    return None


def estimate(cell: Cell) -> tuple[int | None, float | None]:
    """Rows a cell still has to run and a rough prior of its seconds on this kind of machine (2 CPU cores, the
    embedded 135M model: each strategy's ``seconds_per_row``; LoRA training ~0.9 s per row and epoch).
    ``None`` when the cell's data cannot be read now (the run itself will say why)."""
    if cell.complete():
        return 0, 0.0
    cfg = cell.config
    try:
        task = load_task(cfg.task)
        rows = cfg.limit or len(task.examples(cfg.split or task.config.eval_split, cfg.data_dir))
    except (UserError, OSError):
        return None, None
    if cell.kind == "tune":
        per_row = 0.15 if cfg.method == "head" else 0.9
        return rows, rows * per_row * cfg.epochs
    generate = (cfg.mode or task.space.modes[0]) == "generate"
    return rows, rows * cfg.strategy_options().seconds_per_row(generate)  # the strategy's own prior


COMPLETE_BEFORE = "complete before this run"


def run_cells(plan_cells: Sequence[Cell], jobs: int = 1, runner: Callable[[Cell], None] | None = None) -> None:
    """Run every cell not yet complete, tune cells first (their eval cells wait for them); a failed cell is
    recorded and the others go on. ``jobs`` > 1 runs that many cells at once, each in its own process with the
    cores shared out."""
    total = len(plan_cells)
    number = {c.name: i for i, c in enumerate(plan_cells, 1)}
    failed_tunes: set[str] = set()

    def one(cell: Cell) -> None:
        tag = f"[{number[cell.name]}/{total}] {cell.name}"
        if cell.after in failed_tunes:
            cell.status, cell.note = "skipped", f"its tune cell {cell.after} did not run"
            log.warning("%s: skipped (%s)", tag, cell.note)
            return
        if cell.complete():
            cell.status, cell.note = "done", COMPLETE_BEFORE
            log.info("%s: complete, skipped", tag)
            return
        started = time.perf_counter()
        log.info("%s: running", tag)
        try:
            (runner or run_in_process)(cell)
            cell.status = "done"
        except (UserError, ServerError) as exc:
            cell.status, cell.note = "skipped" if isinstance(exc, CellSkipped) else "failed", str(exc)
            if cell.kind == "tune":
                failed_tunes.add(cell.name)
        cell.seconds = time.perf_counter() - started
        log.info("%s: %s in %.0f s%s", tag, cell.status, cell.seconds, f" ({cell.note})" if cell.note else "")

    tunes = [c for c in plan_cells if c.kind == "tune"]
    evals = [c for c in plan_cells if c.kind == "eval"]
    if jobs <= 1:
        for cell in [*tunes, *evals]:
            one(cell)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, tunes))
        list(pool.map(one, evals))


def run_in_process(cell: Cell) -> None:
    if cell.kind == "tune":
        tune(cell.config, resume=any(cell.folder.glob("checkpoint-*")))
    else:
        evaluate(cell.config, progress=False)


def cell_argv(kind: str, command: str, folder: Path, threads: int) -> list[str]:
    """The ``taskfit`` arguments that run a cell as its own process: its command, ``--resume`` for a tune cell
    that left checkpoints (decided when it starts, so a retried cell continues), its share of the cores."""
    words = shlex.split(command)[1:]
    if kind == "tune" and any(Path(folder).glob("checkpoint-*")):
        words.append("--resume")
    if "--threads" not in words:
        words += ["--threads", str(threads)]
    if kind == "eval":
        words.append("--no-progress")
    return words


def run_logged(words: Sequence[str], log_file: Path) -> int:
    """``python -m taskfit.cli WORDS`` with its output in ``log_file``; the child dies with its parent (a killed
    Ray worker leaves no orphan writing into the cell's folder while the retry runs)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as handle:
        return subprocess.run([sys.executable, "-m", "taskfit.cli", *words], stdout=handle, stderr=subprocess.STDOUT,
                              check=False, preexec_fn=_die_with_parent if sys.platform == "linux" else None).returncode


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _exit_error(code: int, log_file: Path) -> UserError | ServerError:
    tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
    return (ServerError if code == 3 else UserError)(f"exit {code}: {tail[0]} (log: {log_file})")


def subprocess_runner(jobs: int, log_dir: Path) -> Callable[[Cell], None]:
    """Run a cell as its own ``taskfit`` process (its command, threads = cores / jobs), output to a log file."""
    threads = max(1, (os.cpu_count() or 1) // jobs)

    def run(cell: Cell) -> None:
        log_file = log_dir / (cell.name.replace("/", "__") + ".log")
        code = run_logged(cell_argv(cell.kind, cell.command, cell.folder, threads), log_file)
        if code != 0:
            raise _exit_error(code, log_file)

    return run


# ------------------------------------------------------------------------------------------------ Ray
def _ray_cell(kind: str, command: str, folder: str, threads: int, log_file: str, *needed: dict) -> dict[str, Any]:
    """One cell as a Ray task: waits for the tune cell it evaluates (``needed``: that task's result, a Ray object
    dependency), runs the cell's ``taskfit`` command, says how it went and on which node."""
    import ray

    node = ray.util.get_node_ip_address()
    if any(n["status"] != "done" for n in needed):
        return {"status": "skipped", "note": "its tune cell did not run", "seconds": 0.0, "node": node}
    started = time.perf_counter()
    code = run_logged(cell_argv(kind, command, Path(folder), threads), Path(log_file))
    note = "" if code == 0 else str(_exit_error(code, Path(log_file)))
    return {"status": "done" if code == 0 else "failed", "note": note, "node": node,
            "seconds": time.perf_counter() - started}


def ray_token_at_hand() -> bool:
    """Whether this process has a Ray authentication token to present: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``
    or Ray's default file, ``~/.ray/auth_token`` (written by ``ray start`` and ``ray get-auth-token --generate``)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def present_ray_token(address: str | None) -> None:
    """Ray 2.59 and later turn token authentication on for a cluster started with ``ray start --head``, but a driver
    given an address presents the token only when ``RAY_AUTH_MODE=token`` (``address="auto"`` finds it by itself),
    and Ray reads the mode when it is imported: so before the import, when the user has not chosen a mode and a
    token is at hand, the mode is set here. A cluster without authentication accepts a driver that presents one
    (checked with Ray 2.60)."""
    if address and "RAY_AUTH_MODE" not in os.environ and ray_token_at_hand():
        os.environ["RAY_AUTH_MODE"] = "token"


def join_ray(ray, address: str | None) -> None:
    """Start a local Ray (no ``address``) or join the cluster at ``address``; a cluster that cannot be joined is a
    one-line error saying what to check."""
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 ignore_reinit_error=True)
    except ConnectionError as e:
        raise ServerError(
            f"could not join the Ray cluster at {address}: {e}. Check the address (`ray status` on the head node "
            "prints it) and that this machine reaches the head's port; a cluster with token authentication needs its "
            "token here (RAY_AUTH_TOKEN, or `ray get-auth-token` on the head node copied to ~/.ray/auth_token)") from e


def run_cells_ray(plan: Plan, plan_cells: Sequence[Cell], address: str | None, log_dir: Path) -> None:
    """Every cell not yet complete as a Ray task with the resources the plan asks for, tune cells before the eval
    cells of their output (object dependencies, not polling). Without ``address`` a local Ray starts here. A task
    whose worker dies is retried by Ray (the cell resumes from what it wrote); a cell that fails is recorded."""
    present_ray_token(address)  # before Ray is imported: it reads its authentication mode then
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'ray==2.60.0' (or use --jobs N)") from None
    join_ray(ray, address)
    log.info("Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")})
    remote = ray.remote(_ray_cell)
    refs: dict[str, Any] = {}
    try:
        for cell in [*(c for c in plan_cells if c.kind == "tune"), *(c for c in plan_cells if c.kind == "eval")]:
            if cell.complete():
                cell.status, cell.note = "done", COMPLETE_BEFORE
                continue
            res = plan.resources.get(cell.kind, CellResources())
            needed = [refs[cell.after]] if cell.after in refs else []
            log_file = log_dir / (cell.name.replace("/", "__") + ".log")
            refs[cell.name] = remote.options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=3).remote(
                cell.kind, cell.command, str(cell.folder), max(1, int(res.num_cpus)), str(log_file), *needed)
        by_name = {c.name: c for c in plan_cells}
        for name, ref in refs.items():
            out = ray.get(ref)
            cell = by_name[name]
            cell.status, cell.note, cell.seconds, cell.node = out["status"], out["note"], out["seconds"], out["node"]
            log.info("%s: %s in %.0f s on %s%s", name, cell.status, cell.seconds, cell.node,
                     f" ({cell.note})" if cell.note else "")
    finally:
        ray.shutdown()


def _earlier_runs(path: Path) -> dict[str, dict[str, Any]]:
    """From an earlier ``grid.json``: each cell that ran to the end there, its seconds, node and executor."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        return {c["name"]: {"seconds": c["seconds"], "executor": c.get("executor", earlier["executor"]),
                            **({"node": c["node"]} if c.get("node") else {})}
                for c in earlier["cells"] if c["status"] == "done" and c.get("seconds")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # none, or not one this grid wrote: nothing to keep


def write_summary(plan: Plan, plan_cells: Sequence[Cell], executor: str = "local") -> Path:
    """``grid.json`` in the plan's output: the executor, and every cell's command, status, seconds, note (and the
    node it ran on, with Ray). A cell complete before this run keeps what the earlier ``grid.json`` said of the run
    that made it (seconds, node, executor), so a rerun does not erase the record."""
    plan.output.mkdir(parents=True, exist_ok=True)
    path = plan.output / "grid.json"
    earlier = _earlier_runs(path)
    rows = []
    for c in plan_cells:
        row = {"name": c.name, "kind": c.kind, "status": c.status, "seconds": round(c.seconds, 1), "note": c.note,
               "command": c.command, **({"node": c.node} if c.node else {})}
        if c.note == COMPLETE_BEFORE and c.name in earlier:
            row |= earlier[c.name]
        rows.append(row)
    write_json(path, {"executor": executor, "cells": rows})
    return path
