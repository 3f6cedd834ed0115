"""``taskfit report``: run folders -> one self-contained HTML page and its markdown twin.

The HTML has no script and fetches nothing (a content security policy forbids both); figures are inline SVG; every
string that came from a user, a data file or a model is escaped, so a prediction reading ``<script>`` stays text.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.report import plots, stats
from taskfit.report.analysis import TaskReport, analyse, fmt, fmt_ci, fmt_p, matches
from taskfit.report.collect import Method, collect
from taskfit.report.table import markdown_table

log = logging.getLogger(__name__)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


@dataclass
class Report:
    tasks: list[TaskReport]
    volume: int | None
    created: str
    seconds: float = 0.0
    preface: list[str] = field(default_factory=list)  # what chose these runs and why (taskfit fit), shown first


def build(paths: Iterable[str | Path], baseline: str | None = None, volume: int | None = None,
          n_resamples: int = 2000, seed: int = 0) -> Report:
    """Read the runs, analyse every task."""
    started = time.perf_counter()
    by_task = collect(paths)
    if baseline and not any(matches(m, baseline) for methods in by_task.values() for m in methods):
        labels = ", ".join(sorted({repr(m.label) for methods in by_task.values() for m in methods}))
        raise UserError(f"--baseline {baseline!r} matches no run; give a method label ({labels}) or a run folder name")
    tasks = [analyse(methods, baseline, volume, n_resamples, seed) for methods in by_task.values()]
    return Report(tasks, volume, datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------- the numbers

LEADERBOARD = ["group", "method", "{metric} [95% CI]", "Δ vs baseline [95% CI]", "Holm p", "parse fail",
               "s / 1k pred", "prompt tok / pred", "gen tok / pred", "peak MiB", "train s", "trainable params"]


def leaderboard(report: TaskReport) -> list[list[str]]:
    """One row of strings per method, ranked; the same cells in both formats."""
    rows = []
    for m in report.methods:
        v = report.value(m)
        if m is report.baseline:
            delta, p = "baseline", ""
        else:
            r = report.versus(report.baseline, m)
            delta, p = f"{fmt(r.diff, True)} {fmt_ci(r.ci_low, r.ci_high, True)}", fmt_p(report.p_baseline[m.label])
        c = m.cost
        rows.append([
            report.letters[m.label], m.label, f"{fmt(v['value'])} {fmt_ci(v['ci_low'], v['ci_high'])}", delta, p,
            f"{m.parse_failure_rate:.1%}",
            "cached" if c.seconds_per_1k is None else f"{c.seconds_per_1k:.1f}",
            _num(c.prompt_tokens_per_prediction), _num(c.generated_tokens_per_prediction), _num(c.peak_rss_mib, 0),
            _num(c.train_s, 0), "-" if c.trainable_parameters is None else f"{c.trainable_parameters:,}",
        ])
    return rows


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def provenance(m: Method) -> dict[str, str]:
    res = m.results
    versions = res.get("versions") or {}
    return {
        "method": m.label,
        "folder": str(m.run.folder),
        "command": res.get("command") or "-",  # runs before the report existed did not record it
        "config hash": (m.run.fingerprint or "")[:12],
        "git": (res.get("git_hash") or "-")[:10],
        "versions": ", ".join(f"{k} {versions[k]}" for k in ("taskfit", "torch", "transformers") if k in versions),
        "split": str(res["config"].get("split") or res["task"].get("eval_split")),
        "n": str(m.n),
        "seed": str(res["config"].get("seed")),
        "created": str(res.get("created", "")),
    }


# ------------------------------------------------------------------------------------------------- markdown

def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    out = ["# taskfit report", ""]
    if report.preface:
        out += ["## What was chosen and why", ""] + [f"- {line}" for line in report.preface] + [""]
    for t in report.tasks:
        out += [f"## {t.task} — {t.metric} ({'higher' if t.higher_is_better else 'lower'} is better), {t.n} rows", ""]
        out += [" ".join(t.headline), ""]
        headers = [h.format(metric=t.metric) for h in LEADERBOARD]
        out += [markdown_table(headers, [[_md_cell(c) for c in row] for row in leaderboard(t)]), ""]
        out += [f"Baseline: {t.baseline.label}. Holm p: McNemar's exact test for accuracy, the paired permutation "
                "test otherwise, Holm-corrected over all pairs of methods — the one family the headline, the top tier, "
                "this column and the group letters all read. Methods sharing a group letter do not differ "
                "significantly.", ""]
        if t.caveats:
            out += ["**Caveats**", ""] + [f"- {c}" for c in t.caveats] + [""]
        d = t.disagreements
        if d is not None:
            out += [f"**Where {d.a} and {d.b} disagree**: both right {d.both_right}, only {d.a} right {d.only_a}, "
                    f"only {d.b} right {d.only_b}, both wrong {d.both_wrong}.", ""]
            if d.examples:
                rows = [[e["index"], _md_cell(e["input"]), _md_cell(e["gold"]), _md_cell(e["a"]), _md_cell(e["b"])]
                        for e in d.examples]
                out += [markdown_table(["#", "input", "gold", d.a, d.b], rows), ""]
        out += ["**Provenance**", ""]
        prov = [provenance(m) for m in t.methods]
        out += [markdown_table(list(prov[0]), [[_md_cell(v) for v in p.values()] for p in prov]), ""]
    out.append(f"Built {report.created} in {report.seconds:.1f} s.")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------- HTML

STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","WenQuanYi Zen Hei",sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;font-size:.85rem;margin:.8rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr.tier td{background:#ddf4ff}td.num{text-align:right;white-space:nowrap}
.headline{font-size:1.02rem;background:#f6f8fa;border-left:4px solid #1f6feb;padding:.6rem 1rem}
.caveats li{margin:.2rem 0}figure{margin:1rem 0}figcaption{font-size:.85rem;color:#57606a}
svg{max-width:100%;height:auto}code{font-size:.8rem;word-break:break-all}
td.text{max-width:28rem;white-space:pre-wrap;word-break:break-word}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = (),
           cell_classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        cells = "".join(
            f'<td class="{cell_classes[j]}">{_e(c)}</td>' if j < len(cell_classes) and cell_classes[j]
            else f"<td>{_e(c)}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: Report) -> str:
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f"<title>taskfit report</title><style>{STYLE}</style></head><body><h1>taskfit report</h1>"]
    if report.preface:
        parts.append("<section><h2>What was chosen and why</h2><ul>"
                     + "".join(f"<li>{_e(line)}</li>" for line in report.preface) + "</ul></section>")
    heatmap = plots.wins_heatmap(report.tasks)
    if heatmap:
        parts.append(f"<figure>{heatmap}<figcaption>Tasks × methods: how many methods of the task each one beats "
                     "significantly (all pairs, Holm)</figcaption></figure>")
    for t in report.tasks:
        parts.append(f"<section><h2>{_e(t.task)} — {_e(t.metric)} ({'higher' if t.higher_is_better else 'lower'} "
                     f"is better), {t.n} rows</h2>")
        parts.append("<div class=\"headline\">" + "".join(f"<p>{_e(line)}</p>" for line in t.headline) + "</div>")
        tier = {m.label for m in t.tier}
        numeric = ["", "", "num", "num", "num", "num", "num", "num", "num", "num", "num", "num"]
        parts.append(_table([h.format(metric=t.metric) for h in LEADERBOARD], leaderboard(t),
                            ["tier" if m.label in tier else "" for m in t.methods], numeric))
        parts.append(f"<p>Baseline: {_e(t.baseline.label)}. Shaded rows: the top tier (not significantly different "
                     "from the best). Holm p: McNemar's exact test for accuracy, the paired permutation test "
                     "otherwise, Holm-corrected over all pairs of methods — the one family the headline, the tier, "
                     "this column and the group letters all read. Methods sharing a group letter do not differ "
                     "significantly.</p>")
        if t.caveats:
            parts.append("<h3>Caveats</h3><ul class=\"caveats\">"
                         + "".join(f"<li>{_e(c)}</li>" for c in t.caveats) + "</ul>")
        for caption, svg in plots.task_figures(t):
            parts.append(f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>")
        d = t.disagreements
        if d is not None:
            parts.append(f"<h3>Where {_e(d.a)} and {_e(d.b)} disagree</h3><p>both right {d.both_right}, only "
                         f"{_e(d.a)} right {d.only_a}, only {_e(d.b)} right {d.only_b}, both wrong {d.both_wrong}"
                         f"{'; the first ' + str(len(d.examples)) + ' shown' if d.examples else ''}.</p>")
            if d.examples:
                rows = [[e["index"], e["input"], e["gold"], e["a"], e["b"]] for e in d.examples]
                parts.append(_table(["#", "input", "gold", d.a, d.b], rows, (),
                                    ["num", "text", "text", "text", "text"]))
        prov = [provenance(m) for m in t.methods]
        parts.append("<h3>Provenance</h3>" + _table(list(prov[0]), [list(p.values()) for p in prov], (),
                                                    ["", "text", "text", "", "", "text"]))
        parts.append("</section>")
    parts.append(f"<p><small>Built {_e(report.created)} by taskfit report in {report.seconds:.1f} s; "
                 f"α = {stats.ALPHA}.</small></p></body></html>")
    return "".join(parts)


def write(report: Report, html_path: str | Path | None, md_path: str | Path | None) -> None:
    for path, text in ((html_path, to_html(report) if html_path else None),
                       (md_path, to_markdown(report) if md_path else None)):
        if path is None:
            continue
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        log.info("wrote %s (%.1f kB)", target, target.stat().st_size / 1024)
