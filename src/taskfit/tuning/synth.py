"""``taskfit synth``: new rows of a task written by the model from a few seed rows (Self-Instruct, Wang et al. 2023).

The model is shown ``--shots`` of ``--seed-rows`` rows of the task and writes one more. Classification is
output-first, as the paper does for it: the label is written first (taskfit puts it at the start of the model's
reply) and the model writes an input for it, so the labels stay balanced; the other task types are input-first: an
input, then its answer after the task's answer prefix, read by the task type's own parser. What comes back is
filtered as the paper filters it — empty, cut or over-long, copied from the prompt, an answer that is not one of
the task's, a near-duplicate of a kept or seed input (ROUGE-L F >= 0.7) — and each filter is counted in the card.

Request ``i`` depends only on (seed, i): the seed rows it shows, its label and its sampling seed. So a run is
repeatable, and a cut run resumes from its raw generations (``OUT.raw.jsonl``, appended after every round) without
asking for them again. The output is JSONL in the task's own columns; ``taskfit tune --task T --train-file OUT``
trains on it with the task's own prompts, exactly as on gold rows.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskfit.api import Example, GenerateRequest, GenerateResult, Message, Prompt
from taskfit.data.sampling import sample_indices
from taskfit.errors import UserError
from taskfit.models import load_backend
from taskfit.paths import output_file
from taskfit.prompting.context import derive_seed
from taskfit.prompting.templates import default, fill
from taskfit.runs import write_json, write_jsonl
from taskfit.settings import SynthConfig, run_identity
from taskfit.tasks.task import Task, load_task

log = logging.getLogger(__name__)

TYPES = ("classification", "regression", "number")  # one-input tasks whose answer is a label or a number
REASONS = ("empty", "over_long", "copied", "bad_answer", "near_duplicate", "over_quota")
SAMPLES_PER_REASON = 5


@dataclass
class Raw:
    """One request's generation, as kept in ``OUT.raw.jsonl``."""

    request: int
    label: str | None  # output-first: the label asked for
    shown: list[int]  # seed rows shown (positions in the split)
    text: str
    finish_reason: str
    n_tokens: int


# ---------------------------------------------------------------------------------------------- requests
class Plan:
    """What request ``i`` asks and how its reply is read."""

    def __init__(self, task: Task, seeds: Sequence[Example], config: SynthConfig):
        self.task, self.seeds, self.config = task, list(seeds), config
        spec = task.config.prompt
        self.field = next(iter(task.config.fields))
        self.before, _, self.after = spec.input_template.partition("{" + self.field + "}")
        self.output_first = (config.order == "output_first" or
                             (config.order == "auto" and task.space.type == "classification"))
        if self.output_first and task.space.type != "classification":
            raise UserError(f"--order output_first writes a label first: it needs a classification task, not "
                            f"{task.space.type}")
        self.labels = task.config.labels if task.space.type == "classification" else []
        self.max_tokens = config.max_tokens or 64

    def label_word(self, value: str) -> str:
        return next(label.word for label in self.labels if label.value == value)

    def request(self, i: int) -> tuple[GenerateRequest, str | None, list[int]]:
        """Request ``i``: its prompt, the label it asks for (output-first) and the seed rows it shows."""
        rng = np.random.default_rng(derive_seed(self.config.seed, i, 11))
        shown = sorted(int(j) for j in rng.choice(len(self.seeds), self.config.shots, replace=False))
        label = self.labels[i % len(self.labels)].value if self.output_first else None
        blocks = [self.block(self.seeds[j]) for j in shown]
        words = {"task_description": self.task.config.prompt.instruction or self.task.config.description}
        user = "\n\n".join([fill(default("synth", "intro"), **words), *blocks,
                            fill(default("synth", "ask_output_first" if label else "ask_input_first"),
                                 label=self.label_word(label) if label else "")])
        prefix = (fill(default("synth", "label_line"), label=self.label_word(label)) + "\n" if label else "")
        prompt = Prompt((Message("system", default("synth", "system")), Message("user", user)),
                        prefix + self.before.rstrip())
        # output-first: the input ends its line; input-first: the answer's line ends the row (a blank line or the
        # next row's input label)
        next_row = ("\n" + self.before.strip(),) if self.before.strip() else ()
        stop = ("\n",) if self.output_first else ("\n\n", *next_row)
        return (GenerateRequest(prompt, stop=stop, max_tokens=self.max_tokens, temperature=self.config.temperature,
                                top_p=self.config.top_p, seed=derive_seed(self.config.seed, i, 13)),
                label, [self.seeds[j].index for j in shown])

    def block(self, example: Example) -> str:
        shown = self.task.config.prompt.input_template.format(**example.fields)
        if self.output_first:
            return fill(default("synth", "label_line"), label=self.task.space.word(example)) + "\n" + shown
        return f"{shown}\n{self.answer_line(self.task.space.word(example))}"

    def answer_line(self, word: str) -> str:
        prefix = self.task.config.prompt.answer_prefix
        return f"{prefix} {word}" if prefix else word

    def read(self, raw: Raw) -> tuple[str, Any, str | None]:
        """(the input written, its gold answer, why it is unusable or None)."""
        text = raw.text
        if self.output_first:
            return self._strip(text), raw.label, None
        prefix = self.task.config.prompt.answer_prefix.strip()
        head, sep, answer = text.partition("\n" + prefix) if prefix else text.partition("\n")
        if not sep:
            return self._strip(head), None, "bad_answer"
        probe = Example(index=-1, fields={self.field: head}, gold=None)
        gold, problem = self.task.space.parse(answer.strip(), probe)
        if gold is None or problem:
            return self._strip(head), None, "bad_answer"
        try:  # what the task's row mapping accepts (a score in the task's range ...)
            gold, _ = self.task.space.gold(gold, {}, raw.request, "synth")
        except UserError:
            return self._strip(head), None, "bad_answer"
        return self._strip(head), gold, None

    def _strip(self, text: str) -> str:
        text = text.strip()
        tail = self.after.strip()
        if tail and tail in text:
            text = text[: text.index(tail)].strip()
        return text


# ---------------------------------------------------------------------------------------------- filters
def words(text: str) -> list[str]:
    """ROUGE's tokens (rouge-score's default tokenizer): lower-cased runs of letters and digits."""
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l_f(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists (longest common subsequence; symmetric)."""
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 2 * lcs / (len(a) + len(b))


class Filters:
    """Self-Instruct's filters, applied to one candidate after another in request order."""

    def __init__(self, plan: Plan, seeds: Sequence[Example], threshold: float, quota: int | None):
        self.plan, self.threshold, self.quota = plan, threshold, quota
        inputs = [s.fields[plan.field] for s in seeds]
        self.max_chars = 3 * max(len(t) for t in inputs)
        self.seed_inputs = {" ".join(words(t)) for t in inputs}
        self.scaffolding = [s for s in (default("synth", "label_line").split("{")[0].strip(),
                                        plan.before.strip(), plan.task.config.prompt.answer_prefix.strip()) if s]
        self.kept_tokens: list[list[str]] = [words(t) for t in inputs]
        self.per_label: Counter = Counter()

    def judge(self, text: str, gold: Any, reason: str | None, finish_reason: str) -> str | None:
        """Why this row is dropped, or None to keep it (then it counts against the later ones)."""
        if not text:
            return "empty"
        if finish_reason == "length" or len(text) > self.max_chars:
            return "over_long"
        tokens = words(text)
        if " ".join(tokens) in self.seed_inputs or any(s in text for s in self.scaffolding):
            return "copied"
        if reason:
            return reason
        n = len(tokens)
        for other in self.kept_tokens:  # F <= 2 min(n, m) / (n + m): skip pairs that cannot reach the threshold
            if 2 * min(n, len(other)) / (n + len(other) or 1) >= self.threshold and \
                    rouge_l_f(tokens, other) >= self.threshold:
                return "near_duplicate"
        if self.quota is not None and self.per_label[gold] >= self.quota:
            return "over_quota"
        self.kept_tokens.append(tokens)
        self.per_label[gold] += 1
        return None


# ---------------------------------------------------------------------------------------------- the run
def synthesize(config: SynthConfig, *, resume: bool = False, backend=None, progress: bool = True) -> dict[str, Any]:
    """Write ``config.target`` new rows of ``config.task`` to ``config.output``; returns the card."""
    started = time.perf_counter()
    out = output_file(config.output)
    if out.suffix != ".jsonl":
        raise UserError(f"--output {out}: the output file name must end in .jsonl")
    raw_path, card_path = out.with_suffix(".raw.jsonl"), out.with_suffix(".card.json")
    task = load_task(config.task)
    _check_task(task)
    identity = run_identity(config)
    replayed = _replay(raw_path, identity, resume, out)
    rows = task.examples(config.split, config.data_dir)
    if len(rows) < config.seed_rows:
        raise UserError(f"--seed-rows {config.seed_rows}: the {config.split} split has {len(rows)} rows")
    seeds = [rows[i] for i in sample_indices(len(rows), config.seed_rows, config.seed)]
    plan = Plan(task, seeds, config)
    quota = -(-config.target // len(plan.labels)) if plan.output_first else None
    filters = Filters(plan, seeds, config.rouge_threshold, quota)
    kept: list[dict[str, Any]] = []
    judged = 0
    dropped: Counter = Counter()
    dropped_samples: dict[str, list[dict[str, Any]]] = {r: [] for r in REASONS}

    def take(raw: Raw) -> None:
        nonlocal judged
        judged += 1
        text, gold, reason = plan.read(raw)
        why = filters.judge(text, gold, reason, raw.finish_reason)
        if why is None:
            kept.append(_row(task, plan, text, gold, raw))
        else:
            dropped[why] += 1
            if len(dropped_samples[why]) < SAMPLES_PER_REASON:
                dropped_samples[why].append({"request": raw.request, "text": raw.text})

    for raw in replayed:
        if len(kept) < config.target:
            take(raw)
    if not replayed:
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(json.dumps({"settings": identity}) + "\n", encoding="utf-8")
    new_tokens, generate_s = 0, 0.0
    i = len(replayed)
    bar = _progress(progress, config.target, len(kept))
    while len(kept) < config.target and i < config.requests_allowed():
        batch = range(i, min(i + config.round_size, config.requests_allowed()))
        planned = [plan.request(j) for j in batch]
        if backend is None:
            backend = load_backend(config.backend, config.model, config.adapter, **config.backend_options())
        t0 = time.perf_counter()
        results: list[GenerateResult] = backend.generate([p[0] for p in planned])
        generate_s += time.perf_counter() - t0
        raws = [Raw(j, label, shown, r.text, r.finish_reason, r.n_tokens)
                for j, (_, label, shown), r in zip(batch, planned, results)]
        with raw_path.open("a", encoding="utf-8") as f:  # kept before they are judged: a cut run resumes here
            f.write("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in raws))
        for raw in raws:
            new_tokens += raw.n_tokens
            if len(kept) < config.target:
                take(raw)
        i = batch.stop
        if bar is not None:
            bar.n = len(kept)
            bar.refresh()
    if bar is not None:
        bar.close()
    write_jsonl(out, kept)
    card = {"task": task.name, "output": str(out), "model": config.model, "kept": len(kept), "target": config.target,
            "requests": i, "judged": judged, "order": "output_first" if plan.output_first else "input_first",
            "seed_rows": [s.index for s in seeds], "split": config.split, "dropped": {r: dropped[r] for r in REASONS},
            "labels": dict(filters.per_label) if plan.output_first else dict(Counter(str(r["synth"]["gold"])
                                                                                   for r in kept)),
            "max_input_chars": filters.max_chars, "rouge_threshold": config.rouge_threshold,
            "seconds": round(time.perf_counter() - started, 1), "generate_s": round(generate_s, 1),
            "new_tokens": new_tokens, "tokens_per_s": round(new_tokens / generate_s, 1) if generate_s else None,
            "resumed_requests": len(replayed), "settings": identity,
            "kept_samples": kept[:SAMPLES_PER_REASON], "dropped_samples": dropped_samples}
    if len(kept) < config.target:
        log.warning("kept %d of %d rows after %d requests (--max-requests); see %s", len(kept), config.target, i,
                    card_path)
    write_json(card_path, card)
    out.with_suffix(".card.md").write_text(card_markdown(card), encoding="utf-8")
    return card


def _check_task(task: Task) -> None:
    if task.space.type not in TYPES:
        raise UserError(f"synth writes rows of one-input {', '.join(TYPES)} tasks; {task.name!r} is "
                        f"{task.space.type}")
    if len(task.config.fields) != 1:
        raise UserError(f"synth writes rows of one-input tasks; {task.name!r} has {len(task.config.fields)} input "
                        f"fields ({', '.join(task.config.fields)})")


def _replay(raw_path: Path, identity: dict[str, Any], resume: bool, out: Path) -> list[Raw]:
    """The raw generations of the cut run being resumed (none for a new run)."""
    if not raw_path.is_file():
        if resume:
            raise UserError(f"--resume: {raw_path} does not exist; run the command without --resume")
        if out.exists():
            raise UserError(f"{out} exists; choose another --output")
        return []
    if not resume:
        raise UserError(f"{raw_path} holds a run's generations; pass --resume to continue it, or choose another "
                        "--output")
    lines = raw_path.read_text(encoding="utf-8").splitlines()
    try:
        saved = json.loads(lines[0])["settings"]
        raws = [Raw(**json.loads(line)) for line in lines[1:] if line.strip()]
    except (IndexError, KeyError, TypeError, json.JSONDecodeError):
        raise UserError(f"--resume: {raw_path} is not a synth run's generations; choose another --output") from None
    changed = sorted(k for k in identity if saved.get(k) != identity[k])
    if changed:
        raise UserError(f"--resume: {raw_path} was written with other settings ({', '.join(changed)}); give the same "
                        "command as that run, or another --output")
    return raws


def _row(task: Task, plan: Plan, text: str, gold: Any, raw: Raw) -> dict[str, Any]:
    """A row in the task's own columns (a value the task's row mapping reads back as ``gold``)."""
    column = task.config.fields[plan.field]
    value = gold
    if task.config.label_map and plan.output_first:  # data files hold the mapped-from values
        value = next((k for k, v in task.config.label_map.items() if v == gold), gold)
    return {column: text, task.config.target: value,
            "synth": {"request": raw.request, "shown": raw.shown, "gold": gold}}


def _progress(progress: bool, total: int, done: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="synth rows kept", unit="row")


def summary(card: dict[str, Any]) -> str:
    """What ``taskfit synth`` prints: rows kept, what was dropped and why, and how to train on them."""
    drops = ", ".join(f"{k} {v}" for k, v in card["dropped"].items() if v)
    return (f"kept {card['kept']} of {card['target']} rows, {card['judged']} judged of {card['requests']} generated "
            f"(dropped: {drops or 'none'})\noutput: {card['output']} (train with `taskfit tune --task {card['task']} "
            f"--train-file {card['output']}`; card beside it)")


def card_markdown(card: dict[str, Any]) -> str:
    drops = ", ".join(f"{k} {v}" for k, v in card["dropped"].items())
    lines = [f"# synth: {card['task']}", "",
             f"- kept {card['kept']} of {card['target']} rows: {card['judged']} of {card['requests']} generated rows "
             f"judged until the target was reached ({card['order']}; labels {card['labels']})",
             f"- dropped: {drops}",
             f"- seed rows ({len(card['seed_rows'])}, split {card['split']}): {card['seed_rows']}",
             f"- {card['seconds']} s ({card['generate_s']} s generating, {card['tokens_per_s']} new tokens/s)",
             "", "## Kept (first rows)", ""]
    lines += [f"- `{json.dumps({k: v for k, v in r.items() if k != 'synth'}, ensure_ascii=False)}`"
              for r in card["kept_samples"]]
    lines += ["", "## Dropped (first of each reason, raw text)", ""]
    for reason, rows in card["dropped_samples"].items():
        lines += [f"- {reason}: {json.dumps(r['text'], ensure_ascii=False)}" for r in rows]
    return "\n".join(lines) + "\n"
