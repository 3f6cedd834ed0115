"""``taskfit grid`` (a plan: tasks x models x strategies, plus tuning jobs) and ``taskfit fit`` (the autopilot)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from taskfit.cli.flags import command, default_of
from taskfit.errors import UserError
from taskfit.settings import ModelSection, TaskSection

log = logging.getLogger("taskfit")


def register(sub) -> None:
    gr = command(sub, "grid", "run a plan: tasks x models x strategies (+ tuning jobs), one run folder per cell, "
                 "skipped when complete and resumed when cut", run_grid)
    gr.add_argument("plan", help="plan YAML (tasks, models, strategies, defaults, tune, output)")
    gr.add_argument("--dry-run", action="store_true", help="list the cells and a rough estimate of their cost")
    gr.add_argument("--jobs", type=int, default=1, help="cells at once, each its own process with the cores "
                    "shared out (default 1: one after another in this process)")
    gr.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: this machine (--jobs); ray: every cell a Ray task with the plan's `resources`, on "
                         "the cluster at --ray-address (default: a local Ray started here)")
    gr.add_argument("--ray-address", help="--executor ray: an existing cluster (`ray start --head` prints it), "
                    "e.g. 10.0.0.1:6379 or auto")
    gr.add_argument("--print-commands", action="store_true",
                    help="print one `taskfit` command per cell (tune cells first) for a scheduler, and run nothing")
    ft = command(sub, "fit", "plan, price and run a sensible grid for a task within a time budget, then write the "
                 "report (what was chosen and why comes first)", run_fit)
    ft.add_argument("task", help="built-in task or task YAML")
    ft.add_argument("--budget", default="60m", help="wall time for everything: 60m, 1h30m, 900s (default 60m)")
    ft.add_argument("--data-dir", help="folder laid out as D/<dataset>/<split>.jsonl")
    ft.add_argument("--split", help="the split to evaluate on (default: the task's eval split); nothing trains on it")
    ft.add_argument("--model", default=default_of(ModelSection, "model"), help="known model or hf:<folder>")
    ft.add_argument("--output", help="folder for every run and the report (default runs/fit-<task>)")
    ft.add_argument("--seed", type=int, default=default_of(TaskSection, "seed"))


def run_grid(args: argparse.Namespace) -> int:
    from taskfit import grid
    from taskfit.runs import collection_folder

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give 1 or more")
    if args.ray_address and args.executor != "ray":
        raise UserError("--ray-address goes with --executor ray")
    plan = grid.load_plan(args.plan)
    cells = grid.cells(plan, args.plan)
    if args.print_commands or args.dry_run:
        sys.stdout.write("".join(c.command + "\n" for c in cells) if args.print_commands else grid.dry_run(cells))
        return 0
    collection_folder(plan.output, "the plan's output")
    try:
        if args.executor == "ray":
            grid.run_cells_ray(plan, cells, args.ray_address, plan.output / "logs")
        else:
            jobs = _jobs(args.jobs)
            grid.run_cells(cells, jobs, grid.subprocess_runner(jobs, plan.output / "logs") if jobs > 1 else None)
    finally:
        summary = grid.write_summary(plan, cells, args.executor)
    failed = [c for c in cells if c.status != "done"]
    sys.stdout.write("".join(f"{c.status}: {c.name}: {c.note}\n" for c in failed))
    sys.stdout.write(f"{len(cells) - len(failed)} of {len(cells)} cells done; summary {summary}; "
                     f"compare them with `taskfit report {plan.output} --html {plan.output}/report.html`\n")
    return 2 if failed else 0


def _jobs(asked: int) -> int:
    cores = os.cpu_count() or 1
    if asked > cores:
        log.warning("--jobs %d on %d cores: using %d", asked, cores, cores)
    return min(asked, cores)


def run_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskfit.fit import fit, parse_budget

    budget = parse_budget(args.budget)
    output = Path(args.output or f"runs/fit-{Path(args.task).stem}")
    report = fit(args.task, budget, Path(args.data_dir) if args.data_dir else None, output, args.model, args.seed,
                 args.split)
    for task in report.tasks:
        sys.stdout.write(f"{task.task}: {' '.join(task.headline)}\n")
    sys.stdout.write(f"report: {output}/report.html and {output}/report.md\n")
    return 0
