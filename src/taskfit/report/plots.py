"""The report's figures as inline SVG: text stays text (searchable, selectable, drawn by the reader's fonts, so
Chinese labels render where the page is read), no external reference, deterministic ids."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import re
import warnings
from collections.abc import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from taskfit.report import stats  # noqa: E402
from taskfit.report.analysis import TaskReport  # noqa: E402

RC = {"svg.fonttype": "none", "svg.hashsalt": "taskfit", "font.size": 9,
      "font.family": ["DejaVu Sans", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "sans-serif"]}
TIER, OTHER, BASE = "#1f6feb", "#8c959f", "#cf222e"


_FIGURE_IDS = itertools.count()
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_ID_USE = re.compile(r'(id="|href="#|url\(#)([^")]+)')


def _svg(fig) -> str:
    """The figure as an ``<svg>`` element (no XML declaration or DOCTYPE: it sits inside HTML), its ids prefixed so
    several figures share one page without clashing."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "taskfit"})
    plt.close(fig)
    text = _METADATA.sub("", buffer.getvalue())
    prefix = f"f{next(_FIGURE_IDS)}-"
    return _ID_USE.sub(lambda m: m.group(1) + prefix + m.group(2), text[text.index("<svg"):])


def _plain(text: str) -> str:
    """A label as literal text: matplotlib would read $...$ as mathtext."""
    return text.replace("$", r"\$")


def _figure(rows: int, width: float = 7.0):
    return plt.subplots(figsize=(width, max(1.6, 0.32 * rows + 0.9)))


@contextlib.contextmanager
def _drawing() -> Iterator[None]:
    """The report's style; matplotlib measures text with its own fonts and warns about glyphs it lacks (CJK), which
    the browser draws, so those warnings are silenced."""
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    with warnings.catch_warnings(), plt.rc_context(RC):
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        yield


def task_figures(report: TaskReport) -> list[tuple[str, str]]:
    """(caption, svg) for every figure of one task that has something to show."""
    with _drawing():
        figures = [(f"{report.metric} with its 95% CI per method (blue: top tier)", metric_plot(report))]
        if len(report.methods) > 1:
            figures.append((f"Paired difference to the baseline ({report.baseline.label}) with its 95% CI",
                            delta_plot(report)))
        cost = cost_plot(report)
        if cost:
            figures.append(("Quality against cost; the line joins the Pareto frontier", cost))
        confusion = confusion_plot(report)
        if confusion:
            figures.append(("Confusion matrices (rows: gold, columns: prediction)", confusion))
        losses = loss_plot(report)
        if losses:
            figures.append(("Training loss of the tuned methods", losses))
        curve = learning_curve(report)
        if curve:
            figures.append(("Learning curve: metric against labelled training examples; band: the best "
                            "prompting method's 95% CI", curve))
        return figures


def metric_plot(report: TaskReport) -> str:
    methods = report.methods
    fig, ax = _figure(len(methods))
    tier = {m.label for m in report.tier}
    for y, m in enumerate(methods):
        v = report.value(m)
        low, high = v["ci_low"], v["ci_high"]
        err = [[v["value"] - low], [high - v["value"]]] if low is not None else None
        ax.errorbar(v["value"], y, xerr=err, fmt="o", color=TIER if m.label in tier else OTHER, capsize=3)
    ax.set_yticks(range(len(methods)), [_plain(m.label) for m in methods])
    ax.invert_yaxis()
    ax.set_xlabel(report.metric)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def delta_plot(report: TaskReport) -> str:
    base = report.baseline
    others = [m for m in report.methods if m is not base]
    fig, ax = _figure(len(others))
    for y, m in enumerate(others):
        r = report.versus(base, m)
        colour = TIER if report.p_baseline[m.label] < stats.ALPHA else OTHER
        ax.errorbar(r.diff, y, xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color=BASE, linewidth=1)
    ax.set_yticks(range(len(others)), [_plain(m.label) for m in others])
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ {report.metric} vs {_plain(base.label)} (blue: significant after Holm)")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def cost_plot(report: TaskReport) -> str | None:
    priced = [m for m in report.methods if m.cost.seconds_per_1k]
    if len(priced) < 2:
        return None
    points = [(m.cost.seconds_per_1k, report.value(m)["value"]) for m in priced]
    front = stats.pareto_front(points, report.higher_is_better)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color=OTHER)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-o", color=TIER)
    for m, (x, y) in zip(priced, points):
        ax.annotate(_plain(m.label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per 1,000 predictions (log scale)")
    ax.set_ylabel(report.metric)
    ax.grid(alpha=0.3)
    return _svg(fig)


def confusion_plot(report: TaskReport) -> str | None:
    if report.task_type != "classification":
        return None
    labels = [label["value"] for label in report.best.results["task"].get("labels", [])]
    if not labels or len(labels) > 12:
        return None
    shown = [report.best] + ([report.baseline] if report.baseline is not report.best else [])
    columns = labels + ["(unparsed)"]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.4 * len(shown), 3.4), squeeze=False)
    for ax, m in zip(axes[0], shown):
        counts = [[0] * len(columns) for _ in labels]
        for r in m.samples:
            if str(r.get("gold")) not in labels:
                continue
            pred = r.get("prediction")
            col = labels.index(str(pred)) if str(pred) in labels else len(labels)
            counts[labels.index(str(r["gold"]))][col] += 1
        ax.imshow(counts, cmap="Blues")
        top = max(max(row) for row in counts) or 1
        for i, row in enumerate(counts):
            for j, c in enumerate(row):
                ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                        color="white" if c > top / 2 else "black")
        ax.set_xticks(range(len(columns)), [_plain(c) for c in columns], rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), [_plain(c) for c in labels])
        ax.set_title(_plain(m.label), fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def loss_plot(report: TaskReport) -> str | None:
    tuned = [m for m in report.methods if m.cost.loss_history]
    if not tuned:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for m in tuned:
        steps, losses = zip(*m.cost.loss_history)
        ax.plot(steps, losses, label=_plain(m.label))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _svg(fig)


def learning_curve(report: TaskReport) -> str | None:
    """Tuned runs of one method at several training sizes, against the best prompting method's band."""
    by_method: dict[str, list] = {}
    for m in report.methods:
        if m.cost.tuned and m.cost.labelled_examples:
            by_method.setdefault(m.cost.tuning_method, []).append(m)
    curves = {name: ms for name, ms in by_method.items() if len({m.cost.labelled_examples for m in ms}) >= 2}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    prompted = [m for m in report.methods if not m.cost.tuned]
    if prompted:
        v = report.value(prompted[0])
        if v["ci_low"] is not None:
            ax.axhspan(v["ci_low"], v["ci_high"], color=OTHER, alpha=0.25, label=_plain(prompted[0].label))
    for name, ms in curves.items():
        ms = sorted(ms, key=lambda m: m.cost.labelled_examples)
        values = [report.value(m) for m in ms]
        ax.errorbar([m.cost.labelled_examples for m in ms], [v["value"] for v in values],
                    yerr=[[v["value"] - v["ci_low"] for v in values], [v["ci_high"] - v["value"] for v in values]],
                    fmt="-o", capsize=3, label=_plain(name))
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples (log scale)")
    ax.set_ylabel(report.metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _svg(fig)


def wins_heatmap(reports: Sequence[TaskReport]) -> str | None:
    """Tasks x methods: how many methods of that task each one beats significantly (all-pairs Holm)."""
    if len(reports) < 2:
        return None
    labels = list(dict.fromkeys(m.label for r in reports for m in r.methods))
    grid = [[float("nan")] * len(labels) for _ in reports]
    for i, r in enumerate(reports):
        for m in r.methods:
            grid[i][labels.index(m.label)] = len(r.beats(m))
    with _drawing():
        fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(labels) + 2), 0.5 * len(reports) + 2))
        ax.imshow(grid, cmap="Greens", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, "-" if value != value else str(int(value)), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(labels)), [_plain(label) for label in labels], rotation=30, ha="right")
        ax.set_yticks(range(len(reports)), [_plain(r.task) for r in reports])
        return _svg(fig)
