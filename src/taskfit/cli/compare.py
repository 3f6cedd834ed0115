"""``taskfit compare-results`` (two runs, paired) and ``taskfit report`` (which way wins, by how much, at what cost)."""

from __future__ import annotations

import argparse
import sys

from taskfit.cli.flags import command, default_of
from taskfit.errors import UserError
from taskfit.settings import OutputSection, TaskSection

RESAMPLES = default_of(OutputSection, "bootstrap_samples")
SEED = default_of(TaskSection, "seed")


def register(sub) -> None:
    cmp = command(sub, "compare-results", "paired comparison of two runs on the same examples", compare)
    cmp.add_argument("a", help="results.json (or run folder) of run A")
    cmp.add_argument("b", help="results.json (or run folder) of run B")
    add_resampling(cmp)
    cmp.add_argument("--intersect", action="store_true",
                     help="runs on different example sets: compare only the shared examples (default: refuse)")
    rp = command(sub, "report", "which way wins, by how much, at what cost: one HTML page and its markdown twin "
                 "from run folders", report)
    rp.add_argument("runs", nargs="+", help="run folders, or folders holding them (a grid's output)")
    rp.add_argument("--html", help="write the self-contained HTML report here")
    rp.add_argument("--md", help="write the markdown report here (neither --html nor --md: markdown on stdout)")
    rp.add_argument("--baseline", help="the method the Δ column compares with: its label or run folder name "
                    "(default: the first untuned zero-shot run)")
    rp.add_argument("--volume", type=int, help="predictions to price: total cost and break-even of tuned methods")
    add_resampling(rp)


def add_resampling(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-samples`` and ``--seed``, with the defaults an eval run's CIs use."""
    parser.add_argument("--bootstrap-samples", type=int, default=RESAMPLES,
                        help=f"bootstrap / permutation resamples (default {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the resampling seed (default {SEED})")


def compare(args: argparse.Namespace) -> int:
    from taskfit.compare import compare_runs
    from taskfit.report.table import markdown_table

    report = compare_runs(args.a, args.b, n_resamples=args.bootstrap_samples, seed=args.seed,
                          intersect=args.intersect)
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

    if args.volume is not None and args.volume <= 0:
        raise UserError(f"--volume {args.volume}: give a positive number of predictions")
    if args.bootstrap_samples < 100:
        raise UserError(f"--bootstrap-samples {args.bootstrap_samples}: give at least 100 resamples")
    for flag, path in (("--html", args.html), ("--md", args.md)):
        if path:
            output_file(path, flag)
    built = render.build(args.runs, args.baseline, args.volume, args.bootstrap_samples, args.seed)
    if not args.html and not args.md:
        sys.stdout.write(render.to_markdown(built))
        return 0
    render.write(built, args.html, args.md)
    for task in built.tasks:
        sys.stdout.write(f"{task.task}: {task.headline[0]}\n")
    return 0
