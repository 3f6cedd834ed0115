"""Per task: rank the methods on the task's primary metric, test every pair on the same examples, and say in
numbers which way wins, which ones cannot be told apart, and at what cost.

The primary metric is the task's first declared metric; its direction comes from the metric registry. Pairs are
tested with McNemar's exact test for accuracy and the paired permutation test for every other metric
(:mod:`taskfit.metrics.paired`), Holm-corrected as one family — all pairs — that every statement of the report
reads: the top tier (not significantly different from the best), the headline, the Δ column's p against the
baseline, the tie-group letters and the multi-task win counts. So a reader never sees "behind" in one place and "not
different" in another for the same pair (each family corrected on its own allowed exactly that on small runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfit.metrics.paired import PairedResult, paired_compare
from taskfit.metrics.registry import METRICS
from taskfit.report import stats
from taskfit.report.collect import Method

PARSE_FAILURE_LIMIT = 0.05
DISAGREEMENTS_SHOWN = 25


@dataclass
class Disagreements:
    """Where two methods' per-example verdicts differ (A is the best method, B the one it is compared with)."""

    a: str
    b: str
    both_right: int
    only_a: int
    only_b: int
    both_wrong: int
    examples: list[dict[str, Any]]


@dataclass
class TaskReport:
    task: str
    task_type: str
    metric: str
    higher_is_better: bool
    n: int
    methods: list[Method]  # ranked, best first
    baseline: Method
    pairs: dict[tuple[str, str], PairedResult]  # (a, b) -> b - a, both orders
    p_best: dict[str, float] = field(default_factory=dict)  # all-pairs Holm p vs the best, per label
    p_baseline: dict[str, float] = field(default_factory=dict)  # all-pairs Holm p vs the baseline
    p_all: dict[tuple[str, str], float] = field(default_factory=dict)  # Holm over all pairs, both orders
    tier: list[Method] = field(default_factory=list)
    letters: dict[str, str] = field(default_factory=dict)
    min_detectable: float = 0.0
    headline: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    disagreements: Disagreements | None = None

    @property
    def best(self) -> Method:
        return self.methods[0]

    def value(self, method: Method) -> dict[str, Any]:
        """The method's primary metric as results.json records it (value, ci_low, ci_high)."""
        return method.results["metrics"][self.metric]

    def versus(self, a: Method, b: Method) -> PairedResult:
        """B - A on the primary metric."""
        return self.pairs[(a.label, b.label)]

    def significant(self, a: str, b: str) -> bool:
        return self.p_all.get((a, b), 1.0) < stats.ALPHA

    def beats(self, method: Method) -> list[Method]:
        """The methods ``method`` is significantly better than (all-pairs Holm)."""
        sign = 1 if self.higher_is_better else -1
        return [other for other in self.methods if other is not method and self.significant(method.label, other.label)
                and sign * self.versus(other, method).diff > 0]


def analyse(methods: Sequence[Method], baseline: str | None = None, volume: int | None = None,
            n_resamples: int = 2000, seed: int = 0) -> TaskReport:
    """The report of one task's methods (already checked to share their examples)."""
    first = methods[0]
    task = first.results["task"]
    metric = task["metrics"][0]
    higher = METRICS[metric].higher_is_better
    sign = 1 if higher else -1
    ranked = sorted(methods, key=lambda m: -sign * m.results["metrics"][metric]["value"])
    report = TaskReport(task["name"], task.get("type", ""), metric, higher, first.n, ranked,
                        _pick_baseline(methods, baseline), {})
    labels = [label["value"] for label in task.get("labels", [])]
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            result = paired_compare([metric], a.samples, b.samples, labels, n_resamples=n_resamples, seed=seed)[0]
            report.pairs[(a.label, b.label)] = result
            report.pairs[(b.label, a.label)] = _reversed(result)
    _adjust(report)
    report.tier = [report.best] + [m for m in ranked[1:] if report.p_best[m.label] >= stats.ALPHA]
    report.letters = stats.tie_letters([m.label for m in ranked], report.significant)
    report.min_detectable = _min_detectable(report)
    report.disagreements = _disagreements(report)
    report.headline = _headline(report, volume)
    report.caveats = _caveats(report)
    return report


def pair_p(result: PairedResult) -> float:
    """The p-value a decision uses: McNemar's exact test for accuracy, the paired permutation test otherwise."""
    if result.p_mcnemar is not None:
        return result.p_mcnemar
    return result.p_permutation if result.p_permutation is not None else result.p_bootstrap


def _reversed(result: PairedResult) -> PairedResult:
    return PairedResult(result.metric, result.b, result.a, -result.diff, -result.ci_high, -result.ci_low,
                        result.p_bootstrap, result.se_diff, result.p_permutation, result.p_mcnemar,
                        result.a_only_right, result.b_only_right)


def matches(method: Method, wanted: str) -> bool:
    """Whether ``--baseline`` names this method: its label, its run folder's name or its path."""
    return wanted in (method.label, method.run.folder.name, str(method.run.folder))


def _pick_baseline(methods: Sequence[Method], wanted: str | None) -> Method:
    """``--baseline`` where it names one of the task's runs; else the first untuned zero-shot run, else the first."""
    named = [m for m in methods if wanted and matches(m, wanted)]
    if named:
        return named[0]
    for m in methods:
        if m.config.get("strategy") == "zero_shot" and not m.cost.tuned:
            return m
    return methods[0]


def _adjust(report: TaskReport) -> None:
    """Holm over all pairs, once; the comparisons with the best and with the baseline are read from it."""
    keys = [(a.label, b.label) for i, a in enumerate(report.methods) for b in report.methods[i + 1:]]
    for (a, b), p in zip(keys, stats.holm([pair_p(report.pairs[k]) for k in keys])):
        report.p_all[(a, b)] = report.p_all[(b, a)] = p
    best, base = report.best.label, report.baseline.label
    report.p_best = {m.label: report.p_all[(best, m.label)] for m in report.methods if m.label != best}
    report.p_baseline = {m.label: report.p_all[(base, m.label)] for m in report.methods if m.label != base}


def _min_detectable(report: TaskReport) -> float:
    """From the paired SE of the best vs the runner-up; when they never disagree, from their two CIs."""
    best = report.best
    if len(report.methods) < 2:
        v = report.value(best)
        return stats.min_detectable(2 ** 0.5 * stats.se_from_ci(v["ci_low"], v["ci_high"]))
    runner = report.methods[1]
    se = report.versus(best, runner).se_diff
    if se <= 0:
        a, b = report.value(best), report.value(runner)
        se_a, se_b = stats.se_from_ci(a["ci_low"], a["ci_high"]), stats.se_from_ci(b["ci_low"], b["ci_high"])
        se = (se_a ** 2 + se_b ** 2) ** 0.5
    return stats.min_detectable(se)


def _verdicts(method: Method) -> list[bool] | None:
    """Per-example right / wrong, where the task type has one (``correct``, else SQuAD's exact match)."""
    for key in ("correct", "em"):
        if all(key in r for r in method.samples):
            return [bool(r[key]) for r in method.samples]
    return None


def _disagreements(report: TaskReport) -> Disagreements | None:
    if len(report.methods) < 2:
        return None
    a = report.best
    b = report.baseline if report.baseline is not a else report.methods[1]
    right_a, right_b = _verdicts(a), _verdicts(b)
    if right_a is None or right_b is None:
        return None
    pairs = list(zip(right_a, right_b))
    shown = []
    for ra, rb, sa, sb in zip(right_a, right_b, a.samples, b.samples):
        if ra != rb and len(shown) < DISAGREEMENTS_SHOWN:
            shown.append({"index": sa["index"], "input": _short(sa.get("input")), "gold": _short(sa.get("gold")),
                          "a": _short(sa.get("prediction")), "b": _short(sb.get("prediction")), "a_right": ra})
    return Disagreements(a.label, b.label, sum(x and y for x, y in pairs), sum(x and not y for x, y in pairs),
                         sum(y and not x for x, y in pairs), sum(not x and not y for x, y in pairs), shown)


def _short(value: Any, limit: int = 300) -> str:
    if isinstance(value, dict):
        text = " | ".join(f"{k}: {v}" for k, v in value.items())
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    value = round(value, 4) + 0.0  # no "-0.0000"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def fmt_ci(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None:
        return ""
    return f"[{fmt(low, signed)}, {fmt(high, signed)}]"


def fmt_p(p: float) -> str:
    return "1" if p >= 0.9995 else f"{p:.2g}"


def _value_text(report: TaskReport, method: Method) -> str:
    v = report.value(method)
    return f"{report.metric} {fmt(v['value'])} {fmt_ci(v['ci_low'], v['ci_high'])}".strip()


def _headline(report: TaskReport, volume: int | None) -> list[str]:
    best, n, metric = report.best, report.n, report.metric
    k = len(report.methods)
    if k == 1:
        return [f"One method on {report.task} ({n} rows): {best.label}, {_value_text(report, best)}."]
    lines = []
    mdd = f"{report.min_detectable:.4f}"
    identical = all(r.diff == 0 and pair_p(r) >= 0.9995 for r in report.pairs.values())
    if identical:
        lines.append(f"The {k} methods cannot be told apart on {report.task} ({n} rows): every paired difference is 0 "
                     f"(p = 1), {_value_text(report, best)}; this test set cannot detect differences under {mdd} "
                     f"{metric} (80% power, α = 0.05).")
        return lines + _volume_lines(report, volume)
    runner = report.methods[1]
    gap = report.versus(runner, best)
    if len(report.tier) == 1:
        worst_p = max(report.p_best.values())
        lines.append(f"{best.label} beats each of the other {k - 1} methods on {report.task} ({n} rows): "
                     f"{_value_text(report, best)}, Holm-adjusted p ≤ {fmt_p(worst_p)}; the runner-up, "
                     f"{runner.label}, is {fmt(abs(gap.diff))} {metric} behind "
                     f"{fmt_ci(min(abs(gap.ci_low), abs(gap.ci_high)), max(abs(gap.ci_low), abs(gap.ci_high)))}.")
    else:
        names = ", ".join(m.label for m in report.tier)
        least_p = min(report.p_best[m.label] for m in report.tier[1:])
        lines.append(f"Top tier on {report.task} ({n} rows): {names}. {best.label} scores highest "
                     f"({_value_text(report, best)}), but its differences to the other {len(report.tier) - 1} in the "
                     f"tier are not significant after Holm correction (adjusted p "
                     f"{'= 1' if least_p >= 0.9995 else '≥ ' + fmt_p(least_p)}); "
                     + _behind(k - len(report.tier)))
        priced = [m for m in report.tier if m.cost.seconds_per_1k is not None]
        if priced:
            cheapest = min(priced, key=lambda m: m.cost.seconds_per_1k)
            lines.append(f"The cheapest member of the tier is {cheapest.label}: {cheapest.cost.seconds_per_1k:.1f} s "
                         f"per 1,000 predictions" + _vs_best_cost(best, cheapest) + ".")
    lines.append(f"With {n} rows this test set detects differences of about {mdd} {metric} or more (80% power, "
                 f"α = 0.05); smaller ones may hide inside the tier.")
    return lines + _volume_lines(report, volume)


def _behind(count: int) -> str:
    if count == 0:
        return "no method is significantly behind it."
    return "the other method is significantly behind it." if count == 1 else \
        f"the other {count} methods are significantly behind it."


def _vs_best_cost(best: Method, cheapest: Method) -> str:
    if cheapest is best or best.cost.seconds_per_1k is None:
        return ""
    return f" against {best.cost.seconds_per_1k:.1f} s for {best.label}"


def _volume_lines(report: TaskReport, volume: int | None) -> list[str]:
    """Tuned methods against the best prompted one, at ``volume`` predictions (``--volume``)."""
    if not volume:
        return []
    prompted = [m for m in report.methods if not m.cost.tuned and m.cost.seconds_per_1k is not None]
    tuned = [m for m in report.methods if m.cost.tuned and m.cost.seconds_per_1k is not None and m.cost.train_s]
    if not prompted or not tuned:
        return [f"No break-even at {volume:,} predictions: it needs a tuned and a prompted run, both with costs."]
    ref = prompted[0]  # methods are ranked: the best prompted one
    lines = []
    for m in tuned:
        train_s = float(m.cost.train_s or 0)
        per_t, per_p = m.cost.seconds_per_1k / 1000, ref.cost.seconds_per_1k / 1000
        total_t, total_p = train_s + volume * per_t, volume * per_p
        even = stats.break_even(train_s, per_t, per_p)
        when = (f"it pays for its training after {even:,.0f} predictions" if even is not None
                else "it never pays for its training, being no faster per prediction")
        lines.append(f"At {volume:,} predictions {m.label} costs {total_t:,.0f} s ({train_s:,.0f} s training + "
                     f"inference) against {total_p:,.0f} s for {ref.label}; {when}.")
    return lines


def _caveats(report: TaskReport) -> list[str]:
    out = []
    tuned = [m for m in report.methods if m.cost.tuned]
    if tuned:
        out.append("Single training seed: " + ", ".join(m.label for m in tuned) + " trained once; the variance "
                   "between training seeds is not in their intervals.")
    if len(report.methods) >= 3:
        out.append(f"Chosen on the same split: the best of {len(report.methods)} methods is picked on the rows it is "
                   "scored on, so its margin is optimistic; confirm the choice on rows none of them saw.")
    for m in report.methods:
        pool = m.results.get("pool")  # what the run read, as it recorded it
        if pool and pool.get("evaluated_split"):
            out.append(f"{m.label}: demonstrations / instructions were chosen from the evaluated split "
                       f"({pool['split']}), so its score is optimistic.")
        if m.parse_failure_rate > PARSE_FAILURE_LIMIT:
            out.append(f"{m.label}: {m.parse_failure_rate:.1%} of its answers did not parse (above "
                       f"{PARSE_FAILURE_LIMIT:.0%}; counted as wrong).")
        if m.cost.excluded:
            out.append(f"{m.label}: {m.cost.excluded}, so its seconds are left out of the cost comparison.")
    return out
