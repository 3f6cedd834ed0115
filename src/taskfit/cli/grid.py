"""``taskfit grid`` (a plan: tasks x models x strategies, plus tuning jobs) and ``taskfit fit`` (the autopilot)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from taskfit.cli.flags import add_flags, command, settings_of
from taskfit.settings import FitSettings, GridSettings

log = logging.getLogger("taskfit")


def register(sub) -> None:
    add_flags(command(sub, "grid", "run a plan: tasks x models x strategies (+ tuning jobs), one run folder per cell, "
                      "skipped when complete and resumed when cut", run_grid), GridSettings, required=True)
    add_flags(command(sub, "fit", "plan, price and run a sensible grid for a task within a time budget, then write "
                      "the report (what was chosen and why comes first)", run_fit), FitSettings, required=True)


def run_grid(args: argparse.Namespace) -> int:
    from taskfit import grid
    from taskfit.runs import collection_folder

    s = settings_of(GridSettings, args)
    plan = grid.load_plan(s.plan)
    cells = grid.cells(plan, s.plan)
    if s.print_commands or s.dry_run:
        sys.stdout.write("".join(c.command + "\n" for c in cells) if s.print_commands else grid.dry_run(cells))
        return 0
    collection_folder(plan.output, "the plan's output")
    try:
        if s.executor == "ray":
            grid.run_cells_ray(plan, cells, s.ray_address, plan.output / "logs")
        else:
            jobs = _jobs(s.jobs)
            grid.run_cells(cells, jobs, grid.subprocess_runner(jobs, plan.output / "logs") if jobs > 1 else None)
    finally:
        summary = grid.write_summary(plan, cells, s.executor)
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
    from taskfit.fit import fit, parse_budget

    s = settings_of(FitSettings, args)
    budget = parse_budget(s.budget)
    output = s.output_folder()
    report = fit(s.task, budget, s.data_dir, output, s.model, s.seed, s.split)
    for task in report.tasks:
        sys.stdout.write(f"{task.task}: {' '.join(task.headline)}\n")
    sys.stdout.write(f"report: {output}/report.html and {output}/report.md\n")
    return 0
