"""``taskfit compare-results`` (two runs, paired) and ``taskfit report`` (which way wins, by how much, at what cost)."""

from __future__ import annotations

import argparse
import sys

from taskfit.cli.flags import add_flags, command, settings_of
from taskfit.settings import CompareSettings, ReportSettings


def register(sub) -> None:
    add_flags(command(sub, "compare-results", "paired comparison of two runs on the same examples", compare),
              CompareSettings, required=True)
    add_flags(command(sub, "report", "which way wins, by how much, at what cost: one HTML page and its markdown twin "
                      "from run folders", report), ReportSettings, required=True)


def compare(args: argparse.Namespace) -> int:
    from taskfit.compare import compare_runs
    from taskfit.report.table import markdown_table

    s = settings_of(CompareSettings, args)
    report = compare_runs(s.a, s.b, n_resamples=s.bootstrap_samples, seed=s.seed, intersect=s.intersect)
    rows = []
    for r in report["comparisons"]:
        mcnemar = "" if r["p_mcnemar"] is None else f"{r['p_mcnemar']:.4f} ({r['b_only_right']}/{r['a_only_right']})"
        rows.append([r["metric"], r["a"], r["b"], f"{r['diff']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                     f"{r['p_permutation']:.4f}", f"{r['p_bootstrap']:.4f}", mcnemar])
    dropped = report["dropped"]
    left_out = (f" ({dropped['a_only']} only in A and {dropped['b_only']} only in B left out: --intersect)"
                if dropped["a_only"] or dropped["b_only"] else "")
    sys.stdout.write(f"A: {report['a']['label']}\nB: {report['b']['label']}\nn = {report['n']} paired examples"
                     f"{left_out}\n")
    sys.stdout.write(markdown_table(["metric", "A", "B", "B - A", "95% CI of B - A (paired bootstrap)",
                                     "p (paired permutation)", "bootstrap sign share",
                                     "p McNemar (B-only/A-only right)"], rows) + "\n")
    return 0


def report(args: argparse.Namespace) -> int:
    from taskfit.paths import output_file
    from taskfit.report import render

    s = settings_of(ReportSettings, args)
    for flag, path in (("--html", s.html), ("--md", s.md)):
        if path:
            output_file(path, flag)
    built = render.build(s.runs, s.baseline, s.volume, s.bootstrap_samples, s.seed)
    if not s.html and not s.md:
        sys.stdout.write(render.to_markdown(built))
        return 0
    render.write(built, s.html, s.md)
    for task in built.tasks:
        sys.stdout.write(f"{task.task}: {task.headline[0]}\n")
    return 0
